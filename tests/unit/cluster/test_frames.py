"""Wire frames: round trip, every refusal, and arbitrary or corrupted bytes."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from puller.cluster import frames
from puller.errors import PullerError
from puller.cluster.frames import (MAX_FRAME, MAX_SKEW_MS, PROTOCOL_VERSION, Envelope, Forged, FrameError,
                           Malformed, Oversized, Receiver, Replayed, Stale, WrongCluster, WrongVersion,
                           encode, frame_length)

T = 1_700_000_000_000
SECRET = b"s3cret"
MESSAGE = {"type": "sync", "body": {"digest": "ab", "summary": {"web": [T, 0, "box-1"]}}}
PROPERTY = settings(max_examples=60, deadline=None, database=None)


def frame(message=MESSAGE, *, secret=SECRET, cluster="prod", sender="box-1", addr="10.0.0.1:7946",
          wall_ms=T, nonce="n-1") -> bytes:
    return encode(message, secret=secret, cluster=cluster, sender=sender, addr=addr,
                  wall_ms=wall_ms, nonce=nonce)


def payload(data: bytes) -> bytes:
    assert frame_length(data[:4]) == len(data) - 4
    return data[4:]


def signed(obj: dict, secret: bytes = SECRET) -> bytes:
    """A payload with a valid MAC over whatever ``obj`` holds."""
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    mac = hmac.new(secret, canonical, hashlib.sha256).hexdigest()
    return json.dumps({**obj, "mac": mac}).encode()


def fields(**changes) -> dict:
    obj = {"v": PROTOCOL_VERSION, "cluster": "prod", "from": "box-1", "addr": "a", "ts": T,
           "nonce": "n-1", "type": "sync", "body": {}}
    obj.update(changes)
    return {k: v for k, v in obj.items() if v is not ...}


# --- round trip ------------------------------------------------------------------------


def test_round_trip():
    data = frame()
    body = json.loads(payload(data))
    assert set(body) == {"v", "cluster", "from", "addr", "ts", "nonce", "type", "body", "mac"}
    assert body["v"] == PROTOCOL_VERSION and len(body["mac"]) == 64
    envelope = Receiver(SECRET, "prod").decode(payload(data), T + MAX_SKEW_MS)
    assert envelope == Envelope(sender="box-1", addr="10.0.0.1:7946", ts=T, nonce="n-1",
                                message=MESSAGE)


def test_round_trip_with_an_empty_secret_and_unicode():
    message = {"type": "push", "body": {"records": [{"name": "web", "text": "é ☃ 𝄞 \x00"}]}}
    data = frame(message, secret=b"")
    assert Receiver(b"", "prod").decode(payload(data), T).message == message


def test_integer_keys_are_sent_as_strings():
    envelope = Receiver(SECRET, "prod").decode(
        payload(frame({"type": "x", "body": {2: "b", 10: "a"}})), T)
    assert envelope.message["body"] == {"2": "b", "10": "a"}


def test_frame_length():
    assert frame_length(b"\x00\x00\x01\x00") == 256
    assert frame_length(MAX_FRAME.to_bytes(4, "big")) == MAX_FRAME
    with pytest.raises(Oversized):
        frame_length((MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(Malformed):
        frame_length(b"\x00\x00\x00\x00")
    with pytest.raises(Malformed):
        frame_length(b"\x00\x01")


# --- what encode refuses ---------------------------------------------------------------


@pytest.mark.parametrize("message", [
    None, {"type": "x"}, {"body": {}}, {"type": 1, "body": {}}, {"type": "x", "body": []},
    {"type": "x", "body": {"bytes": b"x"}}
])
def test_encode_refuses_what_is_not_a_plain_json_message(message):
    with pytest.raises(Malformed):
        frame(message)


def test_encode_refuses_bad_envelope_fields_and_oversized_frames():
    with pytest.raises(Malformed):
        frame(nonce="")
    with pytest.raises(Malformed):
        frame(sender="x" * 256)
    with pytest.raises(Oversized):
        frame({"type": "push", "body": {"text": "x" * MAX_FRAME}})


# --- every refusal ---------------------------------------------------------------------


@pytest.mark.parametrize("data", [
    b"", b"\xff\xfe", b"not json", b"[1, 2]", b'"x"', b"{}", b"[" * 100_000,
    json.dumps(fields(v="1")).encode(), json.dumps(fields(v=True)).encode(),
    signed(fields(cluster=1)), signed(fields(ts="1")), signed(fields(ts=True)), signed(fields(ts=1.5)),
    signed(fields(body=[])), signed(fields(type=None)), signed(fields(nonce=...)),
    signed(fields(nonce="")), signed(fields(nonce="n" * 129)), signed(fields(addr="a" * 256)),
    json.dumps({**fields(), "mac": 5}).encode(), json.dumps({**fields(), "mac": "zz"}).encode(),
    json.dumps({**fields(), "mac": "é" * 64}).encode(), json.dumps(fields()).encode(),
])
def test_malformed(data):
    with pytest.raises(Malformed):
        Receiver(SECRET, "prod").decode(data, T)


def test_wrong_version_is_told_before_the_mac():
    data = json.dumps(fields(v=2, body="whatever")).encode()
    with pytest.raises(WrongVersion, match="protocol version 2, this node speaks 1"):
        Receiver(SECRET, "prod").decode(data, T)


def test_forged():
    with pytest.raises(Forged) as error:
        Receiver(b"other", "prod").decode(payload(frame()), T)
    assert error.value.sender == "box-1"
    assert "same cluster secret" in str(error.value)
    tampered = json.loads(payload(frame()))
    tampered["body"]["digest"] = "cd"
    with pytest.raises(Forged):
        Receiver(SECRET, "prod").decode(json.dumps(tampered).encode(), T)


def test_wrong_cluster():
    with pytest.raises(WrongCluster, match="cluster 'staging'"):
        Receiver(SECRET, "prod").decode(payload(frame(cluster="staging")), T)


@pytest.mark.parametrize("skew", [MAX_SKEW_MS + 1, -MAX_SKEW_MS - 1, 10**9])
def test_stale(skew):
    with pytest.raises(Stale):
        Receiver(SECRET, "prod").decode(payload(frame(wall_ms=T + skew)), T)


@pytest.mark.parametrize("skew", [MAX_SKEW_MS, -MAX_SKEW_MS, 0])
def test_skew_within_the_window_is_fine(skew):
    Receiver(SECRET, "prod").decode(payload(frame(wall_ms=T + skew)), T)


def test_replayed():
    receiver = Receiver(SECRET, "prod")
    data = payload(frame())
    receiver.decode(data, T)
    with pytest.raises(Replayed):
        receiver.decode(data, T + 1)
    with pytest.raises(Replayed):
        receiver.decode(data, T + MAX_SKEW_MS)
    with pytest.raises(Stale):  # later, the timestamp alone refuses it
        receiver.decode(data, T + MAX_SKEW_MS + 1)
    receiver.decode(payload(frame(nonce="n-2")), T)
    receiver.decode(payload(frame(sender="box-2")), T)  # nonces are per sender


def test_nonces_are_forgotten_once_stale():
    receiver = Receiver(SECRET, "prod")
    for i in range(10):
        receiver.decode(payload(frame(nonce=f"n{i}", wall_ms=T + i)), T)
    assert len(receiver._seen) == 10
    receiver.decode(payload(frame(nonce="late", wall_ms=T + MAX_SKEW_MS + 5)), T + MAX_SKEW_MS + 5)
    assert len(receiver._seen) == 6  # n5..n9 are still in the window, plus "late"


def test_nonce_memory_is_bounded_without_opening_a_gap(monkeypatch):
    monkeypatch.setattr(frames, "MAX_NONCES", 3)
    receiver = Receiver(SECRET, "prod")
    sent = [payload(frame(nonce=f"n{i}", wall_ms=T + i)) for i in range(5)]
    for data in sent:
        receiver.decode(data, T)
    assert len(receiver._seen) == 3
    for data in sent:  # forgotten or not, none can be replayed
        with pytest.raises(Replayed):
            receiver.decode(data, T)
    receiver.decode(payload(frame(nonce="new", wall_ms=T + 5)), T)


def test_errors_are_puller_errors_with_a_sentence():
    error = Stale("its timestamp is +40.0 s from this node's clock", "box-2")
    assert isinstance(error, FrameError) and isinstance(error, PullerError)
    assert str(error) == ("refused a sync frame from 'box-2': its timestamp is +40.0 s from this "
                          "node's clock; keep every node's clock within 30 s of the others (NTP)")
    assert error.reason.startswith("its timestamp") and error.sender == "box-2"


# --- properties ------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10)


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_frame_errors(data):
    try:
        Receiver(SECRET, "prod").decode(data, T)
    except FrameError:
        pass


@settings(max_examples=40, deadline=None, database=None)
@given(st.dictionaries(st.sampled_from(["v", "cluster", "from", "addr", "ts", "nonce", "type", "body",
                                        "mac", "x"]), json_values))
def test_arbitrary_json_objects_raise_only_frame_errors(obj):
    for data in (json.dumps(obj).encode(), signed({**fields(), **obj})):
        try:
            Receiver(SECRET, "prod").decode(data, T)
        except FrameError:
            pass


@PROPERTY
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5), st.data())
def test_a_flipped_byte_is_refused(body, data):
    original = payload(frame({"type": "push", "body": body}))
    expected = Receiver(SECRET, "prod").decode(original, T)
    assert expected.message["body"] == json.loads(json.dumps(body))
    index = data.draw(st.integers(0, len(original) - 1))
    bit = data.draw(st.integers(0, 7))
    corrupted = bytearray(original)
    corrupted[index] ^= 1 << bit
    try:
        envelope = Receiver(SECRET, "prod").decode(bytes(corrupted), T)
    except (Forged, Malformed):
        return
    except WrongVersion:
        assert original.index(b'"v":1') <= index < original.index(b'"v":1') + 5
        return
    # Only a spelling of the same JSON gets through (say \u00e9 as \u00E9, 1e+20 as
    # 1E+20): the very same envelope, never a changed one.
    assert envelope == expected
