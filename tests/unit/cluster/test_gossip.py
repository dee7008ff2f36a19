"""The push-pull anti-entropy exchange, message by message, with no sockets."""

from __future__ import annotations

import json
import logging
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from puller.errors import PullerError
from puller.cluster.gossip import Gossip, GossipError
from puller.cluster.versions import MAX_DRIFT_MS, MAX_INT, MAX_TEXT, Record, Store, Version

T = 1_700_000_000_000
PROPERTY = settings(max_examples=60, deadline=None, database=None)


def rec(name="web", counter=0, node="a", text="name: web\n", wall=T):
    return Record(name, Version(wall, counter, node), text)


def wire(message):
    """What the other side gets: the message through JSON, as over a socket."""
    return None if message is None else json.loads(json.dumps(message))


def exchange(a: Gossip, b: Gossip) -> tuple[int, list[Record], list[Record]]:
    """One exchange started by ``a``: (messages sent, records won at a, at b)."""
    sent, won_a, won_b = 1, [], []
    reply, won = b.handle(wire(a.sync_request()))
    assert won == []
    sent += 1
    push, won_a = a.handle(wire(reply))
    if push is not None:
        sent += 1
        ack, won_b = b.handle(wire(push))
        assert ack == {"type": "ack", "body": {}}
        sent += 1
        assert a.handle(wire(ack)) == (None, [])
    return sent, won_a, won_b


# --- messages --------------------------------------------------------------------------


def test_push_is_acknowledged_and_returns_what_won():
    a, b = Gossip(Store()), Gossip(Store([rec("db", counter=9)]))
    message = a.push([rec(), rec("db", counter=1)])
    assert message == {"type": "push", "body": {"records": [
        rec("db", counter=1).to_json(), rec().to_json()]}}  # newest first
    reply, won = b.handle(wire(message))
    assert reply == {"type": "ack", "body": {}}
    assert won == [rec()]
    assert b.handle(wire(message)) == ({"type": "ack", "body": {}}, [])


def test_sync_request_carries_digest_and_summary():
    store = Store([rec(), rec("db", text=None)])
    assert Gossip(store).sync_request() == {"type": "sync", "body": {
        "digest": store.digest(), "summary": {"web": [T, 0, "a"], "db": [T, 0, "a"]}}}


def test_equal_stores_are_in_sync():
    a, b = Gossip(Store([rec()])), Gossip(Store([rec()]))
    assert b.handle(wire(a.sync_request())) == ({"type": "in-sync", "body": {}}, [])
    assert a.handle({"type": "in-sync", "body": {}}) == (None, [])


def test_sync_reply_sends_newer_records_and_asks_for_the_rest():
    a = Gossip(Store([rec("a", counter=2), rec("b", counter=1), rec("only-a")]))
    b = Gossip(Store([rec("a", counter=1), rec("b", counter=2), rec("only-b", text=None)]))
    reply, won = b.handle(wire(a.sync_request()))
    assert won == []
    assert reply["type"] == "sync-reply"
    assert sorted(r["name"] for r in reply["body"]["records"]) == ["b", "only-b"]
    assert reply["body"]["want"] == ["a", "only-a"]
    push, won = a.handle(wire(reply))
    assert sorted(r.name for r in won) == ["b", "only-b"]
    assert sorted(r["name"] for r in push["body"]["records"]) == ["a", "only-a"]
    ack, won = b.handle(wire(push))
    assert sorted(r.name for r in won) == ["a", "only-a"]
    assert a.store.digest() == b.store.digest()
    assert a.store.get("only-b").deleted


def test_nothing_wanted_means_no_push():
    a = Gossip(Store())
    b = Gossip(Store([rec()]))
    push, won = a.handle(wire(b.handle(wire(a.sync_request()))[0]))
    assert push is None and won == [rec()]


def test_a_wanted_name_we_no_longer_hold_is_skipped():
    a = Gossip(Store([rec()]))
    reply = {"type": "sync-reply", "body": {"records": [], "want": ["gone", 5, "web"]}}
    push, won = a.handle(reply)
    assert [r["name"] for r in push["body"]["records"]] == ["web"]


