"""The single-node daemon against a real engine and a real registry."""

from __future__ import annotations

import logging
import os
import time

from puller import constants
from puller.daemon import Config, Daemon
from puller.node.planner import Action

from ..testenv import docker, free_port, inspect, serving, wait_until




def container_id(name: str) -> str | None:
    data = inspect(name)
    return data["Id"] if data else None


def read_bytes(node, name: str) -> bytes:
    with open(os.path.join(node.directory, name), "rb") as handle:
        return handle.read()


def actions(report):
    return sorted((step.action, step.service) for step in report.plan.changes)


def test_deploy_from_a_file_runs_that_very_line(node, images):
    port = node.web("web-a", images.repo, extra="-e GREETING=hi --restart=unless-stopped")
    report = node.tick()
    assert actions(report) == [(Action.CREATE, "web-a")]
    assert all(outcome.ok for outcome in report.outcomes), report.outcomes
    serving(port, "v1")
    data = inspect("web-a")
    assert "GREETING=hi" in data["Config"]["Env"]
    assert data["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert data["Config"]["Labels"]["io.puller.node"] == node.name
    assert data["Config"]["Cmd"] == ["httpd", "-f", "-p", "80", "-h", "/www"]
    # nothing changed: a second pass keeps everything
    again = node.tick()
    assert again.plan.changes == ()
    assert container_id("web-a") == data["Id"]


def test_adding_a_port_recreates_and_serves_on_both(node, images):
    port = node.web("web-b", images.repo)
    node.tick()
    serving(port, "v1")
    first = container_id("web-b")
    second_port = free_port()
    node.web("web-b", images.repo, port=port, extra=f"-p 127.0.0.1:{second_port}:80")
    report = node.tick()
    assert actions(report) == [(Action.RECREATE, "web-b")]
    assert report.plan.changes[0].reason == "definition changed"
    serving(port, "v1")
    serving(second_port, "v1")
    assert container_id("web-b") != first
    assert inspect(first) is None, "the old container is removed once the new one runs"
    assert inspect("web-b.prev") is None


def test_a_tag_change_runs_the_new_image(node, images):
    port = node.web("web-c", images.repo, tag="v1")
    node.tick()
    serving(port, "v1")
    node.web("web-c", images.repo, tag="v2", port=port)
    report = node.tick()
    # v2 is asked about at once; the local copy already has the registry's digest
    assert report.remotes[f"{images.repo}:v2"].digest.startswith("sha256:")
    assert report.pulls == ()
    assert actions(report) == [(Action.RECREATE, "web-c")]
    serving(port, "v2")


def test_a_deleted_file_removes_the_container(node, images):
    node.web("web-d", images.repo)
    node.tick()
    assert container_id("web-d")
    os.remove(os.path.join(node.directory, "web-d.yml"))
    # gone for a moment only (an editor saving by rename) is not gone
    assert node.tick().plan.changes == ()
    time.sleep(constants.DELETE_GRACE)
    report = node.tick()
    assert [(s.action, s.reason) for s in report.plan.changes] == [
        (Action.REMOVE, "service definition was deleted")]
    assert container_id("web-d") is None


def test_a_node_regexp_that_no_longer_matches_removes_the_container(node, images):
    node.web("web-e", images.repo, node=node.name[:3])
    node.tick()
    assert container_id("web-e")
    node.web("web-e", images.repo, node="^some-other-node$")
    report = node.tick()
    assert [(s.action, s.reason) for s in report.plan.changes] == [
        (Action.REMOVE, "service no longer matches this node")]
    assert container_id("web-e") is None


def test_a_restarted_daemon_recreates_nothing(node, images):
    node.web("web-f", images.repo)
    node.web("web-g", images.repo, tag="v2")
    node.tick()
    ids = {name: container_id(name) for name in ("web-f", "web-g")}
    with Daemon(Config(node=node.name, directory=node.directory)) as restarted:
        report = restarted.tick(pull_due=True)
    assert report.plan.changes == ()
    assert {name: container_id(name) for name in ids} == ids


def test_containers_puller_does_not_own_are_never_touched(node, images, cleanup):
    # a stranger with no labels, and one labelled for another node
    docker("run", "-d", "--name", f"stranger-{cleanup.run_id}", "--label", cleanup.label,
           "--init", f"{images.repo}:v1", "sleep", "300")
    docker("run", "-d", "--name", f"other-node-{cleanup.run_id}", "--label", cleanup.label,
           "--label", "io.puller.node=some-other-node", "--label", "io.puller.service=x",
           "--init", f"{images.repo}:v1", "sleep", "300")
    # and one squatting a service's name
    docker("run", "-d", "--name", "web-h", "--label", cleanup.label, "--init",
           f"{images.repo}:v1", "sleep", "300")
    squatter = container_id("web-h")
    port = node.web("web-i", images.repo)
    node.web("web-h", images.repo)
    report = node.tick()
    serving(port, "v1")  # the others go on
    failed = [o for o in report.outcomes if not o.ok]
    assert [o.step.service for o in failed] == ["web-h"]
    assert "taken by a container puller does not manage" in failed[0].error
    assert container_id("web-h") == squatter
    for name in (f"stranger-{cleanup.run_id}", f"other-node-{cleanup.run_id}", "web-h"):
        assert inspect(name)["State"]["Running"], name
    # the failed create is not retried on every pass
    calls = node.daemon.docker.calls
    again = node.tick()
    assert actions(again) == []
    assert node.daemon.docker.calls - calls == 2  # docker ps, docker image inspect


def test_a_new_container_that_cannot_start_brings_the_old_one_back(node, images):
    port = node.web("web-j", images.repo)
    node.tick()
    serving(port, "v1")
    old = container_id("web-j")
    bash = (f"docker run -p 127.0.0.1:{port}:80 --init --label {node.cleanup.label} "
            f"{images.repo} /bin/no-such-program")
    node.write("web-j", bash=f"'{bash}'", repo=images.repo, tag="v2")
    report = node.tick()
    [outcome] = report.outcomes
    assert not outcome.ok and outcome.restored
    assert container_id("web-j") == old
    serving(port, "v1")
    assert inspect("web-j.prev") is None
    # not retried: the next passes keep the old one and create nothing
    for _ in range(2):
        again = node.tick()
        assert actions(again) == []
    assert container_id("web-j") == old
    # a fixed definition deploys
    node.web("web-j", images.repo, tag="v2", port=port)
    node.tick()
    serving(port, "v2")


def test_a_new_container_that_exits_at_once_brings_the_old_one_back(node, images):
    port = node.web("web-k", images.repo)
    node.tick()
    old = container_id("web-k")
    bash = (f"docker run -p 127.0.0.1:{port}:80 --label {node.cleanup.label} "
            f"{images.repo} sh -c \"exit 3\"")
    node.write("web-k", bash=f"'{bash}'", repo=images.repo, tag="v1")
    report = node.tick()
    [outcome] = report.outcomes
    assert not outcome.ok and outcome.restored, outcome
    assert container_id("web-k") == old
    serving(port, "v1")


def test_an_exited_container_is_started_again(node, images):
    port = node.web("web-l", images.repo)
    node.tick()
    docker("stop", "web-l")
    report = node.tick()
    assert actions(report) == [(Action.START, "web-l")]
    serving(port, "v1")


def test_bad_files_beside_a_good_one(node, images, caplog):
    port = node.web("web-m", images.repo)
    bad = {
        "broken.yml": "name: broken\nbash: [unclosed\n",
        "shell.yml": f"name: shell\nbash: docker run {images.repo} ; rm -rf /\nrepo: {images.repo}\n",
        "mismatch.yaml": f"name: other\nbash: docker run {images.repo}\nrepo: {images.repo}\n",
    }
    for name, text in bad.items():
        with open(os.path.join(node.directory, name), "w") as handle:
            handle.write(text)
    before = {name: read_bytes(node, name) for name in bad}
    with caplog.at_level(logging.WARNING, logger="puller"):
        node.tick()
        node.tick()
    serving(port, "v1")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for name in bad:
        assert sum(name in message for message in warnings) == 1, (name, warnings)
    assert any("broken.yml:2" in message for message in warnings)
    assert any("`;`" in message and "shell.yml" in message for message in warnings)
    after = {name: read_bytes(node, name) for name in bad}
    assert after == before


def test_a_broken_edit_keeps_the_running_service(node, images):
    port = node.web("web-n", images.repo)
    node.tick()
    ident = container_id("web-n")
    with open(os.path.join(node.directory, "web-n.yml"), "a") as handle:
        handle.write("bogus: [\n")
    report = node.tick()
    assert report.plan.changes == ()
    assert container_id("web-n") == ident
    serving(port, "v1")


def test_an_idle_pass_costs_two_docker_calls(node, images):
    for i in range(5):
        node.web(f"web-o{i}", images.repo)
    node.tick()
    report = node.tick()
    assert report.plan.changes == () and report.docker_calls == 2  # ps, image inspect


def test_an_idle_daemon_does_not_wake_itself(live_node, images):
    # its own reads of the definitions must not count as edits (watchdog reports opens)
    node = live_node(interval=600.0)
    for i in range(3):
        node.web(f"web-q{i}", images.repo)
    node.daemon.wake()

    def settled() -> bool:  # deployed, and the background jobs' ends were taken
        report = node.daemon.last_report
        return (report is not None and not report.deploying and report.plan.changes == ()
                and {c.name for c in report.containers if c.running} >= {
                    f"web-q{i}" for i in range(3)})

    wait_until(settled, timeout=20, what="the edits' passes")
    time.sleep(0.5)
    passes = node.daemon.passes
    time.sleep(2.0)
    assert node.daemon.passes == passes
