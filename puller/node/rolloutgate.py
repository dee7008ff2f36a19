"""The rollout gate, pure: may this node take a release of a service now?

A release is (definition id, image digest). Every node of a rollout publishes
its state for the release it follows (``NodeState``); ``choose_release``
says which release the rollout is about (the first live node by name
proposes, the others adopt its proposal, and it stays until the rollout
ended), ``decide`` turns the published states into ``Take`` (deploy exactly
``repo@digest``), ``Hold`` (keep what runs, with the reason) or ``Revert``
(go back to the release run before), and ``rollout_view`` says where the
rollout stands, for ``puller status``. No I/O, no clock: ``now`` is given.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .rolloutspec import RolloutSpec

WAITING, PROVING, DONE, FAILED, REVERTED, SKIPPED = (
    "waiting", "proving", "done", "failed", "reverted", "skipped")
STATES = (WAITING, PROVING, DONE, FAILED, REVERTED)
FINAL = (DONE, FAILED, REVERTED, SKIPPED)  # a node in one of these no longer holds a rollout


def definition_id(fields: Mapping[str, Any]) -> str:
    """The id of a definition: the same on every node once its file synced."""
    text = json.dumps(dict(fields), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Release:
    definition: str
    digest: str

    @property
    def short(self) -> str:
        return f"{self.digest[:19]}…" if len(self.digest) > 19 else self.digest

    def to_json(self) -> dict:
        return {"definition": self.definition, "digest": self.digest}

    @classmethod
    def from_json(cls, data: Any) -> "Release | None":
        if (isinstance(data, dict) and isinstance(data.get("definition"), str)
                and isinstance(data.get("digest"), str) and data["digest"].startswith("sha256:")):
            return cls(data["definition"], data["digest"])
        return None


@dataclass(frozen=True)
class NodeState:
    """What one node published for one service's rollout, and when it was heard."""

    release: Release | None = None
    state: str = WAITING
    since: float = 0.0
    error: str | None = None
    seen: float = 0.0  # when this node was last heard from (this node: now)

    def of(self, release: Release) -> str:
        """This node's state for ``release`` (waiting when it follows another)."""
        return self.state if self.release == release else WAITING


@dataclass(frozen=True)
class KnownFailure:
    """A release that failed somewhere: never taken again anywhere."""

    release: Release
    node: str
    error: str

    def to_json(self) -> dict:
        return {**self.release.to_json(), "node": self.node, "error": self.error}

    @classmethod
    def from_json(cls, data: Any) -> "KnownFailure | None":
        release = Release.from_json(data)
        if release is None or not isinstance(data.get("node"), str):
            return None
        return cls(release, data["node"], str(data.get("error") or "failed"))


@dataclass(frozen=True)
class Situation:
    """Everything the gate looks at for one service."""

    service: str
    spec: RolloutSpec
    me: str
    participants: tuple[str, ...]  # the nodes whose name matches, sorted (me if I match)
    states: Mapping[str, NodeState]  # by node: this one and every peer heard of
    failed: tuple[KnownFailure, ...] = ()
    now: float = 0.0

    def skipped(self, node: str) -> bool:
        """A peer not heard from for ``node_timeout`` seconds is skipped."""
        if node == self.me:
            return False
        state = self.states.get(node)
        return state is None or self.now - state.seen >= self.spec.node_timeout

    def skipped_at(self, node: str) -> float:
        state = self.states.get(node)
        return (state.seen if state else 0.0) + self.spec.node_timeout

    def leader(self) -> str | None:
        """The first live participant by name: it proposes the release."""
        return next((n for n in self.participants if not self.skipped(n)), None)

    def state_of(self, node: str, release: Release) -> str:
        if any(f.release == release and f.node == node for f in self.failed):
            return FAILED
        state = self.states.get(node, NodeState()).of(release)
        if state in (DONE, FAILED, REVERTED):
            return state
        return SKIPPED if self.skipped(node) else state

    def failure(self, release: Release) -> KnownFailure | None:
        """Why ``release`` halted: the first node (by name) it failed on."""
        for node in self.participants:
            if self.states.get(node, NodeState()).of(release) == FAILED:
                state = self.states[node]
                return KnownFailure(release, node, state.error or "failed")
        return next((f for f in self.failed if f.release == release), None)

    def ended(self, release: Release) -> bool:
        """Every participant done, failed, reverted or skipped; or halted, once
        no live node is still on its way (proving, or, to roll back, done)."""
        if self.failure(release) is None:
            return all(self.state_of(n, release) in FINAL for n in self.participants)
        moving = (PROVING, DONE) if self.spec.on_failure == "rollback" else (PROVING,)
        return not any(self.state_of(n, release) in moving and not self.skipped(n)
                       for n in self.participants)


