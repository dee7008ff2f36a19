"""The update policy against a real registry and engine: a new image behind
the tag waits (update: manual|notify) until `puller approve`; a person's edit
applies at once; a waiting image is told once, named by its OCI version."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from puller import constants
from puller.daemon import Config, Daemon

from ..testenv import build_image, fetch, serving, wait_until
from .conftest import Node
from .test_freshness import publisher_host
from .test_notify_metrics import receivers  # noqa: F401  (a fixture)

OCI = constants.OCI_VERSION_LABEL


def publish(registry_host: str, path: str, tag: str, content: str, version: str) -> str:
    """Push through another name of the registry: the node's local tag does not move."""
    return build_image(f"{publisher_host(registry_host)}/{path}:{tag}", content,
                       labels={OCI: version})


def container_id(node: Node, service: str) -> str:
    [found] = [c.id for c in node.daemon.docker.containers(node.name) if c.service == service
               and not c.is_previous]
    return found


def cli(node, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "puller", f"-api={node.api}",
                           f"-state-dir={node.state_dir}", *args],
                          capture_output=True, text=True, timeout=120)


def update_of(node, service: str):
    return node.daemon.status()["services"][service]["update"]


def test_manual_keeps_the_old_container_until_puller_approve(live_node, registry, cleanup):
    path = f"manual-{cleanup.run_id}"
    publish(registry.host, path, "live", "one", "1.2.5")
    node = live_node(interval=0.5)
    port = node.web("man", f"{registry.host}/{path}", tag="live", update="manual")
    serving(port, "one")  # the first deploy is never held
    before = container_id(node, "man")
    publish(registry.host, path, "live", "two", "1.2.7")
    wait_until(lambda: update_of(node, "man"), timeout=15, what="the update to wait")
    time.sleep(1.5)  # several passes, each asking the registry
    assert fetch(port) == "one" and container_id(node, "man") == before
    update = update_of(node, "man")
    assert update["running"] == "1.2.5" and update["available"] == "1.2.7"
    status = cli(node, "status", "-wide")
    assert status.returncode == 0, status.stderr
    assert "update available: 1.2.5 → 1.2.7, waiting for approval" in status.stdout

    approved = cli(node, "approve", "man")
    assert approved.returncode == 0, approved.stderr
    assert "approved 1.2.5 → 1.2.7" in approved.stdout
    assert fetch(port) == "two", "deployed before the approval answered"
    assert update_of(node, "man") is None

    again = cli(node, "approve", "man")
    assert again.returncode == 1 and "nothing to approve" in again.stderr
    code, answer = node.call("POST", "/v1/services/man/approve")
    assert code == 409 and "no new image of man waits" in answer["error"]


def test_a_rollout_waits_for_the_approval_of_a_new_image(live_node, registry, cleanup):
    """The rollout's leader (here the only node) pins the digest its registry check
    found: that pin is the new image, not a person's edit, so `manual` holds it."""
    path = f"rolled-{cleanup.run_id}"
    publish(registry.host, path, "live", "one", "1.0.0")
    node = live_node(interval=0.5)
    port = node.web("rolled", f"{registry.host}/{path}", tag="live", update="manual",
                    health_timeout=1, rollout="{canary: 1, parallel: 1}")
    serving(port, "one")  # the first deploy is never held
    before = container_id(node, "rolled")
    publish(registry.host, path, "live", "two", "2.0.0")
    wait_until(lambda: update_of(node, "rolled"), timeout=15,
               what="the new image to wait for approval")
    time.sleep(1.5)  # several passes, each asking the registry
    assert fetch(port) == "one" and container_id(node, "rolled") == before
    assert update_of(node, "rolled")["available"] == "2.0.0"

    approved = cli(node, "approve", "rolled")
    assert approved.returncode == 0, approved.stderr
    wait_until(lambda: fetch(port) == "two", timeout=15, what="the approved image to serve")
    wait_until(lambda: (node.daemon.rollout("rolled") or {}).get("ended"),
               timeout=15, what="the rollout to end")


