"""The push-pull anti-entropy exchange, message by message, with no sockets."""

from __future__ import annotations

import base64
import json
import logging
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from puller.cluster import gossip as gossip_module
from puller.errors import PullerError
from puller.cluster.frames import encode
from puller.cluster.gossip import MAX_STEPS, Gossip, GossipError
from puller.cluster.versions import MAX_DRIFT_MS, MAX_INT, MAX_TEXT, Record, Store, Version

T = 1_700_000_000_000
PROPERTY = settings(max_examples=60, deadline=None, database=None)


def rec(name="web", counter=0, node="a", text="name: web\n", wall=T):
    return Record(name, Version(wall, counter, node), text)


def many(count, wall=T - 3_600_000):
    """``count`` services, as every node of a settled cluster holds them."""
    return [rec(f"svc-{i:03d}", node="seed", wall=wall, text=f"name: svc-{i:03d}\n")
            for i in range(count)]


def wire(message):
    """What the other side gets: the message through JSON, as over a socket."""
    return None if message is None else json.loads(json.dumps(message))


def frame_bytes(message):
    """The real frame of ``message`` from a typical node, header included."""
    return len(encode(message, secret=b"k" * 32, cluster="default", sender="node-0001",
                      addr="10.0.0.1:7946", wall_ms=T, nonce="0" * 24))


def converse(a: Gossip, b: Gossip) -> list[dict]:
    """One exchange started by ``a``, as ``Cluster._sync_with`` drives it: every
    message sent, in order. ``b`` answers every message; ``a`` until it has nothing
    more to say, within ``MAX_STEPS`` replies."""
    sent = [wire(a.sync_request())]
    for _ in range(MAX_STEPS):
        reply, _ = b.handle(sent[-1])
        assert reply is not None, "a sync always gets a reply"
        sent.append(wire(reply))
        answer, _ = a.handle(sent[-1])
        if answer is None:
            return sent
        sent.append(wire(answer))
    raise AssertionError(f"an exchange did not end within {MAX_STEPS} replies")


def exchange(a: Gossip, b: Gossip) -> tuple[int, list[Record], list[Record]]:
    """One exchange started by ``a``: (messages sent, records won at a, at b)."""
    won = {id(a): [], id(b): []}
    sent = [wire(a.sync_request())]
    handler, other = b, a
    for _ in range(2 * MAX_STEPS):
        reply, records = handler.handle(sent[-1])
        won[id(handler)] += records
        if reply is None:
            assert handler is a, "a sync always gets a reply"
            return len(sent), won[id(a)], won[id(b)]
        sent.append(wire(reply))
        handler, other = other, handler
    raise AssertionError(f"an exchange did not end within {MAX_STEPS} replies")


def kinds(messages: list[dict]) -> list[str]:
    return [m["type"] for m in messages]


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


def test_sync_request_carries_the_digest_and_the_newest_wall():
    store = Store([rec(), rec("db", wall=T + 5, text=None)])
    digest = base64.urlsafe_b64encode(bytes.fromhex(store.digest())[:18]).decode()
    assert len(digest) == 24
    assert Gossip(store).sync_request() == {
        "type": "sync", "body": {"digest": digest, "newest": T + 5}}
    assert Gossip(Store()).sync_request()["body"].keys() == {"digest"}


@pytest.mark.parametrize("services", [0, 1, 20, 500])
def test_equal_stores_are_in_sync(services):
    a, b = Gossip(Store(many(services))), Gossip(Store(many(services)))
    assert b.handle(wire(a.sync_request())) == ({"type": "in-sync", "body": {}}, [])
    assert a.handle({"type": "in-sync", "body": {}}) == (None, [])


@pytest.mark.parametrize("services", [20, 500])
def test_nodes_that_agree_exchange_two_frames_of_at_most_300_bytes(services):
    messages = converse(Gossip(Store(many(services))), Gossip(Store(many(services))))
    assert kinds(messages) == ["sync", "in-sync"]
    # Whatever the number of services: a 24-character digest and a 13-digit wall.
    assert [frame_bytes(m) for m in messages] == [282, 227]


def test_an_edit_newer_than_all_the_other_holds_goes_at_once():
    edit = rec("svc-123", node="b", text="edited\n")
    a, b = Gossip(Store(many(500))), Gossip(Store([*many(500), edit]))
    messages = converse(a, b)  # b holds it: it goes in b's first reply
    assert kinds(messages) == ["sync", "sync-reply"]
    assert a.store.get("svc-123") == edit and a.store.digest() == b.store.digest()
    a, b = Gossip(Store([*many(500), edit])), Gossip(Store(many(500)))
    messages = converse(a, b)  # a holds it: it goes as soon as a hears b's newest
    assert kinds(messages) == ["sync", "sync-reply", "sync", "ack"]
    assert b.store.get("svc-123") == edit and a.store.digest() == b.store.digest()
    assert sum(frame_bytes(m) for m in messages) < 1400


