"""This node's part in the rollouts of its services, around the pure gate.

``Rollouts.gate`` runs in each pass before planning: for every service with a
``rollout:`` field it reads the peers' published states (``peers()``,
injected by the daemon: the node wing never talks to the cluster), chooses
the release, and turns the gate's decision into the services the planner
sees: pinned to the release's digest (take), left out and kept as they run
(hold), or the release run before (revert). ``settle`` runs after the pass
and moves this node's state on (proving → done or failed). The state —
release followed, own state, the release run before, the releases known to
have failed — is kept in ``<state_dir>/rollouts.json``, written atomically,
and published in the node's status for the other nodes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .. import constants
from ..errors import DefinitionError
from ..fsutil import read_json_object, write_atomically
from .container import Container, Image
from .definitions import Service, definition_fields, parse_definition, render_definition
from .history import History, without_pin
from .planner import Action, Failure, Plan, Step, config_hash
from .policy import asked_for
from .rolloutgate import (DONE, FAILED, PROVING, REVERTED, STATES, WAITING, Decision,
                          KnownFailure, Kind, NodeState, Release, Situation, choose_release,
                          decide, definition_id, merge_failures, rollout_view)

log = logging.getLogger(__name__)

#: node name → (when it was last heard, the ``rollouts`` of its status)
PeerRecords = Mapping[str, tuple[float, Mapping[str, Any]]]


@dataclass(frozen=True)
class Mine:
    """This node's memory of one service's rollout."""

    release: Release | None = None
    state: str = WAITING
    since: float = 0.0
    error: str | None = None
    previous: dict | None = None  # {"fields": ..., "digest": ...}: what ran before taking it
    failed: tuple[KnownFailure, ...] = ()
    window: float = 0.0  # proving: its proof window began then (once its container ran)

    def to_json(self) -> dict:
        return {"release": self.release.to_json() if self.release else None,
                "state": self.state, "since": self.since, "error": self.error,
                "previous": self.previous, "failed": [f.to_json() for f in self.failed],
                "window": self.window}

    @classmethod
    def from_json(cls, data: Any) -> "Mine":
        if not isinstance(data, dict):
            return cls()
        previous = data.get("previous")
        if not (isinstance(previous, dict) and isinstance(previous.get("fields"), dict)
                and isinstance(previous.get("digest"), str)):
            previous = None
        state = data.get("state") if data.get("state") in STATES else WAITING
        since, window = data.get("since"), data.get("window")
        return cls(Release.from_json(data.get("release")), state,
                   float(since) if isinstance(since, (int, float)) else 0.0,
                   str(data["error"]) if data.get("error") else None, previous,
                   _failures(data.get("failed")),
                   float(window) if isinstance(window, (int, float)) else 0.0)


def _failures(data: Any) -> tuple[KnownFailure, ...]:
    if not isinstance(data, list):
        return ()
    return tuple(f for f in (KnownFailure.from_json(item) for item in data) if f is not None)


@dataclass
class Gated:
    """What the gate made of one pass's services."""

    services: dict[str, Service]  # what the planner sees
    held: dict[str, str] = field(default_factory=dict)  # service → why it waits
    decisions: dict[str, Decision] = field(default_factory=dict)

    def taken(self, name: str) -> bool:
        """The planner sees the service as its file defines it (pinned or not)."""
        decision = self.decisions.get(name)
        return decision is None or decision.kind is Kind.TAKE

    def explain(self, plan: Plan) -> Plan:
        """The plan with each held service's steps saying why it waits."""
        steps, told = [], set()
        for step in plan.steps:
            if step.service in self.held and step.action is Action.KEEP:
                step = dataclasses.replace(step, reason=self.held[step.service])
                told.add(step.service)
            steps.append(step)
        steps += [Step(Action.KEEP, name, why) for name, why in sorted(self.held.items())
                  if name not in told]
        return Plan(tuple(steps))


