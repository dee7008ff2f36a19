"""Thin typed wrappers over ``docker inspect`` JSON, so nothing else indexes raw dicts."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

from .. import constants

RUNNING_STATES = ("running", "restarting", "paused")
# docker's StartedAt: RFC 3339 with nanoseconds, e.g. 2026-11-27T19:57:09.066251072Z
_TIMESTAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$")


@dataclass(frozen=True)
class Container:
    """One container, as ``docker inspect`` describes it."""

    id: str
    name: str
    image_id: str
    status: str
    exit_code: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    started_at: str = ""
    health: str | None = None  # None when the container has no HEALTHCHECK
    restart_count: int = 0

    @classmethod
    def from_inspect(cls, data: Mapping[str, Any]) -> "Container":
        config = data.get("Config") or {}
        state = data.get("State") or {}
        health = state.get("Health") or {}
        return cls(
            id=data["Id"],
            name=str(data.get("Name", "")).lstrip("/"),
            image_id=data.get("Image", ""),
            status=state.get("Status", "unknown"),
            exit_code=int(state.get("ExitCode") or 0),
            labels=dict(config.get("Labels") or {}),
            started_at=state.get("StartedAt", ""),
            health=health.get("Status"),
            restart_count=int(data.get("RestartCount") or 0),
        )

    @property
    def started(self) -> float | None:
        """When the container last started (epoch seconds), from ``State.StartedAt``."""
        text = self.started_at
        if not text or text.startswith("0001-"):
            return None
        match = _TIMESTAMP.match(text)
        if match is None:
            return None
        seconds, fraction, zone = match.groups()
        zone = "+00:00" if zone in ("", "Z") else zone
        try:
            moment = datetime.fromisoformat(f"{seconds}.{(fraction or '0')[:6]:0<6}{zone}")
        except ValueError:
            return None
        return moment.timestamp()

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def service(self) -> str | None:
        return self.labels.get(constants.LABEL_SERVICE)

    @property
    def node(self) -> str | None:
        return self.labels.get(constants.LABEL_NODE)

    @property
    def config_hash(self) -> str | None:
        return self.labels.get(constants.LABEL_HASH)

    @property
    def created_from(self) -> str | None:
        """The image id recorded when puller created the container."""
        return self.labels.get(constants.LABEL_IMAGE)

    @property
    def asked_for(self) -> str | None:
        """The image as the definition asked for it when puller created the container."""
        return self.labels.get(constants.LABEL_REF)

    @property
    def running(self) -> bool:
        return self.status in RUNNING_STATES

    @property
    def is_previous(self) -> bool:
        """A stopped predecessor kept while its successor is being deployed."""
        return self.service is not None and self.name.endswith(constants.PREVIOUS_SUFFIX)

    @property
    def is_candidate(self) -> bool:
        """A new container proving itself beside the old one (rollout order start-first)."""
        return self.service is not None and self.name.endswith(constants.NEXT_SUFFIX)

    @property
    def is_aside(self) -> bool:
        """Not the service's own container but one beside it during an update."""
        return self.is_previous or self.is_candidate

    def describe_state(self) -> str:
        if self.status == "exited":
            return f"exited with code {self.exit_code}"
        return self.status


# `docker ps --format`: the fields puller needs, each JSON-quoted (tabs and all).
PS_LABELS = (constants.LABEL_SERVICE, constants.LABEL_NODE, constants.LABEL_HASH,
             constants.LABEL_IMAGE, constants.LABEL_REF)
PS_FIELDS = (".ID", ".Names", ".State", ".Status",
             *(f'(.Label "{key}")' for key in PS_LABELS))
PS_FORMAT = "\t".join("{{json %s}}" % field for field in PS_FIELDS)
_EXIT_CODE = re.compile(r"(?:Exited|Restarting) \((-?\d+)\)")
_HEALTH = re.compile(r"\((healthy|unhealthy|health: starting)\)")


def from_ps_row(line: str) -> "Container | None":
    """One line of ``docker ps --format PS_FORMAT`` (pure); None if it is not one.

    Enough to plan an ordinary pass; what ``ps`` cannot tell (restart count,
    start time, other labels) needs ``docker inspect``."""
    try:
        values = [json.loads(part) for part in line.split("\t")]
    except ValueError:
        return None
    if len(values) != len(PS_FIELDS) or not all(isinstance(v, str) for v in values):
        return None
    cid, names, state, status, *label_values = values
    if not cid or not names:
        return None
    labels = {key: value for key, value in zip(PS_LABELS, label_values) if value}
    image = labels.get(constants.LABEL_IMAGE, "")
    exit_code = _EXIT_CODE.search(status)
    health = _HEALTH.search(status)
    return Container(
        id=cid, name=names.split(",")[0], image_id=image, status=state,
        exit_code=int(exit_code.group(1)) if exit_code else 0, labels=labels,
        health={"health: starting": "starting"}.get(health.group(1), health.group(1))
        if health else None,
    )


@dataclass(frozen=True)
class Image:
    """One local image, as ``docker image inspect`` describes it."""

    id: str
    repo_tags: tuple[str, ...] = ()
    repo_digests: tuple[str, ...] = ()
    version: str | None = None  # its org.opencontainers.image.version label, if any

    @classmethod
    def from_inspect(cls, data: Mapping[str, Any]) -> "Image":
        labels = (data.get("Config") or {}).get("Labels") or {}
        version = labels.get(constants.OCI_VERSION_LABEL) if isinstance(labels, dict) else None
        return cls(
            id=data["Id"],
            repo_tags=tuple(data.get("RepoTags") or ()),
            repo_digests=tuple(data.get("RepoDigests") or ()),
            version=(version.strip() or None) if isinstance(version, str) else None,
        )