def test_approve_all_asks_every_node(live_node, registry, cleanup):
    path = f"all-{cleanup.run_id}"
    publish(registry.host, path, "live", "one", "1.0.0")
    node = live_node(interval=0.5)
    port = node.web("every", f"{registry.host}/{path}", tag="live", update="manual")
    serving(port, "one")
    publish(registry.host, path, "live", "two", "2.0.0")
    wait_until(lambda: update_of(node, "every"), timeout=15, what="the update to wait")
    code, answer = node.call("POST", "/v1/services/every/approve-all")
    assert code == 200, answer
    [mine] = answer["nodes"]  # no peers here: this node's own answer
    assert mine["approved"] and mine["changed"] and mine["update"]["available"] == "2.0.0"
    assert fetch(port) == "two"


def test_notify_tells_of_a_new_image_once_by_its_oci_version_and_deploys_nothing(
        tmp_path, registry, cleanup, receivers, monkeypatch):  # noqa: F811
    monkeypatch.setattr(constants, "NOTIFY_BATCH", 0.2)
    receiver = receivers()
    path = f"notify-{cleanup.run_id}"
    publish(registry.host, path, "live", "one", "1.0.0")
    directory = tmp_path / "defs"
    directory.mkdir()
    config = Config(node=cleanup.node(), directory=str(directory), zeroconf=False,
                    state_dir=str(tmp_path / "state"), notify=(receiver.url,))

    def told() -> list[str]:
        return [m for m in receiver.messages() if "new image available" in m]

    with Daemon(config) as daemon:
        node = Node(daemon, str(directory), cleanup)
        port = node.web("nt", f"{registry.host}/{path}", tag="live", update="notify")
        node.tick(pull_due=True)
        serving(port, "one")
        before = container_id(node, "nt")
        publish(registry.host, path, "live", "two", "2.0.0")
        for _ in range(3):
            report = node.tick(pull_due=True)
            assert report.plan.changes == ()
        assert report.docker_calls == 2  # a waiting update costs an idle pass nothing more
        wait_until(told, timeout=10, what="the new image to be told of")
    # a restarted daemon (its memory on disk) tells nothing again, deploys nothing
    with Daemon(config) as daemon:
        node = Node(daemon, str(directory), cleanup)
        calls = []
        for _ in range(3):
            report = node.tick(pull_due=True)
            assert report.plan.changes == ()
            calls.append(report.docker_calls)
        assert calls == [3, 2, 2], calls  # the running image is inspected once, for its version
        assert update_of(node, "nt")["running"] == "1.0.0"
    time.sleep(0.5)
    assert fetch(port) == "one" and container_id(node, "nt") == before
    [message] = told()
    assert message.startswith(f"nt on {config.node}: 1.0.0 → 2.0.0 (sha256:"), message
    assert "not deployed (update: notify)" in message


@pytest.mark.parametrize("edit", ["run line", "tag"])
def test_a_person_s_edit_applies_at_once_under_manual(node, registry, cleanup, edit):
    path = f"edit-{cleanup.run_id}"
    repo = f"{registry.host}/{path}"
    publish(registry.host, path, "live", "one", "1.0.0")
    port = node.web("ed", repo, tag="live", update="manual")
    node.tick(pull_due=True)
    serving(port, "one")
    publish(registry.host, path, "live", "two", "2.0.0")
    node.tick(pull_due=True)
    assert fetch(port) == "one" and update_of(node, "ed")["available"] == "2.0.0"
    if edit == "run line":
        node.web("ed", repo, tag="live", update="manual", port=port, extra="-e EDITED=1")
        expected = "two"  # the run line applies, with the image the tag names now
    else:
        publish(registry.host, path, "next", "three", "3.0.0")
        node.web("ed", repo, tag="next", update="manual", port=port)
        expected = "three"
    report = node.tick(pull_due=True)
    assert [step.action.value for step in report.plan.changes] == ["recreate"], report.plan
    serving(port, expected)
    assert update_of(node, "ed") is None
