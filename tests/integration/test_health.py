"""Health-gated updates: a new container must prove itself before its predecessor goes."""

from __future__ import annotations

import time

from puller.node.planner import Action

from ..testenv import fetch, inspect, serving




def tick_until(node, predicate, timeout: float = 20, what: str = "a condition"):
    """Drive passes (as the loop would, about once a second) until predicate()."""
    deadline = time.monotonic() + timeout
    while True:
        node.tick()
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def test_a_good_new_container_is_kept_and_its_predecessor_removed(node, images):
    port = node.web("gate-a", images.repo, tag="v1", health_timeout=2)
    node.tick()
    serving(port, "v1")
    old = inspect("gate-a")["Id"]
    node.web("gate-a", images.repo, tag="v2", port=port, health_timeout=2)
    report = node.tick()
    assert [s.action for s in report.plan.changes] == [Action.RECREATE]
    serving(port, "v2")
    prev = inspect("gate-a.prev")
    assert prev is not None and prev["Id"] == old and not prev["State"]["Running"]
    report = node.tick()
    assert "probation" in report.plan.steps[0].reason
    tick_until(node, lambda: inspect("gate-a.prev") is None, what="the predecessor to go")
    assert fetch(port) == "v2"


def test_a_new_container_that_exits_after_two_seconds_is_replaced_by_the_old_one(node, images):
    port = node.web("gate-b", images.repo, tag="v1", health_timeout=6)
    node.tick()
    serving(port, "v1")
    old = inspect("gate-b")["Id"]
    node.web("gate-b", images.repo, tag="v2", port=port, health_timeout=6,
             command='sh -c "httpd -p 80 -h /www && sleep 2 && exit 1"')
    node.tick()
    serving(port, "v2")  # it starts fine...
    tick_until(node, lambda: (inspect("gate-b") or {}).get("Id") == old,
               what="the previous container to be put back")
    serving(port, "v1")
    assert inspect("gate-b.prev") is None
    failure = node.daemon.memory.failures["gate-b"]
    assert "exited with code 1" in failure.error
    assert node.daemon.status()["services"]["gate-b"]["error"]
    # no retry loop: further passes leave the old one running
    for _ in range(3):
        report = node.tick()
        assert report.plan.changes == ()
    assert inspect("gate-b")["Id"] == old


def test_a_new_container_that_turns_unhealthy_is_replaced_by_the_old_one(node, images):
    port = node.web("gate-c", images.repo, tag="v1", health_timeout=8)
    node.tick()
    serving(port, "v1")
    old = inspect("gate-c")["Id"]
    node.web("gate-c", images.repo, tag="v2", port=port, health_timeout=8,
             extra="--health-cmd false --health-interval 1s --health-retries 1")
    node.tick()
    serving(port, "v2")
    tick_until(node, lambda: (inspect("gate-c") or {}).get("Id") == old,
               what="the previous container to be put back")
    serving(port, "v1")
    assert "unhealthy" in node.daemon.memory.failures["gate-c"].error