@pytest.mark.parametrize("holder", ["initiator", "other"])
def test_the_descent_finds_one_old_record_among_500(holder):
    full, lacking = many(500), many(500)
    missing = lacking.pop(321)
    stores = (Store(full), Store(lacking)) if holder == "initiator" else \
        (Store(lacking), Store(full))
    a, b = Gossip(stores[0]), Gossip(stores[1])
    messages = converse(a, b)
    assert a.store.digest() == b.store.digest() and a.store.get(missing.name) == missing
    bodies = [m["body"] for m in messages]
    assert "buckets" in bodies[1] and "buckets" in bodies[2]  # two levels of 16 buckets
    assert "summaries" in bodies[3]  # then the few names of one bucket
    assert len(messages) == 6 and sum(frame_bytes(m) for m in messages) < 2000
    assert sum(len(b.get("records", [])) for b in bodies) == 1


def test_a_small_store_is_summarised_at_once():
    a = Gossip(Store([rec("a", counter=2), rec("b", counter=1), rec("only-a")]))
    b = Gossip(Store([rec("a", counter=1), rec("b", counter=2), rec("only-b", text=None)]))
    reply, won = b.handle(wire(a.sync_request()))
    assert won == [] and reply["type"] == "sync-reply"
    assert list(reply["body"]["summaries"]) == [""]
    assert sorted(reply["body"]["summaries"][""]) == ["a", "b", "only-b"]


def test_a_summary_is_answered_with_newer_records_and_the_names_wanted():
    a = Store([rec("a", counter=2), rec("b", counter=1), rec("only-a")])
    b = Gossip(Store([rec("a", counter=1), rec("b", counter=2), rec("only-b", text=None)]))
    summary = {"": {name: r.version.to_json() for name, r in a.records.items()}}
    reply, won = b.handle(wire({"type": "sync", "body": {"summaries": summary}}))
    assert won == [] and reply["type"] == "sync-reply"
    assert sorted(r["name"] for r in reply["body"]["records"]) == ["b", "only-b"]
    assert reply["body"]["want"] == ["a", "only-a"]


def test_one_exchange_makes_two_stores_equal():
    a = Gossip(Store([rec("a", counter=2), rec("b", counter=1), rec("only-a")]))
    b = Gossip(Store([rec("a", counter=1), rec("b", counter=2), rec("only-b", text=None)]))
    sent, won_a, won_b = exchange(a, b)
    assert sorted(r.name for r in won_a) == ["b", "only-b"]
    assert sorted(r.name for r in won_b) == ["a", "only-a"]
    assert a.store.digest() == b.store.digest()
    assert a.store.get("only-b").deleted
    assert exchange(a, b) == (2, [], [])  # then only sync + in-sync
    assert exchange(b, a) == (2, [], [])


def test_nothing_to_say_ends_the_exchange():
    a = Gossip(Store())
    b = Gossip(Store([rec()]))
    sent, won_a, won_b = exchange(a, b)  # b's summary, a's want, b's record
    assert sent == 4 and won_a == [rec()] and won_b == []
    a, b = Gossip(Store([rec()])), Gossip(Store())
    assert exchange(a, b) == (4, [], [rec()])  # b's empty summary, a's record, b's ack


def test_a_wanted_name_we_no_longer_hold_is_skipped():
    a = Gossip(Store([rec()]))
    reply = {"type": "sync-reply", "body": {"want": ["gone", 5, "web"]}}
    answer, won = a.handle(reply)
    assert answer["type"] == "sync"
    assert [r["name"] for r in answer["body"]["records"]] == ["web"]
    assert a.handle({"type": "sync-reply", "body": {"want": ["gone"]}}) == (None, [])


def test_a_collision_of_bucket_digests_costs_a_summary_not_a_difference(monkeypatch):
    monkeypatch.setattr(gossip_module, "BUCKET_BYTES", 0)  # every bucket digest collides
    a, b = Gossip(Store(many(100))), Gossip(Store(many(99)))
    messages = converse(a, b)
    assert a.store.digest() == b.store.digest()
    assert list(messages[2]["body"]["summaries"]) == [""]  # equal sub-buckets: the summary


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
    summary, _ = a.handle(wire(b.sync_request()))  # a's summary of its few names
    answer, _ = b.handle(wire(summary))
    assert len(answer["body"]["want"]) == 2 and set(answer["body"]["want"]) < set(a.store.records)


def test_bytes_per_message_are_capped_but_one_record_always_goes():
    big = "x" * MAX_TEXT
    a = Gossip(Store([rec(f"s{i}", counter=i, text=big) for i in range(3)]),
               max_bytes=MAX_TEXT + 1000)
    assert len(a.push(a.store.records.values())["body"]["records"]) == 1
    tiny = Gossip(a.store, max_bytes=10)
    assert len(tiny.push(a.store.records.values())["body"]["records"]) == 1
    assert tiny.push([]) == {"type": "push", "body": {"records": []}}


