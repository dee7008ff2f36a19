"""Services with a deploy job in flight are left alone by the pass (pure).

A background deploy (``deploys.DeployJobs``) may take a container's whole stop
grace period. Meanwhile later passes go on with the other services; for this
one they plan nothing: every step the planner wanted for it becomes a KEEP
that says what is in progress and since when. Its outcome is folded into the
memory on the pass after the job ended, and that pass plans it afresh from
the containers it then finds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from .planner import Action, Plan, Step


@dataclass(frozen=True)
class InFlight:
    """One service's deploy job: when the pass started it, and what it does."""

    service: str
    started: float
    steps: tuple[Step, ...] = ()

    def reason(self, now: float) -> str:
        age = max(0.0, now - self.started)
        doing = "; ".join(f"{step.action.value}: {step.reason}" for step in self.steps
                          if step.action.changes_something)
        return f"deploying (started {age:.0f} s ago{': ' + doing if doing else ''})"


def job_steps(the_plan: Plan) -> list[list[Step]]:
    """Each service's steps, for the services the plan changes: one job each."""
    return [steps for steps in the_plan.by_service().values()
            if any(step.action.changes_something for step in steps)]


def leave_alone(the_plan: Plan, deploying: Mapping[str, InFlight], now: float) -> Plan:
    """``the_plan`` with every step of a service in ``deploying`` turned into a
    KEEP (one per container it names, so what the memory keeps of those
    containers stays); other services' steps are untouched, in order."""
    if not deploying:
        return the_plan
    steps: list[Step] = []
    held: dict[str, set[str | None]] = {}
    for step in the_plan.steps:
        job = deploying.get(step.service)
        if job is None:
            steps.append(step)
            continue
        seen = held.setdefault(step.service, set())
        for container in _containers(step):
            key = container.id if container is not None else None
            if key in seen or (container is None and seen):
                continue
            seen.add(key)
            steps.append(Step(Action.KEEP, step.service, job.reason(now), container=container))
    return Plan(tuple(steps))


def _containers(step: Step) -> Sequence:
    found = [c for c in (step.container, step.failed) if c is not None]
    return found or [None]
