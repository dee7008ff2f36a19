"""Registry push notifications → pushes (pure).

Two formats: Docker Distribution notification envelopes
(``{"events": [{"action": "push", "target": {"repository", "tag", "digest",
"mediaType"}, "request": {"host"}}]}``, the repository without its host) and
Docker Hub style webhooks (``{"push_data": {"tag"}, "repository":
{"repo_name"}}``, no digest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ImageReferenceError, PullerError
from .reference import Reference
from .registry import MANIFEST_TYPES


class HookError(PullerError):
    """A notification body puller cannot read."""


@dataclass(frozen=True)
class Push:
    """A tag that was pushed: ``repository`` without host; ``digest`` and ``host`` when known.

    Only a trigger: anyone able to send a notification could name any digest,
    so the daemon asks the registry what the tag is now, and never deploys
    ``digest`` as is."""

    repository: str
    tag: str
    digest: str | None = None
    host: str | None = None
    hub: bool = False  # a Docker Hub webhook: only Docker Hub's repositories match

    def matches(self, ref: str) -> bool:
        """Is ``ref`` (an image ref a service runs) this pushed tag?"""
        try:
            reference = Reference.parse(ref)
        except ImageReferenceError:
            return False
        if (reference.tag or "latest") != self.tag:
            return False
        if self.hub and reference.domain != "docker.io":
            return False  # audit/web on Docker Hub is not 127.0.0.1:5099/audit/web
        path = self.repository
        if reference.domain == "docker.io" and "/" not in path:
            path = "library/" + path
        return reference.path == path


def parse_notification(body: Any) -> list[Push]:
    """Pushes of tags in either format; other events (pulls, blob pushes,
    deletes) are ignored. Raises HookError for a body of neither format."""
    if not isinstance(body, dict):
        raise HookError("expected a JSON object")
    if "events" in body:
        return _distribution(body["events"])
    if "push_data" in body and "repository" in body:
        return _hub(body)
    raise HookError("neither a Docker Distribution envelope (events) "
                    "nor a Docker Hub webhook (push_data, repository)")


def _distribution(events: Any) -> list[Push]:
    if not isinstance(events, list):
        raise HookError("events must be a list")
    pushes = []
    for event in events:
        if not isinstance(event, dict) or event.get("action") != "push":
            continue
        target = event.get("target") or {}
        if not isinstance(target, dict):
            continue
        repository, tag = target.get("repository"), target.get("tag")
        media_type = target.get("mediaType")
        if not (isinstance(repository, str) and isinstance(tag, str) and repository and tag):
            continue  # a blob, or a manifest pushed by digest
        if media_type and media_type not in MANIFEST_TYPES:  # a blob is not a tag
            continue
        digest = target.get("digest") if isinstance(target.get("digest"), str) else None
        request = event.get("request") or {}
        host = request.get("host") if isinstance(request, dict) else None
        pushes.append(Push(repository, tag, digest, host if isinstance(host, str) else None))
    return pushes


def _hub(body: dict) -> list[Push]:
    push_data, repository = body.get("push_data"), body.get("repository")
    if not isinstance(push_data, dict) or not isinstance(repository, dict):
        raise HookError("push_data and repository must be objects")
    tag, name = push_data.get("tag"), repository.get("repo_name")
    if not (isinstance(tag, str) and isinstance(name, str) and tag and name):
        raise HookError("a Docker Hub webhook needs push_data.tag and repository.repo_name")
    return [Push(name, tag, hub=True)]