def test_max_records_must_be_positive_and_leaf_not_negative():
    with pytest.raises(ValueError):
        Gossip(Store(), max_records=0)
    with pytest.raises(ValueError):
        Gossip(Store(), leaf=-1)


# --- malformed input -------------------------------------------------------------------


@pytest.mark.parametrize("message", [
    None, [], "sync", {}, {"type": "push"}, {"type": 1, "body": {}}, {"type": "push", "body": []},
    {"type": "hello", "body": {}},
    {"type": "push", "body": {}}, {"type": "push", "body": {"records": {}}},
    {"type": "sync", "body": {}}, {"type": "sync", "body": {"summary": {}}},
    {"type": "sync", "body": {"digest": 7}}, {"type": "sync", "body": {"newest": "1"}},
    {"type": "sync", "body": {"newest": True}}, {"type": "sync", "body": {"newest": -2}},
    {"type": "sync-reply", "body": {"records": [], "want": "web"}},
    {"type": "sync-reply", "body": {"records": {}}},
    {"type": "sync-reply", "body": {"buckets": []}},
    {"type": "sync-reply", "body": {"buckets": {"x": "A" * 44}}},
    {"type": "sync-reply", "body": {"buckets": {"0" * 8: "A" * 44}}},
    {"type": "sync-reply", "body": {"buckets": {"": "A" * 40}}},
    {"type": "sync-reply", "body": {"buckets": {"": "!" * 44}}},
    {"type": "sync-reply", "body": {"buckets": {"": 5}}},
    {"type": "sync", "body": {"summaries": []}},
    {"type": "sync", "body": {"summaries": {"": []}}},
    {"type": "sync", "body": {"summaries": {"0" * 9: {}}}},
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
    message = {"type": "sync", "body": {"summaries": {"": {
        "web": "nonsense", "../evil": [T, 0, "a"], "db": [T, 0, "b"]}}}}
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
    reply, _ = gossip.handle({"type": "sync", "body": {"summaries": {"": summary}}}, T)
    assert reply["body"]["want"] == ["db"]


def test_an_exchange_converges_on_what_is_within_the_drift():
    a = Gossip(Store([rec("x", counter=1), FORGED]))
    b = Gossip(Store([rec(), rec("x", counter=2, node="b")]))
    message = a.sync_request()
    for _ in range(MAX_STEPS):
        reply, _ = b.handle(wire(message), T)
        message, _ = a.handle(wire(reply), T) if reply is not None else (None, [])
        if message is None:
            break
    assert a.store.get("x") == b.store.get("x") == rec("x", counter=2, node="b")
    assert b.store.get("web") == rec()  # not the forged one: its version is from the future


# --- properties and a small cluster ----------------------------------------------------

def _record(name: str, version: Version) -> Record:
    # One version is one edit at one node: its text (or deletion) is a function of it;
    # two texts under one version cannot happen, and digests rightly ignore texts.
    deleted = (version.wall + version.counter) % 3 == 0
    return Record(name, version, None if deleted else f"{name} {version}")


versions = st.builds(Version, st.integers(0, 3), st.integers(0, 2), st.sampled_from(["n1", "n2"]))
records = st.builds(_record, st.sampled_from(["a", "b", "c", "d"]), versions)
# enough names for several buckets and a few levels of them
more_records = st.builds(_record, st.sampled_from([f"s{i:02d}" for i in range(40)]), versions)


@PROPERTY
@given(st.lists(records, max_size=10), st.lists(records, max_size=10), st.integers(1, 3))
def test_exchanges_converge_on_the_join(left, right, cap):
    a, b = Gossip(Store(left), max_records=cap), Gossip(Store(right), max_records=cap)
    joined = Store([*left, *right])
    for _ in range(4 // cap + 1):
        exchange(a, b)
    assert dict(a.store.records) == dict(b.store.records) == dict(joined.records)


@PROPERTY
@given(st.lists(more_records, max_size=60), st.lists(more_records, max_size=60),
       st.integers(1, 4), st.sampled_from([0, 1, 8]), st.sampled_from([0, 1, 2]))
def test_any_two_stores_converge_through_the_digest_descent(left, right, cap, leaf, bucket_bytes):
    """Whatever the stores, message caps, leaf size and bucket digest length (0: every
    bucket digest collides, 1: many do), every exchange between stores that differ
    moves at least one record, and they end equal to the join."""
    joined = Store([*left, *right])
    a = Gossip(Store(left), max_records=cap, leaf=leaf)
    b = Gossip(Store(right), max_records=cap, leaf=leaf)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gossip_module, "BUCKET_BYTES", bucket_bytes)
        for turn in range(2 * len(joined) + 1):
            if a.store.digest() == b.store.digest():
                break
            first, second = (a, b) if turn % 2 == 0 else (b, a)
            _, won_first, won_second = exchange(first, second)
            assert won_first or won_second
        assert exchange(a, b) == (2, [], [])
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
