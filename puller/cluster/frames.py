"""Wire frames of the sync protocol: length-prefixed, authenticated JSON; pure.

A frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON::

    {"v": 1, "cluster", "from", "addr", "ts", "nonce", "type", "body", "mac"}

``mac`` is the hex HMAC-SHA256, under the cluster secret, of the canonical
JSON (sorted keys, compact separators) of every other field. A
:class:`Receiver` refuses a frame that is malformed, of another protocol
version, forged, of another cluster, too far from its own clock, or already
seen (a replay), raising a :class:`FrameError` subclass saying which.

Time is never read here: callers pass ``wall_ms``.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
import re
import threading
from dataclasses import dataclass

from ..errors import PullerError

PROTOCOL_VERSION = 1
MAX_FRAME = 4 * 1024 * 1024  # bytes of JSON after the length header, at most
MAX_SKEW_MS = 30_000  # a frame's timestamp may differ from ours by this much
MAX_NONCES = 100_000  # nonces remembered to refuse replays, at most
MAX_NONCE = 128  # characters of a nonce
MAX_NAME = 255  # characters of the cluster, sender and address fields
HEADER = 4  # bytes of the length prefix

_MAC_RE = re.compile(r"[0-9a-f]{64}\Z", re.ASCII)
_FIELDS = {"cluster": str, "from": str, "addr": str, "ts": int, "nonce": str,
           "type": str, "body": dict}


class FrameError(PullerError):
    """A sync frame that was refused; ``reason`` says why."""

    advice = "it is dropped"

    def __init__(self, reason: str, sender: str | None = None):
        self.reason = reason
        self.sender = sender
        origin = f" from {sender!r:.80}" if sender else ""
        super().__init__(f"refused a sync frame{origin}: {reason}; {self.advice}")


class Malformed(FrameError):
    """Not a frame of this protocol at all."""

    advice = "check that the peer is a puller node and not another service on that port"


class Oversized(FrameError):
    """Longer than ``MAX_FRAME``."""

    advice = "the peer is not a compatible puller, or its frame was corrupted"


class WrongVersion(FrameError):
    """Another protocol version."""

    advice = "run the same puller version on every node"


class Forged(FrameError):
    """The MAC does not match."""

    advice = ("check that every node has the same cluster secret; a node of another "
              "cluster with another secret is refused this way too")


class WrongCluster(FrameError):
    """A node of another cluster (with the same secret)."""

    advice = "check the cluster name on every node"


class Stale(FrameError):
    """A timestamp too far from ours: a delayed or replayed frame, or a clock off."""

    advice = f"keep every node's clock within {MAX_SKEW_MS // 1000} s of the others (NTP)"


class Replayed(FrameError):
    """A nonce seen before."""

    advice = "someone may be replaying recorded traffic"


@dataclass(frozen=True)
class Envelope:
    """A verified frame: who sent it, and the message ``{"type", "body"}``."""

    sender: str
    addr: str
    ts: int
    nonce: str
    message: dict


def _canonical(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("ascii")


def _mac(secret: bytes, obj: dict) -> str:
    return hmac.new(secret, _canonical(obj), hashlib.sha256).hexdigest()


def encode(message: dict, *, secret: bytes, cluster: str, sender: str, addr: str,
           wall_ms: int, nonce: str) -> bytes:
    """The frame (header included) carrying ``message``; ``Malformed`` if it is not
    ``{"type": str, "body": dict}`` of plain JSON data, ``Oversized`` if too long."""
    if not isinstance(message, dict) or not isinstance(message.get("type"), str) \
            or not isinstance(message.get("body"), dict):
        raise Malformed("a message is {'type': str, 'body': dict}")
    obj = {"v": PROTOCOL_VERSION, "cluster": cluster, "from": sender, "addr": addr,
           "ts": wall_ms, "nonce": nonce, "type": message["type"], "body": message["body"]}
    try:
        # Through JSON and back, so the MAC covers exactly what the receiver will
        # canonicalise (say, integer keys become strings and sort as strings).
        obj = json.loads(json.dumps(obj))
        _check_fields(obj)
        obj["mac"] = _mac(secret, obj)
        payload = _canonical(obj)
    except (TypeError, ValueError, RecursionError) as exc:
        raise Malformed(f"the message is not plain JSON data ({exc})") from None
    if len(payload) > MAX_FRAME:
        raise Oversized(f"{len(payload)} bytes is more than the {MAX_FRAME} allowed")
    return len(payload).to_bytes(HEADER, "big") + payload


REFUSAL = "authentication failed: this node's cluster secret or cluster name differs"


def refusal() -> bytes:
    """The one unsigned frame a node sends: to a peer whose frame failed
    authentication, so the joiner learns why, and nothing else (no secret, no
    name, no node)."""
    payload = json.dumps({"refused": REFUSAL}).encode()
    return len(payload).to_bytes(HEADER, "big") + payload


def refused_reason(payload: bytes) -> str | None:
    """The reason in a refusal frame; None for any other payload."""
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if isinstance(obj, dict) and obj.get("refused") == REFUSAL and len(obj) == 1:
        return REFUSAL
    return None


def frame_length(header: bytes) -> int:
    """The length announced by a 4-byte header."""
    if len(header) != HEADER:
        raise Malformed(f"a frame header is {HEADER} bytes, not {len(header)}")
    length = int.from_bytes(header, "big")
    if length == 0:
        raise Malformed("an empty frame")
    if length > MAX_FRAME:
        raise Oversized(f"a frame of {length} bytes is more than the {MAX_FRAME} allowed")
    return length


def _check_fields(obj: dict) -> None:
    for name, kind in _FIELDS.items():
        value = obj.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise Malformed(f"field {name!r} must be a {kind.__name__}, not {type(value).__name__}")
    for name in ("cluster", "from", "addr"):
        if len(obj[name]) > MAX_NAME:
            raise Malformed(f"field {name!r} is longer than {MAX_NAME} characters")
    if not 0 < len(obj["nonce"]) <= MAX_NONCE:
        raise Malformed(f"the nonce must have 1 to {MAX_NONCE} characters")


class Receiver:
    """Verifies frames for one node, remembering nonces to refuse replays.

    A nonce is remembered until its frame's timestamp leaves the skew window
    (after which a replay is refused as ``Stale``). Past ``MAX_NONCES`` the
    oldest are forgotten and any frame not newer than them is refused, so that a
    flood can neither exhaust memory nor open a gap for a replay.
    """

    def __init__(self, secret: bytes, cluster: str):
        self._lock = threading.Lock()
        self.secret = bytes(secret)
        self.cluster = cluster
        self._seen: dict[tuple[str, str], int] = {}  # (sender, nonce) → frame ts
        self._expiry: list[tuple[int, str, str]] = []  # heap of (ts, sender, nonce)
        self._floor: int | None = None  # frames with ts <= this are refused

    def decode(self, payload: bytes, wall_ms: int) -> Envelope:
        """Verify ``payload`` (the JSON after the header) received at ``wall_ms``.
        Safe from several threads: the nonce check-and-remember is atomic."""
        with self._lock:
            return self._decode(payload, wall_ms)

    def _decode(self, payload: bytes, wall_ms: int) -> Envelope:
        if len(payload) > MAX_FRAME:
            raise Oversized(f"{len(payload)} bytes is more than the {MAX_FRAME} allowed")
        try:
            obj = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise Malformed("not UTF-8 JSON") from None
        if not isinstance(obj, dict):
            raise Malformed(f"expected a JSON object, not {type(obj).__name__}")
        version = obj.get("v")
        if not isinstance(version, int) or isinstance(version, bool):
            raise Malformed("no protocol version 'v'")
        if version != PROTOCOL_VERSION:
            raise WrongVersion(f"protocol version {str(version)[:20]}, this node speaks {PROTOCOL_VERSION}")
        _check_fields(obj)
        sender = obj["from"]
        mac = obj.pop("mac", None)
        if not isinstance(mac, str) or not _MAC_RE.match(mac):
            raise Malformed("the MAC is not 64 hex digits")
        try:
            expected = _mac(self.secret, obj)
        except (ValueError, RecursionError):
            raise Malformed("the frame cannot be canonicalised") from None
        if not hmac.compare_digest(expected, mac):
            raise Forged("its MAC does not match the cluster secret", sender)
        if obj["cluster"] != self.cluster:
            raise WrongCluster(
                f"it is for cluster {obj['cluster']!r:.80}, this node is in {self.cluster!r}", sender)
        ts, nonce = obj["ts"], obj["nonce"]
        skew = ts - wall_ms
        if abs(skew) > MAX_SKEW_MS:
            raise Stale(f"its timestamp is {skew / 1000:+.1f} s from this node's clock", sender)
        self._forget(wall_ms)
        key = (sender, nonce)
        if key in self._seen or (self._floor is not None and ts <= self._floor):
            raise Replayed("its nonce was seen before", sender)
        self._remember(key, ts)
        return Envelope(sender=sender, addr=obj["addr"], ts=ts, nonce=nonce,
                        message={"type": obj["type"], "body": obj["body"]})

    def _forget(self, wall_ms: int) -> None:
        """Drop nonces whose frames would now be refused as stale anyway."""
        while self._expiry and self._expiry[0][0] < wall_ms - MAX_SKEW_MS:
            self._pop()

    def _remember(self, key: tuple[str, str], ts: int) -> None:
        while len(self._seen) >= MAX_NONCES:
            forgotten = self._pop()
            self._floor = forgotten if self._floor is None else max(self._floor, forgotten)
        self._seen[key] = ts
        heapq.heappush(self._expiry, (ts, *key))

    def _pop(self) -> int:
        ts, sender, nonce = heapq.heappop(self._expiry)
        del self._seen[(sender, nonce)]
        return ts
