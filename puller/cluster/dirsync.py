"""The definitions directory ↔ versioned records.

A local edit gets a new hybrid-logical-clock version; a file found at the
first start with no recorded version gets its mtime; a deleted file becomes a
tombstone. Records that won a merge are written back atomically, where the
daemon's watcher sees them like an edit. Version metadata lives in
``<dir>/.puller-state.json``, not in the YAML.

A file is never overwritten or deleted unless it is exactly the text puller
last synced for that name: a local draft (valid or not) wins until the person
fixes it (it is then versioned, and wins by the usual rule) or deletes it (the
cluster's version is then written); meanwhile the conflict is reported
(``conflicts``). Peers' texts are validated like files before they are
written.

Every method expects the caller to hold ``lock``: the directory is read under
the lock that received records are merged and written under, so a file read
before a peer's write landed is never mistaken for a local edit.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Callable

from .. import constants
from ..errors import DefinitionError
from ..faults import OnceLog
from ..fsutil import write_atomically
from ..node.definitions import (TwoFiles, definition_fields, definition_path,
                                is_definition_file, parse_definition, read_text)
from ..node.writer import remove_definition
from .versions import TOMBSTONE_GRACE_MS, Clock, Record, Store, Version

log = logging.getLogger(__name__)

STATE_FILE = ".puller-state.json"


def wall_ms() -> int:
    return int(time.time() * 1000)


class DirectorySync:
    """Turns the directory into records and records into files."""

    def __init__(self, node: str, directory: str, clock: Clock, store: Store):
        self.node = node
        self.directory = directory
        self.clock = clock
        self.store = store
        self.lock = threading.RLock()
        self._first_scan = True
        self.synced: dict[str, str] = {}  # name → the text puller last synced
        self.conflicts: dict[str, str] = {}  # name → why a record could not be applied
        self._once = OnceLog(log)
        self._absent_since: dict[str, float] = {}
        # files unchanged since the last look (same stat) are not read again
        self._read_cache: dict[str, tuple[tuple, tuple[str, int] | None]] = {}
        # told (name, origin node) when a peer's record changed a definition's
        # fields here: the history records that change as the peer's
        self.on_written: Callable[[str, str], None] | None = None

    # State file ----------------------------------------------------------------------

    @property
    def state_path(self) -> str:
        return os.path.join(self.directory, STATE_FILE)

    def load_state(self) -> None:
        try:
            with open(self.state_path) as handle:
                data = json.load(handle)
            records = [Record.from_json(item) for item in data.get("records", [])]
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("cluster state %s cannot be read (%s); versions start afresh",
                        self.state_path, exc)
            return
        with self.lock:
            self.store.merge_all(records)
            for record in records:
                self.clock.observe(record.version, wall_ms())
            self.synced = {name: record.text for name, record in self.store.records.items()
                           if record.text is not None}
            self._first_scan = False

    def save_state(self) -> None:
        data = {"node": self.node,
                "records": [record.to_json() for _, record in sorted(self.store.records.items())]}
        try:
            write_atomically(self.state_path, json.dumps(data, indent=1, sort_keys=True),
                             mode=0o600)  # run lines may carry secrets
        except OSError as exc:
            log.warning("cannot write the cluster state %s: %s", self.state_path, exc)

    # Directory → records -------------------------------------------------------------

    def read_dir(self) -> tuple[dict[str, tuple[str, int]], set[str]] | None:
        """Valid definitions on disk (name → (text, mtime ms)) and names present
        at all (valid or not); None when the directory cannot be listed."""
        valid: dict[str, tuple[str, int]] = {}
        present: set[str] = set()
        try:
            names = sorted(os.listdir(self.directory))
        except OSError as exc:
            self._once.warning("dir", f"cannot list {self.directory}: {exc}; "
                                   "nothing is synced until it can be read")
            return None
        stems = [os.path.splitext(f)[0] for f in names if is_definition_file(f)]
        doubled = {stem for stem in stems if stems.count(stem) > 1}
        for filename in names:
            if not is_definition_file(filename):
                continue
            name = os.path.splitext(filename)[0]
            present.add(name)
            if name in doubled:
                continue  # name.yml and name.yaml: neither is taken (the daemon reports it)
            found = self._read_file(filename)
            if found is not None:
                valid[name] = found
        for filename in set(self._read_cache) - set(names):
            del self._read_cache[filename]
        return valid, present

    def _read_file(self, filename: str) -> tuple[str, int] | None:
        """(text, mtime ms) of a valid definition file; None for anything else."""
        path = os.path.join(self.directory, filename)
        try:
            st = os.stat(path)
        except OSError:
            return None
        key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        cached = self._read_cache.get(filename)
        if cached is not None and cached[0] == key:
            return cached[1]
        found: tuple[str, int] | None = None
        try:
            text = read_text(path)
            parse_definition(text, path)
            found = (text, st.st_mtime_ns // 1_000_000)
        except (OSError, DefinitionError):
            pass  # a broken file is not propagated; the daemon reports it
        except Exception as exc:  # bad input never stops the sync
            log.warning("%s cannot be read: %s", path, exc)
        self._read_cache[filename] = (key, found)
        return found

    def local_changes(self) -> list[Record]:
        """Version local edits and deletions (lock held); the records that changed."""
        found = self.read_dir()
        if found is None:
            return []  # an unreadable directory proves no deletion
        valid, present = found
        now = wall_ms()
        changed = self._edits(valid, now) + self._deletions(present, now)
        self.store.expire_tombstones(now, TOMBSTONE_GRACE_MS)
        self._first_scan = False
        if changed:
            self.save_state()
        return changed

    def _edits(self, valid: dict[str, tuple[str, int]], now: int) -> list[Record]:
        changed = []
        for name, (text, mtime) in sorted(valid.items()):
            record = self.store.get(name)
            if record is not None and record.text == text:
                continue
            if record is None and self._first_scan:
                # found at start with no recorded version: its mtime (never
                # later than now: a future mtime would beat every edit)
                version = Version(min(mtime, now), 0, self.node)
                self.clock.observe(version, now)
            else:
                version = self.clock.now(now)
            new = Record(name, version, text)
            if self.store.merge(new):
                changed.append(new)
                self.synced[name] = text
                self._resolved(name)
        return changed

    def _deletions(self, present: set[str], now: int) -> list[Record]:
        changed = []
        for name in list(self.conflicts):
            record = self.store.get(name)
            if name not in present and (record is None or record.deleted):
                self._resolved(name)  # the draft a deletion waited for is gone too
        for name in sorted(self.store.live()):
            if name in present:
                self._absent_since.pop(name, None)
                continue
            if name in self.conflicts:
                # the person deleted the draft that held the cluster's version back
                record = self.store.get(name)
                if record is not None:
                    self._write(record)
                continue
            # a file away for a moment (an editor saving by rename) is no deletion
            since = self._absent_since.setdefault(name, time.monotonic())
            if time.monotonic() - since < constants.DELETE_GRACE:
                continue
            self._absent_since.pop(name, None)
            tombstone = Record(name, self.clock.now(now), None)
            if self.store.merge(tombstone):
                changed.append(tombstone)
        return changed

    # Records → directory -------------------------------------------------------------

    def observe(self, records: list[Record]) -> None:
        for record in records:
            self.clock.observe(record.version, wall_ms())

    def apply(self, won: list[Record]) -> None:
        """Write records that won into the directory (lock held)."""
        self.observe(won)
        for record in won:
            try:
                if self._draft_in_the_way(record):
                    continue
                if record.deleted:
                    self._delete(record)
                else:
                    self._write(record)
            except OSError as exc:
                self._conflict(record.name, f"{record.name}: cannot write the definition "
                                            f"received from {record.version.node}: {exc}")
        self.save_state()

    def _draft_in_the_way(self, record: Record) -> bool:
        """True (and the conflict reported) when the file on disk is not the
        text puller last synced: a person's draft, never overwritten."""
        name = record.name
        try:
            path = definition_path(self.directory, name)
        except TwoFiles as exc:
            self._conflict(name, f"{exc}; the version from {record.version.node} waits")
            return True
        disk = _text_or_none(path)
        if disk is None or disk == self.synced.get(name) or disk == record.text:
            return False
        what = "deletion" if record.deleted else "version"
        self._conflict(name, f"{os.path.basename(path)}: local draft differs from the cluster's "
                             f"{what} from {record.version.node}; fix or delete it")
        return True

    def _write(self, record: Record) -> None:
        path = definition_path(self.directory, record.name)
        text = record.text or ""
        try:
            service = parse_definition(text, path)
        except DefinitionError as exc:
            self._conflict(record.name, f"{record.name}: refused the definition from "
                                        f"{record.version.node}: {exc.reason}")
            return
        old = _text_or_none(path)
        if old != text:
            write_atomically(path, text, mode=None if os.path.exists(path) else 0o600)
            log.info("%s: updated from %s (version %s)", record.name,
                     record.version.node, record.version.to_json())
            if self.on_written is not None and _fields_of(old, path) != definition_fields(service):
                self.on_written(record.name, record.version.node)
        self.synced[record.name] = text
        self._resolved(record.name)

    def _delete(self, record: Record) -> None:
        try:
            removed = remove_definition(self.directory, record.name)
        except DefinitionError as exc:
            self._conflict(record.name, f"{record.name}: the deletion from "
                                        f"{record.version.node} is refused: {exc.reason}")
            return
        if removed:
            log.info("%s: deleted by %s", record.name, record.version.node)
        self.synced.pop(record.name, None)
        self._resolved(record.name)

    def _conflict(self, name: str, message: str) -> None:
        self.conflicts[name] = message
        self._once.warning(f"conflict {name}", message)

    def _resolved(self, name: str) -> None:
        if self.conflicts.pop(name, None) is not None:
            log.info("%s: the conflict is resolved", name)


def _fields_of(text: str | None, path: str) -> dict | None:
    """The definition fields of ``text``, None when it is none or not valid."""
    if text is None:
        return None
    try:
        return definition_fields(parse_definition(text, path))
    except DefinitionError:
        return None


def _text_or_none(path: str) -> str | None:
    """A file's text as it is (valid or not); None when there is no file."""
    try:
        with open(path, "rb") as handle:
            return handle.read(constants.MAX_DEFINITION_BYTES + 1).decode("utf-8", "replace")
    except FileNotFoundError:
        return None
