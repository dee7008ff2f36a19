"""The update policy of a service (pure): does a new image wait for a person?

A definition's ``update:`` is ``auto`` (the default: a new image behind the
tag is deployed), ``notify`` (never deployed by itself; told) or ``manual``
(deployed once approved: ``puller approve NAME``). Only a change of the
image is gated: a service's first deploy, and a person's edit of its
definition (the run line, or the tag or digest it asks for), always apply.

"Only the image changed" is read from the container alone, so a restarted
daemon judges the same way: its drift hash is the one of the current run
line with the image it was made from (``same_definition``, computed by the
planner), and the image it asked for (label ``io.puller.ref``) is the one
the definition asks for now. A container made before puller recorded that
label counts as asking for the same: under a policy the safe guess is to wait.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import constants
from ..errors import ImageReferenceError
from ..images.reference import Reference
from .container import Container, Image
from .definitions import Service
from .imageversion import Version, change

AUTO, NOTIFY, MANUAL = constants.UPDATE_POLICIES


@dataclass(frozen=True)
class Hold:
    """A new image that waits: what runs, what could, and under which policy."""

    service: str
    policy: str
    old: Version
    new: Version
    image_id: str  # the local image that would run once approved

    def reason(self) -> str:
        what = f"update available: {change(self.old, self.new)}"
        if self.policy == MANUAL:
            return f"{what}, waiting for approval (puller approve {self.service})"
        return (f"{what}, not deployed (update: notify; puller approve {self.service} "
                "deploys it)")


def asked_for(service: Service) -> str:
    """The image as the definition asks for it, recorded on the container
    (``io.puller.ref``): a different one later means a person edited it. A
    tracked service asks for its range (``repo track ^1.2``): a newer tag the
    range finds is a new image, not an edit. A service a rollout pinned to its
    release's digest asks for what its file asks for (``asked_ref``)."""
    if service.asked_ref:
        return service.asked_ref
    if service.track and not service.digest:
        return f"{service.repo} track {service.track}"
    return service.image_ref


def tag_of(ref: str | None) -> str | None:
    if not ref:
        return None
    try:
        return Reference.parse(ref).tag
    except ImageReferenceError:
        return None


def hold(service: Service, current: Container, image: Image, old_image: Image | None,
         approved: str | None, same_definition: bool,
         digests: tuple[str | None, str | None] = (None, None)) -> Hold | None:
    """Why updating ``current`` to ``image`` waits, or None when it goes ahead.

    ``old_image`` is the image ``current`` was made from, when known;
    ``approved`` the image id a person approved for this service;
    ``same_definition`` whether ``current`` was made from the run line in
    force; ``digests`` the registry digests of the old and the new image."""
    if service.update == AUTO or service.follows_release or not same_definition:
        return None  # (a release the rollout's first node ran: its policy applied there)
    if current.asked_for not in (None, asked_for(service)):
        return None  # a person changed the tag or digest
    if current.created_from in (None, "", image.id) or approved == image.id:
        return None
    old_digest, new_digest = digests
    old_tag = (_tag_in(old_image, service.repo) if service.track
               else tag_of(current.asked_for or service.image_ref))
    old = Version(old_tag,
                  old_digest or current.created_from,
                  old_image.version if old_image is not None else None)
    new = Version(tag_of(service.image_ref), new_digest or image.id, image.version)
    return Hold(service.name, service.update, old, new, image.id)


def _tag_in(image: Image | None, repo: str) -> str | None:
    """A tag ``image`` carries in ``repo`` (the version a tracked service ran), other
    than latest; None when it carries none."""
    if image is None:
        return None
    try:
        name = Reference.parse(repo).name
    except ImageReferenceError:
        return None
    tags = sorted(tag for tag in (tag_of(t) for t in image.repo_tags
                                  if _named(t, name)) if tag and tag != "latest")
    return tags[-1] if tags else None


def _named(ref: str, name: str) -> bool:
    try:
        return Reference.parse(ref).name == name
    except ImageReferenceError:
        return False
