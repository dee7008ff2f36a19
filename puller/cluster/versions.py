"""Versions of definitions and the store that merges them; pure, no I/O.

Every definition carries a :class:`Version`, a hybrid logical clock timestamp
(Kulkarni et al., "Logical Physical Clocks"): wall milliseconds, a counter that
breaks ties within one millisecond or while the wall clock stands still or goes
back, and the origin node that breaks the remaining ties. The order is total,
so "highest version wins" picks the same record on every node whatever order
the records arrive in.

Peers are trusted for definitions, not for time: a peer's record whose wall
is more than ``MAX_DRIFT_MS`` ahead of this node's clock is refused
(:meth:`Store.merge_received`), or a broken clock, or a forged
``2**63-1`` tombstone, would win over every later edit of that name for good.

A deleted definition is a tombstone (a :class:`Record` whose ``text`` is
``None``): it beats every older version, so a node that was away cannot
resurrect a deleted service, and it is forgotten only after
``TOMBSTONE_GRACE_MS``.

Time is never read here: callers pass ``wall_ms``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from ..errors import PullerError
from ..node.definitions import NAME_RE

MAX_DRIFT_MS = 60_000  # a peer's version further ahead than this is refused
TOMBSTONE_GRACE_MS = 7 * 24 * 3600 * 1000  # a tombstone is forgotten after this long
MAX_NODE = 255  # characters of a node name
MAX_NAME = 200  # characters of a service name (it becomes a file name)
MAX_TEXT = 256 * 1024  # UTF-8 bytes of a definition's text
MAX_INT = 2**63 - 1  # wall and counter stay within a signed 64-bit integer


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_node(node: Any) -> None:
    if not isinstance(node, str):
        raise ValueError(f"node must be a string, not {type(node).__name__}")
    if not node or len(node) > MAX_NODE:
        raise ValueError(f"node must have 1 to {MAX_NODE} characters, not {len(node)}")


@dataclass(frozen=True, order=True)
class Version:
    """A hybrid logical clock timestamp, ordered by ``(wall, counter, node)``."""

    wall: int  # ms since the epoch
    counter: int
    node: str

    def to_json(self) -> list:
        """``[wall, counter, node]``."""
        return [self.wall, self.counter, self.node]

    @classmethod
    def from_json(cls, data: Any) -> Version:
        """Parse ``[wall, counter, node]``; ``ValueError`` on anything else."""
        if isinstance(data, Version):
            return data
        if not isinstance(data, (list, tuple)) or len(data) != 3:
            raise ValueError(f"a version is [wall, counter, node], not {data!r:.80}")
        wall, counter, node = data
        for field, value in (("wall", wall), ("counter", counter)):
            if not _is_int(value):
                raise ValueError(f"version {field} must be an integer, not {value!r:.40}")
            if not 0 <= value <= MAX_INT:
                raise ValueError(f"version {field} must be between 0 and 2**63-1, not {value}")
        _check_node(node)
        return cls(wall, counter, node)

    def __str__(self) -> str:
        return f"{self.wall}.{self.counter}@{self.node}"


def too_far_ahead(version: Version, wall_ms: int) -> bool:
    """True if ``version`` is more than ``MAX_DRIFT_MS`` ahead of the wall clock ``wall_ms``."""
    return version.wall > wall_ms + MAX_DRIFT_MS


class Clock:
    """A node's hybrid logical clock: monotonic even when the wall clock goes back.

    Call :meth:`observe` with every version received from a peer, so that a
    later local edit gets a higher version than anything this node has seen.
    """

    def __init__(self, node: str):
        _check_node(node)
        self.node = node
        self._wall = -1  # nothing issued or observed yet
        self._counter = 0

    @property
    def last(self) -> Version | None:
        """The highest timestamp issued or observed so far (None before any)."""
        if self._wall < 0:
            return None
        return Version(self._wall, self._counter, self.node)

    def now(self, wall_ms: int) -> Version:
        """A timestamp for a local event, higher than every earlier one."""
        if wall_ms > self._wall:
            self._wall, self._counter = wall_ms, 0
        else:
            self._counter += 1
        return Version(self._wall, self._counter, self.node)

    def observe(self, remote: Version, wall_ms: int) -> None:
        """Merge a received timestamp, unless its wall is beyond ``wall_ms + MAX_DRIFT_MS``.

        A clock that far ahead is someone's broken clock: it must not drag every
        node's versions into the future (and the store refuses a peer's record
        that far ahead: :meth:`Store.merge_received`).
        """
        if too_far_ahead(remote, wall_ms):
            return
        if (remote.wall, remote.counter) > (self._wall, self._counter):
            self._wall, self._counter = remote.wall, remote.counter


@dataclass(frozen=True)
class Record:
    """One definition as the cluster knows it: its text, or a tombstone."""

    name: str  # the service name
    version: Version
    text: str | None  # the definition file's exact text; None = deleted

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_RE.match(self.name):
            raise ValueError(
                f"service name {self.name!r:.80} is not valid (letters, digits, '_', '.', '-')")
        if len(self.name) > MAX_NAME:
            raise ValueError(f"service name has {len(self.name)} characters; at most {MAX_NAME}")
        if not isinstance(self.version, Version):
            raise ValueError(f"version must be a Version, not {type(self.version).__name__}")
        if self.text is not None:
            if not isinstance(self.text, str):
                raise ValueError(f"text must be a string or None, not {type(self.text).__name__}")
            try:
                size = len(self.text.encode("utf-8"))
            except UnicodeEncodeError:
                raise ValueError(f"the text of {self.name} is not valid Unicode") from None
            if size > MAX_TEXT:
                raise ValueError(f"the text of {self.name} has {size} bytes; at most {MAX_TEXT}")

    @property
    def deleted(self) -> bool:
        """True for a tombstone."""
        return self.text is None

    def to_json(self) -> dict:
        return {"name": self.name, "version": self.version.to_json(), "text": self.text}

    @classmethod
    def from_json(cls, data: Any) -> Record:
        """Parse ``{"name", "version", "text"}``; ``ValueError`` on anything malformed."""
        if not isinstance(data, dict):
            raise ValueError(f"a record is an object, not {type(data).__name__}")
        missing = {"name", "version", "text"} - data.keys()
        if missing:
            raise ValueError(f"a record lacks {', '.join(sorted(missing))}")
        return cls(data["name"], Version.from_json(data["version"]), data["text"])


class FutureRecord(PullerError):
    """A peer's record refused because its version is too far ahead of this node's clock."""

    def __init__(self, record: Record, wall_ms: int):
        self.record = record
        self.wall_ms = wall_ms
        ahead = (record.version.wall - wall_ms) / 1000
        super().__init__(
            f"refused {record.name} at version {record.version}: it is {ahead:.0f} s ahead of "
            f"this node's clock, more than the {MAX_DRIFT_MS // 1000} s allowed; check the clock "
            f"of node {record.version.node} (and this one's)")


def _key(record: Record) -> tuple:
    """Merge order: the version; an impossible tie (same version, other text) is
    broken by the text, so that merging stays commutative even then."""
    return (record.version, record.text is not None, record.text or "")


class Store:
    """Every record a node knows, tombstones included; merging is a CRDT join."""

    def __init__(self, records: Iterable[Record] = ()):
        self._records: dict[str, Record] = {}
        self._digest: str | None = None
        self.merge_all(records)

    @property
    def records(self) -> Mapping[str, Record]:
        """name → record, read-only (change it with :meth:`merge`)."""
        return MappingProxyType(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def get(self, name: str) -> Record | None:
        return self._records.get(name)

    def merge(self, record: Record, wall_ms: int | None = None) -> bool:
        """Keep ``record`` if it is newer than ours; True if the store changed.

        Given this node's clock ``wall_ms`` (for a peer's record), a record too
        far ahead of it raises :class:`FutureRecord` and changes nothing.
        """
        if wall_ms is not None and too_far_ahead(record.version, wall_ms):
            raise FutureRecord(record, wall_ms)
        current = self._records.get(record.name)
        if current is not None and _key(record) <= _key(current):
            return False
        self._records[record.name] = record
        self._digest = None
        return True

    def merge_all(self, records: Iterable[Record]) -> list[Record]:
        """Merge each record; the records now in force that changed the store."""
        won: dict[str, Record] = {}
        for record in records:
            if self.merge(record):
                won[record.name] = record
        return list(won.values())

    def merge_received(self, records: Iterable[Record],
                       wall_ms: int) -> tuple[list[Record], list[FutureRecord]]:
        """Merge a peer's records, given this node's clock ``wall_ms``: ``(the records
        now in force that changed the store, the refusals of those too far ahead)``."""
        won: dict[str, Record] = {}
        refused = []
        for record in records:
            try:
                if self.merge(record, wall_ms):
                    won[record.name] = record
            except FutureRecord as refusal:
                refused.append(refusal)
        return list(won.values()), refused

    def digest(self) -> str:
        """sha256 hex of the sorted (name, version) pairs: equal iff the summaries are."""
        if self._digest is None:
            pairs = [[name, self._records[name].version.to_json()] for name in sorted(self._records)]
            canonical = json.dumps(pairs, separators=(",", ":"))
            self._digest = hashlib.sha256(canonical.encode("ascii")).hexdigest()
        return self._digest

    def summary(self) -> dict[str, list]:
        """name → ``version.to_json()`` for every record."""
        return {name: record.version.to_json() for name, record in self._records.items()}

    def newer_than(self, summary: Mapping[str, Any]) -> list[Record]:
        """Our records that the other side lacks or has older, sorted by name.

        ``summary`` maps names to versions (JSON lists or :class:`Version`);
        ``ValueError`` if one is malformed.
        """
        newer = []
        for name in sorted(self._records):
            record = self._records[name]
            theirs = summary.get(name)
            if theirs is None or Version.from_json(theirs) < record.version:
                newer.append(record)
        return newer

    def wanted_from(self, summary: Mapping[str, Any]) -> list[str]:
        """Names, sorted, where the other side is newer or we have nothing."""
        wanted = []
        for name in sorted(summary):
            theirs = Version.from_json(summary[name])
            ours = self._records.get(name)
            if ours is None or ours.version < theirs:
                wanted.append(name)
        return wanted

    def expire_tombstones(self, wall_ms: int, grace_ms: int = TOMBSTONE_GRACE_MS) -> list[str]:
        """Forget tombstones older than ``grace_ms``; their names, sorted."""
        expired = sorted(name for name, record in self._records.items()
                         if record.deleted and record.version.wall < wall_ms - grace_ms)
        for name in expired:
            del self._records[name]
        if expired:
            self._digest = None
        return expired

    def live(self) -> dict[str, Record]:
        """name → record for the definitions that are not deleted."""
        return {name: record for name, record in self._records.items() if not record.deleted}
