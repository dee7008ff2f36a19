"""Which side wins, one service at a time, between the directory and etcd; pure.

What this node knows of each service:

- ``seen``: the key's ``mod_revision`` when this node last wrote or took it
  (0: the key did not exist);
- ``pending``: a local edit or deletion versioned by ``DirectorySync`` and not
  yet confirmed by etcd (made while etcd was down, or not yet sent).

The rule (etcd arbitrates; a local edit never loses to nothing):

- etcd and the directory hold the same text → nothing to do (``SAME``);
- a pending local edit, and etcd's key is still at ``seen`` → write it, as a
  compare-and-swap on ``seen`` (``PUSH``): if another node wrote in between,
  the swap fails and it is a conflict;
- a pending local edit, and etcd's key moved since → etcd wins: its version is
  written to the directory, the local edit is kept aside and reported
  (``CONFLICT``), never silently dropped;
- no pending edit and etcd's key moved → the directory takes etcd's version
  (``TAKE``), a deletion included; a person's unsaved draft on disk is still
  never overwritten (``DirectorySync.apply`` keeps that rule).

So the last writer by etcd revision wins, and a local edit made while etcd was
away wins only if nobody changed that service in etcd meanwhile.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


@enum.unique
class Action(enum.Enum):
    SAME = "same"
    PUSH = "push"
    TAKE = "take"
    CONFLICT = "conflict"


def decide(etcd_text: str | None, etcd_rev: int, local_text: str | None, seen: int,
           pending: bool) -> Action:
    """What to do with one service; ``etcd_rev`` is 0 when the key is absent,
    ``local_text`` None when the directory has no (live) definition."""
    if etcd_text == local_text:
        return Action.SAME
    if pending:
        return Action.PUSH if etcd_rev == seen else Action.CONFLICT
    return Action.TAKE


@dataclass
class MirrorState:
    """``seen`` and ``pending`` by service; saved next to the directory's state."""

    seen: dict[str, int] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)
    revision: int = 0  # the highest store revision this node has caught up with

    def settled(self, name: str, mod_revision: int) -> None:
        """etcd and the directory agree at ``mod_revision`` (0: both absent)."""
        if mod_revision:
            self.seen[name] = mod_revision
        else:
            self.seen.pop(name, None)
        self.pending.discard(name)

    def is_echo(self, name: str, mod_revision: int) -> bool:
        """A watch event this node already knows (its own write, or one taken)."""
        return 0 < mod_revision <= self.seen.get(name, 0)

    def to_json(self) -> dict[str, Any]:
        return {"seen": dict(sorted(self.seen.items())), "pending": sorted(self.pending),
                "revision": self.revision}

    @classmethod
    def from_json(cls, data: Any) -> "MirrorState":
        """Parse what ``to_json`` wrote; ``ValueError`` on anything else."""
        if not isinstance(data, dict):
            raise ValueError("the etcd mirror state is not an object")
        seen = data.get("seen", {})
        pending = data.get("pending", [])
        if not isinstance(seen, dict) or not all(
                isinstance(k, str) and isinstance(v, int) for k, v in seen.items()):
            raise ValueError("seen must map names to revisions")
        if not isinstance(pending, list) or not all(isinstance(n, str) for n in pending):
            raise ValueError("pending must be a list of names")
        return cls(dict(seen), set(pending), int(data.get("revision", 0)))