class Rollouts:
    """The rollouts of this node's services; thread-safe (status reads it)."""

    def __init__(self, path: str, node: str, history: History,
                 container_name: Callable[[str], str] = str,
                 peers: Callable[[], PeerRecords | None] = dict):
        self.path = path
        self.node = node
        self.history = history
        self.container_name = container_name
        self.peers = peers  # the daemon injects the cluster's view
        self._lock = threading.Lock()
        self.mine: dict[str, Mine] = self._load()
        self.recheck_at: float | None = None
        self._busy: bool | None = None  # None: no rollout; else whether one goes on
        self._told: dict[str, str] = {}  # the hold last logged, by service
        # what the last gate saw of each rollout (and its local definition id): with
        # ``mine``, the view status shows
        self._situations: dict[str, tuple[Situation, str]] = {}

    def gate(self, every: Mapping[str, Service], services: Mapping[str, Service],
             remotes: Mapping[str, Any], now: float,
             local_digest: Callable[[str], str | None] = lambda ref: None) -> Gated:
        """``services`` (this node's) as the planner must see them; ``every``: all defined.
        ``local_digest(ref)``: the digest of the local image, when the registry cannot tell."""
        gated = Gated(dict(services))
        peers = self.peers()
        ready, peers = peers is not None, peers or {}
        mine, rechecks, busy = dict(self.mine), [], not ready
        situations: dict[str, tuple[Situation, str]] = {}
        for name, service in sorted(every.items()):
            if service.rollout is None:
                continue
            situation, local = self._situation(name, service, peers, mine.get(name, Mine()), now)
            candidate = _candidate(service, local, remotes)
            if candidate is None and situation.leader() == self.node and name in services:
                digest = local_digest(service.image_ref)  # the registry cannot be asked
                candidate = Release(local, digest) if digest else None
            memo = dataclasses.replace(mine.get(name, Mine()), failed=situation.failed)
            release = choose_release(situation, memo.release, candidate)
            if release != memo.release:  # what runs after a failure is the release before it
                memo = Mine(release, WAITING, now, None, memo.previous
                            if memo.state in (FAILED, REVERTED) else None, memo.failed)
            busy = busy or (candidate is not None and release != candidate)
            if name in services:
                decision = decide(situation, release, local, _node_state(memo, now)) if ready \
                    else Decision(Kind.HOLD, release, f"rollout of {name}: waiting to hear "
                                                      "from the other nodes")
                own = (situation.leader() == self.node and not service.digest
                       and candidate is not None and decision.release == candidate)
                memo = self._apply(gated, service, decision, memo, now, follows=not own)
                if decision.recheck_at is not None:
                    rechecks.append(decision.recheck_at)
            mine[name] = memo
            situations[name] = (situation, local)
            busy = busy or not _view(situation, local, memo)["ended"]
        with self._lock:
            self.recheck_at = min(rechecks, default=None)
            self._situations = situations
            self._busy = busy if situations else None
            self._keep(mine)
        return gated

    def _situation(self, name: str, service: Service, peers: PeerRecords, memo: Mine,
                   now: float) -> tuple[Situation, str]:
        states: dict[str, NodeState] = {}
        failed = memo.failed
        for node, (seen, rollouts) in peers.items():
            if node == self.node:
                continue
            record = rollouts.get(name) if isinstance(rollouts, Mapping) else None
            states[node] = _peer_state(record, seen)
            if isinstance(record, Mapping):
                failed = merge_failures(failed, _failures(record.get("failed")))
        states[self.node] = _node_state(memo, now)
        participants = tuple(sorted(n for n in states if service.matches(n)))
        local = definition_id(definition_fields(service))
        return Situation(name, service.rollout, self.node, participants, states, failed,
                         now), local

    def _apply(self, gated: Gated, service: Service, decision: Decision, memo: Mine,
               now: float, follows: bool = True) -> Mine:
        """The decision on the planner's services; this node's memory after it.
        ``follows``: the release is the one the first node ran, its update policy applied
        there; else it is the new image this node's (the first node's) own registry check
        found, which the service's update policy gates here."""
        name = service.name
        gated.decisions[name] = decision
        if decision.kind is Kind.TAKE and decision.release is not None:
            gated.services[name] = dataclasses.replace(
                service, digest=decision.release.digest,
                asked_ref=asked_for(service), follows_release=follows)
            if memo.state == WAITING:
                log.info("%s: %s", name, decision.reason)
                return dataclasses.replace(memo, state=PROVING, since=now, error=None,
                                           previous=memo.previous or self._running(name),
                                           window=now)
            return memo
        if decision.kind is Kind.REVERT:
            previous = self._previous_service(service, memo.previous)
            if previous is not None:
                gated.services[name] = previous
                if memo.state != REVERTED:
                    log.info("%s: %s", name, decision.reason)
                    return dataclasses.replace(memo, state=REVERTED, since=now)
                return memo
        gated.services.pop(name, None)
        gated.held[name] = decision.reason
        if self._told.get(name) != decision.reason:  # each new reason once, not every pass
            self._told[name] = decision.reason
            log.info("%s: holding: %s", name, decision.reason)
        return memo

    def _running(self, name: str) -> dict | None:
        """The release this node ran last (its history): a rollback's target."""
        for entry in reversed(self.history.revisions(name)):
            if entry.get("digest"):
                return {"fields": without_pin(entry["fields"]), "digest": entry["digest"]}
        return None

    @staticmethod
    def _previous_service(service: Service, previous: dict | None) -> Service | None:
        if previous is None:
            return None
        fields = {**previous["fields"], "digest": previous["digest"]}
        try:
            return parse_definition(render_definition(fields), service.path)
        except DefinitionError as exc:
            log.warning("%s: cannot go back to the previous release: %s", service.name, exc)
            return None

    def settle(self, gated: Gated, containers: list[Container], images: Mapping[str, Image | None],
               failures: Mapping[str, Failure], now: float) -> None:
        """After the pass: a release taken here is proven, or failed."""
        current = {c.service: c for c in containers
                   if c.service and c.name == self.container_name(c.service)}
        aside = {c.service for c in containers if c.is_previous}
        with self._lock:
            mine = dict(self.mine)
            for name, decision in gated.decisions.items():
                memo = mine.get(name)
                if decision.kind is not Kind.TAKE or memo is None or memo.state != PROVING:
                    continue
                service = gated.services[name]
                mine[name] = memo = _proof(memo, service, current.get(name), name in aside,
                                           images.get(service.image_ref), failures.get(name),
                                           now, self.node)
                # a pass is due when its proof window ends, or at once to show a new state
                end = memo.window + _health_timeout(service) if memo.state == PROVING else now
                if memo != self.mine.get(name) or memo.state == PROVING:
                    self.recheck_at = min(self.recheck_at or end, end)
            self._keep(mine)

    def _keep(self, mine: dict[str, Mine]) -> None:
        """Remember ``mine`` (under the lock); written when it changed."""
        if mine == self.mine:
            return
        self.mine = mine
        try:
            write_atomically(self.path, json.dumps(
                {name: memo.to_json() for name, memo in sorted(mine.items())},
                indent=1, sort_keys=True), mode=0o600)
        except OSError as exc:
            log.warning("cannot write the rollout memory %s: %s", self.path, exc)

    def _load(self) -> dict[str, Mine]:
        data = read_json_object(self.path, lambda why: log.warning(
            "the rollout memory %s %s; starting without it", self.path, why))
        return {str(name): Mine.from_json(item) for name, item in data.items()}

    def status(self) -> dict[str, dict]:
        """What this node publishes of each rollout: its own state, and its view (with
        that state as it is now, settled after the last gate)."""
        with self._lock:
            return {name: {**memo.to_json(), "view": _view(*self._situations[name], memo)}
                    for name, memo in sorted(self.mine.items()) if name in self._situations}

    def busy(self) -> bool | None:
        """None: no service has a rollout; True: one goes on (peers are asked often)."""
        with self._lock:
            return self._busy

    def due(self, now: float) -> bool:
        """A decision waits for a moment that has come (a pause, a node's deadline)."""
        with self._lock:
            return self.recheck_at is not None and now >= self.recheck_at


