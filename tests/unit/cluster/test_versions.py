"""Versions, the hybrid logical clock and the store's merge (a CRDT join)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from puller.cluster.versions import (MAX_DRIFT_MS, MAX_INT, MAX_TEXT, TOMBSTONE_GRACE_MS, Clock,
                                     FutureRecord, Record, Store, Version)
from puller.errors import PullerError

T = 1_700_000_000_000  # a wall clock in ms
PROPERTY = settings(max_examples=60, deadline=None, database=None)


def rec(name="web", wall=T, counter=0, node="a", text="name: web\n"):
    return Record(name, Version(wall, counter, node), text)


# --- Version ---------------------------------------------------------------------------


def test_version_order_is_wall_then_counter_then_node():
    assert Version(1, 9, "z") < Version(2, 0, "a")
    assert Version(2, 0, "z") < Version(2, 1, "a")
    assert Version(2, 1, "a") < Version(2, 1, "b")


def test_version_json_round_trip():
    version = Version(T, 3, "box-1")
    assert version.to_json() == [T, 3, "box-1"]
    assert Version.from_json(version.to_json()) == version
    assert str(version) == f"{T}.3@box-1"


@pytest.mark.parametrize("data", [
    None, "1,2,a", {"wall": 1}, [], [1, 2], [1, 2, "a", 4],
    ["1", 2, "a"], [1, "2", "a"], [1.0, 2, "a"], [1, 2.5, "a"], [True, 2, "a"], [1, False, "a"],
    [-1, 0, "a"], [0, -1, "a"], [2**63, 0, "a"], [0, 2**63, "a"],
    [1, 2, 3], [1, 2, None], [1, 2, ""], [1, 2, "x" * 256],
])
def test_version_from_json_refuses_malformed(data):
    with pytest.raises(ValueError):
        Version.from_json(data)


def test_version_from_json_limits_are_inclusive():
    assert Version.from_json([0, 0, "x" * 255]) == Version(0, 0, "x" * 255)
    assert Version.from_json((2**63 - 1, 2**63 - 1, "a")).wall == 2**63 - 1


# --- Clock -----------------------------------------------------------------------------


def test_clock_follows_the_wall_clock():
    clock = Clock("a")
    assert clock.last is None
    assert clock.now(T) == Version(T, 0, "a")
    assert clock.now(T + 5) == Version(T + 5, 0, "a")
    assert clock.last == Version(T + 5, 0, "a")


def test_clock_counts_when_the_wall_clock_stands_still_or_goes_back():
    clock = Clock("a")
    first = clock.now(T)
    assert clock.now(T) == Version(T, 1, "a")
    assert clock.now(T - 10_000) == Version(T, 2, "a")
    assert clock.now(T + 1) == Version(T + 1, 0, "a") > first


def test_an_edit_after_observing_a_remote_version_beats_it():
    clock = Clock("a")
    clock.now(T)
    remote = Version(T + 20_000, 7, "z")  # a peer whose clock is 20 s ahead
    clock.observe(remote, T)
    mine = clock.now(T + 1)
    assert mine > remote
    assert mine == Version(T + 20_000, 8, "a")


def test_an_observed_older_version_changes_nothing():
    clock = Clock("a")
    clock.now(T)
    clock.observe(Version(T - 1, 99, "z"), T)
    assert clock.now(T) == Version(T, 1, "a")


def test_a_clock_far_in_the_future_is_ignored():
    clock = Clock("a")
    clock.observe(Version(T + MAX_DRIFT_MS + 1, 0, "broken"), T)
    assert clock.now(T) == Version(T, 0, "a")
    clock.observe(Version(T + MAX_DRIFT_MS, 0, "fast"), T)
    assert clock.now(T) == Version(T + MAX_DRIFT_MS, 1, "a")


def test_clock_refuses_a_bad_node_name():
    with pytest.raises(ValueError):
        Clock("")


events = st.lists(st.tuples(
    st.booleans(), st.integers(0, 10**6),
    st.builds(Version, st.integers(0, 10**6), st.integers(0, 5), st.sampled_from("xyz"))))


@PROPERTY
@given(events)
def test_clock_is_strictly_monotonic_and_beats_what_it_observed(steps):
    clock = Clock("a")
    last = None
    for is_local, wall, remote in steps:
        if is_local:
            version = clock.now(wall)
            assert last is None or version > last
            last = version
        else:
            clock.observe(remote, wall)
            version = clock.now(wall)
            assert last is None or version > last
            last = version
            if remote.wall <= wall + MAX_DRIFT_MS:
                assert version > remote


# --- Record ----------------------------------------------------------------------------


def test_record_json_round_trip_and_tombstone():
    record = rec()
    assert record.to_json() == {"name": "web", "version": [T, 0, "a"], "text": "name: web\n"}
    assert Record.from_json(record.to_json()) == record
    assert not record.deleted
    tombstone = rec(text=None)
    assert tombstone.deleted
    assert Record.from_json(tombstone.to_json()) == tombstone


@pytest.mark.parametrize("data", [
    None, [], {"name": "web", "version": [1, 0, "a"]},
    {"name": "web", "text": "x"},
    {"name": "", "version": [1, 0, "a"], "text": "x"},
    {"name": ".hidden", "version": [1, 0, "a"], "text": "x"},
    {"name": "-x", "version": [1, 0, "a"], "text": "x"},
    {"name": "../etc/passwd", "version": [1, 0, "a"], "text": "x"},
    {"name": "a/b", "version": [1, 0, "a"], "text": "x"},
    {"name": "web\n", "version": [1, 0, "a"], "text": "x"},
    {"name": "w" * 201, "version": [1, 0, "a"], "text": "x"},
    {"name": 5, "version": [1, 0, "a"], "text": "x"},
    {"name": "web", "version": [1, 0], "text": "x"},
    {"name": "web", "version": [1, 0, "a"], "text": 5},
    {"name": "web", "version": [1, 0, "a"], "text": b"x"},
    {"name": "web", "version": [1, 0, "a"], "text": "\ud800"},
    {"name": "web", "version": [1, 0, "a"], "text": "x" * (MAX_TEXT + 1)},
    {"name": "web", "version": [1, 0, "a"], "text": "é" * (MAX_TEXT // 2 + 1)},
])
def test_record_from_json_refuses_malformed(data):
    with pytest.raises(ValueError):
        Record.from_json(data)


def test_record_limits_are_inclusive_and_count_utf8_bytes():
    assert Record.from_json({"name": "w" * 200, "version": [1, 0, "a"], "text": "x" * MAX_TEXT})
    assert Record.from_json({"name": "a_b.c-1", "version": [1, 0, "a"], "text": "é" * (MAX_TEXT // 2)})


def test_record_constructor_validates_too():
    with pytest.raises(ValueError):
        Record("bad/name", Version(1, 0, "a"), "x")
    with pytest.raises(ValueError):
        Record("web", [1, 0, "a"], "x")


# --- Store -----------------------------------------------------------------------------


def test_highest_version_wins():
    store = Store()
    v1, v2 = rec(counter=1, text="one"), rec(counter=2, text="two")
    assert store.merge(v1)
    assert store.merge(v2)
    assert not store.merge(v1)
    assert not store.merge(v2)
    assert store.get("web") == v2
    assert store.get("db") is None


def test_merge_all_returns_the_records_in_force_that_changed_the_store():
    store = Store([rec("db", counter=5)])
    won = store.merge_all([rec(counter=1), rec(counter=3), rec(counter=2), rec("db", counter=4)])
    assert won == [rec(counter=3)]
    assert len(store) == 2


def test_a_tombstone_beats_older_versions_and_loses_to_newer_ones():
    store = Store([rec(counter=1)])
    tombstone = rec(counter=2, text=None)
    assert store.merge(tombstone)
    assert not store.merge(rec(counter=1))  # a node that was away cannot resurrect it
    assert store.live() == {}
    assert store.merge(rec(counter=3, text="back"))
    assert store.live() == {"web": rec(counter=3, text="back")}


def test_records_are_read_only():
    store = Store([rec()])
    with pytest.raises(TypeError):
        store.records["db"] = rec("db")  # type: ignore[index]
    assert dict(store.records) == {"web": rec()}


def test_digest_and_summary():
    empty = Store()
    store = Store([rec(), rec("db", counter=2, node="b", text=None)])
    assert store.summary() == {"web": [T, 0, "a"], "db": [T, 2, "b"]}
    assert len(store.digest()) == 64 and store.digest() != empty.digest()
    same = Store([rec("db", counter=2, node="b", text=None), rec()])
    assert same.digest() == store.digest()
    before = store.digest()
    store.merge(rec(counter=1))
    assert store.digest() != before  # the cached digest follows a merge


def test_newer_than_and_wanted_from():
    store = Store([rec("a", counter=1), rec("b", counter=1), rec("c", counter=1)])
    theirs = {"a": [T, 1, "a"], "b": [T, 2, "a"], "d": [T, 0, "z"]}
    assert [r.name for r in store.newer_than(theirs)] == ["c"]
    assert store.wanted_from(theirs) == ["b", "d"]
    older = {"a": [T, 0, "a"]}
    assert [r.name for r in store.newer_than(older)] == ["a", "b", "c"]
    assert store.wanted_from(older) == []
    assert store.newer_than({"a": Version(T, 5, "a")})[0].name == "b"  # Versions are accepted too
    with pytest.raises(ValueError):
        store.newer_than({"a": [T, "x", "a"]})
    with pytest.raises(ValueError):
        store.wanted_from({"a": None})


def test_expire_tombstones_after_the_grace_period():
    old = rec("old", wall=T - TOMBSTONE_GRACE_MS - 1, text=None)
    young = rec("young", wall=T - TOMBSTONE_GRACE_MS, text=None)
    alive = rec("alive", wall=0)
    store = Store([old, young, alive])
    before = store.digest()
    assert store.expire_tombstones(T) == ["old"]
    assert store.digest() != before
    assert set(store.records) == {"young", "alive"}
    assert store.expire_tombstones(T, grace_ms=0) == ["young"]
    assert store.expire_tombstones(T, grace_ms=0) == []
    assert store.live() == {"alive": alive}


# --- peers are trusted for definitions, not for time ----------------------------------


def test_a_peer_record_too_far_ahead_is_refused_with_its_name_and_origin():
    store = Store([rec()])
    future = rec(wall=T + MAX_DRIFT_MS + 1, node="broken", text="name: web\nother\n")
    with pytest.raises(FutureRecord) as caught:
        store.merge(future, T)
    assert isinstance(caught.value, PullerError) and caught.value.record == future
    message = str(caught.value)
    assert "web" in message and "broken" in message and "60 s" in message
    assert store.get("web") == rec()


def test_the_drift_allowance_is_inclusive_and_only_checked_given_a_clock():
    store = Store()
    assert store.merge(rec(wall=T + MAX_DRIFT_MS), T)
    assert store.merge(rec(wall=T + MAX_DRIFT_MS + 1), None)  # a local record: not checked


def test_a_forged_max_tombstone_neither_deletes_nor_blocks_the_name():
    # A 2**63-1 tombstone once deleted the file and beat every later edit of the name.
    store = Store([rec()])
    forged = Record("web", Version(MAX_INT, MAX_INT, "evil"), None)
    edit = rec(wall=T + 1, node="b", text="name: web\nnew\n")
    won, refused = store.merge_received([forged, edit, rec("db")], T)
    assert won == [edit, rec("db")]
    assert [refusal.record for refusal in refused] == [forged]
    assert store.get("web") == edit and not store.get("web").deleted


def test_a_record_refused_today_is_taken_once_the_clock_catches_up():
    store = Store()
    early = rec(wall=T + 2 * MAX_DRIFT_MS)
    won, refused = store.merge_received([early], T)
    assert won == [] and len(refused) == 1 and len(store) == 0
    assert store.merge_received([early], T + MAX_DRIFT_MS) == ([early], [])


# --- properties of the merge -----------------------------------------------------------

versions = st.builds(Version, st.integers(0, 4), st.integers(0, 2), st.sampled_from(["n1", "n2", "n3"]))
records = st.builds(Record, st.sampled_from(["a", "b", "c"]), versions,
                    st.sampled_from([None, "x", "y"]))
record_lists = st.lists(records, max_size=12)


def state(store: Store) -> dict:
    return dict(store.records)


@PROPERTY
@given(record_lists, st.randoms(use_true_random=False))
def test_merge_is_commutative_and_idempotent(items, rng):
    expected = state(Store(items))
    delivered = items * 2
    rng.shuffle(delivered)
    assert state(Store(delivered)) == expected


@PROPERTY
@given(record_lists, record_lists, record_lists)
def test_merge_is_associative(a, b, c):
    def join(x: Store, y: Store) -> Store:
        return Store([*x.records.values(), *y.records.values()])
    sa, sb, sc = Store(a), Store(b), Store(c)
    assert state(join(join(sa, sb), sc)) == state(join(sa, join(sb, sc)))


@PROPERTY
@given(record_lists)
def test_the_highest_version_is_in_force(items):
    store = Store(items)
    for name in {r.name for r in items}:
        assert store.get(name).version == max(r.version for r in items if r.name == name)


@PROPERTY
@given(records, versions)
def test_a_tombstone_against_another_version(record, version):
    tombstone = Record(record.name, version, None)
    for order in ([record, tombstone], [tombstone, record]):
        winner = Store(order).get(record.name)
        if version > record.version:
            assert winner == tombstone
        elif version < record.version:
            assert winner == record


@PROPERTY
@given(record_lists, record_lists)
def test_digests_are_equal_exactly_when_summaries_are(a, b):
    sa, sb = Store(a), Store(b)
    assert (sa.digest() == sb.digest()) == (sa.summary() == sb.summary())


walls = st.one_of(st.integers(T - 3, T + 3), st.integers(T + MAX_DRIFT_MS - 2, T + MAX_DRIFT_MS + 2),
                  st.just(MAX_INT))  # now, the edge of the drift allowance, the far future
drifting = st.builds(Record, st.sampled_from(["a", "b", "c"]),
                     st.builds(Version, walls, st.integers(0, 2), st.sampled_from(["n1", "n2", "n3"])),
                     st.sampled_from([None, "x", "y"]))


@PROPERTY
@given(st.lists(drifting, max_size=12), st.randoms(use_true_random=False))
def test_peers_records_within_the_drift_converge_and_the_others_are_refused(items, rng):
    within = [r for r in items if r.version.wall <= T + MAX_DRIFT_MS]
    beyond = [r for r in items if r.version.wall > T + MAX_DRIFT_MS]
    delivered = items * 2
    rng.shuffle(delivered)
    store = Store()
    won, refused = store.merge_received(delivered, T)
    assert state(store) == state(Store(within))  # the same join as without a clock
    assert sorted(r.record.version for r in refused) == sorted(r.version for r in beyond * 2)
    assert all(won_record in within for won_record in won)
