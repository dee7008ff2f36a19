"""The record of the images puller pulled: ``<state_dir>/pulled.json``.

Image retention removes only images in this record (see ``retention``). An
image is recorded when a pull brought it (it was not there before), with the
references puller gave it; a reference given later to an image already
recorded is added. The file is written atomically (``fsutil``); an unreadable
one is reported and puller starts a new record, which can only make it keep
more images, never remove one it did not pull.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

from ..fsutil import read_json_object, write_atomically

log = logging.getLogger(__name__)


def _valid(image_id: Any, entry: Any) -> bool:
    return (isinstance(image_id, str) and image_id.startswith("sha256:")
            and isinstance(entry, dict) and isinstance(entry.get("refs"), list)
            and all(isinstance(ref, str) for ref in entry["refs"]))


class PulledImages:
    """Image id → the references puller pulled it as; thread-safe, persisted."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = self._load()

    def _load(self) -> dict[str, dict]:
        data = read_json_object(self.path, self._set_aside)
        return {key: value for key, value in data.items() if _valid(key, value)}

    def _set_aside(self, why: str) -> None:
        """Keep a bad record as ``<path>.unreadable`` and start a new one."""
        aside = self.path + ".unreadable"
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            aside = f"{self.path} (not moved: {exc.strerror or exc})"
        log.warning("the record of pulled images %s %s; it is kept as %s and a new one "
                    "started: the images pulled before are kept, never removed",
                    self.path, why, aside)

    def _save(self) -> None:
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            write_atomically(self.path, json.dumps(self._entries, indent=1, sort_keys=True),
                             mode=0o600)
        except OSError as exc:
            log.warning("cannot write the record of pulled images %s: %s", self.path, exc)

    def note(self, image_id: str, ref: str, fresh: bool, now: float | None = None) -> None:
        """A pull of ``ref`` gave ``image_id``; ``fresh`` when the pull brought it.
        An image that was there before is recorded only if puller pulled it before."""
        with self._lock:
            entry = self._entries.get(image_id)
            if entry is None and not fresh:
                return
            if entry is None:
                entry = self._entries[image_id] = {"refs": [], "at": now or time.time()}
            if ref in entry["refs"]:
                return
            entry["refs"].append(ref)
            self._save()

    def snapshot(self) -> dict[str, tuple[str, ...]]:
        with self._lock:
            return {key: tuple(entry["refs"]) for key, entry in self._entries.items()}

    def forget(self, image_ids: set[str] | frozenset[str]) -> None:
        """Images removed or gone: no longer in the record."""
        with self._lock:
            gone = image_ids & self._entries.keys()
            for image_id in gone:
                del self._entries[image_id]
            if gone:
                self._save()