def test_one_exchange_makes_two_stores_equal():
    a = Gossip(Store([rec("x", counter=1), rec("y", text=None)]))
    b = Gossip(Store([rec("x", counter=2, node="b"), rec("z")]))
    sent, won_a, won_b = exchange(a, b)
    assert sent == 4
    assert a.store.digest() == b.store.digest()
    assert exchange(a, b) == (2, [], [])  # then only sync + in-sync


# --- caps ------------------------------------------------------------------------------


def test_records_per_message_are_capped_and_the_rest_follows():
    a = Gossip(Store([rec(f"s{i}", counter=i) for i in range(7)]), max_records=3)
    b = Gossip(Store(), max_records=3)
    rounds = 0
    while a.store.digest() != b.store.digest():
        _, won_a, _ = exchange(b, a)
        assert len(won_a) <= 3
        rounds += 1
    assert rounds == 3
    assert len(a.push(a.store.records.values())["body"]["records"]) == 3


def test_the_newest_records_go_first():
    a = Gossip(Store([rec(f"s{i}", counter=i) for i in range(5)]), max_records=2)
    assert [r["name"] for r in a.push(a.store.records.values())["body"]["records"]] == ["s4", "s3"]


def test_wanted_names_are_capped():
    a = Gossip(Store([rec(f"s{i}") for i in range(5)]))
    b = Gossip(Store(), max_records=2)
    reply, _ = b.handle(wire(a.sync_request()))
    assert reply["body"]["want"] == ["s0", "s1"]


def test_bytes_per_message_are_capped_but_one_record_always_goes():
    big = "x" * MAX_TEXT
    a = Gossip(Store([rec(f"s{i}", counter=i, text=big) for i in range(3)]),
               max_bytes=MAX_TEXT + 1000)
    assert len(a.push(a.store.records.values())["body"]["records"]) == 1
    tiny = Gossip(a.store, max_bytes=10)
    assert len(tiny.push(a.store.records.values())["body"]["records"]) == 1
    assert tiny.push([]) == {"type": "push", "body": {"records": []}}


def test_max_records_must_be_positive():
    with pytest.raises(ValueError):
        Gossip(Store(), max_records=0)


# --- malformed input -------------------------------------------------------------------


@pytest.mark.parametrize("message", [
    None, [], "sync", {}, {"type": "push"}, {"type": 1, "body": {}}, {"type": "push", "body": []},
    {"type": "hello", "body": {}},
    {"type": "push", "body": {}}, {"type": "push", "body": {"records": {}}},
    {"type": "sync", "body": {"summary": {}}}, {"type": "sync", "body": {"digest": "x"}},
    {"type": "sync", "body": {"digest": "x", "summary": []}},
    {"type": "sync-reply", "body": {"records": []}},
    {"type": "sync-reply", "body": {"records": [], "want": "web"}},
    {"type": "sync-reply", "body": {"want": []}},
])
def test_malformed_messages_raise_gossip_error(message):
    with pytest.raises(GossipError) as error:
        Gossip(Store([rec()])).handle(message)
    assert isinstance(error.value, PullerError)
    assert str(error.value).startswith("ignored a malformed sync")
    assert str(error.value).endswith("every node runs the same puller version")


def test_a_bad_record_is_skipped_the_others_merged(caplog):
    gossip = Gossip(Store())
    message = {"type": "push", "body": {"records": [
        rec("good").to_json(), {"name": "../evil", "version": [T, 0, "a"], "text": "x"},
        {"name": "big", "version": [T, 0, "a"], "text": "x" * (MAX_TEXT + 1)}, 7]}}
    with caplog.at_level(logging.DEBUG, logger="puller.cluster.gossip"):
        _, won = gossip.handle(message)
        assert won == [rec("good")]
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 3
        caplog.clear()
        gossip.handle(message)
        assert all(r.levelno == logging.DEBUG for r in caplog.records)  # said once, then quieter


