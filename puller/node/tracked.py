"""Services with ``track:``: resolved to a concrete tag before a pass plans.

``resolve_services`` asks the ``Tracker`` (images wing) about the ranges of
this node's tracked services, on the schedule of the digest checks, and
returns the services with ``tag`` set to what each range resolved to (so
pulls, drift hashes, history and notifications work as for a fixed tag), and
the services that must wait, with why. (What ``puller tag`` and a rollback
make of a tracked definition is ``history.fixed``'s.)
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping

from ..errors import ImageReferenceError
from ..images.hooks import Push
from ..images.reference import Reference
from ..images.tracking import Tracker
from .definitions import Service


def resolve_services(services: Mapping[str, Service], tracker: Tracker, now: float,
                     pull_due: bool = False, check: Iterable[str] = (),
                     pushes: Iterable[Push] = (), prune: bool = True
                     ) -> tuple[dict[str, Service], dict[str, str]]:
    """(``services`` with each tracked one's tag resolved, the tracked ones that
    wait: name → why). A repository is listed when never listed yet, on a due
    pass, when one of its services is in ``check``, or when a push names it.
    ``prune`` forgets the resolutions no service uses (not when the directory
    could not be read: its services are not gone)."""
    tracked = {name: service for name, service in services.items() if service.track}
    repos = {service.repo for service in tracked.values()}
    forced = {tracked[name].repo for name in check if name in tracked}
    pushes = tuple(pushes)
    forced |= {repo for repo in repos if any(_pushed(push, repo) for push in pushes)}
    due = repos if pull_due else {repo for repo in repos if not tracker.known(repo)}
    if due or forced:
        tracker.refresh(due, now, force=forced)
    resolved, waiting = dict(services), {}
    for name, service in tracked.items():
        resolution = tracker.resolve(service.repo, str(service.track), now)
        if resolution.tag is None:
            waiting[name] = resolution.reason()
            del resolved[name]
        else:
            resolved[name] = dataclasses.replace(service, tag=resolution.tag)
    if prune:
        tracker.forget(repos, {(service.repo, str(service.track)) for service in tracked.values()})
    return resolved, waiting


def _pushed(push: Push, repo: str) -> bool:
    """Does ``push`` name a tag of repository ``repo``?"""
    try:
        return push.matches(Reference.parse(repo).with_tag(push.tag))
    except ImageReferenceError:
        return False
