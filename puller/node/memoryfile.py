"""The planner's memory on disk: what failed stays failed across restarts.

A release (definition, image) that failed on this node, and the backoff of a
container that keeps exiting, are kept in ``<state_dir>/memory.json``,
written atomically whenever they change and read at start. Without it a
daemon restarted after a failed update (systemd's ``Restart=always`` after a
crash) would stop the container that was put back and try the failed
release again. The update policy's approvals and the new images already
told of are kept too, so a restart neither forgets an approval nor tells
of the same image twice. Restart backoffs are keyed by container id, so a container
that is gone is simply forgotten by the next pass.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from ..fsutil import write_atomically
from .planner import Backoff, Failure, Memory

log = logging.getLogger(__name__)


def memory_to_json(memory: Memory) -> dict[str, Any]:
    return {
        "failures": {name: {"config_hash": f.config_hash, "error": f.error, "at": f.at,
                            "retry_at": f.retry_at, "attempts": f.attempts}
                     for name, f in sorted(memory.failures.items())},
        "restarts": {cid: {"attempts": b.attempts, "next_at": b.next_at}
                     for cid, b in sorted(memory.restarts.items())},
        "approved": dict(sorted(memory.approved.items())),
        "announced": dict(sorted(memory.announced.items())),
    }


def memory_from_json(data: Any) -> Memory:
    """The memory in ``data``; entries that do not look right are dropped."""
    if not isinstance(data, dict):
        return Memory()
    failures, restarts = {}, {}
    for name, item in (data.get("failures") or {}).items():
        try:
            failures[str(name)] = Failure(str(item["config_hash"]), str(item["error"]),
                                          float(item["at"]), _number(item.get("retry_at")),
                                          int(item.get("attempts", 1)))
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
    for cid, item in (data.get("restarts") or {}).items():
        try:
            restarts[str(cid)] = Backoff(int(item["attempts"]), float(item["next_at"]))
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
    return Memory(failures=failures, restarts=restarts, approved=_names(data.get("approved")),
                  announced=_names(data.get("announced")))


def _names(data: Any) -> dict[str, str]:
    """A mapping of service name → image id; what is not one is dropped."""
    if not isinstance(data, dict):
        return {}
    return {name: value for name, value in data.items()
            if isinstance(name, str) and isinstance(value, str)}


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def load_memory(path: str) -> Memory:
    try:
        with open(path) as handle:
            return memory_from_json(json.load(handle))
    except FileNotFoundError:
        return Memory()
    except (OSError, ValueError) as exc:
        log.warning("the memory of failed releases %s cannot be read (%s); starting without it",
                    path, exc)
        return Memory()


def save_memory(path: str, memory: Memory) -> None:
    try:
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        write_atomically(path, json.dumps(memory_to_json(memory), indent=1, sort_keys=True),
                         mode=0o600)
    except OSError as exc:
        log.warning("cannot write the memory of failed releases %s: %s", path, exc)
