"""Rollout order start-first against the real engine: the new container proves
itself beside the old one, which keeps serving untouched, then takes its name.

The run lines publish port 80 on a host port docker picks (a fixed one is
refused for start-first), so each container is reached through its own port.
"""

from __future__ import annotations

import time

from puller.daemon import Config, Daemon
from puller.node.planner import Action

from ..testenv import docker, fetch, inspect, serving, wait_until

HTTPD = "httpd -f -p 80 -h /www"


def deploy(node, service: str, repo: str, tag: str, health_timeout: float,
           extra: str = "", command: str = HTTPD) -> None:
    bash = (f"docker run -p 127.0.0.1::80 {extra} --init --label {node.cleanup.label} "
            f"{repo} {command}")
    node.write(service, bash=f"'{bash}'", repo=repo, tag=tag, node="''",
               health_timeout=str(health_timeout), rollout="{order: start-first}")


def port_of(name: str) -> int:
    out = docker("port", name, "80").stdout.split()[0]
    return int(out.rsplit(":", 1)[1])


def state(name: str) -> tuple[str, str, bool]:
    """Id, StartedAt, running: enough to tell the old one was never stopped."""
    data = inspect(name) or {}
    found = data.get("State") or {}
    return data.get("Id", ""), found.get("StartedAt", ""), bool(found.get("Running"))


def tick_until(node, predicate, timeout: float = 30, what: str = "a condition"):
    deadline = time.monotonic() + timeout
    while True:
        node.tick()
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def start_v1_then_v2(node, images, service: str, health_timeout: float, **v2) -> tuple:
    """v1 serving, then a v2 started beside it; returns the old container's state."""
    deploy(node, service, images.repo, "v1", health_timeout)
    node.tick()
    serving(port_of(service), "v1")
    old = state(service)
    deploy(node, service, images.repo, "v2", health_timeout, **v2)
    report = node.tick()
    assert [s.action for s in report.plan.changes] == [Action.RECREATE]
    return old


def test_the_old_container_serves_untouched_until_the_new_one_proved_itself(node, images):
    old = start_v1_then_v2(node, images, "sf-a", health_timeout=8)
    # both run; the old one keeps the name, its start time unchanged
    assert state("sf-a") == old
    serving(port_of("sf-a.next"), "v2")
    assert fetch(port_of("sf-a")) == "v1"
    candidate = inspect("sf-a.next")
    report = node.tick()
    assert report.plan.changes == () and "proving itself" in report.plan.steps[0].reason
    tick_until(node, lambda: inspect("sf-a.next") is None, what="the new one to take the name")
    # the new one has the name, its labels (drift hash and all) as they were
    now = inspect("sf-a")
    assert now["Id"] == candidate["Id"] and now["State"]["StartedAt"] == \
        candidate["State"]["StartedAt"]
    assert now["Config"]["Labels"] == candidate["Config"]["Labels"]
    assert inspect(old[0]) is None and inspect("sf-a.prev") is None
    assert fetch(port_of("sf-a")) == "v2"
    # up to date: nothing more to do
    report = node.tick()
    assert report.plan.changes == () and "up to date" in report.plan.steps[0].reason


def test_a_new_container_that_exits_goes_and_the_old_one_never_stopped(node, images):
    old = start_v1_then_v2(node, images, "sf-b", health_timeout=8,
                           command='sh -c "httpd -p 80 -h /www && sleep 2 && exit 3"')
    serving(port_of("sf-b.next"), "v2")
    tick_until(node, lambda: inspect("sf-b.next") is None, what="the new one to be removed")
    assert state("sf-b") == old and old[2]
    assert fetch(port_of("sf-b")) == "v1"
    assert "exited with code 3" in node.daemon.memory.failures["sf-b"].error
    for _ in range(3):  # that version is not tried again
        assert node.tick().plan.changes == ()
    assert state("sf-b") == old


def test_a_new_container_that_turns_unhealthy_goes_and_the_old_one_never_stopped(node, images):
    old = start_v1_then_v2(node, images, "sf-c", health_timeout=8,
                           extra="--health-cmd false --health-interval 1s --health-retries 1")
    tick_until(node, lambda: inspect("sf-c.next") is None, what="the new one to be removed")
    assert state("sf-c") == old
    assert "unhealthy" in node.daemon.memory.failures["sf-c"].error


