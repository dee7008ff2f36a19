"""Services with a deploy job in flight: the pass leaves them alone (pure), the
jobs run in a bounded pool, and a waiting request keeps what its passes did."""

from __future__ import annotations

import threading

from hypothesis import given
from hypothesis import strategies as st

from puller.node.definitions import Scan
from puller.node.deploys import DeployJobs
from puller.node.executor import Outcome
from puller.node.inflight import InFlight, job_steps, leave_alone
from puller.node.planner import Action, Memory, Plan, Step, plan
from puller.node.report import PassReport, PassRequest, service_result

from .test_planner import IMG1, IMG2, actions, container, hash_of, service


def test_a_service_being_deployed_is_left_alone_and_says_since_when():
    web, db = service("web"), service("db", repo="db")
    actual = [container("web", hash_=hash_of(web, IMG1))]
    planned = plan({"web": web, "db": db}, actual, {"web:v1": IMG2, "db:v1": IMG1}, Memory(), 103)
    assert actions(planned) == [(Action.CREATE, "db"), (Action.RECREATE, "web")]
    job = InFlight("web", 100.0, (Step(Action.RECREATE, "web", "definition changed"),))
    held = leave_alone(planned, {"web": job}, now=103)
    assert actions(held) == [(Action.CREATE, "db"), (Action.KEEP, "web")]
    assert held.steps[0] == planned.steps[0]
    assert held.steps[1].reason == "deploying (started 3 s ago: recreate: definition changed)"
    assert held.steps[1].container == actual[0]  # the memory still knows the container
    assert job_steps(held) == [[planned.steps[0]]]


def test_a_deleted_service_being_deployed_keeps_its_containers_until_the_job_ends():
    old = container("gone", hash_="h")
    planned = plan({}, [old], {}, Memory(), 0)
    assert actions(planned) == [(Action.REMOVE, "gone")]
    held = leave_alone(planned, {"gone": InFlight("gone", 0.0)}, now=0)
    assert actions(held) == [(Action.KEEP, "gone")]
    assert held.steps[0].reason == "deploying (started 0 s ago)"


def test_a_probation_of_a_service_being_deployed_is_not_judged():
    web = service()
    current = container("web", hash_=hash_of(web), status="exited", exit_code=1)
    previous = container("web.prev", hash_="older", status="exited")
    planned = plan({"web": web}, [current, previous], {"web:v1": IMG1}, Memory(), 100)
    assert actions(planned) == [(Action.RESTORE, "web")]
    held = leave_alone(planned, {"web": InFlight("web", 99.0)}, now=100)
    assert [(s.action, s.container.name) for s in held.steps] == [
        (Action.KEEP, "web.prev"), (Action.KEEP, "web")]
    assert held.changes == ()


def test_nothing_in_flight_leaves_the_plan_as_it_is():
    web = service()
    planned = plan({"web": web}, [], {"web:v1": IMG1}, Memory(), 0)
    assert leave_alone(planned, {}, now=0) is planned


ACTIONS = st.sampled_from(list(Action))
NAMES = st.sampled_from(["a", "b", "c", "d"])
STEPS = st.builds(lambda action, name, cid: Step(
    action, name, "why", container=container(name, cid=cid) if cid else None),
    ACTIONS, NAMES, st.sampled_from([None, "1" * 64, "2" * 64]))


@given(st.lists(STEPS, max_size=12), st.sets(NAMES))
def test_in_flight_services_get_only_keeps_and_the_others_are_untouched(steps, busy):
    jobs = {name: InFlight(name, 0.0) for name in busy}
    held = leave_alone(Plan(tuple(steps)), jobs, now=5)
    assert [s for s in held.steps if s.service not in busy] == [
        s for s in steps if s.service not in busy]
    mine = [s for s in held.steps if s.service in busy]
    assert all(s.action is Action.KEEP and s.reason.startswith("deploying") for s in mine)
    for name in busy & {s.service for s in steps}:
        wanted = {s.container.id for s in steps if s.service == name and s.container}
        kept = {s.container.id for s in mine if s.service == name and s.container}
        assert kept == wanted and any(s.service == name for s in mine)


class HeldExecutor:
    """Runs a job's steps only once ``go`` is set (no docker: the pool is under test)."""

    def __init__(self):
        self.go = threading.Event()
        self.running = threading.Event()
        self.ran: list[str] = []

    def run_steps(self, steps):
        self.running.set()
        self.go.wait(timeout=10)
        self.ran.append(steps[0].service)
        return [Outcome(step) for step in steps if step.action.changes_something]


def test_jobs_run_off_the_pass_one_per_service_and_wake_when_done():
    executor, woken = HeldExecutor(), threading.Event()
    jobs = DeployJobs(executor, woken.set, workers=2)
    try:
        step = Step(Action.CREATE, "web", "new")
        assert set(jobs.start([[step]], now=10.0)) == {"web"}  # returns at once
        assert jobs.start([[step]], now=11.0) == {}  # one job per service at a time
        assert jobs.take() == ([], {"web": InFlight("web", 10.0, (step,))})
        executor.go.set()
        assert woken.wait(timeout=5)
        finished, running = jobs.take()
        assert finished == [Outcome(step)] and running == {}
        assert jobs.take() == ([], {})
    finally:
        executor.go.set()
        jobs.close(timeout=5)


def test_close_drops_queued_jobs_and_waits_for_running_ones_with_a_bound():
    executor = HeldExecutor()
    jobs = DeployJobs(executor, lambda: None, workers=1)
    jobs.start([[Step(Action.CREATE, "a", "new")], [Step(Action.CREATE, "b", "new")]], now=0)
    assert executor.running.wait(timeout=5)
    assert jobs.close(timeout=0.2) == ["a"]  # still running after the bound; b never started
    executor.go.set()
    assert jobs.close(timeout=5) == []  # idempotent: waits again
    assert executor.ran == ["a"]
    assert [o.step.service for o in jobs.take()[0]] == ["a"]
    assert jobs.start([[Step(Action.CREATE, "c", "new")]], now=1) == {}


def test_a_request_answered_later_tells_what_its_passes_did():
    web = service()
    recreate = Step(Action.RECREATE, "web", "definition changed")
    keep = Step(Action.KEEP, "web", "up to date (running)")
    scan = Scan({"web": web}, ())
    started = PassReport(scan, Plan((recreate,)), deploying=frozenset({"web"}))
    ended = PassReport(scan, Plan((keep,)), outcomes=(Outcome(recreate, container_id="x"),))
    request = PassRequest(frozenset({"web"}))
    request.carry(started)
    result = service_result(request.answer(ended), "web", web.image_ref)
    assert result["changed"] is True and result["errors"] == []
    assert [s["action"] for s in result["steps"]] == ["recreate", "keep"]
