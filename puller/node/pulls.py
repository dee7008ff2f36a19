"""Pulls in the background: one job per image, a bounded pool, the pass never waits.

A slow pull (a big image, a slow registry; ``PULL_TIMEOUT`` is half an hour)
must not hold up the other services: meanwhile containers exit and are
restarted, definitions change and are deployed, triggers are answered. A
pass starts the pulls it needs and reconciles every service whose image is
ready; a finished job wakes the loop, and the next pass takes its outcome
(and the image).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

from .. import constants
from .executor import Executor, Outcome
from .planner import Step

log = logging.getLogger(__name__)


class PullJobs:
    """Owns its pool; ``close()`` is idempotent and does not wait for a pull."""

    def __init__(self, executor: Executor, on_done: Callable[[], None],
                 workers: int = constants.PULL_WORKERS):
        self.executor = executor
        self.on_done = on_done
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="puller-pull")
        self._lock = threading.Lock()
        self._running: dict[str, Step] = {}  # image ref → its pull
        self._finished: list[Outcome] = []
        self._closed = False

    def start(self, steps: Sequence[Step]) -> None:
        """Start each pull whose image is not being pulled already."""
        with self._lock:
            if self._closed:
                return
            for step in steps:
                ref = step.image_ref
                assert ref is not None
                if ref in self._running:
                    continue
                self._running[ref] = step
                log.debug("pulling %s in the background: %s", ref, step.reason)
                self._pool.submit(self._run, step)

    def _run(self, step: Step) -> None:
        try:
            outcome = self.executor.pull_one(step)
        except Exception as exc:  # a job never dies silently
            log.exception("pull of %s failed unexpectedly", step.image_ref)
            outcome = Outcome(step, error=f"{type(exc).__name__}: {exc}")
        with self._lock:
            self._running.pop(step.image_ref or "", None)
            self._finished.append(outcome)
        self.on_done()

    def in_flight(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._running)

    def take_finished(self) -> list[Outcome]:
        """The outcomes of the pulls that finished since the last call."""
        with self._lock:
            finished, self._finished = self._finished, []
            return finished

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
