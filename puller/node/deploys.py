"""Deploys in the background: one job per service, a bounded pool, the pass never waits.

A container step can be slow: ``docker stop`` waits the container's whole
grace period (10 s by default) when its PID 1 ignores SIGTERM, and a
``docker run`` may take seconds. Like pulls (``pulls.PullJobs``), the pass
starts one job per service it changes (that service's steps, in order) and
goes on; a service with a job in flight is left alone by later passes
(``inflight.leave_alone``); a finished job wakes the loop, and the next pass
takes its outcomes (and the containers it left).

On ``close`` queued jobs are dropped (nothing was touched yet) and running
ones are waited for, with a bound: a recreate interrupted half-way leaves the
old container stopped as ``<name>.prev``, which the next start finishes.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from typing import Callable, Mapping, Sequence

from .. import constants
from .executor import Executor, Outcome
from .inflight import InFlight
from .planner import Step

log = logging.getLogger(__name__)


class DeployJobs:
    """Owns its pool; ``close()`` is idempotent and waits for running jobs, bounded."""

    def __init__(self, executor: Executor, on_done: Callable[[], None],
                 workers: int = constants.DEPLOY_WORKERS):
        self.executor = executor
        self.on_done = on_done
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="puller-deploy")
        self._lock = threading.Lock()
        self._running: dict[str, InFlight] = {}  # service → its job
        self._futures: dict[str, Future] = {}
        self._finished: list[Outcome] = []
        self._closed = False

    def start(self, jobs: Sequence[Sequence[Step]], now: float) -> dict[str, InFlight]:
        """Start one job per service (its steps, in order) unless one is in
        flight for it already; the jobs started."""
        started: dict[str, InFlight] = {}
        with self._lock:
            if self._closed:
                return started
            for steps in jobs:
                service = steps[0].service
                if service in self._running:
                    continue
                job = InFlight(service, now, tuple(steps))
                self._running[service] = started[service] = job
                log.debug("deploying %s in the background: %s", service, job.reason(now))
                self._futures[service] = self._pool.submit(self._run, job)
        return started

    def _run(self, job: InFlight) -> None:
        try:
            outcomes = self.executor.run_steps(job.steps)
        except Exception as exc:  # a job never dies silently
            log.exception("deploy of %s failed unexpectedly", job.service)
            outcomes = [Outcome(step, error=f"{type(exc).__name__}: {exc}", transient=True)
                        for step in job.steps if step.action.changes_something][:1]
        with self._lock:
            self._running.pop(job.service, None)
            self._futures.pop(job.service, None)
            self._finished.extend(outcomes)
        self.on_done()

    def take(self) -> tuple[list[Outcome], dict[str, InFlight]]:
        """At one instant: the outcomes of the jobs that ended since the last
        call, and the jobs in flight (by service)."""
        with self._lock:
            finished, self._finished = self._finished, []
            return finished, dict(self._running)

    def in_flight(self) -> Mapping[str, InFlight]:
        with self._lock:
            return dict(self._running)

    def close(self, timeout: float = constants.DEPLOY_CLOSE_WAIT) -> list[str]:
        """Drop queued jobs, wait up to ``timeout`` s for running ones; the
        services still deploying after that (their jobs finish on their own)."""
        with self._lock:
            self._closed = True
            futures = dict(self._futures)
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for service, future in futures.items():
                if future.cancelled():
                    self._running.pop(service, None)
                    self._futures.pop(service, None)
            running = dict(self._futures)
        if running:
            log.info("waiting up to %g s for the deploy of %s to end", timeout,
                     ", ".join(sorted(running)))
            wait_for(list(running.values()), timeout=timeout)
        left = sorted(service for service, future in running.items() if not future.done())
        if left:
            log.warning("the deploy of %s goes on while puller stops; if it is cut short, the "
                        "next start finishes it (the old container is kept as .prev)",
                        ", ".join(left))
        return left
