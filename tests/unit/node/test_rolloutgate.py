"""The rollout gate: which release, and may this node take it now (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from puller.node.rolloutgate import (DONE, FAILED, PROVING, REVERTED, WAITING, Kind,
                                     KnownFailure, NodeState, Release, Situation,
                                     choose_release, decide, definition_id, merge_failures,
                                     rollout_view)
from puller.node.rolloutspec import RolloutSpec

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
R1, R2 = Release("def-a", D1), Release("def-a", D2)
NODES = ("roll-1", "roll-2", "roll-3")
SPEC = RolloutSpec(canary=1, parallel=1, node_timeout=30)
NOW = 1000.0


def situation(me: str = "roll-2", spec: RolloutSpec = SPEC, failed=(), now: float = NOW,
              **states: NodeState) -> Situation:
    known = {node: NodeState(seen=now) for node in NODES}
    known.update({node.replace("_", "-"): state for node, state in states.items()})
    return Situation("web", spec, me, NODES, known, tuple(failed), now)


def at(release: Release | None, state: str, since: float = 900.0, seen: float = NOW,
       error: str | None = None) -> NodeState:
    return NodeState(release, state, since, error, seen)


def test_the_definition_id_is_the_same_for_the_same_fields_in_any_order():
    assert definition_id({"a": 1, "b": "x"}) == definition_id({"b": "x", "a": 1})
    assert definition_id({"a": 1}) != definition_id({"a": 2})


def test_the_first_node_proposes_and_the_others_adopt_its_release():
    leader = situation(me="roll-1")
    assert choose_release(leader, None, R1) == R1
    follower = situation(roll_1=at(R1, PROVING))
    assert choose_release(follower, None, R2) == R1  # its own registry said otherwise


def test_a_dead_first_node_hands_the_proposal_to_the_next():
    dead = situation(roll_1=at(R1, WAITING, seen=NOW - 31))
    assert dead.leader() == "roll-2"
    assert choose_release(dead, R1, R1) == R1


def test_a_tag_moved_mid_rollout_becomes_the_next_rollout():
    going = situation(me="roll-1", roll_1=at(R1, DONE), roll_2=at(R1, PROVING))
    assert choose_release(going, R1, R2) == R1
    ended = situation(me="roll-1", roll_1=at(R1, DONE), roll_2=at(R1, DONE),
                      roll_3=at(R1, DONE))
    assert choose_release(ended, R1, R2) == R2


def test_a_new_definition_starts_a_new_rollout_at_once():
    going = situation(me="roll-1", roll_1=at(R1, DONE), roll_2=at(R1, PROVING))
    edited = Release("def-b", D1)
    assert choose_release(going, R1, edited) == edited


def test_the_canary_takes_first_and_the_next_wave_waits_for_it():
    assert decide(situation(me="roll-1"), R1, "def-a", NodeState()).kind is Kind.TAKE
    held = decide(situation(roll_1=at(R1, PROVING)), R1, "def-a", NodeState())
    assert held.kind is Kind.HOLD
    assert held.reason.startswith("rollout of web: wave 2 of 3, waiting for roll-1 to prove "
                                  "sha256:111111111111…")
    assert decide(situation(roll_1=at(R1, DONE)), R1, "def-a", NodeState()).kind is Kind.TAKE
    third = decide(situation(me="roll-3", roll_1=at(R1, DONE), roll_2=at(R1, PROVING)),
                   R1, "def-a", NodeState())
    assert third.kind is Kind.HOLD and "waiting for roll-2" in third.reason


def test_a_pause_between_waves():
    spec = RolloutSpec(canary=1, parallel=1, pause=20, node_timeout=30)
    early = decide(situation(spec=spec, roll_1=at(R1, DONE, since=NOW - 5)), R1, "def-a",
                   NodeState())
    assert early.kind is Kind.HOLD and early.recheck_at == NOW + 15
    late = decide(situation(spec=spec, roll_1=at(R1, DONE, since=NOW - 25)), R1, "def-a",
                  NodeState())
    assert late.kind is Kind.TAKE


def test_a_node_not_heard_for_its_timeout_is_skipped():
    quiet = at(R1, PROVING, seen=NOW - 29)
    held = decide(situation(roll_1=quiet), R1, "def-a", NodeState())
    assert held.kind is Kind.HOLD and held.recheck_at == NOW - 29 + 30
    gone = situation(roll_1=at(R1, PROVING, seen=NOW - 31))
    assert decide(gone, R1, "def-a", NodeState()).kind is Kind.TAKE
    assert rollout_view(gone, R1)["nodes"]["roll-1"]["state"] == "skipped"


def test_a_failure_halts_the_nodes_not_reached_and_rolls_back_those_that_took_it():
    failed = at(R1, FAILED, error="exited with code 3")
    held = decide(situation(roll_1=failed), R1, "def-a", NodeState())
    assert (held.kind, held.reason) == (
        Kind.HOLD, "rollout of web halted: failed on roll-1: exited with code 3")
    second_wave = situation(me="roll-1", roll_1=at(R1, DONE), roll_2=at(R1, FAILED, error="x"))
    assert decide(second_wave, R1, "def-a", at(R1, DONE)).kind is Kind.REVERT
    halt = situation(me="roll-1", spec=RolloutSpec(canary=1, on_failure="halt"),
                     roll_1=at(R1, DONE), roll_2=at(R1, FAILED, error="x"))
    assert decide(halt, R1, "def-a", at(R1, DONE)).kind is Kind.TAKE
    view = rollout_view(situation(roll_1=failed), R1)
    assert view["halted"] == "failed on roll-1: exited with code 3" and view["ended"]
    # halted, it ends once the nodes that took it went back (or keep it, with halt)
    assert not second_wave.ended(R1)
    assert second_wave.ended(R1) is False and halt.ended(R1)
    back = situation(me="roll-1", roll_1=at(R1, REVERTED), roll_2=at(R1, FAILED, error="x"))
    assert back.ended(R1)


def test_a_release_known_failed_is_not_taken_again_even_by_a_new_first_node():
    known = KnownFailure(R1, "roll-0", "exited with code 3")
    decision = decide(situation(me="roll-1", failed=[known]), R1, "def-a", NodeState())
    assert decision.kind is Kind.HOLD and "failed on roll-0" in decision.reason
    # and the rollout counts as ended: a new digest may start the next one
    assert choose_release(situation(me="roll-1", failed=[known]), R1, R2) == R2


def test_a_node_whose_definition_has_not_synced_yet_waits():
    decision = decide(situation(me="roll-1"), Release("def-b", D1), "def-a", NodeState())
    assert decision.kind is Kind.HOLD and "definition" in decision.reason


def test_failures_merge_once_each():
    one = KnownFailure(R1, "roll-1", "x")
    assert merge_failures((one,), (one, KnownFailure(R2, "roll-1", "y"))) == (
        one, KnownFailure(R2, "roll-1", "y"))


_releases = st.sampled_from([R1, R2, Release("def-b", D1), None])
_states = st.builds(NodeState, _releases, st.sampled_from([WAITING, PROVING, DONE, FAILED,
                                                          REVERTED]),
                    st.floats(0, NOW), st.none(), st.floats(NOW - 100, NOW))


@given(st.dictionaries(st.sampled_from(NODES + ("roll-4", "roll-5")), _states),
       st.sampled_from(NODES + ("roll-4", "roll-5")), st.integers(0, 3),
       st.one_of(st.none(), st.integers(1, 3)), st.floats(0, 50),
       st.lists(st.builds(KnownFailure, _releases.filter(bool), st.sampled_from(NODES),
                          st.just("x")), max_size=2))
def test_a_node_never_takes_a_release_before_every_earlier_wave_is_done_or_skipped(
        states, me, canary, parallel, pause, failed):
    spec = RolloutSpec(canary=canary, parallel=parallel, pause=pause, node_timeout=30)
    nodes = tuple(sorted(set(NODES + ("roll-4", "roll-5"))))
    mine = NodeState()  # not taken yet
    known = {**states, me: mine}
    sit = Situation("web", spec, me, nodes, known, tuple(failed), NOW)
    release = choose_release(sit, None, R1)
    decision = decide(sit, release, "def-a", mine)
    if decision.kind is not Kind.TAKE:
        return
    assert release is not None and sit.failure(release) is None
    assert all(f.release != release for f in failed)
    waves = spec.waves(nodes)
    index = next(i for i, wave in enumerate(waves) if me in wave)
    for node in (n for wave in waves[:index] for n in wave):
        assert sit.state_of(node, release) in (DONE, "skipped")
