"""Gathering the peers' rollout states: when the loop is woken, what is kept."""

from __future__ import annotations

import copy

from puller.cluster.rollouts import FORGET_AFTER, RolloutWatch


def watch(answers: list, due=lambda now: False):
    woken = []
    made = RolloutWatch(lambda: copy.deepcopy(answers), lambda: woken.append(1), lambda: True, due)
    return made, woken


def test_nothing_is_known_before_the_first_look_which_wakes_the_loop():
    made, woken = watch([])
    assert made.records() is None  # the gate holds: nobody knows the waves yet
    assert made.look(100.0) and woken == [1]
    assert made.records() == {}  # alone, and now it knows it


def test_a_change_in_what_peers_published_wakes_the_loop_and_their_views_do_not():
    record = {"node": "n2", "rollouts": {"web": {"state": "proving", "view": {"wave": 1}}}}
    made, woken = watch([record])
    made.look(100.0)
    assert not made.look(101.0)  # the same again
    record["rollouts"]["web"]["view"] = {"wave": 2}
    assert not made.look(102.0)
    record["rollouts"]["web"]["state"] = "done"
    assert made.look(103.0) and len(woken) == 2
    assert made.records()["n2"][0] == 103.0


def test_a_peer_that_does_not_answer_keeps_its_last_record_until_forgotten():
    answers = [{"node": "n2", "rollouts": {"web": {"state": "proving"}}}]
    made, _ = watch(answers)
    made.look(100.0)
    answers[:] = [{"node": "n2", "addr": "x", "error": "refused"}, "garbage", {"node": ""}]
    made.look(150.0)
    assert made.records()["n2"] == (100.0, {"web": {"state": "proving"}})  # it ages: skipped
    made.look(100.0 + FORGET_AFTER + 1)
    assert made.records() == {}


def test_a_moment_that_has_come_wakes_the_loop():
    made, woken = watch([], due=lambda now: now >= 200.0)
    made.look(100.0)
    assert not made.look(150.0) and made.look(200.0) and len(woken) == 2
