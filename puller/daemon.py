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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Mapping

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from . import constants
from .cluster.backend import ClusterBackend
from .cluster.lan import Cluster, ClusterConfig
from .control.api import Api
from .control.keys import default_path as key_path
from .control.keys import load_or_create
from .control.tls import server_context
from .errors import PullerError
from .faults import FaultLog
from .images.freshness import Freshness, Remote
from .images.gcloud import DEFAULT_GOOGLE_REGISTRIES, GoogleLogins
from .images.hooks import Push
from .node.container import Container, Image
from .node.definitions import DefinitionDir, Scan, Service, definition_fields, is_definition_file
from .node.docker import Docker
from .node.executor import Executor, Outcome, remember
from .node.history import History
from .node.planner import Action, Memory, Plan, config_hash, local_digests, plan, plan_pulls
from .node.report import PassReport, PassRequest, service_result

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
    secret: bytes | None = None  # cluster secret; without it the sync port is loopback only
    join: tuple[str, ...] = ()
    zeroconf: bool = True
    bind: str | None = None  # sync address: default 0.0.0.0 with a secret, else 127.0.0.1

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


class Daemon:
    """Owns its watcher thread; ``close()`` is idempotent; usable as a context manager."""

    def __init__(self, config: Config, docker: Docker | None = None,
                 freshness: Freshness | None = None):
        self.config = config
        self.docker = docker or Docker()
        self.definitions = DefinitionDir(config.directory)
        self.freshness = freshness or Freshness(google_registries=config.google_registries)
        self.logins = GoogleLogins(self.docker, self.freshness.google,
                                   os.path.join(config.state_dir, "docker"),
                                   config.google_registries)
        self.executor = Executor(self.docker, config.node, pull_config=self.logins.config_for,
                                 container_name=config.container_name)
        self.memory = Memory()
        self.history = History(os.path.join(config.state_dir, "history.json"), config.node)
        self.last_report: PassReport | None = None
        self._requests: queue.SimpleQueue[PassRequest] = queue.SimpleQueue()
        self.faults = FaultLog(log)
        self.passes = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._observer: Observer | None = None
        self._api = None
        self.apikey: str | None = None  # the API's key, once the API runs
        self.cluster: ClusterBackend | None = None

    # One pass ------------------------------------------------------------------

    def tick(self, now: float | None = None, pull_due: bool = False,
             check: Iterable[str] = (), pushes: Iterable[Push] = ()) -> PassReport:
        """Run one reconcile pass.

        ``pull_due`` asks the registry about every image; otherwise only images
        never asked about are, plus those of the services in ``check`` and the
        tags in ``pushes`` (a push's digest is never taken as is: the registry
        is asked).
        """
        now = time.time() if now is None else now
        calls_before = self.docker.calls
        self.passes += 1
        if self.cluster is not None:
            self.cluster.sync_dir()  # version local edits, push them to peers
        scan = self.definitions.scan()
        services = {name: service for name, service in scan.services.items()
                    if service.matches(self.config.node)}
        remotes = self._check_registries(services, now, pull_due, check, pushes)
        images, pulls, containers = self._read_facts(services, remotes)
        the_plan = plan(services, containers, images, self.memory, now,
                        defined=scan.services.keys(), broken=scan.broken, complete=scan.complete,
                        remotes=self.freshness.remotes(),
                        container_name=self.config.container_name)
        for step in the_plan.steps:
            if not step.action.changes_something:
                log.debug("%s", step)
        outcomes = self.executor.execute(the_plan)
        if outcomes:  # what runs now, for status (an extra call only after a change)
            containers = self.docker.containers(self.config.node)
        self.memory = remember(self.memory, the_plan, pulls, outcomes, now)
        self.history.observe(
            {name: definition_fields(service) for name, service in services.items()},
            self._deployed(services, images, containers), now)
        faults = self._faults(scan, the_plan)
        self.faults.update(faults)
        report = PassReport(scan, the_plan, now, self.freshness.remotes(), images,
                            tuple(containers), tuple(pulls), tuple(outcomes),
                            self.docker.calls - calls_before, faults)
        self.last_report = report
        return report

    def _check_registries(self, services: Mapping[str, Service], now: float, pull_due: bool,
                          check: Iterable[str], pushes: Iterable[Push]) -> dict[str, Remote]:
        """Ask the registries about the tags that are due; what they said this pass."""
        tags = {service.image_ref for service in services.values()
                if "@" not in service.image_ref}
        forced = {services[name].image_ref for name in check if name in services} & tags
        # a push notification is only a trigger: whoever can send one could name
        # any digest, so the registry's manifest HEAD says what the tag is now
        forced |= {ref for push in pushes for ref in tags if push.matches(ref)}
        known = self.freshness.remotes()
        due = tags if pull_due else {ref for ref in tags if ref not in known}
        remotes = self.freshness.check(due, now, force=forced)
        for push in pushes:
            for ref in tags:
                remote = remotes.get(ref)
                if push.digest and push.matches(ref) and remote and remote.digest != push.digest:
                    log.debug("%s: a push notification named %s; the registry says %s",
                              ref, push.digest, remote.digest or remote.error)
        self.freshness.forget(tags)
        return remotes

    def _read_facts(self, services: Mapping[str, Service], remotes: Mapping[str, Remote]
                    ) -> tuple[dict[str, Image | None], list[Outcome], list[Container]]:
        """The images (after the pulls they need) and this node's containers."""
        refs = {service.image_ref for service in services.values()}
        # The containers are read while the images are looked at and pulled:
        # both are on the path from an edit to its container.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="puller-facts") as pool:
            containers_read = pool.submit(self.docker.containers, self.config.node)
            images = self.docker.images(refs)
            pulls = self.executor.pull(plan_pulls(
                services, images, {**self.freshness.remotes(), **remotes}, checked=remotes))
            if pulls:
                images = self.docker.images(refs)
            containers = containers_read.result()
        return images, pulls, containers

    def _deployed(self, services: Mapping[str, Service], images: Mapping[str, Image | None],
                  containers: Iterable[Container]) -> dict[str, str]:
        """The digest each service runs, once its container is up to date and
        past probation (for the history)."""
        current = {c.service: c for c in containers
                   if c.service and c.name == self.config.container_name(c.service)}
        on_probation = {c.service for c in containers if c.is_previous}
        remotes = self.freshness.remotes()
        deployed = {}
        for name, service in services.items():
            container, image = current.get(name), images.get(service.image_ref)
            if (container is None or image is None or not container.running
                    or container.image_id != image.id
                    or container.config_hash != config_hash(service.run.canonical(), image.id)
                    or name in on_probation):
                continue
            if service.digest:
                deployed[name] = service.digest
                continue
            digests = local_digests(service.image_ref, image)
            remote = remotes.get(service.image_ref)
            if remote is not None and remote.digest in digests:
                deployed[name] = remote.digest
            elif digests:
                deployed[name] = sorted(digests)[0]
        return deployed

    def _faults(self, scan: Scan, the_plan: Plan) -> dict[str, str]:
        faults = {error.path: f"bad definition, ignored: {error}" for error in scan.errors}
        for ref, remote in self.freshness.remotes().items():
            if remote.error and not remote.fallback:
                faults[f"registry {ref}"] = f"{ref}: {remote.error}; the running containers stay"
            elif remote.fallback:
                faults[f"registry {ref}"] = (f"{ref}: cannot check without pulling "
                                             f"({remote.error}); falling back to docker pull")
        for step in the_plan.steps:
            if step.action is Action.WAIT:
                faults[f"service {step.service}"] = f"{step.service}: {step.reason}"
        return faults

    def status(self) -> dict:
        """This node's view of its services, from the latest pass (plain JSON data)."""
        report = self.last_report
        node = {"node": self.config.node, "directory": self.config.directory,
                "passes": self.passes, "last_pass": report.at if report else None,
                "services": {}}
        if report is None:
            return node
        errors = {step.service: step.reason for step in report.plan.steps
                  if step.action is Action.WAIT}
        for outcome in report.outcomes:
            if not outcome.ok:
                errors[outcome.step.service] = outcome.error
        for name, failure in self.memory.failures.items():
            errors.setdefault(name, failure.error)
        for error in report.scan.errors:
            errors.setdefault(os.path.splitext(os.path.basename(error.path))[0], str(error))
        containers = {c.service: c for c in report.containers
                      if c.service is not None
                      and c.name == self.config.container_name(c.service)}
        for name, service in sorted(report.scan.services.items()):
            if not service.matches(self.config.node):
                continue
            ref = service.image_ref
            image = report.images.get(ref)
            remote = report.remotes.get(ref)
            container = containers.get(name)
            running_digests = sorted(local_digests(ref, image)) if (
                image is not None and container is not None
                and container.image_id == image.id) else []
            node["services"][name] = {
                "image": ref,
                "state": container.status if container else "absent",
                "container": container.short_id if container else None,
                "image_id": container.image_id if container else None,
                "running_digest": running_digests[0] if running_digests else None,
                "registry_digest": remote.digest if remote else None,
                "checked_at": remote.checked_at if remote else None,
                "error": errors.get(name) or (remote.error if remote else None),
            }
        return node

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
        report = self.last_report
        if report is not None and report.scan.recheck_in is not None:
            deadline = min(deadline, now + report.scan.recheck_in + 0.05)
        if report is not None and any(c.is_previous for c in report.containers):
            # a container on probation is looked at often: an early exit counts
            deadline = min(deadline, now + constants.PROBATION_CHECK)
        return deadline

    # The loop -------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def request_pass(self, services: Iterable[str] = (), pushes: Iterable[Push] = ()) -> Future:
        """Ask the loop for a pass now; the future gets its PassReport."""
        request = PassRequest(frozenset(services), tuple(pushes))
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
        bind = config.bind or ("0.0.0.0" if config.secret else "127.0.0.1")
        if not config.secret and not _is_loopback(bind):
            raise PullerError(f"refusing to sync on {bind} without a cluster secret: a definition "
                              "is a docker run line run as root on every node; set -secret-file "
                              "or PULLER_SECRET")
        self.cluster = Cluster(
            ClusterConfig(node=config.node, directory=config.directory, port=config.port,
                          bind=bind, cluster=config.cluster, secret=config.secret,
                          join=config.join, zeroconf=config.zeroconf),
            on_change=self.wake,
            handlers={"pull": self._peer_pull, "status": lambda body: self.status()},
        ).start()

    def _peer_pull(self, body: dict) -> dict:
        """A peer asks this node to check and deploy a service now."""
        return self.pull_here(str(body.get("service", "")))

    # What the API needs (control.api.NodeControl) --------------------------------------

    @property
    def node(self) -> str:
        return self.config.node

    @property
    def directory(self) -> str:
        return self.config.directory

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
        self.start_api()
        self.start_cluster()
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
            requests = self._take_requests()
            check = {name for r in requests for name in r.services}
            pushes = [push for r in requests for push in r.pushes]
            try:
                report = self.tick(started, pull_due=pull_due, check=check, pushes=pushes)
            except PullerError as exc:
                log.error("pass failed: %s", exc)
                self._answer(requests, error=exc)
            except Exception as exc:  # the loop must go on whatever one pass hit
                log.exception("pass failed unexpectedly")
                self._answer(requests, error=exc)
            else:
                self._answer(requests, report=report)
            deadline = self._next_deadline(started)
            woken = self._wake.wait(timeout=max(0.0, deadline - time.time()))
            if self._stop.is_set():
                break
            if woken:
                # Coalesce the burst of events an editor makes into one pass.
                time.sleep(constants.WATCH_DEBOUNCE)
                self._wake.clear()
        log.info("puller stopped; containers keep running")

    @staticmethod
    def _answer(requests: list[PassRequest], report: PassReport | None = None,
                error: BaseException | None = None) -> None:
        for request in requests:
            if error is not None:
                request.future.set_exception(error)
            else:
                request.future.set_result(report)

    def close(self) -> None:
        self.stop()
        api, self._api = self._api, None
        if api is not None:
            api.close()
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            cluster.close()
        self._answer(self._take_requests(), error=PullerError("the daemon is stopping"))
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)

    def __enter__(self) -> "Daemon":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
