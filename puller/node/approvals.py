"""What the update policy remembers between passes (pure): the images a
person approved, and the new images already told of.

An approval names the image id that waited when the person approved, so a
newer image pushed meanwhile is not deployed in its stead; it is kept (in
the daemon's memory, on disk) until a container runs that image, or the
service's image moves on, or the service is gone. An image is told of once
per service ("new image available"), across restarts too.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping

from .. import constants
from .container import Container, Image
from .definitions import Service
from .planner import Action, Memory, Plan, Step


NOT_HERE = "does not run here"


def pending(plan: Plan, name: str) -> Step | None:
    """The update of ``name`` that waits for a person in ``plan``, if any."""
    return next((step for step in plan.steps
                 if step.service == name and step.action is Action.HOLD and step.hold), None)


def described(step: Step) -> dict:
    """A waiting update for status (plain JSON data)."""
    held = step.hold
    assert held is not None
    return {"policy": held.policy, "running": held.old.label(), "available": held.new.label(),
            "available_digest": held.new.digest, "image_id": held.image_id,
            "message": held.reason()}


def approve(memory: Memory, name: str, image_id: str) -> Memory:
    return dataclasses.replace(memory, approved={**memory.approved, name: image_id})


def settle(memory: Memory, plan: Plan, services: Mapping[str, Service],
           images: Mapping[str, Image | None], containers: Iterable[Container]
           ) -> tuple[Memory, tuple[str, ...]]:
    """The memory after a pass, and the services whose waiting image is new
    (to be told of now)."""
    made_from = {c.service: c.created_from for c in containers
                 if c.service is not None and not c.is_previous}
    approved = {}
    for name, image_id in memory.approved.items():
        service = services.get(name)
        image = images.get(service.image_ref) if service else None
        if image is not None and image.id == image_id and made_from.get(name) != image_id:
            approved[name] = image_id
    announced = {name: image_id for name, image_id in memory.announced.items()
                 if name in services}
    new = []
    for step in plan.steps:
        if step.action is Action.HOLD and step.hold is not None:
            if announced.get(step.service) != step.hold.image_id:
                new.append(step.service)
            announced[step.service] = step.hold.image_id
    memory = dataclasses.replace(memory, approved=approved, announced=announced)
    return memory, tuple(new)


def approval_target(plan: Plan, service: Service | None, node: str
                    ) -> tuple[Step | None, str]:
    """The waiting update of ``service`` to approve on this node, or None and
    why nothing is approved."""
    if service is None or not service.matches(node):
        return None, NOT_HERE
    step = pending(plan, service.name)
    if step is not None:
        return step, ""
    if service.update == constants.UPDATE_POLICIES[0]:  # auto: nothing ever waits
        return None, (f"nothing to approve: {service.name} has update: auto, so a new image is "
                      "deployed without approval")
    return None, (f"nothing to approve: no new image of {service.name} waits on node {node} "
                  f"(`puller pull {service.name}` asks the registry now)")
