"""Notifications: what the passes did, told to people through Apprise.

``EventWatch.update(report)`` turns each pass's report into events (pure
bookkeeping: what each service ran before, which faults were already told).
``Notifier`` delivers them: a worker thread fed by a queue (with a sentinel),
owned and closed by the notifier, batches the events of a couple of seconds
into one message per destination; each try has a timeout, tries are bounded,
and a destination that fails is logged once, never fatal, never waited for by
the loop.
"""

from __future__ import annotations

import enum
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .. import constants
from ..errors import PullerError
from ..node.container import Container
from ..node.imageversion import Version
from ..node.planner import Action, Target, release_digest
from ..node.report import PassReport

log = logging.getLogger(__name__)



class Kind(enum.Enum):
    DEPLOYED = "deployed"
    PUT_BACK = "put back"
    FAILED = "failed"
    BAD_DEFINITION = "bad definition"
    REGISTRY_DOWN = "registry unreachable"
    REGISTRY_BACK = "registry recovered"
    NEW_IMAGE = "new image available"  # under update: notify|manual, once per image
    ROLLOUT_HALTED = "rollout halted"  # told by the node it failed on, once per release


@dataclass(frozen=True)
class Event:
    kind: Kind
    node: str
    service: str
    old: Version | None = None
    new: Version | None = None
    why: str = ""
    urls: tuple[str, ...] = ()  # the service's own destinations

    def text(self) -> str:
        """One line: service, node, old → new version, what happened and why."""
        if self.kind in (Kind.BAD_DEFINITION, Kind.REGISTRY_DOWN, Kind.REGISTRY_BACK):
            running = self.old.detail() if self.old else "nothing yet"
            change = f"runs {running}"
        else:
            was = self.old.label() if self.old else "new"
            change = f"{was} → {self.new.detail() if self.new else '?'}"
        why = f": {self.why}" if self.why else ""
        return f"{self.service} on {self.node}: {change}: {self.kind.value}{why}"


def target_version(target: Target, report: PassReport) -> Version:
    ref = target.service.image_ref
    digest = release_digest(ref, target.image, report.remotes.get(ref))
    return Version(target.service.tag, digest or target.service.digest or target.image.id,
                   target.image.version)


def running_versions(report: PassReport) -> dict[str, Version]:
    """What each service of this node runs up to date after the pass."""
    running = {c.service: c for c in report.containers
               if c.service and c.running and not c.is_aside}
    found = {}
    for name, service in report.scan.services.items():
        container = running.get(name)
        image = report.images.get(service.image_ref)
        if container is None or image is None or container.image_id != image.id:
            continue
        digest = release_digest(service.image_ref, image, report.remotes.get(service.image_ref))
        found[name] = Version(service.tag, digest or service.digest or image.id, image.version)
    return found


