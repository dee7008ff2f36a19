"""What failed stays failed, rollback works when it is needed most, status tells what runs."""

from __future__ import annotations

import os
import uuid

from puller.daemon import Config, Daemon
from puller.node.definitions import definition_fields
from puller.node.writer import write_definition
from puller.node.history import rollback_fields

from ..testenv import build_image, fetch, inspect, serving
from .conftest import Node
from .test_health import tick_until

FAILS_AFTER_TWO_SECONDS = 'sh -c "httpd -p 80 -h /www && sleep 2 && exit 3"'


def fresh_repo(registry) -> str:
    """A repository of this test's own, so moving its tags disturbs no other test."""
    return f"{registry.host}/integrity-{uuid.uuid4().hex[:8]}"


def fail_v2(node: Node, service: str, repo: str) -> tuple[int, str]:
    """v1 runs; v2 exits after two seconds and v1 is put back. (port, v1's container id)"""
    port = node.web(service, repo, tag="v1", health_timeout=0)
    node.tick()
    serving(port, "v1")
    old = inspect(service)["Id"]
    node.web(service, repo, tag="v2", port=port, health_timeout=6,
             command=FAILS_AFTER_TWO_SECONDS)
    node.tick()
    tick_until(node, lambda: (inspect(service) or {}).get("Id") == old,
               what="the previous container to be put back")
    serving(port, "v1")
    return port, old


def test_a_failed_release_is_not_retried_after_a_restart(node, images, tmp_path):
    port, old = fail_v2(node, "kept-v1", images.repo)
    node.daemon.close()
    config = node.daemon.config
    with Daemon(Config(node=config.node, directory=config.directory,
                       state_dir=config.state_dir)) as restarted:
        for _ in range(3):
            report = restarted.tick()
            assert report.plan.changes == (), [str(s) for s in report.plan.changes]
        assert "exited with code 3" in restarted.memory.failures["kept-v1"].error
    assert inspect("kept-v1")["Id"] == old
    serving(port, "v1")


def test_status_names_the_digest_that_runs_after_a_failed_release(node, registry):
    repo = fresh_repo(registry)
    v1 = build_image(f"{repo}:v1", "v1")
    build_image(f"{repo}:v2", "v2")
    fail_v2(node, "shows-v1", repo)
    status = node.daemon.status()["services"]["shows-v1"]
    assert status["running_digest"] == v1
    assert status["error"].startswith("v2 failed: ")
    assert "exited with code 3" in status["error"]
    assert f"running v1 ({v1[7:19]})" in status["error"]


def test_rollback_during_probation_returns_to_the_release_that_ran_before(node, registry):
    repo = fresh_repo(registry)
    build_image(f"{repo}:v1", "v1")
    build_image(f"{repo}:v2", "v2")
    port = node.web("rb-probation", repo, tag="v1", health_timeout=0)
    node.tick()
    serving(port, "v1")
    # the tag moves; a pull deploys the new v1, which is proven at once
    newer = build_image(f"{repo}:v1", "v1-newer")
    node.tick(pull_due=True)
    serving(port, "v1-newer")
    node.tick()
    # v2 is on probation for a minute when the person asks for a rollback
    node.web("rb-probation", repo, tag="v2", port=port, health_timeout=60)
    node.tick()
    serving(port, "v2")
    current = definition_fields(node.daemon.definitions.scan().services["rb-probation"])
    fields = rollback_fields(node.daemon.history.revisions("rb-probation"), current)
    assert fields["tag"] == "v1" and fields["digest"] == newer
    write_definition(node.directory, fields)
    tick_until(node, lambda: fetch(port) == "v1-newer",
               what="the release before v2 to serve again")


def push_index(registry, path: str, tag: str, content: str) -> str:
    """A multi-arch tag: an OCI index of two single-platform images; the index's digest."""
    import json
    import urllib.request

    manifests = []
    for arch in ("amd64", "arm64"):
        build_image(f"{registry.host}/{path}:{tag}-{arch}", f"{content} {arch}")
        request = urllib.request.Request(
            f"http://{registry.host}/v2/{path}/manifests/{tag}-{arch}", method="HEAD",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            manifests.append({"mediaType": answer.headers["Content-Type"],
                              "digest": answer.headers["Docker-Content-Digest"],
                              "size": int(answer.headers["Content-Length"]),
                              "platform": {"architecture": arch, "os": "linux"}})
    index = json.dumps({"schemaVersion": 2, "manifests": manifests,
                        "mediaType": "application/vnd.oci.image.index.v1+json"}).encode()
    request = urllib.request.Request(
        f"http://{registry.host}/v2/{path}/manifests/{tag}", data=index, method="PUT",
        headers={"Content-Type": "application/vnd.oci.image.index.v1+json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.headers["Docker-Content-Digest"]


def test_a_multi_arch_release_is_remembered_and_rolled_back_by_its_index_digest(node, registry):
    path = f"multi-{uuid.uuid4().hex[:8]}"
    repo = f"{registry.host}/{path}"
    v1 = push_index(registry, path, "v1", "multi v1")
    v2 = push_index(registry, path, "v2", "multi v2")
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, "amd64")
    port = node.web("multi", repo, tag="v1", health_timeout=0)
    node.tick()
    serving(port, f"multi v1 {arch}")
    node.web("multi", repo, tag="v2", port=port, health_timeout=0)
    node.tick()
    serving(port, f"multi v2 {arch}")
    node.tick()
    revisions = node.daemon.history.revisions("multi")
    assert [r["digest"] for r in revisions] == [v1, v2]  # the index, never a platform manifest
    current = definition_fields(node.daemon.definitions.scan().services["multi"])
    assert rollback_fields(revisions, current)["digest"] == v1
    assert node.daemon.status()["services"]["multi"]["running_digest"] == v2
