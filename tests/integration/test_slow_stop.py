"""One slow stop never holds up the other services.

Service A's container ignores SIGTERM (no --init, a shell that traps TERM),
so ``docker stop`` waits its whole grace period (10 s, docker's default) on
every recreate of A. Meanwhile an edit of service B must be deployed at once.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid

from ..testenv import fetch, inspect, wait_until

IGNORES_TERM = "trap \"\" TERM; while true; do sleep 1; done"


def write_stubborn(directory, name: str, repo: str, version: str, label: str,
                   extra: str = "") -> None:
    """A service whose PID 1 ignores SIGTERM (its stop takes 10 s); ``version``
    is in its environment. Its predecessor goes as soon as it runs."""
    bash = (f"docker run -e V={version} {extra} --label {label} {repo}:v1 "
            f"sh -c '{IGNORES_TERM}'")
    path = os.path.join(directory, f"{name}.yml")
    with open(path + ".tmp", "w") as handle:
        handle.write(f"name: {name}\nbash: {json.dumps(bash)}\nrepo: {repo}\ntag: v1\n"
                     "health_timeout: 0\n")
    os.replace(path + ".tmp", path)


def env_of(name: str) -> list[str]:
    found = inspect(name)
    return found["Config"]["Env"] if found and found["State"]["Running"] else []


def test_a_slow_stop_does_not_hold_up_another_service(live_node, images):
    run = uuid.uuid4().hex[:6]
    slow, fast = f"stubborn-{run}", f"quick-{run}"
    node = live_node()
    write_stubborn(node.directory, slow, images.repo, "1", node.cleanup.label)
    port = node.web(fast, images.repo, tag="v1")
    wait_until(lambda: "V=1" in env_of(slow) and fetch(port) == "v1", timeout=30,
               what="both services deployed")
    old_id = inspect(slow)["Id"]

    write_stubborn(node.directory, slow, images.repo, "2", node.cleanup.label)  # a recreate: the stop takes 10 s
    wait_until(lambda: inspect(f"{slow}.prev") is not None, timeout=10,
               what="the recreate of the slow service to begin")
    time.sleep(1)
    edited = time.monotonic()
    node.web(fast, images.repo, tag="v2", port=port)
    wait_until(lambda: fetch(port) == "v2", timeout=6,
               what="the other service deployed while the slow stop goes on")
    took = time.monotonic() - edited
    old = inspect(old_id)
    assert old is not None and old["State"]["Running"], \
        f"the slow stop was over before the other service was deployed ({took:.1f} s)"
    wait_until(lambda: "V=2" in env_of(slow), timeout=30, what="the slow service recreated")
    wait_until(lambda: inspect(old_id) is None and inspect(f"{slow}.prev") is None, timeout=10,
               what="the predecessor removed")
    assert node.daemon.status()["services"][slow]["error"] is None


def test_a_pull_request_answers_once_its_deploy_ended(live_node, images):
    run = uuid.uuid4().hex[:6]
    slow = f"stubborn-{run}"
    node = live_node()
    write_stubborn(node.directory, slow, images.repo, "1", node.cleanup.label)
    wait_until(lambda: "V=1" in env_of(slow), timeout=30, what="the service deployed")
    answers: list = []
    write_stubborn(node.directory, slow, images.repo, "2", node.cleanup.label)
    wait_until(lambda: inspect(f"{slow}.prev") is not None, timeout=10,
               what="the recreate to begin")
    asked = threading.Thread(target=lambda: answers.append(
        node.call("POST", f"/v1/services/{slow}/pull")))
    asked.start()
    try:
        asked.join(timeout=60)
    finally:
        assert not asked.is_alive(), "the pull request was never answered"
    status, body = answers[0]
    assert status == 200, body
    assert "V=2" in env_of(slow), "answered before the deploy ended"
    assert body["changed"] is True and body["errors"] == []
    assert [step["action"] for step in body["steps"]][:1] == ["recreate"], body["steps"]


def test_stop_timeout_in_the_run_line_shortens_the_stop(node, images):
    name = f"stubborn-{uuid.uuid4().hex[:6]}"
    write_stubborn(node.directory, name, images.repo, "1", node.cleanup.label,
                   extra="--stop-timeout 1")
    node.tick()
    assert "V=1" in env_of(name)
    write_stubborn(node.directory, name, images.repo, "2", node.cleanup.label,
                   extra="--stop-timeout 1")
    started = time.monotonic()
    node.tick()  # in the pass: tick() alone runs container steps synchronously
    took = time.monotonic() - started
    assert "V=2" in env_of(name) and inspect(f"{name}.prev") is None
    assert took < 6, f"the recreate took {took:.1f} s: the 10 s default grace period?"