@dataclass
class EventWatch:
    """The events of each pass, from its report and what earlier passes showed."""

    node: str
    ran: dict[str, Version] = field(default_factory=dict)  # what each service ran
    before: dict[str, Version] = field(default_factory=dict)  # what it ran before its deploy
    faults: dict[str, str] = field(default_factory=dict)  # the faults already told
    told: set[tuple[str, str]] = field(default_factory=set)  # rollouts halted, already told

    def update(self, report: PassReport) -> list[Event]:
        events = [event for outcome in report.outcomes
                  for event in self._outcome(outcome.step, outcome.error, outcome.restored,
                                             report)]
        events += self._faults(report)
        events += self._new_images(report)
        told = {event.service for event in events}
        for name, version in running_versions(report).items():
            # a deploy in flight: its outcome, on a later pass, tells what changed
            if name not in told and name not in report.deploying:
                self.ran[name] = version
        self.faults = dict(report.faults)
        return events

    def halted(self, rollouts: dict[str, dict], report: PassReport) -> list[Event]:
        """A rollout that halted because it failed on this node, told once per
        release (by this node only: every node sees the halt, one tells it)."""
        events = []
        for name, rollout in sorted(rollouts.items()):
            view = rollout.get("view") or {}
            release = json.dumps(view.get("release"), sort_keys=True)
            halted = view.get("halted") or ""
            if not halted.startswith(f"failed on {self.node}: ") or (name, release) in self.told:
                continue
            self.told.add((name, release))
            digest = (view.get("release") or {}).get("digest")
            new = Version(None, digest) if digest else None
            events.append(self._event(Kind.ROLLOUT_HALTED, name, report, old=self.ran.get(name),
                                      new=new, why=f"{halted}; the nodes not yet reached keep "
                                                   "their release"))
        return events

    def _event(self, kind: Kind, name: str, report: PassReport, **fields) -> Event:
        service = report.scan.services.get(name)
        return Event(kind, self.node, name, urls=service.notify if service else (), **fields)

    def _outcome(self, step, error: str | None, restored: bool,
                 report: PassReport) -> list[Event]:
        name = step.service
        if step.action in (Action.CREATE, Action.RECREATE) and step.target is not None:
            old, new = self.ran.get(name), target_version(step.target, report)
            if error is None:
                if old is not None:
                    self.before[name] = old
                self.ran[name] = new
                return [self._event(Kind.DEPLOYED, name, report, old=old, new=new,
                                    why=step.reason)]
            after = f"; {old.label() if old else 'the previous container'} runs again" \
                if restored else ""
            return [self._event(Kind.FAILED, name, report, old=old, new=new,
                                why=f"{error}{after}")]
        if step.action is Action.RESTORE and error is None:
            old = self.ran.get(name)
            new = self.before.pop(name, None) or _container_version(step.container)
            self.ran[name] = new
            return [self._event(Kind.PUT_BACK, name, report, old=old, new=new, why=step.reason)]
        if step.action is Action.RESTORE:
            return [self._event(Kind.FAILED, name, report, old=self.ran.get(name),
                                new=self.before.get(name) or _container_version(step.container),
                                why=f"could not put the previous container back: {error}")]
        return []

    def _new_images(self, report: PassReport) -> list[Event]:
        """A new image that waits for a person, told once (the daemon's memory
        says which are new: ``report.announced``)."""
        events = []
        for step in report.plan.steps:
            if step.action is Action.HOLD and step.hold:
                self.ran.setdefault(step.service, step.hold.old)  # what runs, after a restart
            if step.action is Action.HOLD and step.hold and step.service in report.announced:
                held = step.hold
                waits = ("waiting for approval" if held.policy == "manual"
                         else "not deployed (update: notify)")
                events.append(self._event(Kind.NEW_IMAGE, step.service, report,
                                          old=self.ran.get(step.service) or held.old,
                                          new=held.new,
                                          why=f"{waits}; `puller approve {step.service}` "
                                              "deploys it"))
        return events

    def _faults(self, report: PassReport) -> list[Event]:
        events = []
        for key, message in report.faults.items():
            if key.startswith(("registry ", "service ")) or self.faults.get(key) == message:
                continue  # a bad definition, new or changed
            name = _stem(key)
            events.append(self._event(Kind.BAD_DEFINITION, name, report,
                                      old=self.ran.get(name), why=message))
        for ref, users in _users(report).items():
            key = f"registry {ref}"
            remote = report.remotes.get(ref)
            down = key in report.faults and remote is not None and not remote.fallback
            if down and key not in self.faults:
                events += [self._event(Kind.REGISTRY_DOWN, name, report, old=self.ran.get(name),
                                       why=report.faults[key]) for name in users]
            elif key in self.faults and key not in report.faults:
                events += [self._event(Kind.REGISTRY_BACK, name, report, old=self.ran.get(name),
                                       why=f"{ref} answers again") for name in users]
        return events


def _users(report: PassReport) -> dict[str, list[str]]:
    """The services of the scan by image ref."""
    users: dict[str, list[str]] = {}
    for name, service in sorted(report.scan.services.items()):
        users.setdefault(service.image_ref, []).append(name)
    return users


