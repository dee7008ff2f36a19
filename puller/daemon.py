"""The daemon: a level-triggered reconcile loop, woken early by file events.

Each pass reads the definitions, reads the facts (one ``docker ps``, one
batched ``docker inspect``, one batched ``docker image inspect``), plans, and
executes. Events only wake the loop; the timer runs it anyway, so a missed
event can delay convergence, never break it. A failing pass is logged and the
loop goes on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from . import constants
from .definitions import DefinitionDir, Scan, is_definition_file
from .docker import Docker
from .errors import PullerError
from .executor import Executor, Outcome, remember
from .faults import FaultLog
from .planner import Action, Memory, Plan, plan, plan_pulls

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Config:
    node: str
    directory: str = constants.DEFAULT_DIR
    port: int = constants.DEFAULT_PORT
    interval: float = constants.DEFAULT_INTERVAL
    pull_every: int = constants.DEFAULT_PULL_EVERY


@dataclass(frozen=True)
class PassReport:
    """What one pass saw and did."""

    scan: Scan
    plan: Plan
    pulls: tuple[Outcome, ...] = ()
    outcomes: tuple[Outcome, ...] = ()
    docker_calls: int = 0
    faults: dict[str, str] = field(default_factory=dict)


class _Wake(FileSystemEventHandler):
    def __init__(self, daemon: "Daemon"):
        self.daemon = daemon

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = [event.src_path, getattr(event, "dest_path", "")]
        if any(path and is_definition_file(os.fsdecode(path)) for path in paths):
            self.daemon.wake()


class Daemon:
    """Owns its watcher thread; ``close()`` is idempotent; usable as a context manager."""

    def __init__(self, config: Config, docker: Docker | None = None):
        self.config = config
        self.docker = docker or Docker()
        self.definitions = DefinitionDir(config.directory)
        self.executor = Executor(self.docker, config.node)
        self.memory = Memory()
        self.faults = FaultLog(log)
        self.passes = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._observer: Observer | None = None

    # One pass ------------------------------------------------------------------

    def tick(self, now: float | None = None, pull_due: bool = False) -> PassReport:
        """Run one reconcile pass; ``pull_due`` makes it re-pull every image."""
        now = time.time() if now is None else now
        calls_before = self.docker.calls
        self.passes += 1
        scan = self.definitions.scan()
        services = {name: service for name, service in scan.services.items()
                    if service.matches(self.config.node)}
        refs = {service.image_ref for service in services.values()}
        images = self.docker.images(refs)
        pull_steps = plan_pulls(services, images, self.memory, pull_due)
        pulls = self.executor.pull(pull_steps)
        if pulls:
            images = self.docker.images(refs)
        containers = self.docker.containers(self.config.node)
        the_plan = plan(services, containers, images, self.memory, now,
                        defined=scan.services.keys(), broken=scan.broken, complete=scan.complete)
        for step in the_plan.steps:
            if not step.action.changes_something:
                log.debug("%s", step)
        outcomes = self.executor.execute(the_plan)
        self.memory = remember(self.memory, the_plan, pulls, outcomes, now)
        faults = self._faults(scan, the_plan)
        self.faults.update(faults)
        return PassReport(scan, the_plan, tuple(pulls), tuple(outcomes),
                          self.docker.calls - calls_before, faults)

    def _faults(self, scan: Scan, the_plan: Plan) -> dict[str, str]:
        faults = {error.path: f"bad definition, ignored: {error}" for error in scan.errors}
        for step in the_plan.steps:
            if step.action is Action.WAIT:
                faults[f"service {step.service}"] = f"{step.service}: {step.reason}"
        return faults

    def _next_deadline(self, now: float) -> float:
        """When the next timer pass is due: the interval, or sooner when a
        backoff or retry expires."""
        deadline = now + self.config.interval
        for backoff in self.memory.restarts.values():
            if backoff.next_at > now:
                deadline = min(deadline, backoff.next_at)
        for failure in self.memory.failures.values():
            if failure.retry_at is not None and failure.retry_at > now:
                deadline = min(deadline, failure.retry_at)
        return deadline

    # The loop -------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def start_watching(self) -> None:
        if self._observer is not None:
            return
        observer = Observer()
        observer.daemon = True
        observer.schedule(_Wake(self), self.config.directory, recursive=False)
        observer.start()
        self._observer = observer

    def run(self) -> None:
        """Pass after pass until ``stop()``."""
        os.makedirs(self.config.directory, exist_ok=True)
        self.start_watching()
        log.info("puller on node %s: watching %s, a pass every %g s, pulling every %d pass(es)",
                 self.config.node, self.config.directory, self.config.interval,
                 self.config.pull_every)
        last_pull_pass = float("-inf")
        pull_period = self.config.interval * max(1, self.config.pull_every)
        while not self._stop.is_set():
            started = time.time()
            # Every image is pulled again on every Nth timer pass (-pull-every);
            # passes woken by events only pull what is new or missing.
            pull_due = started - last_pull_pass >= pull_period - 0.5
            if pull_due:
                last_pull_pass = started
            try:
                self.tick(started, pull_due=pull_due)
            except PullerError as exc:
                log.error("pass failed: %s", exc)
            except Exception:  # the loop must go on whatever one pass hit
                log.exception("pass failed unexpectedly")
            deadline = self._next_deadline(started)
            woken = self._wake.wait(timeout=max(0.0, deadline - time.time()))
            if self._stop.is_set():
                break
            if woken:
                # Coalesce the burst of events an editor makes into one pass.
                time.sleep(constants.WATCH_DEBOUNCE)
                self._wake.clear()
        log.info("puller stopped; containers keep running")

    def close(self) -> None:
        self.stop()
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)

    def __enter__(self) -> "Daemon":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