def test_bad_summary_entries_are_ignored():
    a = Gossip(Store([rec("web")]))
    message = {"type": "sync", "body": {"digest": "x", "summary": {
        "web": "nonsense", "../evil": [T, 0, "a"], "db": [T, 0, "b"]}}}
    reply, _ = a.handle(message)
    assert reply["body"]["want"] == ["db"]
    assert [r["name"] for r in reply["body"]["records"]] == ["web"]


# --- records from the future ----------------------------------------------------------

FORGED = Record("web", Version(MAX_INT, MAX_INT, "evil"), None)  # it once deleted web for good


@pytest.mark.parametrize("kind", ["push", "sync-reply"])
def test_a_peer_record_from_the_future_is_refused_and_reported(kind):
    gossip = Gossip(Store([rec()]))
    body = {"records": [FORGED.to_json(), rec("db").to_json()], "want": []}
    refused = []
    _, won = gossip.handle(wire({"type": kind, "body": body}), T, refused)
    assert won == [rec("db")]
    assert [refusal.record for refusal in refused] == [FORGED]
    assert "web" in str(refused[0]) and "evil" in str(refused[0])
    assert gossip.store.get("web") == rec()


def test_without_a_list_for_them_refusals_are_logged(caplog):
    gossip = Gossip(Store([rec()]))
    with caplog.at_level(logging.WARNING, logger="puller.cluster.gossip"):
        _, won = gossip.handle(wire(gossip.push([FORGED])), T)
    assert won == [] and gossip.store.get("web") == rec()
    assert any("refused web" in r.getMessage() for r in caplog.records)


def test_a_version_from_the_future_is_not_asked_for():
    gossip = Gossip(Store())
    summary = {"web": FORGED.version.to_json(), "db": [T + MAX_DRIFT_MS, 0, "b"]}
    reply, _ = gossip.handle({"type": "sync", "body": {"digest": "x", "summary": summary}}, T)
    assert reply["body"]["want"] == ["db"]


def test_an_exchange_converges_on_what_is_within_the_drift():
    a = Gossip(Store([rec("x", counter=1), FORGED]))
    b = Gossip(Store([rec(), rec("x", counter=2, node="b")]))
    reply, _ = b.handle(wire(a.sync_request()), T)
    assert reply["body"]["want"] == []  # not web: its version is from the future
    push, won = a.handle(wire(reply), T)
    assert push is None and won == [rec("x", counter=2, node="b")]
    assert b.store.get("web") == rec()


# --- properties and a small cluster ----------------------------------------------------

def _record(name: str, version: Version) -> Record:
    # One version is one edit at one node: its text (or deletion) is a function of it;
    # two texts under one version cannot happen, and digests rightly ignore texts.
    deleted = (version.wall + version.counter) % 3 == 0
    return Record(name, version, None if deleted else f"{name} {version}")


records = st.builds(_record, st.sampled_from(["a", "b", "c", "d"]),
                    st.builds(Version, st.integers(0, 3), st.integers(0, 2), st.sampled_from(["n1", "n2"])))


@PROPERTY
@given(st.lists(records, max_size=10), st.lists(records, max_size=10), st.integers(1, 3))
def test_exchanges_converge_on_the_join(left, right, cap):
    a, b = Gossip(Store(left), max_records=cap), Gossip(Store(right), max_records=cap)
    joined = Store([*left, *right])
    for _ in range(4 // cap + 1):
        exchange(a, b)
    assert dict(a.store.records) == dict(b.store.records) == dict(joined.records)


def test_a_small_cluster_converges_on_the_highest_version():
    rng = random.Random(7)
    nodes = [Gossip(Store([rec(f"s{i}") for i in range(5)])) for _ in range(30)]
    edits = [rec("s1", counter=1, node=f"n{i}", text=f"edit {i}") for i in range(5)]
    for node, edit in zip(nodes, edits):
        node.store.merge(edit)
    for _ in range(20):
        for node in nodes:
            exchange(node, rng.choice(nodes))
        if len({n.store.digest() for n in nodes}) == 1:
            break
    assert {n.store.get("s1") for n in nodes} == {max(edits, key=lambda r: r.version)}
