"""The daemon: a level-triggered reconcile loop, woken early by file events.

Each pass reads the definitions, reads the facts (one ``docker ps``, one
batched ``docker inspect``, one batched ``docker image inspect``), plans, and
executes. Events only wake the loop; the timer runs it anyway, so a missed
event can delay convergence, never break it. A failing pass is logged and the
loop goes on.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Iterable, Mapping

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from . import constants
from .cluster.backend import ClusterBackend
from .cluster.etcd import EtcdBackend, EtcdBackendConfig
from .cluster.lan import Cluster, ClusterConfig
from .cluster.rollouts import RolloutWatch
from .cluster.secret import generated_secret
from .cluster.storeurl import StoreConfig
from .control.api import Api
from .control.keys import default_path as key_path
from .control.keys import load_or_create
from .control.metrics import Metrics
from .control.notify import EventWatch, Notifier, check_urls
from .control.tls import server_context
from .errors import DockerError, PullerError
from .faults import Outage
from .images.freshness import Freshness
from .images.gcloud import DEFAULT_GOOGLE_REGISTRIES
from .images.hooks import Push
from .node.approvals import NOT_HERE, approval_target, described
from .node.definitions import Scan, is_definition_file
from .node.docker import Docker
from .node.reconciler import Reconciler
from .node.report import PassReport, PassRequest, service_result
from .node.wakeup import Wakeup

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Config:
    node: str
    directory: str = constants.DEFAULT_DIR
    port: int = constants.DEFAULT_PORT
    interval: float = constants.DEFAULT_INTERVAL
    pull_every: int = constants.DEFAULT_PULL_EVERY
    state_dir: str = constants.DEFAULT_STATE_DIR
    google_registries: tuple[str, ...] = DEFAULT_GOOGLE_REGISTRIES
    apikey: str | None = None  # None: the key in <state_dir>/api.key, made at the first start
    hook_key: str | None = None  # a key the registry hook takes too (and nothing else)
    api_addr: str | None = None  # default: 127.0.0.1; beyond loopback, TLS or api_insecure
    api_hosts: tuple[str, ...] = ()  # Host names the API answers to, besides this host's own
    api_cert: str | None = None  # PEM certificate (chain) for TLS
    api_cert_key: str | None = None  # its PEM key (None: in the certificate's file)
    api_insecure: bool = False  # plain HTTP beyond loopback
    name_template: str = "{service}"  # container names; {node}-{service} lets nodes share an engine
    cluster: str = constants.DEFAULT_CLUSTER
    secret: bytes | None = None  # explicit cluster secret; without it one is generated into
    # state_dir and shared by the daemons of this host: loopback peers only
    join: tuple[str, ...] = ()
    zeroconf: bool = True
    bind: str | None = None  # sync address: default 0.0.0.0 with an explicit secret, else 127.0.0.1
    store: StoreConfig | None = None  # -store=etcd://...: etcd instead of the gossip
    notify: tuple[str, ...] = ()  # Apprise URLs told of every service's events
    metrics: str | None = None  # ADDR:PORT to serve Prometheus metrics on
    keep_images: int = constants.DEFAULT_KEEP_IMAGES  # image retention; 0: off

    def container_name(self, service: str) -> str:
        return self.name_template.format(service=service, node=self.node)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _Wake(FileSystemEventHandler):
    def __init__(self, daemon: "Daemon"):
        self.daemon = daemon

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # puller's own reads: waking on them would make a busy loop
        paths = [event.src_path, getattr(event, "dest_path", "")]
        if any(path and is_definition_file(os.fsdecode(path)) for path in paths):
            cluster = self.daemon.cluster
            if cluster is not None:
                # version and push the edit now, even while a long pass (a big
                # pull) keeps the loop busy; files from peers compare equal
                try:
                    cluster.sync_dir()
                except Exception:  # never let the watcher thread die
                    log.exception("could not sync the definitions after a change")
            self.daemon.wake()


class Daemon(Reconciler):
    """The loop around the passes: the watcher, the API, the cluster.

    Owns its threads; ``close()`` is idempotent; usable as a context manager."""

    def __init__(self, config: Config, docker: Docker | None = None,
                 freshness: Freshness | None = None):
        super().__init__(config, docker, freshness)
        self.outage = Outage(log, "passes work again")
        self._waiting: list[PassRequest] = []  # triggers waiting for their pulls, deploys
        self._requests: queue.SimpleQueue[PassRequest] = queue.SimpleQueue()
        self._wake = Wakeup()  # a signal on any thread ends its wait too
        self._stop = threading.Event()
        self._observer: Observer | None = None
        self._api = None
        self.apikey: str | None = None  # the API's key, once the API runs
        self.cluster: ClusterBackend | None = None
        self._rollout_watch: RolloutWatch | None = None
        self.events = EventWatch(config.node)
        self.notifier = Notifier(config.notify, config.node)
        self.metrics = Metrics(config.node) if config.metrics else None

    def _next_deadline(self, now: float) -> float:
        """When the next timer pass is due: the interval, or sooner when a
        backoff or retry expires."""
        if self.outage.since is not None:  # nothing else is worth a try until it works
            return now + self.outage.delay(self.config.interval, constants.OUTAGE_BACKOFF_MAX)
        deadline = now + self.config.interval
        for backoff in self.memory.restarts.values():
            if backoff.next_at > now:
                deadline = min(deadline, backoff.next_at)
        for failure in self.memory.failures.values():
            if failure.retry_at is not None and failure.retry_at > now:
                deadline = min(deadline, failure.retry_at)
        report = self.last_report
        if report is not None and report.scan.recheck_in is not None:
            deadline = min(deadline, now + report.scan.recheck_in + 0.05)
        if report is not None and any(c.is_aside for c in report.containers):
            # a container on probation is looked at often: an early exit counts
            deadline = min(deadline, now + constants.PROBATION_CHECK)
        return deadline

    def _pass_failed(self, exc: PullerError, now: float) -> None:
        """One line when passes start failing (docker unreachable, say), one when
        they work again; the same failure again is DEBUG, and passes back off."""
        if isinstance(exc, DockerError) and _unreachable(exc.stderr):
            self.outage.what = "docker is back"
            self.outage.failed(f"docker is unreachable: {exc.stderr}; every container is left "
                               "as it is; passes back off until it answers", now)
        else:
            self.outage.what = "passes work again"
            self.outage.failed(f"pass failed: {exc}", now)

    # The loop -------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def request_pass(self, services: Iterable[str] = (), pushes: Iterable[Push] = (),
                     approvals: Iterable[tuple[str, str]] = ()) -> Future:
        """Ask the loop for a pass now; the future gets its PassReport."""
        request = PassRequest(frozenset(services), tuple(pushes), tuple(approvals))
        self._requests.put(request)
        self.wake()
        return request.future

    def _take_requests(self) -> list[PassRequest]:
        taken = []
        while True:
            try:
                taken.append(self._requests.get_nowait())
            except queue.Empty:
                return taken

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

    def api_address(self) -> tuple[str, int]:
        host = self.config.api_addr or "127.0.0.1"
        if not (_is_loopback(host) or self.config.api_cert or self.config.api_insecure):
            raise PullerError(f"refusing to serve the HTTP API on {host} without TLS: its key and "
                              "the definitions (secrets too) would cross the network in clear; "
                              "set -api-cert and -api-cert-key (PEM files), or -api-insecure if "
                              "the network is yours alone")
        return host, self.config.port + 1

    def start_api(self) -> None:
        if self._api is not None:
            return
        config = self.config
        host, port = self.api_address()
        tls = server_context(config.api_cert, config.api_cert_key) if config.api_cert else None
        if tls is None and not _is_loopback(host):
            log.warning("-api-insecure: the HTTP API on %s is plain HTTP: its key and every "
                        "definition, secrets included, cross the network in clear; use "
                        "-api-cert and -api-cert-key", host)
        self.apikey = config.apikey or self._generated_key()
        try:
            self._api = Api(self, host, port, self.apikey, hook_key=config.hook_key,
                            hosts=config.api_hosts, tls=tls).start()
        except OSError as exc:
            raise PullerError(f"cannot serve the HTTP API on {host}:{port}: "
                              f"{exc.strerror or exc}; is another puller running? "
                              "(-port picks another)") from None

    def _generated_key(self) -> str:
        """The key in <state_dir>/api.key, made at the first start (root's CLI reads it)."""
        key, made = load_or_create(self.config.state_dir)
        log.info("API key %s %s", "made in" if made else "from", key_path(self.config.state_dir))
        return key

    def start_cluster(self) -> None:
        if self.cluster is not None:
            return
        config = self.config
        handlers = {"pull": self._peer_pull, "status": lambda body: self.status(),
                    "approve": lambda body: self.approve_here(str(body.get("service", "")))}
        if config.store is not None:  # etcd holds the definitions: no gossip, no zeroconf
            self.cluster = EtcdBackend(EtcdBackendConfig(config.node, config.directory,
                                                         config.store),
                                       on_change=self.wake, handlers=handlers,
                                       on_written=self._peer_wrote).start()
            return
        explicit = config.secret is not None
        bind = config.bind or ("0.0.0.0" if explicit else "127.0.0.1")
        secret = config.secret if explicit else generated_secret(config.state_dir)
        self.cluster = Cluster(
            ClusterConfig(node=config.node, directory=config.directory, port=config.port,
                          bind=bind, cluster=config.cluster, secret=secret,
                          loopback_only=not explicit, join=config.join,
                          zeroconf=config.zeroconf),
            on_change=self.wake, handlers=handlers, on_written=self._peer_wrote,
        ).start()

    def _peer_wrote(self, name: str, origin: str) -> None:
        """A peer's change was written into -dir: history says so, with its node."""
        self.history.expect(name, "peer", origin)

    def tick(self, now: float | None = None, pull_due: bool = False,
             check: Iterable[str] = (), pushes: Iterable[Push] = (),
             approvals: Mapping[str, str] | None = None) -> PassReport:
        if self.cluster is not None:
            self.cluster.sync_dir()  # version local edits, push them to peers
        started = time.monotonic()
        report = super().tick(now, pull_due, check, pushes, approvals)
        events = self.events.update(report) + self.events.halted(self.rollouts.status(), report)
        self.notifier.notify(events)  # never waits: a worker sends
        if self.metrics is not None:
            self.metrics.observe(report, time.monotonic() - started, len(self.peers()))
        return report

    def status(self) -> dict:
        node = super().status()
        if self.outage.since is not None:
            node["fault"] = self.outage.message
            node["fault_since"] = self.outage.since
        if self.cluster is not None:
            node["conflicts"] = self.cluster.problems()
        return node

    def _peer_pull(self, body: dict) -> dict:
        """A peer asks this node to check and deploy a service now."""
        return self.pull_here(str(body.get("service", "")))

    # What the API needs (control.api.NodeControl) --------------------------------------

    def approve_here(self, name: str) -> dict:
        """Deploy the update of ``name`` that waits on this node (the one status
        showed); what happened, or why nothing was approved."""
        answer = {"node": self.config.node, "service": name}
        try:
            report = self.last_report or self.request_pass().result(
                timeout=constants.API_PASS_TIMEOUT)
            step, why = approval_target(report.plan, report.scan.services.get(name),
                                        self.config.node)
            if step is None or step.hold is None:
                return {**answer, "runs_here": why != NOT_HERE, "approved": False, "reason": why}
            report = self.request_pass(approvals=[(name, step.hold.image_id)]).result(
                timeout=constants.API_PASS_TIMEOUT)
        except Exception as exc:  # reported to the asking node, never fatal here
            return {**answer, "error": str(exc)}
        service = report.scan.services.get(name)
        ref = service.image_ref if service else ""
        return {**answer, "runs_here": True, "approved": True, "update": described(step),
                **service_result(report, name, ref)}

    def scan(self) -> Scan:
        return self.definitions.scan()

    def pull_here(self, name: str) -> dict:
        """Check the registry and deploy ``name`` on this node now; what happened."""
        try:
            report = self.request_pass(services=[name]).result(timeout=constants.API_PASS_TIMEOUT)
        except Exception as exc:  # reported to the asking node, never fatal here
            return {"node": self.config.node, "service": name, "error": str(exc)}
        service = report.scan.services.get(name)
        if service is None or not service.matches(self.config.node):
            return {"node": self.config.node, "service": name, "runs_here": False}
        return {"node": self.config.node, "runs_here": True,
                **service_result(report, name, service.image_ref)}

    def ask_cluster(self, kind: str, body: dict) -> list[dict]:
        """Every other node's answer to a request (``pull``, ``status``)."""
        return self.cluster.broadcast(kind, body) if self.cluster is not None else []

    def peers(self) -> list[dict]:
        return self.cluster.peer_table() if self.cluster is not None else []

    def run(self) -> None:
        """Pass after pass until ``stop()``."""
        os.makedirs(self.config.directory, exist_ok=True)
        check_urls(self.config.notify)
        self.start_api()
        if self.metrics is not None:
            self.metrics.serve(self.config.metrics or "")
        self.start_cluster()
        self._rollout_watch = RolloutWatch(lambda: self.ask_cluster("status", {}), self.wake,
                                           self.rollouts.busy, self.rollouts.due).start()
        self.rollouts.peers = self._rollout_watch.records  # the rollouts' view of the peers
        self.start_watching()
        self.pull_in_background(self.wake)
        self.pruner.in_background()
        self.deploy_in_background(self.wake)
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
            taken = self._take_requests()
            check = {name for r in taken for name in r.services}
            pushes = [push for r in taken for push in r.pushes]
            approvals = dict(pair for r in taken for pair in r.approvals)
            requests, self._waiting = self._waiting + taken, []
            try:
                report = self.tick(started, pull_due=pull_due, check=check, pushes=pushes,
                                   approvals=approvals)
            except PullerError as exc:
                self._pass_failed(exc, started)
                self._answer(requests, error=exc)
            except Exception as exc:  # the loop must go on whatever one pass hit
                log.exception("pass failed unexpectedly")
                self._answer(requests, error=exc)
            else:
                self.outage.ok(time.time())
                self._answer_or_wait(requests, report)
            woken = self._sleep_until(self._next_deadline(started))
            if self._stop.is_set():
                break
            if woken:
                # Coalesce the burst of events an editor makes into one pass.
                time.sleep(constants.WATCH_DEBOUNCE)
                self._wake.clear()
        log.info("puller stopped; containers keep running")

    def _sleep_until(self, deadline: float) -> bool:
        """Wait for a wake-up, a stop or the deadline; True when woken. A
        signal ends a wait early: its handler (on this, the main thread) runs
        before ``_stop`` is looked at."""
        while not self._stop.is_set():
            left = deadline - time.time()
            if left <= 0:
                return False
            if self._wake.wait(timeout=left):
                return True
        return False

    def wakeup_fd(self) -> int:
        """For ``signal.set_wakeup_fd``: a signal landing on any thread ends the
        loop's wait at once, so its handler runs on the main thread now."""
        return self._wake.signal_fd()

    def _answer_or_wait(self, requests: list[PassRequest], report: PassReport) -> None:
        """A trigger is answered once its services' images are no longer being
        pulled and their deploys no longer run in the background (the report
        of the pass that took their outcomes); until then it waits for a later
        pass, keeping what the passes it waited through did."""
        pulling = self.pulling()
        for request in requests:
            refs = {report.scan.services[name].image_ref for name in request.awaited
                    if name in report.scan.services}
            if refs & pulling or request.awaited & report.deploying:
                request.carry(report)
                self._waiting.append(request)
            else:
                self._answer([request], report=report)

    @staticmethod
    def _answer(requests: list[PassRequest], report: PassReport | None = None,
                error: BaseException | None = None) -> None:
        for request in requests:
            if error is not None:
                request.future.set_exception(error)
            else:
                assert report is not None
                request.future.set_result(request.answer(report))

    def close(self) -> None:
        self.stop()
        api, self._api = self._api, None
        if api is not None:
            api.close()
        watch, self._rollout_watch = self._rollout_watch, None
        if watch is not None:
            watch.close()
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            cluster.close()
        if self.pull_jobs is not None:
            self.pull_jobs.close()
        self.finish_deploys()
        self.pruner.close()
        self.notifier.close()
        if self.metrics is not None:
            self.metrics.close()
        waiting, self._waiting = self._waiting, []
        self._answer(waiting + self._take_requests(),
                     error=PullerError("the daemon is stopping"))
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)
        self._wake.close()

    def __enter__(self) -> "Daemon":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unreachable(stderr: str) -> bool:
    """The docker CLI's words for an engine it cannot reach."""
    return any(text in stderr for text in (
        "Cannot connect to the Docker daemon", "Is the docker daemon running",
        "error during connect", "connect: no such file or directory",
        "connect: connection refused"))
