"""Gathers the other nodes' rollout states, on a thread of its own.

Each node publishes its rollouts in its status (``rollouts`` of
``Daemon.status()``), which the gossip backend answers to
``broadcast("status")`` and the etcd backend keeps as the node's record: one
mechanism for both. While some service has a rollout, ``RolloutWatch`` asks
for them every ``ROLLOUT_POLL`` seconds, remembers when each node was last
heard (a node not heard for a rollout's ``node_timeout`` is skipped), and
wakes the loop when what the peers published changed, or when a decision
waits for a moment that has come (a pause, a node's deadline). The loop
never waits on the network: it reads ``records()``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)

ROLLOUT_POLL = 0.5  # seconds between looks at the peers while a rollout goes on
IDLE_POLL = 5.0  # seconds between looks while every rollout has ended (a new one may begin)
FORGET_AFTER = 3600.0  # seconds after which a node not heard from is no longer a participant


class RolloutWatch:
    """Owns its thread; ``close()`` is idempotent."""

    def __init__(self, ask: Callable[[], list[dict]], wake: Callable[[], None],
                 busy: Callable[[], bool | None], due: Callable[[float], bool]):
        self.ask = ask  # every other node's status (broadcast)
        self.wake = wake  # the loop: decide again
        self.busy = busy  # None: no rollout; True: one goes on; False: all ended
        self.due = due  # a decision waits for a moment that has come
        self._lock = threading.Lock()
        self._records: dict[str, tuple[float, dict]] = {}
        self._looked = False  # until the peers were asked once, nobody knows the waves
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "RolloutWatch":
        self._thread = threading.Thread(target=self._run, name="puller-rollouts", daemon=True)
        self._thread.start()
        return self

    def records(self) -> dict[str, tuple[float, dict]] | None:
        """Node → (when last heard, its published rollouts); None before the first look."""
        with self._lock:
            return dict(self._records) if self._looked else None

    def _run(self) -> None:
        last = float("-inf")
        while not self._stop.wait(ROLLOUT_POLL):
            try:
                busy = self.busy()
                if busy is None or (not busy and time.monotonic() - last < IDLE_POLL):
                    continue
                last = time.monotonic()
                self.look(time.time())
            except Exception:  # never let the thread die
                log.exception("could not gather the peers' rollouts; going on")

    def look(self, now: float) -> bool:
        """Ask the peers once; wakes the loop (and says True) when that matters."""
        answers = self.ask()
        with self._lock:
            first, self._looked = not self._looked, True
        changed = self.heard(answers, now)
        if first or changed or self.due(now):
            self.wake()
            return True
        return False

    def heard(self, answers: list[dict], now: float) -> bool:
        """Fold the peers' answers in; True when what they published changed."""
        with self._lock:
            before = _fingerprint(self._records)
            for answer in answers:
                node = answer.get("node") if isinstance(answer, dict) else None
                if not isinstance(node, str) or not node or answer.get("error"):
                    continue
                rollouts = answer.get("rollouts")
                self._records[node] = (now, rollouts if isinstance(rollouts, dict) else {})
            for node, (seen, _) in list(self._records.items()):
                if now - seen > FORGET_AFTER:
                    del self._records[node]
            return _fingerprint(self._records) != before

    def close(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=10)


def _fingerprint(records: dict[str, tuple[float, dict]]) -> str:
    """What the peers published, without their views and clocks."""
    return json.dumps({node: {name: {k: v for k, v in (item or {}).items() if k != "view"}
                              for name, item in rollouts.items() if isinstance(item, dict)}
                       for node, (_, rollouts) in records.items()},
                      sort_keys=True, default=str)
