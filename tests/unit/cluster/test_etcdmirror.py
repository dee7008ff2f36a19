"""The etcd mirror's rule: who wins between the directory and etcd, per service."""

from __future__ import annotations

import pytest

from puller.cluster.etcdmirror import Action, MirrorState, decide

A, B = "name: web\nv: a\n", "name: web\nv: b\n"


@pytest.mark.parametrize("etcd_text, etcd_rev, local, seen, pending, expected", [
    (A, 5, A, 0, True, Action.SAME),          # same text: adopt the revision
    (None, 0, None, 3, False, Action.SAME),    # both absent
    (B, 5, A, 5, True, Action.PUSH),           # edit made on top of what etcd holds
    (None, 0, A, 0, True, Action.PUSH),        # a new service
    (A, 5, None, 5, True, Action.PUSH),        # a local deletion
    (B, 7, A, 5, True, Action.CONFLICT),       # etcd moved while the edit waited
    (None, 9, A, 5, True, Action.CONFLICT),    # deleted in etcd while the edit waited
    (B, 0, A, 0, True, Action.PUSH),
    (B, 7, A, 5, False, Action.TAKE),          # someone else's edit
    (None, 0, A, 5, False, Action.TAKE),       # someone else's deletion
    (B, 4, None, 0, False, Action.TAKE),       # a service this node never had
])
def test_decide(etcd_text, etcd_rev, local, seen, pending, expected):
    assert decide(etcd_text, etcd_rev, local, seen, pending) is expected


def test_settled_and_echo():
    state = MirrorState(pending={"web"})
    state.settled("web", 8)
    assert state.seen == {"web": 8} and not state.pending
    assert state.is_echo("web", 8) and state.is_echo("web", 3)
    assert not state.is_echo("web", 9) and not state.is_echo("db", 1)
    state.settled("web", 0)  # deleted on both sides
    assert state.seen == {}


def test_state_round_trips_and_refuses_garbage():
    state = MirrorState({"web": 4}, {"db"}, 12)
    assert MirrorState.from_json(state.to_json()) == state
    for bad in ([], {"seen": {"web": "4"}}, {"pending": "db"}):
        with pytest.raises(ValueError):
            MirrorState.from_json(bad)
