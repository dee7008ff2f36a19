"""Anti-entropy between two nodes' stores, at the level of messages; pure.

Messages are plain dicts ``{"type": str, "body": dict}``. One exchange::

    A → B  sync        {"digest", "summary"}             A's versions
    B → A  in-sync     {}                                 digests equal: done
      or   sync-reply  {"records", "want"}                B's newer records, names B wants
    A → B  push        {"records"}                        what B wants (if anything)
    B → A  ack         {}

A local change is sent at once as a ``push``. Every message carries at most
``max_records`` records and about ``max_bytes`` of them; the rest follows in
the next round, so a frame never outgrows ``frames.MAX_FRAME``.

A malformed message raises :class:`GossipError`; within a well-formed message
a single record or summary entry that cannot be used (say, from a newer puller
with larger limits) is skipped and logged, so it cannot block the others.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Iterable

from .errors import PullerError
from .versions import Record, Store, Version

log = logging.getLogger(__name__)

PUSH = "push"
ACK = "ack"
SYNC = "sync"
IN_SYNC = "in-sync"
SYNC_REPLY = "sync-reply"

MAX_RECORDS = 500  # records per message, at most
MAX_BYTES = 2 * 1024 * 1024  # JSON bytes of records per message, about (one record always fits)
MAX_STEPS = 2  # replies the initiator of an exchange handles, at most (sync-reply, ack)
_MAX_WARNED = 1000  # distinct skipped entries remembered, to warn only once about each


class GossipError(PullerError):
    """A sync message that cannot be understood; the peer is probably not a compatible puller."""

    def __init__(self, reason: str, message_type: str | None = None):
        self.reason = reason
        self.message_type = message_type
        what = f"{message_type!r} message" if message_type else "message"
        super().__init__(
            f"ignored a malformed sync {what}: {reason}; check that every node runs "
            f"the same puller version")


def _field(body: dict, name: str, kind: type, message_type: str) -> Any:
    value = body.get(name)
    if not isinstance(value, kind):
        raise GossipError(f"{name!r} must be a {kind.__name__}, not {type(value).__name__}",
                          message_type)
    return value


class Gossip:
    """Builds and answers sync messages for one node's :class:`Store`."""

    def __init__(self, store: Store, max_records: int = MAX_RECORDS, max_bytes: int = MAX_BYTES):
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        self.store = store
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._warned: set[tuple[str, str]] = set()

    # --- messages out -----------------------------------------------------------------

    def push(self, records: Iterable[Record]) -> dict:
        """A ``push`` of ``records``, capped to one message's worth (the rest follows later)."""
        return {"type": PUSH, "body": {"records": self._batch(records)}}

    def sync_request(self) -> dict:
        """A ``sync`` carrying our digest and every version we hold."""
        return {"type": SYNC,
                "body": {"digest": self.store.digest(), "summary": self.store.summary()}}

    # --- messages in ------------------------------------------------------------------

    def handle(self, message: Any) -> tuple[dict | None, list[Record]]:
        """Answer one message: ``(reply or None, records that won locally)``.

        The caller writes the records that won to disk (a tombstone deletes the
        file). ``GossipError`` if the message is malformed or of an unknown type.
        """
        if not isinstance(message, dict):
            raise GossipError(f"expected an object, not {type(message).__name__}")
        kind = message.get("type")
        body = message.get("body")
        if not isinstance(kind, str):
            raise GossipError("'type' must be a string")
        if not isinstance(body, dict):
            raise GossipError("'body' must be an object", kind)
        if kind == PUSH:
            won = self.store.merge_all(self._records(body, kind))
            return {"type": ACK, "body": {}}, won
        if kind == SYNC:
            return self._answer_sync(body), []
        if kind == SYNC_REPLY:
            won = self.store.merge_all(self._records(body, kind))
            want = _field(body, "want", list, kind)
            return self._push_wanted(want), won
        if kind in (ACK, IN_SYNC):
            return None, []
        raise GossipError(f"unknown type {kind!r:.40}")

    def _answer_sync(self, body: dict) -> dict:
        digest = _field(body, "digest", str, SYNC)
        raw = _field(body, "summary", dict, SYNC)
        if digest == self.store.digest():
            return {"type": IN_SYNC, "body": {}}
        theirs: dict[str, Version] = {}
        for name, value in raw.items():
            try:
                theirs[name] = Version.from_json(value)
            except ValueError as exc:
                self._skip(name, f"its version is malformed: {exc}")
        newer = self.store.newer_than(theirs)
        want = []
        for name in self.store.wanted_from(theirs):
            try:
                Record(name, theirs[name], None)  # would a record of that name be acceptable?
            except ValueError as exc:
                self._skip(name, str(exc))
                continue
            want.append(name)
            if len(want) >= self.max_records:
                break
        return {"type": SYNC_REPLY, "body": {"records": self._batch(newer), "want": want}}

    def _push_wanted(self, want: list) -> dict | None:
        wanted = []
        for name in want:
            record = self.store.get(name) if isinstance(name, str) else None
            if record is not None:
                wanted.append(record)
        if not wanted:
            return None
        return self.push(wanted)

    # --- helpers ----------------------------------------------------------------------

    def _batch(self, records: Iterable[Record]) -> list[dict]:
        """Newest first, at most ``max_records`` and about ``max_bytes`` (never empty
        when there is a record: one record always fits in a frame)."""
        batch: list[dict] = []
        size = 0
        for record in sorted(records, key=lambda r: r.version, reverse=True):
            data = record.to_json()
            size += len(json.dumps(data, separators=(",", ":"))) + 1
            if batch and (size > self.max_bytes or len(batch) >= self.max_records):
                break
            batch.append(data)
        return batch

    def _records(self, body: dict, kind: str) -> list[Record]:
        records = []
        for index, data in enumerate(_field(body, "records", list, kind)):
            try:
                records.append(Record.from_json(data))
            except ValueError as exc:
                name = data.get("name") if isinstance(data, dict) else None
                self._skip(name if isinstance(name, str) else f"#{index}", str(exc))
        return records

    def _skip(self, name: str, reason: str) -> None:
        """Log a skipped entry at WARNING the first time, at DEBUG afterwards."""
        key = (name[:256], reason[:256])
        if key in self._warned:
            log.debug("skipped sync entry %.80s: %s", name, reason)
            return
        if len(self._warned) >= _MAX_WARNED:
            self._warned.clear()
        self._warned.add(key)
        log.warning("skipped sync entry %.80s: %s (further repeats are logged at DEBUG)",
                    name, reason)
