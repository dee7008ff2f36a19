"""What one reconcile pass saw and did, and what it did for one service.

Plain values: the daemon makes them, the API and the cluster's pull requests
read them.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import Future
from dataclasses import dataclass, field

from ..images.freshness import Remote
from ..images.hooks import Push
from .container import Container, Image
from .definitions import Scan
from .executor import Outcome
from .planner import Plan


@dataclass
class PassRequest:
    """A pass asked for from outside the loop (an HTTP trigger, a registry hook)."""

    services: frozenset[str] = frozenset()  # ask the registry about their images now
    pushes: tuple[Push, ...] = ()  # tags pushed, from registry notifications
    approvals: tuple[tuple[str, str], ...] = ()  # (service, image id) a person approved
    future: Future = field(default_factory=Future)
    # what the passes it waited through did (background pulls and deploys end
    # on a later pass than the one that started them)
    pulls: list[Outcome] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def awaited(self) -> frozenset[str]:
        """The services whose pulls and deploys the answer waits for."""
        return self.services | {name for name, _ in self.approvals}

    def carry(self, report: "PassReport") -> None:
        """Keep what ``report`` did: the request waits for a later pass."""
        self.pulls.extend(report.pulls)
        self.outcomes.extend(report.outcomes)

    def answer(self, report: "PassReport") -> "PassReport":
        """``report`` with what the passes it waited through did before it."""
        if not (self.pulls or self.outcomes):
            return report
        return dataclasses.replace(report, pulls=(*self.pulls, *report.pulls),
                                   outcomes=(*self.outcomes, *report.outcomes))


@dataclass(frozen=True)
class PassReport:
    """What one pass saw and did."""

    scan: Scan
    plan: Plan
    at: float = 0.0
    remotes: dict[str, Remote] = field(default_factory=dict)
    images: dict[str, Image | None] = field(default_factory=dict)
    containers: tuple[Container, ...] = ()  # this node's, after the pass
    pulls: tuple[Outcome, ...] = ()
    outcomes: tuple[Outcome, ...] = ()
    docker_calls: int = 0
    faults: dict[str, str] = field(default_factory=dict)
    announced: tuple[str, ...] = ()  # services whose waiting new image is told of this pass
    deploying: frozenset[str] = frozenset()  # services with a deploy job in flight after it


def service_result(report: PassReport, name: str, ref: str) -> dict:
    """What one pass did for one service (plain JSON data)."""
    remote = report.remotes.get(ref)
    planned = [s for s in report.plan.steps if s.service == name]
    outcomes = [o for o in report.outcomes if o.step.service == name]
    # a background deploy's steps were planned by an earlier pass: they come first
    steps = [o.step for o in outcomes if o.step not in planned] + planned
    pulls = [o for o in report.pulls if name in o.step.service.split(", ")]
    errors = [o.error for o in outcomes + pulls if not o.ok]
    return {
        "service": name,
        "image": ref,
        "registry_digest": remote.digest if remote else None,
        "registry_error": remote.error if remote else None,
        "pulled": any(o.ok for o in pulls),
        "steps": [{"action": s.action.value, "reason": s.reason} for s in steps],
        "changed": any(o.ok for o in outcomes),
        "errors": errors,
    }
