"""Rollout order start-first, planned purely: {desired, actual} → expected steps.

The new container proves itself as ``<name>.next`` beside the old one, judged
from the containers alone; then it takes the name (PROMOTE), or it goes and
the old one, never stopped, stays (RESTORE).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from puller import constants
from puller.errors import DefinitionError
from puller.node.container import Container, Image, from_ps_row
from puller.node.definitions import parse_definition
from puller.node.planner import Action, Failure, Memory, config_hash, plan
from puller.node.startfirst import judge, starts_first

NODE = "box-1"
IMG1 = Image("sha256:" + "1" * 64, ("web:v1",))
IMG2 = Image("sha256:" + "2" * 64, ("web:v1",))
STARTED = "2026-11-27T00:00:00.123456789Z"
T0 = Container(id="t", name="t", image_id="", status="running", started_at=STARTED).started


def service(order="start-first", bash="docker run -p 80 web", name="web", timeout=10):
    rollout = f"rollout: {{order: {order}}}\n" if order else ""
    return parse_definition(f"name: {name}\nbash: {bash}\nrepo: web\ntag: v1\n"
                            f"health_timeout: {timeout}\n{rollout}", f"{name}.yml")


WEB = service()
NEW = config_hash(WEB.run.canonical(), IMG2.id)  # what WEB wants with IMG2
OLD = config_hash(WEB.run.canonical(), IMG1.id)


def container(name="web", hash_=OLD, status="running", health=None, restarts=0,
              started=STARTED, exit_code=1):
    return Container(
        id=(name + "-id").ljust(64, "0"), name=name, image_id=IMG2.id, status=status,
        exit_code=exit_code, health=health, restart_count=restarts, started_at=started,
        labels={constants.LABEL_SERVICE: "web", constants.LABEL_NODE: NODE,
                constants.LABEL_HASH: hash_, constants.LABEL_IMAGE: IMG2.id})


def steps_of(actual, now=T0 + 5, memory=Memory(), svc=WEB, **kwargs):
    result = plan({"web": svc}, actual, {"web:v1": IMG2}, memory, now, **kwargs)
    return [(step.action, step.container.name if step.container else None)
            for step in result.steps], result.steps


def test_a_start_first_service_recreates_like_any_other_the_executor_picks_the_order():
    assert starts_first(WEB)
    assert not starts_first(service(order="stop-first")) and not starts_first(service(order=None))
    got, steps = steps_of([container()])
    assert got == [(Action.RECREATE, "web")]
    assert steps[0].target.config_hash == NEW


def test_while_the_candidate_proves_itself_the_old_one_is_left_alone():
    got, steps = steps_of([container(), container("web.next", NEW)], now=T0 + 5)
    assert got == [(Action.KEEP, "web.next")]
    assert "proving itself beside the old one for 10 s" in steps[0].reason


def test_a_proven_candidate_takes_the_name_and_the_old_one_goes():
    old, new = container(), container("web.next", NEW, health="healthy")
    got, steps = steps_of([old, new], now=T0 + 11)
    assert got == [(Action.PROMOTE, "web.next")]
    assert steps[0].replaces is old and "proved itself" in steps[0].reason


@pytest.mark.parametrize("fields,fragment", [
    (dict(status="exited"), "exited with code 1"),
    (dict(restarts=2), "restarted 2 time(s)"),
    (dict(health="unhealthy"), "turned unhealthy"),
    (dict(health="starting", after=11), "still starting"),
])
def test_a_failed_candidate_goes_and_the_old_one_keeps_serving(fields, fragment):
    after = fields.pop("after", 5)
    old, new = container(), container("web.next", NEW, **fields)
    got, steps = steps_of([old, new], now=T0 + after)
    assert got == [(Action.RESTORE, "web")]
    assert steps[0].container is old and steps[0].failed is new
    assert fragment in steps[0].reason and "keeps serving" in steps[0].reason


def test_a_failed_version_is_not_tried_again_until_something_changes():
    memory = Memory(failures={"web": Failure(NEW, "exited with code 1", at=0)})
    got, steps = steps_of([container()], memory=memory)
    assert got == [(Action.KEEP, "web")] and "failed" in steps[0].reason
    # a candidate of that version found after a restart goes; nothing new is tried
    got, _ = steps_of([container(), container("web.next", NEW)], memory=memory)
    assert got == [(Action.REMOVE, "web.next"), (Action.KEEP, "web")]


def test_a_candidate_of_another_version_goes_and_the_wanted_one_is_started():
    stray = container("web.next", "another-version")
    got, steps = steps_of([container(), stray])
    assert got == [(Action.REMOVE, "web.next"), (Action.RECREATE, "web")]
    assert "another version" in steps[0].reason
    # one the container under the name already runs is not needed either
    got, _ = steps_of([container(hash_=NEW), container("web.next", NEW)])
    assert got == [(Action.REMOVE, "web.next"), (Action.KEEP, "web")]


def test_an_interrupted_swap_is_finished_or_undone_from_the_names():
    # the old one stepped aside (still running), the new one had not taken the name yet
    aside, new = container("web.prev"), container("web.next", NEW)
    got, steps = steps_of([aside, new], now=T0 + 11)
    assert got == [(Action.PROMOTE, "web.next")] and steps[0].replaces is aside
    got, steps = steps_of([aside, container("web.next", NEW, status="exited")], now=T0 + 11)
    assert got == [(Action.RESTORE, "web.prev")] and "is put back" in steps[0].reason
    # the new one took the name, the old one was not removed yet: it goes now
    got, _ = steps_of([container(hash_=NEW), aside], now=T0 + 11)
    assert got == [(Action.REMOVE, "web.prev"), (Action.KEEP, "web")]


def test_a_predecessor_left_over_beside_a_proven_candidate_goes_first():
    stale = container("web.prev", "older", status="exited")
    got, steps = steps_of([container(), stale, container("web.next", NEW)], now=T0 + 11)
    assert got == [(Action.REMOVE, "web.prev"), (Action.PROMOTE, "web.next")]
    assert steps[1].replaces.name == "web"


def test_a_candidate_whose_old_container_vanished_still_proves_itself():
    got, steps = steps_of([container("web.next", NEW)], now=T0 + 5)
    assert got == [(Action.KEEP, "web.next")] and "the old one is gone" in steps[0].reason
    got, _ = steps_of([container("web.next", NEW)], now=T0 + 11)
    assert got == [(Action.PROMOTE, "web.next")]
    got, _ = steps_of([container("web.next", NEW, status="exited")], now=T0 + 5)
    assert got == [(Action.REMOVE, "web.next"), (Action.CREATE, None)]


def test_candidates_of_services_that_are_gone_go_unless_the_directory_is_unreadable():
    actual = [container(), container("web.next", NEW)]
    result = plan({}, actual, {}, Memory(), 0)
    assert [(s.action, s.container.name) for s in result.steps] == [
        (Action.REMOVE, "web"), (Action.REMOVE, "web.next")]
    result = plan({}, actual, {}, Memory(), 0, broken={"web"})
    assert [s.action for s in result.steps] == [Action.KEEP, Action.KEEP]


def test_the_candidate_follows_the_name_template():
    named = lambda svc: f"{NODE}-{svc}"  # noqa: E731
    got, _ = steps_of([container("box-1-web"), container("box-1-web.next", NEW)],
                      container_name=named)
    assert got == [(Action.KEEP, "box-1-web.next")]


def test_a_stop_first_update_is_planned_as_before():
    stop_first = service(order=None)
    new = container(hash_=config_hash(stop_first.run.canonical(), IMG2.id))
    got, _ = steps_of([new, container("web.prev", "older", status="exited")],
                      svc=stop_first, now=T0 + 5)
    assert got == [(Action.KEEP, "web")]


def test_puller_s_temporary_names_are_no_service_names():
    with pytest.raises(DefinitionError, match="must not end in '.next'"):
        parse_definition("name: web.next\nbash: docker run web\nrepo: web\n", "web.next.yml")


def test_a_ps_row_of_a_candidate_says_so():
    row = from_ps_row('"a"\t"web.next"\t"running"\t"Up 1 second"\t"web"\t"n"\t"h"\t""\t""')
    assert row.is_candidate and row.is_aside and not row.is_previous


# judge, for any containers: the container under the name is never removed, and
# the new one takes the name only once it proved itself (or mid-swap).

states = st.sampled_from(["running", "exited", "restarting", "created"])
verdicts = st.one_of(st.none(), st.just(""), st.sampled_from(["exited with code 3",
                                                              "turned unhealthy"]))


@st.composite
def scenes(draw):
    def maybe(name):
        if not draw(st.booleans()):
            return None
        return container(name, draw(st.sampled_from([OLD, NEW, "x"])), draw(states))
    candidate = container("web.next", draw(st.sampled_from([OLD, NEW, "x"])), draw(states))
    return (candidate, maybe("web"), maybe("web.prev"),
            draw(st.one_of(st.none(), st.just("boom"))), draw(verdicts))


@given(scenes())
def test_judge_never_removes_the_container_under_the_name(scene):
    candidate, current, previous, failed_before, verdict = scene
    moves, whole = judge(candidate, current, previous, NEW, failed_before, verdict, 10)
    assert moves and all(move.reason for move in moves)
    assert all(not (m.action == "REMOVE" and m.container is current) for m in moves)
    if not whole:  # the candidate goes; the service is planned as usual
        assert [(m.action, m.container) for m in moves] == [("REMOVE", candidate)]
    for move in moves:
        assert move.action in Action.__members__
        if move.action == "PROMOTE":
            assert move.container is candidate and candidate.config_hash == NEW
            assert verdict == "" or (current is None and previous is not None)
            assert move.replaces is (current or previous)
        if move.action == "RESTORE":
            assert verdict and move.failed is candidate
            assert move.container is (current or previous)