def _stem(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[0] if "." in base else base


def _container_version(container: Container | None) -> Version | None:
    return Version(None, container.image_id) if container and container.image_id else None


# Delivery --------------------------------------------------------------------------

Send = Callable[[str, str, str, float], bool]  # url, title, body, timeout → delivered
_STOP = object()


def check_urls(urls: Iterable[str]) -> tuple[str, ...]:
    """The URLs, each one Apprise knows; a PullerError naming the first it does not."""
    import apprise

    for url in urls:
        if apprise.Apprise.instantiate(url) is None:
            raise PullerError(f"-notify: {shown(url)} is not a notification URL Apprise knows "
                              "(json://HOST/PATH, ntfy://TOPIC, slack://..., mailto://...; see "
                              "Apprise's list of services)")
    return tuple(urls)


def shown(url: str) -> str:
    """A URL fit for a log line: Apprise's private form (no passwords, no tokens)."""
    import apprise

    plugin = apprise.Apprise.instantiate(url)
    if plugin is not None:
        return plugin.url(privacy=True).split("?", 1)[0]
    return url.split("://", 1)[0] + "://…"


def apprise_send(url: str, title: str, body: str, timeout: float) -> bool:
    import apprise

    plugin = apprise.Apprise.instantiate(url)
    if plugin is None:
        return False
    plugin.socket_connect_timeout = plugin.socket_read_timeout = timeout
    return bool(plugin.notify(body=body, title=title))


class _Destination:
    """One destination's worker: a queue, a sentinel, batches, bounded tries."""

    def __init__(self, url: str, node: str, send: Send, closed: threading.Event):
        self.url, self.node, self.send, self.closed = url, node, send, closed
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.failing = False
        self.thread = threading.Thread(target=self._run, name="puller-notify", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            first = self.queue.get()
            if first is _STOP:
                return
            batch, stop = [first], False
            deadline = time.monotonic() + constants.NOTIFY_BATCH
            while not stop and (left := deadline - time.monotonic()) > 0:
                try:
                    item = self.queue.get(timeout=left)
                except queue.Empty:
                    break
                stop = item is _STOP
                if not stop:
                    batch.append(item)
            try:
                self._deliver(batch)
            except Exception:  # the worker must go on whatever the destination did
                log.exception("notifications to %s could not be sent", shown(self.url))
            if stop:
                return

    def _deliver(self, batch: list[Event]) -> None:
        node = self.node or batch[0].node
        title = (f"puller on {node}: {batch[0].kind.value} {batch[0].service}"
                 if len(batch) == 1 else f"puller on {node}: {len(batch)} events")
        body = "\n".join(event.text() for event in batch)
        for attempt in range(max(1, constants.NOTIFY_ATTEMPTS)):
            if attempt and self.closed.wait(constants.NOTIFY_RETRY_WAIT):
                break  # closing: no more tries
            try:
                sent = self.send(self.url, title, body, constants.NOTIFY_TIMEOUT)
            except Exception as exc:  # a destination's bug must not end the worker
                log.debug("notification to %s raised %s", shown(self.url), exc)
                sent = False
            if sent:
                if self.failing:
                    self.failing = False
                    log.info("notifications to %s work again", shown(self.url))
                return
        if not self.failing:
            self.failing = True
            log.warning("notifications to %s fail; %d event(s) not told (logged once until "
                        "it works again)", shown(self.url), len(batch))
        else:
            log.debug("notifications to %s still fail; %d event(s) not told",
                      shown(self.url), len(batch))


class Notifier:
    """Delivers events, batched per destination, each destination from a worker
    thread of its own (a slow one delays nobody else).

    ``notify`` never blocks; ``close()`` is idempotent and waits at most about
    one try's timeout."""

    def __init__(self, urls: Iterable[str] = (), node: str = "", send: Send | None = None):
        self.urls = tuple(urls)
        self.node = node
        self.send = send or apprise_send
        self._destinations: dict[str, _Destination] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def notify(self, events: Iterable[Event]) -> None:
        for event in events:
            for url in dict.fromkeys(self.urls + event.urls):
                with self._lock:
                    if self._closed.is_set():
                        return
                    destination = self._destinations.get(url)
                    if destination is None:
                        destination = _Destination(url, self.node, self.send, self._closed)
                        self._destinations[url] = destination
                destination.queue.put(event)

    def close(self) -> None:
        with self._lock:
            self._closed.set()
            destinations = list(self._destinations.values())
        for destination in destinations:
            destination.queue.put(_STOP)
        deadline = time.monotonic() + constants.NOTIFY_TIMEOUT + 2
        for destination in destinations:
            destination.thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> "Notifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