def choose_release(situation: Situation, current: Release | None,
                   candidate: Release | None) -> Release | None:
    """The release this node follows. ``current``: the one it followed so far;
    ``candidate``: what its own definition and registry check say now.

    The leader proposes: a new definition at once, a moved tag only once the
    rollout of ``current`` ended (the move becomes the next rollout). The
    others adopt the leader's proposal."""
    leader = situation.leader()
    if leader is not None and leader != situation.me:
        proposed = situation.states.get(leader, NodeState()).release
        return proposed or current
    if candidate is None:
        return current
    if current is None:
        adopted = [s.release for n, s in sorted(situation.states.items())
                   if n != situation.me and s.release is not None
                   and s.release.definition == candidate.definition]
        return adopted[0] if adopted else candidate
    if candidate.definition != current.definition:
        return candidate
    if candidate.digest != current.digest and situation.ended(current):
        return candidate
    return current


class Kind(enum.Enum):
    TAKE = "take"
    HOLD = "hold"
    REVERT = "revert"


@dataclass(frozen=True)
class Decision:
    kind: Kind
    release: Release | None = None
    reason: str = ""
    recheck_at: float | None = None  # decide again then (a pause, a node's deadline)


def decide(situation: Situation, release: Release | None, local_definition: str,
           mine: NodeState) -> Decision:
    """Take, hold or revert ``release`` on this node (``mine``: its own state)."""
    name, me = situation.service, situation.me
    if release is None:
        leader = situation.leader()
        who = "this node" if leader in (None, me) else leader
        return Decision(Kind.HOLD, None, f"rollout of {name}: waiting for {who} to propose a "
                                         "release (its definition and registry digest)")
    if release.definition != local_definition:
        return Decision(Kind.HOLD, release, f"rollout of {name}: waiting for this node's "
                                            "definition to match the release")
    taken = mine.release == release and mine.state in (PROVING, DONE, FAILED)
    failure = situation.failure(release)
    if failure is not None:
        if mine.of(release) == FAILED:  # the planner keeps what it put back
            return Decision(Kind.TAKE, release, f"rollout of {name}: failed here")
        if taken:
            if situation.spec.on_failure == "rollback":
                return Decision(Kind.REVERT, release, f"rollout of {name}: failed on "
                                                      f"{failure.node}: {failure.error}; rolling back")
            return Decision(Kind.TAKE, release, f"rollout of {name}: halted, keeping it")
        return Decision(Kind.HOLD, release, f"rollout of {name} halted: failed on "
                                            f"{failure.node}: {failure.error}")
    if taken:
        return Decision(Kind.TAKE, release, f"rollout of {name}: taken")
    return _wave_gate(situation, release)


def _wave_gate(situation: Situation, release: Release) -> Decision:
    """Take once every earlier wave is done (or skipped) and the pause passed."""
    waves = situation.spec.waves(situation.participants)
    me, name = situation.me, situation.service
    index = next((i for i, wave in enumerate(waves) if me in wave), None)
    if index is None:
        return Decision(Kind.HOLD, release, f"rollout of {name}: this node takes no part")
    where = f"rollout of {name}: wave {index + 1} of {len(waves)}"
    finished = 0.0
    for node in (n for wave in waves[:index] for n in wave):
        state = situation.state_of(node, release)
        if state == SKIPPED:
            finished = max(finished, situation.skipped_at(node))
        elif state == DONE:
            finished = max(finished, situation.states[node].since)
        else:
            return Decision(Kind.HOLD, release,
                            f"{where}, waiting for {node} to prove {release.short}",
                            recheck_at=situation.skipped_at(node))
    if index and situation.now < finished + situation.spec.pause:
        until = finished + situation.spec.pause
        return Decision(Kind.HOLD, release, f"{where}, pausing {situation.spec.pause:g} s "
                                            "after the previous wave", recheck_at=until)
    return Decision(Kind.TAKE, release, f"{where}: taking {release.short}")


def rollout_view(situation: Situation, release: Release | None) -> dict:
    """Where the rollout of ``release`` stands (plain JSON data, for status)."""
    waves = situation.spec.waves(situation.participants)
    view: dict[str, Any] = {
        "release": release.to_json() if release else None,
        "waves": waves, "leader": situation.leader(), "wave": None, "nodes": {},
        "halted": None, "ended": False,
    }
    if release is None:
        return view
    for number, wave in enumerate(waves, 1):
        for node in wave:
            state = situation.state_of(node, release)
            known = situation.states.get(node, NodeState())
            view["nodes"][node] = {"state": state, "wave": number,
                                   "since": known.since if known.release == release else None,
                                   "error": known.error if state == FAILED else None}
        if view["wave"] is None and any(view["nodes"][n]["state"] not in FINAL for n in wave):
            view["wave"] = number
    failure = situation.failure(release)
    if failure is not None:
        view["halted"] = f"failed on {failure.node}: {failure.error}"
        view["nodes"].setdefault(failure.node, {"state": FAILED, "wave": None, "since": None,
                                                "error": failure.error})["error"] = failure.error
    view["ended"] = situation.ended(release)
    return view


def merge_failures(known: Sequence[KnownFailure], more: Sequence[KnownFailure],
                   keep: int = 20) -> tuple[KnownFailure, ...]:
    """``known`` with the failures of ``more`` it lacks (one per release and node)."""
    merged = list(known)
    seen = {(f.release, f.node) for f in merged}
    for failure in more:
        if (failure.release, failure.node) not in seen:
            seen.add((failure.release, failure.node))
            merged.append(failure)
    return tuple(merged[-keep:])