def test_a_daemon_restarted_during_the_probation_finishes_it(node, images, tmp_path):
    old = start_v1_then_v2(node, images, "sf-d", health_timeout=8)
    candidate = inspect("sf-d.next")["Id"]
    node.daemon.close()  # the daemon goes; a new one knows only the containers
    config = node.daemon.config
    with Daemon(Config(node=config.node, directory=config.directory,
                       state_dir=str(tmp_path / "other-state"))) as again:
        node.daemon = again
        report = again.tick()
        assert report.plan.changes == () and state("sf-d") == old
        tick_until(node, lambda: inspect("sf-d.next") is None, what="the swap")
        assert inspect("sf-d")["Id"] == candidate and inspect(old[0]) is None
        assert fetch(port_of("sf-d")) == "v2"


def test_a_daemon_restarted_during_the_probation_undoes_a_failure(node, images, tmp_path):
    old = start_v1_then_v2(node, images, "sf-e", health_timeout=8,
                           command='sh -c "httpd -p 80 -h /www && sleep 3 && exit 4"')
    node.daemon.close()
    config = node.daemon.config
    with Daemon(Config(node=config.node, directory=config.directory,
                       state_dir=str(tmp_path / "other-state"))) as again:
        node.daemon = again
        tick_until(node, lambda: inspect("sf-e.next") is None, what="the new one to go")
        assert state("sf-e") == old
        assert "exited with code 4" in again.memory.failures["sf-e"].error
        assert again.tick().plan.changes == ()


def test_without_a_health_timeout_the_new_one_starts_first_and_takes_the_name_at_once(
        node, images):
    since = f"{time.time() - 1:.3f}"
    old = start_v1_then_v2(node, images, "sf-f", health_timeout=0)
    assert inspect("sf-f.next") is None and inspect(old[0]) is None
    serving(port_of("sf-f"), "v2")
    assert node.tick().plan.changes == ()
    # the engine's own record: the new container started before the old one stopped
    events = docker("events", "--since", since, "--until", f"{time.time():.3f}",
                    "--filter", f"label={node.cleanup.label}", "--filter", "event=start",
                    "--filter", "event=die", "--format", "{{.Status}} {{.ID}}").stdout.split("\n")
    new = inspect("sf-f")["Id"]
    assert events.index(f"start {new}") < events.index(f"die {old[0]}"), events


def test_a_candidate_of_a_version_no_longer_wanted_goes(node, images):
    old = start_v1_then_v2(node, images, "sf-g", health_timeout=30)
    assert inspect("sf-g.next") is not None
    deploy(node, "sf-g", images.repo, "v1", 30)  # back to what runs under the name
    report = node.tick()
    assert [(s.action, s.container.name) for s in report.plan.changes] == [
        (Action.REMOVE, "sf-g.next")]
    assert inspect("sf-g.next") is None and state("sf-g") == old


def test_an_interrupted_swap_is_finished_by_the_next_pass(node, images):
    old = start_v1_then_v2(node, images, "sf-h", health_timeout=2)
    candidate = inspect("sf-h.next")["Id"]
    time.sleep(2.5)  # proven; the daemon "dies" right after setting the old one aside
    docker("rename", "sf-h", "sf-h.prev")
    report = node.tick()
    assert [(s.action, s.container.name) for s in report.plan.changes] == [
        (Action.PROMOTE, "sf-h.next")]
    assert inspect("sf-h")["Id"] == candidate and inspect(old[0]) is None
    assert inspect("sf-h.prev") is None and inspect("sf-h.next") is None


def test_the_running_daemon_swaps_once_the_probation_ends_without_waiting_its_interval(
        live_node, images):
    node = live_node(interval=600.0)  # only a file event or the probation wakes it
    deploy(node, "sf-i", images.repo, "v1", 3)
    wait_until(lambda: fetch_name("sf-i") == "v1", timeout=20, what="v1")
    old = state("sf-i")
    deploy(node, "sf-i", images.repo, "v2", 3)
    wait_until(lambda: inspect("sf-i.next"), timeout=20, what="the new one beside the old")
    assert state("sf-i") == old
    wait_until(lambda: inspect("sf-i.next") is None and fetch_name("sf-i") == "v2",
               timeout=20, what="the swap")
    wait_until(lambda: inspect(old[0]) is None, timeout=20, what="the old one to go")


def fetch_name(name: str) -> str | None:
    try:
        return fetch(port_of(name))
    except Exception:  # not there (yet), or no port
        return None
