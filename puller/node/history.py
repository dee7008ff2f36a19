"""Every revision of each service, and the image digest that actually ran for it.

An entry is added when a service's definition changes, and when the image
deployed for an unchanged definition changes (a moved tag). ``rollback_fields``
(pure) picks what a rollback makes current again: the previous entry, pinned
to the digest that ran then, so it is exact even after the tag has moved; a
``track:`` is replaced by the tag it resolved to then (a rollback stops the
tracking: else the range would move it forward again at once).
The history of this node is kept in ``<state_dir>/history.json``, written
atomically.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any, Mapping

from .. import constants
from ..errors import PullerError
from ..fsutil import read_json_object, write_atomically

log = logging.getLogger(__name__)

PINNED = "digest"
TRACK = "track"


class NoRollback(PullerError):
    """Nothing to roll back to."""


def without_pin(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if key != PINNED}


def fixed(fields: Mapping[str, Any], tag: str | None = None) -> dict[str, Any]:
    """``fields`` with ``track:`` replaced by a fixed tag: ``tag``, else the tag the
    range resolved to (which a revision in the history carries)."""
    result = {key: value for key, value in fields.items() if key != TRACK}
    if tag is not None:
        result["tag"] = tag
    return result


def _revision(fields: Mapping[str, Any]) -> dict[str, Any]:
    """What identifies a definition as a person wrote it: a tracked one whatever
    tag its range resolved to (a new resolution is a new image, like a moved tag)."""
    return {key: value for key, value in fields.items()
            if not (key == "tag" and fields.get(TRACK))}


def rollback_fields(entries: list[dict], current: Mapping[str, Any],
                    to: str | None = None) -> dict[str, Any]:
    """The definition a rollback makes current (pure).

    ``to`` None: the latest earlier entry that differs from what runs now
    (definition or digest), pinned to its digest. ``to`` a digest: the current
    definition pinned to it. ``to`` a tag: the latest entry that ran that tag,
    pinned to its digest — or, if none ran it here, the tag itself, unpinned.
    """
    name = current.get("name", "?")
    if to and to.startswith("sha256:"):
        if not current.get(TRACK):
            return {**current, PINNED: to}
        # a tracked one gets the tag that ran that digest, else the last it resolved to
        tags = [e["fields"]["tag"] for e in entries if e["fields"].get("tag")]
        ran = [e["fields"]["tag"] for e in entries
               if e["fields"].get("tag") and e.get("digest") == to]
        return fixed({**current, PINNED: to}, (ran or tags or [None])[-1])
    if to:
        for entry in reversed(entries):
            if entry["fields"].get("tag") == to and entry.get("digest"):
                return fixed({**without_pin(entry["fields"]), PINNED: entry["digest"]})
        return fixed(without_pin(current), to)
    # The revision in force: the latest entry of the current definition (the
    # file's fields, pin included). What ran before it is the target, whether
    # the current one is proven, on probation, failed or never ran.
    fields = _revision(current)
    index = next((i for i in range(len(entries) - 1, -1, -1)
                  if _revision(entries[i]["fields"]) == fields), len(entries))
    running = entries[index].get("digest") if index < len(entries) else None
    now_key = (without_pin(fields), running)
    for entry in reversed(entries[:index]):
        if entry.get("digest") and (without_pin(_revision(entry["fields"])),
                                    entry["digest"]) != now_key:
            return fixed({**without_pin(entry["fields"]), PINNED: entry["digest"]})
    raise NoRollback(f"{name} has no earlier deployed revision on this node to roll back to "
                     f"(the history holds {len(entries)} revision(s); `puller history {name}`)")


def _valid_entry(entry: Any) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("fields"), dict)
            and isinstance(entry.get("at"), (int, float))
            and isinstance(entry.get("digest"), (str, type(None))))


class History:
    """The revisions of every service on this node, persisted as JSON."""

    def __init__(self, path: str, node: str, length: int = constants.HISTORY_LENGTH):
        self.path = path
        self.node = node
        self.length = length
        self._lock = threading.Lock()
        self._sources: dict[str, tuple[str, str | None]] = {}  # name → (source, origin node)
        self.entries: dict[str, list[dict]] = self._load()

    def _load(self) -> dict[str, list[dict]]:
        data = read_json_object(self.path, lambda why: log.warning(
            "history %s %s; starting a new one", self.path, why))
        return {name: [e for e in entries if _valid_entry(e)]
                for name, entries in data.items() if isinstance(entries, list)}

    def _save(self) -> None:
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            write_atomically(self.path, json.dumps(self.entries, indent=1, sort_keys=True),
                             mode=0o600)  # run lines may carry secrets
        except OSError as exc:
            log.warning("cannot write the history %s: %s", self.path, exc)

    def expect(self, name: str, source: str, node: str | None = None) -> None:
        """The next change of ``name`` comes from ``source`` (api, tag, rollback,
        peer...), made on ``node`` (None: this one)."""
        with self._lock:
            self._sources[name] = (source, node)

    def observe(self, fields_by_name: Mapping[str, Mapping[str, Any]],
                deployed: Mapping[str, str], now: float) -> None:
        """Record changed definitions, and the digests deployed for them."""
        changed = False
        with self._lock:
            for name, fields in fields_by_name.items():
                entries = self.entries.setdefault(name, [])
                last = entries[-1] if entries else None
                digest = deployed.get(name)
                if last is None or last["fields"] != dict(fields):
                    moved = last is not None and _revision(last["fields"]) == _revision(fields)
                    source, origin = (("track", None) if moved  # the range resolved anew
                                      else self._sources.pop(name, ("file", None)))
                    entries.append({"fields": dict(fields), "at": now,
                                    "node": origin or self.node, "source": source,
                                    "digest": digest, "deployed_at": now if digest else None})
                elif digest and last.get("digest") is None:
                    last["digest"], last["deployed_at"] = digest, now
                elif digest and last.get("digest") != digest:
                    entries.append({"fields": dict(fields), "at": now, "node": self.node,
                                    "source": "image", "digest": digest, "deployed_at": now})
                else:
                    continue
                del entries[:-self.length]
                changed = True
            if changed:
                self._save()

    def revisions(self, name: str) -> list[dict]:
        with self._lock:
            return [dict(entry) for entry in self.entries.get(name, [])]

    def all_revisions(self) -> dict[str, list[dict]]:
        """Every service's revisions (copies), for image retention."""
        with self._lock:
            return {name: [dict(entry) for entry in entries]
                    for name, entries in self.entries.items()}
