"""Anti-entropy between two nodes' stores, at the level of messages; pure.

Messages are plain dicts ``{"type": str, "body": dict}``. An exchange started
by A with B::

    A → B  sync        {"digest", "newest"}   A's store digest, its newest wall
    B → A  in-sync     {}                     digests equal: done
      or   sync-reply  {...}                  where the stores differ, a level down
    A → B  sync        {...}                  A's answer to that
    B → A  sync-reply  {...}                  ... and so on, until A has nothing
      or   ack         {}                     more to say (B always answers)

So nodes that agree exchange two frames of under 300 bytes however many
services they hold. The steps after the first carry any of:

``newest``     in B's first reply, B's newest wall, if older than A's;
``buckets``    ``{prefix: the digests of its 16 sub-buckets}``: bucket ``prefix``
               differs, and holds too many names to list them;
``summaries``  ``{prefix: {name: version}}``: every name in a differing bucket;
``records``    records the other side lacks or holds older;
``want``       names the other side holds newer, or that we lack.

A bucket is a set of names: those whose :func:`place` (the hex sha256 of the
name) starts with the bucket's prefix; the root ``""`` holds them all. Each
side answers a digest or bucket that differs from its own with the next level
down: its summary of the bucket if it holds at most ``leaf`` names, else the
digests of the bucket's 16 sub-buckets. It answers a summary with its newer
records and the names it wants, ``want`` with those records, and ``newest``
with every record of a later wall (the other side cannot hold those: a fresh
edit goes at once, without a descent). One differing record among 500
services costs two levels of buckets and one small summary, not a summary of
every version. Bucket digests are short (``BUCKET_BYTES``), a filter: when a
bucket differs but none of its sub-buckets' digests do, a collision hid the
difference, and the bucket's summary is sent instead; so a collision costs
bytes, never a difference. Digests go as URL-safe base64.

No exchange state is kept between messages: every step is answered from the
store as it is, and a change in between only means a little more or less is
sent. Every node must run this version: with an older puller (whose ``sync``
carried a full summary) no exchange completes, one side refusing the other's
message as malformed and saying so. A local change is sent at once as a
``push`` (answered with ``ack``), unchanged.
Every message carries at most ``max_records`` records and about ``max_bytes``
of them; the rest follows in the next exchange, so a frame never outgrows
``frames.MAX_FRAME``.

A malformed message raises :class:`GossipError`; within a well-formed message
a single record or summary entry that cannot be used (say, from a newer puller
with larger limits) is skipped and logged, so it cannot block the others.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import json
import logging
import re
from typing import Any, Iterable

from ..errors import PullerError
from .versions import FutureRecord, Record, Store, Version, too_far_ahead

log = logging.getLogger(__name__)

PUSH = "push"
ACK = "ack"
SYNC = "sync"
IN_SYNC = "in-sync"
SYNC_REPLY = "sync-reply"

MAX_RECORDS = 500  # records per message, at most
MAX_BYTES = 2 * 1024 * 1024  # JSON bytes of records per message, about (one record always fits)
DIGEST_BYTES = 18  # of the store digest a sync starts with (144 bits, 24 base64 characters)
BUCKET_BYTES = 2  # of a bucket's digest: a filter (a collision costs bytes, never a difference)
LEAF = 8  # a differing bucket of at most this many names is sent as a summary
MAX_DEPTH = 8  # hex digits of a bucket's prefix, at most; a bucket that deep is summarised
MAX_STEPS = MAX_DEPTH + 8  # replies one exchange handles, at most (an honest one needs fewer)
_HEX = "0123456789abcdef"
_PREFIX_RE = re.compile(r"[0-9a-f]*\Z")
_MAX_WARNED = 1000  # distinct skipped entries remembered, to warn only once about each


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def place(name: str) -> str:
    """Where a name sits in the buckets: the hex sha256 of its UTF-8 bytes."""
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()


class GossipError(PullerError):
    """A sync message that cannot be understood; the peer is probably not a compatible puller."""

    def __init__(self, reason: str, message_type: str | None = None):
        self.reason = reason
        self.message_type = message_type
        what = f"{message_type!r} message" if message_type else "message"
        super().__init__(
            f"ignored a malformed sync {what}: {reason}; check that every node runs "
            f"the same puller version")


def _field(body: dict, name: str, kind: type, message_type: str, default: Any = None) -> Any:
    """``body[name]``, which must be a ``kind``; ``default`` if absent and a default is given."""
    if default is not None and name not in body:
        return default
    value = body.get(name)
    if not isinstance(value, kind):
        raise GossipError(f"{name!r} must be a {kind.__name__}, not {type(value).__name__}",
                          message_type)
    return value


def _prefix(prefix: Any, longest: int, message_type: str) -> str:
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix) or len(prefix) > longest:
        raise GossipError(f"a bucket is named by at most {longest} lowercase hex digits, "
                          f"not {prefix!r:.40}", message_type)
    return prefix


class _Tree:
    """A store's names in :func:`place` order, to find the names of a bucket and
    digest it (a bucket is a range of that order)."""

    def __init__(self, store: Store):
        entries = sorted((place(name), name) for name in store.records)
        self._places = [p for p, _ in entries]
        self._names = [name for _, name in entries]
        self._store = store
        walls = [record.version.wall for record in store.records.values()]
        self.newest = max(walls) if walls else None  # the wall of the newest version

    def names(self, prefix: str) -> list[str]:
        """The names in the bucket ``prefix``."""
        low = bisect.bisect_left(self._places, prefix)
        high = bisect.bisect_left(self._places, prefix + "g", low)  # "g" sorts after hex digits
        return self._names[low:high]

    def summary(self, prefix: str) -> dict[str, list]:
        records = self._store.records
        return {name: records[name].version.to_json() for name in self.names(prefix)}

    def digest(self, prefix: str) -> bytes:
        """The bucket's digest: sha256 of its (name, version) pairs, in place order."""
        records = self._store.records
        pairs = [[name, records[name].version.to_json()] for name in self.names(prefix)]
        canonical = json.dumps(pairs, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("ascii")).digest()[:BUCKET_BYTES]

    def children(self, prefix: str) -> bytes:
        """The digests of the 16 sub-buckets of ``prefix``, concatenated."""
        return b"".join(self.digest(prefix + digit) for digit in _HEX)


