"""A service's ``rollout:`` field: how a change travels through the fleet.

``parse_rollout`` is pure: the field's value in, a ``RolloutSpec`` or a
``DefinitionError`` (with the field's line) out. Without the field a service
has no spec and a change reaches every matching node at once, as always.

.. code-block:: yaml

    rollout:
      canary: 1              # nodes that take a change first (0: no canary wave)
      parallel: 1            # then this many nodes at a time (default: all the rest)
      pause: 0               # seconds between waves
      on_failure: rollback   # or halt
      order: stop-first      # or start-first
      node_timeout: 120      # seconds before an unreachable node is skipped
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..errors import DefinitionError
from .runoptions import split_options

ON_FAILURE = ("rollback", "halt")
ORDER = ("stop-first", "start-first")
KEYS = ("canary", "parallel", "pause", "on_failure", "order", "node_timeout")
DEFAULT_NODE_TIMEOUT = 120.0
MAX_SECONDS = 86400.0


@dataclass(frozen=True)
class RolloutSpec:
    """How a release of one service reaches the nodes it matches."""

    canary: int = 0
    parallel: int | None = None  # None: every node after the canaries at once
    pause: float = 0.0
    on_failure: str = "rollback"
    order: str = "stop-first"
    node_timeout: float = DEFAULT_NODE_TIMEOUT

    def waves(self, nodes: Sequence[str]) -> list[list[str]]:
        """``nodes`` (sorted by name) cut into waves: canaries, then ``parallel`` at a time."""
        ordered = sorted(nodes)
        waves = [ordered[:self.canary]] if self.canary else []
        rest = ordered[self.canary:]
        size = self.parallel or len(rest) or 1
        waves.extend(rest[i:i + size] for i in range(0, len(rest), size))
        return [wave for wave in waves if wave]

    def to_fields(self) -> dict[str, Any]:
        """The field as a user would write it (defaults left out)."""
        fields: dict[str, Any] = {}
        for key in KEYS:
            value = getattr(self, key)
            if value != getattr(DEFAULT, key):
                fields[key] = int(value) if isinstance(value, float) and value.is_integer() else value
        return fields


DEFAULT = RolloutSpec()

Fail = Callable[[str], DefinitionError]


def parse_rollout(value: Any, fail: Fail) -> RolloutSpec | None:
    """The ``rollout:`` field's value → a spec; ``fail(message)`` builds the error."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise fail("rollout must be a mapping, e.g. rollout: {canary: 1, parallel: 1}")
    for key in value:
        if key not in KEYS:
            raise fail(f"rollout: unknown key {key!r}; the keys are {', '.join(KEYS)}")
    parallel = value.get("parallel")
    return RolloutSpec(
        canary=_count(value, "canary", 0, fail),
        parallel=None if parallel is None else _count(value, "parallel", 1, fail),
        pause=_seconds(value, "pause", 0.0, fail, zero=True),
        on_failure=_choice(value, "on_failure", ON_FAILURE, fail),
        order=_choice(value, "order", ORDER, fail),
        node_timeout=_seconds(value, "node_timeout", DEFAULT_NODE_TIMEOUT, fail, zero=False),
    )


def _count(value: dict, key: str, least: int, fail: Fail) -> int:
    number = value.get(key, least)
    if isinstance(number, bool) or not isinstance(number, int) or number < least:
        raise fail(f"rollout: {key} must be a whole number of nodes, at least {least}")
    return number


def _seconds(value: dict, key: str, default: float, fail: Fail, zero: bool) -> float:
    number = value.get(key, default)
    if isinstance(number, bool) or not isinstance(number, (int, float)) or math.isnan(number):
        raise fail(f"rollout: {key} must be a number of seconds")
    least = "0" if zero else "more than 0"
    if number < 0 or (not zero and number == 0) or number > MAX_SECONDS:
        raise fail(f"rollout: {key} must be between {least} and {MAX_SECONDS:.0f} seconds")
    return float(number)


def _choice(value: dict, key: str, choices: tuple[str, ...], fail: Fail) -> str:
    choice = value.get(key, choices[0])
    if choice not in choices:
        raise fail(f"rollout: {key} must be {' or '.join(choices)}, not {choice!r}")
    return choice


def fixed_host_ports(options: Sequence[str]) -> list[str]:
    """The run line's options that bind a fixed host port (``-p 8080:80``,
    ``--network host``): two containers of one service cannot both hold it."""
    groups, _image, _args = split_options(list(options))
    fixed = []
    for group in groups:
        for option in group.options:
            if option.flag.long == "publish" and option.value and _host_port(option.value):
                fixed.append(f"{option.spelling} {option.value}")
            elif option.flag.long in ("network", "net") and option.value == "host":
                fixed.append(f"{option.spelling} host")
    return fixed


def _host_port(publish: str) -> str:
    """The host port of a ``-p`` value ('' when docker picks one)."""
    spec = publish.split("/", 1)[0]
    if spec.startswith("["):  # [::1]:8080:80
        spec = spec[spec.find("]") + 1:].lstrip(":")
    parts = spec.split(":")
    if len(parts) == 1:
        return ""  # -p 80: a random host port
    return parts[-2]
