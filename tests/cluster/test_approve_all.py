"""`puller approve NAME --all` on two daemons joined on loopback: each node
deploys the new image that waits there, one answer per node."""

from __future__ import annotations

import json
import subprocess
import sys

from puller import constants

from .conftest import definition, wait_converged
from .test_loopback import PLAY, _cluster
from ..testenv import build_image, image_id, inspect, wait_until


def publisher(repo: str) -> str:
    """Another name of the registry: pushed through it, the nodes' local tag moves only
    by a pull."""
    return repo.replace("127.0.0.1", "localhost")


def image_of(daemon, service: str) -> str | None:
    return (inspect(f"{daemon.node}-{service}") or {}).get("Image")


def two_nodes_then_a_new_image(daemons, registry, cleanup, tmp_path, prefix: str,
                               service: str, fields: str):
    """Two joined daemons run ``service`` (1.0.0, with ``fields`` added to its definition);
    then 2.0.0 is pushed behind its tag, through ``publisher(repo)``. The nodes, the
    image they ran, the repository."""
    repo = f"{registry.host}/{prefix}-{cleanup.run_id}"
    build_image(f"{publisher(repo)}:live", "one", labels={constants.OCI_VERSION_LABEL: "1.0.0"})
    state = str(tmp_path / "state")
    first = daemons(f"{prefix}-1", *PLAY, state=state)
    second = daemons(f"{prefix}-2", *PLAY, f"-join=127.0.0.1:{first.port}", state=state)
    nodes = [first, second]
    text = definition(service, repo, tag="live", label=cleanup.label) + fields
    first.write(service, text)
    wait_converged(nodes, service, text)
    wait_until(lambda: all(image_of(d, service) for d in nodes), timeout=30,
               what="both to deploy")
    old = image_of(first, service)
    build_image(f"{publisher(repo)}:live", "two", labels={constants.OCI_VERSION_LABEL: "2.0.0"})
    return nodes, old, repo


def test_approve_all_deploys_the_waiting_image_on_every_node(daemons, registry, cleanup,
                                                              tmp_path):
    nodes, old, repo = two_nodes_then_a_new_image(daemons, registry, cleanup, tmp_path,
                                                  "ap", "gated", "update: manual\n")
    first, second = nodes

    def waiting() -> bool:
        services = [node.get("services", {}).get("gated") or {}
                    for node in _cluster(first)["nodes"]]
        return len(services) == 2 and all((s.get("update") or {}).get("available") == "2.0.0"
                                          for s in services)

    wait_until(waiting, timeout=30, what="both nodes to show the update waiting")
    assert image_of(first, "gated") == old and image_of(second, "gated") == old

    result = subprocess.run([sys.executable, "-m", "puller", f"-port={first.port}",
                             f"-state-dir={first.state_dir}", "approve", "gated", "--all",
                             "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    answers = {a["node"]: a for a in json.loads(result.stdout)["nodes"]}
    assert set(answers) == {first.node, second.node}
    assert all(a["approved"] and a["changed"] for a in answers.values()), answers
    new = image_id(f"{repo}:live")
    assert new != old and image_of(first, "gated") == new and image_of(second, "gated") == new


def test_under_a_rollout_one_approval_on_the_first_node_takes_the_fleet(daemons, registry,
                                                                       cleanup, tmp_path):
    """The rollout's first node holds the new image for approval; approved there, the
    other node follows in its wave, pinned to the same digest, without asking again."""
    nodes, old, repo = two_nodes_then_a_new_image(
        daemons, registry, cleanup, tmp_path, "apr", "rolled",
        "update: manual\nhealth_timeout: 1\nrollout: {canary: 1, parallel: 1}\n")
    first, second = nodes

    def update_on_first() -> dict | None:
        [mine] = [n for n in _cluster(first)["nodes"] if n.get("node") == first.node]
        return (mine.get("services", {}).get("rolled") or {}).get("update")

    wait_until(update_on_first, timeout=30, what="the first node to hold the new image")
    assert update_on_first()["available"] == "2.0.0"
    assert image_of(first, "rolled") == old and image_of(second, "rolled") == old
    # a CI's `pull --all` is told at once that the rollout waits for a person
    pulled = subprocess.run([sys.executable, "-m", "puller", f"-port={second.port}",
                             f"-state-dir={second.state_dir}", "pull", "rolled", "--all"],
                            capture_output=True, text=True, timeout=60)
    assert pulled.returncode == 1, pulled.stdout
    assert f"waits for approval on {first.node}: update available: 1.0.0 → 2.0.0" \
        in pulled.stderr, pulled.stderr

    result = subprocess.run([sys.executable, "-m", "puller", f"-port={first.port}",
                             f"-state-dir={first.state_dir}", "approve", "rolled"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    new = image_id(f"{publisher(repo)}:live")  # pinned pulls (repo@digest) tag nothing locally
    wait_until(lambda: image_of(second, "rolled") == new, timeout=30,
               what="the second node to follow the approved release")
    assert new != old and image_of(first, "rolled") == new