class _Reply:
    """What one side has to say next, gathered while reading the other's message."""

    def __init__(self) -> None:
        self.newest: int | None = None
        self.buckets: dict[str, str] = {}
        self.summaries: dict[str, dict[str, list]] = {}
        self.records: dict[str, Record] = {}
        self.want: list[str] = []


class Gossip:
    """Builds and answers sync messages for one node's :class:`Store`.

    ``leaf``: a differing bucket of at most this many names is summarised
    rather than split (0 splits down to ``MAX_DEPTH``, as tests do).
    """

    def __init__(self, store: Store, max_records: int = MAX_RECORDS, max_bytes: int = MAX_BYTES,
                 leaf: int = LEAF):
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        if leaf < 0:
            raise ValueError("leaf must not be negative")
        self.store = store
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.leaf = leaf
        self._warned: set[tuple[str, str]] = set()
        self._tree: tuple[str, _Tree] | None = None  # (store digest, tree of that store)

    # --- messages out -----------------------------------------------------------------

    def push(self, records: Iterable[Record]) -> dict:
        """A ``push`` of ``records``, capped to one message's worth (the rest follows later)."""
        return {"type": PUSH, "body": {"records": self._batch(records)}}

    def sync_request(self) -> dict:
        """A ``sync`` carrying our digest and the wall of our newest version: the
        start of an exchange."""
        body: dict[str, Any] = {"digest": self._digest()}
        newest = self._current_tree().newest
        if newest is not None:
            body["newest"] = newest
        return {"type": SYNC, "body": body}

    # --- messages in ------------------------------------------------------------------

    def handle(self, message: Any, wall_ms: int | None = None,
               refused: list[FutureRecord] | None = None) -> tuple[dict | None, list[Record]]:
        """Answer one message: ``(reply or None, records that won locally)``.

        Given this node's clock ``wall_ms``, records too far ahead of it are
        refused (and not asked for): each refusal is added to ``refused`` for the
        caller to report with the sender, or logged here without one.

        A ``sync`` always gets a reply; a ``sync-reply`` gets one (a ``sync``)
        while we have something to say, so the initiator of an exchange answers
        each reply until this returns None. The caller writes the records that
        won to disk (a tombstone deletes the file). ``GossipError`` if the
        message is malformed or of an unknown type.
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
            won = self._merge(self._records(body, kind), wall_ms, refused)
            return {"type": ACK, "body": {}}, won
        if kind == SYNC:
            if not body.keys() & {"digest", "newest", "buckets", "summaries", "records", "want"}:
                raise GossipError("a sync carries a digest, buckets, summaries, records "
                                  "or names wanted", kind)
            reply, won = self._step(body, kind, wall_ms, refused)
            if reply:
                return {"type": SYNC_REPLY, "body": reply}, won
            return {"type": IN_SYNC if "digest" in body else ACK, "body": {}}, won
        if kind == SYNC_REPLY:
            reply, won = self._step(body, kind, wall_ms, refused)
            return ({"type": SYNC, "body": reply} if reply else None), won
        if kind in (ACK, IN_SYNC):
            return None, []
        raise GossipError(f"unknown type {kind!r:.40}")

    def _merge(self, records: list[Record], wall_ms: int | None,
               refused: list[FutureRecord] | None) -> list[Record]:
        if wall_ms is None:
            return self.store.merge_all(records)
        won, refusals = self.store.merge_received(records, wall_ms)
        for refusal in refusals:
            if refused is not None:
                refused.append(refusal)
            else:
                self._skip(refusal.record.name, str(refusal))
        return won

    def _step(self, body: dict, kind: str, wall_ms: int | None = None,
              refused: list[FutureRecord] | None = None) -> tuple[dict, list[Record]]:
        """Read one step of an exchange: merge its records, and gather our answer
        to its digest, newest wall, buckets, summaries and wants (an empty dict:
        nothing to say)."""
        digest = _field(body, "digest", str, kind, "")
        newest = _field(body, "newest", int, kind, -1)
        buckets = _field(body, "buckets", dict, kind, {})
        summaries = _field(body, "summaries", dict, kind, {})
        want = _field(body, "want", list, kind, [])
        if isinstance(newest, bool) or newest < -1:
            raise GossipError("'newest' must be a wall clock in ms", kind)
        won = self._merge(self._records(body, kind), wall_ms, refused) if "records" in body else []
        if "digest" in body and digest == self._digest():
            return {}, won  # in sync
        tree = self._current_tree()
        reply = _Reply()
        if "digest" in body:
            if tree.newest is not None and tree.newest < newest:
                reply.newest = tree.newest  # they hold newer records than any of ours: ask for them
            self._descend(tree, "", reply)
        if "newest" in body:  # what is newer than all they hold, they cannot have
            for record in self.store.records.values():
                if record.version.wall > newest:
                    reply.records.setdefault(record.name, record)
        for prefix, theirs in buckets.items():
            prefix = _prefix(prefix, MAX_DEPTH - 1, kind)
            try:
                theirs = base64.b64decode(theirs, altchars=b"-_", validate=True)
            except (TypeError, ValueError, binascii.Error):
                theirs = b""
            if len(theirs) != 16 * BUCKET_BYTES:
                raise GossipError(f"bucket {prefix!r} must have 16 digests of {BUCKET_BYTES} "
                                  f"bytes, in base64", kind)
            ours = tree.children(prefix)
            differing = [prefix + digit for i, digit in enumerate(_HEX)
                         if ours[i * BUCKET_BYTES:(i + 1) * BUCKET_BYTES]
                         != theirs[i * BUCKET_BYTES:(i + 1) * BUCKET_BYTES]]
            if not differing and not won:
                # Equal sub-buckets of a bucket that differed: a digest collision (unless
                # the records just merged made them equal). Their summary cannot collide.
                reply.summaries[prefix] = tree.summary(prefix)
            for child in differing:
                self._descend(tree, child, reply)
        for prefix, summary in summaries.items():
            prefix = _prefix(prefix, MAX_DEPTH, kind)
            if not isinstance(summary, dict):
                raise GossipError(f"the summary of bucket {prefix!r} must be an object", kind)
            self._compare(tree, prefix, summary, reply, wall_ms)
        for name in want:
            record = self.store.get(name) if isinstance(name, str) else None
            if record is not None:
                reply.records.setdefault(name, record)
        return self._body(reply), won

    def _descend(self, tree: _Tree, prefix: str, reply: _Reply) -> None:
        """Bucket ``prefix`` differs: our summary of it if it is small, else its sub-buckets."""
        names = tree.names(prefix)
        if len(names) <= self.leaf or len(prefix) >= MAX_DEPTH:
            reply.summaries[prefix] = tree.summary(prefix)
        else:
            reply.buckets[prefix] = _b64(tree.children(prefix))

    def _compare(self, tree: _Tree, prefix: str, summary: dict, reply: _Reply,
                 wall_ms: int | None = None) -> None:
        """Their summary of bucket ``prefix``: our records they lack or hold older, and
        the names they hold newer or we lack."""
        theirs: dict[str, Version] = {}
        for name, value in summary.items():
            try:
                theirs[name] = Version.from_json(value)
            except ValueError as exc:
                self._skip(name, f"its version is malformed: {exc}")
        for name in tree.names(prefix):
            record = self.store.records[name]
            version = theirs.get(name)
            if version is None or version < record.version:
                reply.records.setdefault(name, record)
        for name, version in theirs.items():
            ours = self.store.get(name)
            if ours is not None and version <= ours.version:
                continue
            if len(reply.want) >= self.max_records:
                break
            if wall_ms is not None and too_far_ahead(version, wall_ms):
                self._skip(name, f"not asked for: its version {version} is too far ahead "
                           "of this node's clock")
                continue
            try:
                Record(name, version, None)  # would a record of that name be acceptable?
            except ValueError as exc:
                self._skip(name, str(exc))
                continue
            reply.want.append(name)

    def _body(self, reply: _Reply) -> dict:
        """The message body of ``reply``, without its empty parts."""
        body: dict[str, Any] = {}
        if reply.newest is not None:
            body["newest"] = reply.newest
        if reply.buckets:
            body["buckets"] = reply.buckets
        if reply.summaries:
            body["summaries"] = reply.summaries
        if reply.records:
            body["records"] = self._batch(reply.records.values())
        if reply.want:
            body["want"] = reply.want
        return body

    def _digest(self) -> str:
        return _b64(bytes.fromhex(self.store.digest())[:DIGEST_BYTES])

    def _current_tree(self) -> _Tree:
        digest = self.store.digest()
        if self._tree is None or self._tree[0] != digest:
            self._tree = (digest, _Tree(self.store))
        return self._tree[1]

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
