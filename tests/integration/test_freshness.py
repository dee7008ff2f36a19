"""Keeping images fresh against a real registry: polling, triggers, notifications."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import pytest

from ..testenv import Registry, build_image, docker, fetch, wait_until, serving


def publisher_host(registry_host: str) -> str:
    """The same registry under another name: pushing through it moves the tag
    in the registry without moving the node's local tag of the same image."""
    return registry_host.replace("127.0.0.1", "localhost")


def publish(registry_host: str, path: str, tag: str, content: str) -> str:
    return build_image(f"{publisher_host(registry_host)}/{path}:{tag}", content)




@pytest.fixture
def repo(registry, cleanup):
    """A repository of its own for the test, with tag live serving "one"."""
    path = f"fresh-{cleanup.run_id}"
    publish(registry.host, path, "live", "one")
    return path


def test_a_moved_tag_is_redeployed_by_polling(live_node, registry, repo, caplog):
    with caplog.at_level(logging.INFO, logger="puller"):
        node = live_node(interval=0.5)
        port = node.web("poll", f"{registry.host}/{repo}", tag="live")
        serving(port, "one")
        digest = publish(registry.host, repo, "live", "two")
        serving(port, "two")
    # pulling a new image is the daemon doing its job, not a fault to warn of
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert [m for m in warned if not m.startswith("no explicit cluster secret")] == []
    # the new container serves a moment before its pass has finished
    wait_until(lambda: node.daemon.status()["services"]["poll"]["registry_digest"] == digest,
               timeout=5, what="status to show the registry's digest")
    wait_until(lambda: node.daemon.status()["services"]["poll"]["running_digest"] == digest,
               timeout=5, what="status to show the running digest")


def test_an_unchanged_tag_costs_one_head_and_no_pull(node, registry, repo):
    node.web("idle", f"{registry.host}/{repo}", tag="live")
    node.tick(pull_due=True)
    docker_calls = node.daemon.docker.counts.copy()
    heads = node.daemon.freshness.client.requests
    for _ in range(5):
        report = node.tick(pull_due=True)
        assert report.plan.changes == () and report.pulls == ()
    assert node.daemon.docker.counts["pull"] == docker_calls["pull"]
    assert node.daemon.freshness.client.requests - heads == 5
    assert report.docker_calls == 2  # docker ps, docker image inspect


def test_the_http_trigger_and_puller_pull_deploy_at_once(live_node, registry, repo):
    node = live_node()  # interval 600 s: only the trigger can explain a deploy
    port = node.web("trig", f"{registry.host}/{repo}", tag="live")
    node.daemon.wake()
    serving(port, "one")

    publish(registry.host, repo, "live", "two")
    status, answer = node.call("POST", "/v1/services/trig/pull")
    assert status == 200, answer
    assert answer["pulled"] and answer["changed"] and not answer["errors"]
    assert fetch(port) == "two", "deployed before the trigger answered"

    publish(registry.host, repo, "live", "three")
    status, answer = node.call("GET", "/v1/pull/trig")  # the original's path
    assert status == 200 and answer["pulled"]
    assert fetch(port) == "three"

    publish(registry.host, repo, "live", "four")
    result = subprocess.run([sys.executable, "-m", "puller", f"-api={node.api}",
                             f"-state-dir={node.state_dir}", "pull", "trig"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "pulled" in result.stdout
    assert fetch(port) == "four"

    status, answer = node.call("POST", "/v1/services/nothing-here/pull")
    assert status == 404 and "no service" in answer["error"]


def test_a_registry_notification_deploys_at_once(live_node, engine, cleanup):
    key = "hook-key-" + cleanup.run_id
    node = live_node(apikey=key, api_addr="127.0.0.1")
    notifying = Registry(extra_config=(
        "notifications:\n  endpoints:\n    - name: puller\n"
        f"      url: {node.api}/v1/hooks/registry\n"
        f"      headers: {{Authorization: [Bearer {key}]}}\n"
        "      timeout: 2s\n      threshold: 5\n      backoff: 1s\n"
        "      ignoredmediatypes: [application/octet-stream]\n"
        "      ignore: {actions: [pull]}\n")).start()
    try:
        repo = f"hooked-{cleanup.run_id}"
        publish(notifying.host, repo, "live", "one")
        port = node.web("hooked", f"{notifying.host}/{repo}", tag="live")
        node.daemon.wake()
        serving(port, "one")
        started = time.monotonic()
        publish(notifying.host, repo, "live", "two")
        serving(port, "two", timeout=10)
        assert time.monotonic() - started < 8
    finally:
        notifying.close()


def test_a_forged_hook_is_refused_and_deploys_nothing(live_node, registry, repo):
    node = live_node(apikey="the-real-key", api_addr="127.0.0.1")
    port = node.web("forged", f"{registry.host}/{repo}", tag="live")
    node.daemon.wake()
    serving(port, "one")
    digest = publish(registry.host, repo, "live", "two")
    body = json.dumps({"events": [{"action": "push", "target": {
        "repository": repo, "tag": "live", "digest": digest,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json"},
        "request": {"host": registry.host}}]}).encode()
    for key in ("", "wrong-key"):
        status, answer = node.call("POST", "/v1/hooks/registry", body, key=key)
        assert status == 401, answer
    time.sleep(1.0)
    assert fetch(port) == "one"
    status, answer = node.call("POST", "/v1/hooks/registry", b"{not json", key="the-real-key")
    assert status == 400
    status, answer = node.call("POST", "/v1/hooks/registry", body, key="the-real-key")
    assert status == 202 and answer == {"accepted": 1}
    serving(port, "two")
    # a Docker Hub style sender cannot set headers: the key may come in the query
    hub = json.dumps({"push_data": {"tag": "live"}, "repository": {"repo_name": repo}}).encode()
    status, _ = node.call("POST", "/v1/hooks/registry?key=wrong", hub, key="")
    assert status == 401
    status, answer = node.call("POST", "/v1/hooks/registry?key=the-real-key", hub, key="")
    assert status == 202 and answer == {"accepted": 1}


def test_a_registry_that_is_down_keeps_the_container_and_warns_once(node, engine, cleanup, caplog):
    own = Registry().start()
    try:
        path = f"down-{cleanup.run_id}"
        publish(own.host, path, "live", "one")
        port = node.web("down", f"{own.host}/{path}", tag="live")
        node.tick()
        serving(port, "one")
        ident = docker("inspect", "--format", "{{.Id}}", "down").stdout.strip()
        own.stop()
        with caplog.at_level(logging.WARNING, logger="puller"):
            for i in range(4):
                node.tick(now=time.time() + 1000 * i, pull_due=True)  # past every backoff
        warnings = [r.getMessage() for r in caplog.records
                    if r.levelno == logging.WARNING and "cannot be reached" in r.getMessage()]
        assert len(warnings) == 1, warnings
        assert docker("inspect", "--format", "{{.Id}}", "down").stdout.strip() == ident
        assert fetch(port) == "one"
        assert "cannot be reached" in node.daemon.status()["services"]["down"]["error"]
        own.start()
        publish(own.host, path, "live", "two")
        with caplog.at_level(logging.INFO, logger="puller"):
            node.tick(now=time.time() + 10_000, pull_due=True)
        serving(port, "two")
        assert any(r.getMessage().startswith("no longer: ") for r in caplog.records)
    finally:
        own.close()