def _candidate(service: Service, local: str, remotes: Mapping[str, Any]) -> Release | None:
    """The release this node would propose: its definition, and the pinned or
    registry digest of its tag."""
    if service.digest:
        return Release(local, service.digest)
    remote = remotes.get(service.image_ref)
    digest = getattr(remote, "digest", None)
    return Release(local, digest) if digest else None


def _view(situation: Situation, local: str, memo: Mine) -> dict:
    """The rollout as this node sees it, with its own state ``memo``."""
    situation = dataclasses.replace(
        situation, states={**situation.states, situation.me: _node_state(memo, situation.now)})
    return {**rollout_view(situation, memo.release), "definition": local}


def _node_state(memo: Mine, now: float) -> NodeState:
    return NodeState(memo.release, memo.state, memo.since, memo.error, now)


def _peer_state(record: Any, seen: float) -> NodeState:
    """A peer's published record for one service (malformed parts: waiting)."""
    if not isinstance(record, Mapping):
        return NodeState(seen=seen)
    state = record.get("state") if record.get("state") in STATES else WAITING
    since = record.get("since")
    return NodeState(Release.from_json(record.get("release")), state,
                     float(since) if isinstance(since, (int, float)) else 0.0,
                     str(record["error"]) if record.get("error") else None, seen)


def _proof(memo: Mine, service: Service, container: Container | None, on_probation: bool,
           image: Image | None, failure: Failure | None, now: float, node: str) -> Mine:
    """A release on proof here: failed (the planner put the previous one back,
    or the new container died), done (it stayed up its health timeout), or still proving."""
    if failure is not None and failure.at >= memo.since:
        return _failed(memo, failure.error, node)
    if (container is None or image is None
            or container.config_hash != config_hash(service.run.canonical(), image.id)):
        # not running it yet (its image is being pulled, say): the window starts later
        return dataclasses.replace(memo, window=now)
    if container.status in ("exited", "dead"):
        return _failed(memo, container.describe_state(), node)
    timeout = _health_timeout(service)
    if container.status == "running" and not on_probation and now >= memo.window + timeout:
        log.info("%s: %s proved itself on this node", service.name, memo.release.short)
        return dataclasses.replace(memo, state=DONE, since=now)
    return memo


def _health_timeout(service: Service) -> float:
    if service.health_timeout is None:
        return constants.DEFAULT_HEALTH_TIMEOUT
    return service.health_timeout


def _failed(memo: Mine, error: str, node: str) -> Mine:
    known = merge_failures(memo.failed, [KnownFailure(memo.release, node, error)])
    return dataclasses.replace(memo, state=FAILED, error=error, failed=known)
