"""A container name held by someone else: the message names who, and the fix."""

from __future__ import annotations

from puller.errors import DockerError
from puller.node.container import Container
from puller.node.executor import Executor

TAKEN = DockerError(["docker", "run", "--name", "web"], 125,
                    'Conflict. The container name "/web" is already in use by container "abc".')


class Docker:
    def __init__(self, holder):
        self.holder = holder

    def inspect_container(self, name):
        return self.holder


def holder(labels):
    return Container(id="a" * 64, name="web", image_id="x", status="running", labels=labels)


def test_the_other_puller_node_is_named_with_the_template_that_fixes_it():
    executor = Executor(Docker(holder({"io.puller.service": "web", "io.puller.node": "box-2"})),
                        "box-1")
    message = executor.explain(TAKEN, "web")
    assert "puller node 'box-2'" in message and "shares this Docker engine" in message
    assert "-name-template {node}-{service}" in message
    assert "does not manage" not in message


def test_a_stranger_is_still_a_container_puller_does_not_manage():
    message = Executor(Docker(holder({})), "box-1").explain(TAKEN, "web")
    assert "puller does not manage" in message and "rename or remove" in message


def test_other_failures_are_told_as_they_are():
    failure = DockerError(["docker", "run"], 125, "no space left on device")
    assert Executor(Docker(None), "box-1").explain(failure, "web") == str(failure)
