"""Fleet rollouts with three real daemons sharing the engine, on loopback and
on three hosts in network namespaces: canary first, one wave at a time, halt
and roll back, one digest per rollout, a dead node skipped, and ``puller pull
--all`` waiting for it all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from ..testenv import build_image, docker, inspect, wait_until

PLAY = ("-zeroconf=false", "-interval=1", "-name-template={node}-{service}", "-bind=127.0.0.1")
HEALTH = 2  # seconds each node's new container must stay up
AT_ONCE = "{}"  # a rollout of one wave: every node at once (the first deploys, quickly)


@pytest.fixture
def fleet(daemons, tmp_path, cleanup):
    """Three daemons (sorted names ra-, rb-, rc-), each with its own state dir and
    the same explicit secret; a host dir the containers see as /ctl."""
    secret = tmp_path / "secret"
    secret.write_text("rollout-secret\n")
    first = daemons("ra", *PLAY, f"-secret-file={secret}")
    rest = [daemons(n, *PLAY, f"-secret-file={secret}", f"-join=127.0.0.1:{first.port}")
            for n in ("rb", "rc")]
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    nodes = [first, *rest]
    for daemon in nodes:  # a rollout's waves are cut from the nodes a node knows
        wait_until(lambda: len(_answering(daemon)) == 3, timeout=30,
                   what=f"{daemon.node} to know every node")
    return nodes, str(ctl)


def _answering(daemon) -> list[str]:
    try:
        return [n["node"] for n in api(daemon, "/v1/cluster")["nodes"] if not n.get("error")]
    except OSError:
        return []


def service(repo: str, tag: str, ctl: str, cleanup, rollout: str = "{canary: 1, parallel: 1}"
            ) -> str:
    """A service whose container exits 3 when its image says "flaky" and /ctl/fail exists."""
    script = ('read v < /www/index.html; [ "$v" = flaky ] && [ -e /ctl/fail ] && exit 3; '
              'exec sleep 100000')
    bash = (f"docker run --init --label {cleanup.label} -v {ctl}:/ctl {repo} "
            f"sh -c '{script}'")
    return (f"name: web\nbash: \"{bash.replace(chr(34), chr(92) + chr(34))}\"\nrepo: {repo}\n"
            f"tag: {tag}\nnode: '-{cleanup.run_id[:6]}$'\nhealth_timeout: {HEALTH}\n"
            f"rollout: {rollout}\n")


def api(daemon, path: str, method: str = "GET") -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{daemon.port + 1}{path}", method=method,
                                     headers={"Authorization": f"Bearer {daemon.api_key()}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def view(daemon) -> dict:
    try:
        return api(daemon, "/v1/status").get("rollouts", {}).get("web", {}).get("view") or {}
    except OSError:
        return {}


def container(daemon) -> dict:
    return inspect(f"{daemon.node}-web") or {}


def image_of(daemon) -> str:
    return container(daemon).get("Image", "")


def running(daemon) -> bool:
    return bool(container(daemon).get("State", {}).get("Running"))


def started(daemon) -> float:
    from puller.node.container import Container

    return Container.from_inspect(container(daemon)).started or 0.0


def deployed(nodes, ref: str, timeout: float = 60) -> None:
    """Every node runs ``ref``'s image and the rollout has ended."""
    wanted = docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
    wait_until(lambda: all(image_of(d) == wanted and running(d) for d in nodes)
               and view(nodes[0]).get("ended"), timeout=timeout,
               what=f"every node to run {ref} and the rollout to end")


def pull_all(daemon, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "puller", f"-port={daemon.port}",
                           f"-state-dir={daemon.state_dir}", "pull", "web", "--all", *args],
                          capture_output=True, text=True, timeout=240)


def test_a_good_release_reaches_the_canary_first_then_one_node_at_a_time(fleet, images,
                                                                          cleanup):
    nodes, ctl = fleet
    nodes[2].write("web", service(images.repo, "v1", ctl, cleanup))
    deployed(nodes, f"{images.repo}:v1")
    nodes[1].write("web", service(images.repo, "v2", ctl, cleanup))  # edited on any node
    deployed(nodes, f"{images.repo}:v2")
    first, second, third = (started(d) for d in nodes)
    # each wave starts only once the one before proved itself for HEALTH seconds
    assert second >= first + HEALTH, (first, second, third)
    assert third >= second + HEALTH, (first, second, third)
    states = view(nodes[2])["nodes"]
    assert [states[d.node]["state"] for d in nodes] == ["done"] * 3
    assert [states[d.node]["wave"] for d in nodes] == [1, 2, 3]
    for daemon in nodes:
        assert "Traceback" not in daemon.log()


@pytest.fixture
def lan_fleet(daemons, tmp_path, cleanup):
    """Three hosts in network namespaces (zeroconf finds the peers); the registry on
    the root namespace's loopback is out of their reach: the first node proposes
    the digest of its local image."""
    from ..netns import Lan

    secret = tmp_path / "secret"
    secret.write_text("rollout-secret\n")
    secret.chmod(0o600)
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    with Lan(3) as lan:
        nodes = [daemons(name, "-interval=1", "-name-template={node}-{service}",
                         f"-secret-file={secret}", port=7946, prefix=lan.prefix(i))
                 for i, name in enumerate(("la", "lb", "lc"))]
        for i, daemon in enumerate(nodes):
            wait_until(lambda: len([n for n in lan_status(lan, i, daemon)["nodes"]
                                    if not n.get("error")]) == 3, timeout=30,
                       what=f"{daemon.node} to know every node")
        yield lan, nodes, str(ctl)
        for daemon in nodes:  # before the namespaces go
            daemon.stop()


def lan_status(lan, index: int, daemon) -> dict:
    """``puller status --json`` on host ``index`` (its API is on its own loopback)."""
    result = subprocess.run([*lan.prefix(index), sys.executable, "-m", "puller", "-port=7946",
                             f"-state-dir={daemon.state_dir}", "status", "--json"],
                            capture_output=True, text=True, timeout=60)
    return json.loads(result.stdout) if result.returncode == 0 else {"nodes": []}


def test_a_release_that_dies_on_the_canary_never_reaches_the_others(lan_fleet, images,
                                                                     cleanup):
    lan, nodes, ctl = lan_fleet
    flaky = f"flaky-{cleanup.run_id}"
    build_image(f"{images.repo}:{flaky}", "flaky")

    def third_view() -> dict:
        answer = lan_status(lan, 2, nodes[2])
        mine = answer["nodes"][0] if answer["nodes"] else {}
        return (mine.get("rollouts") or {}).get("web", {}).get("view") or {}

    nodes[0].write("web", service(images.repo, "v1", ctl, cleanup, rollout=AT_ONCE))
    wait_until(lambda: all(running(d) for d in nodes) and third_view().get("ended"),
               timeout=60, what="v1 on every node")
    before = [container(d)["Id"] for d in nodes]
    open(os.path.join(ctl, "fail"), "w").close()
    nodes[1].write("web", service(images.repo, flaky, ctl, cleanup))
    wait_until(lambda: third_view().get("halted"), timeout=60, what="the rollout to halt")
    halted = third_view()["halted"]
    assert halted.startswith(f"failed on {nodes[0].node}: ") and "code 3" in halted
    status = subprocess.run([*lan.prefix(2), sys.executable, "-m", "puller", "-port=7946",
                             f"-state-dir={nodes[2].state_dir}", "status"],
                            capture_output=True, text=True, timeout=60)
    assert f"halted: failed on {nodes[0].node}" in status.stdout, status.stdout
    wait_until(lambda: running(nodes[0]), timeout=20, what="the canary's old container")
    assert [container(d)["Id"] for d in nodes[1:]] == before[1:]  # never stopped
    assert all(running(d) for d in nodes)
    pull = subprocess.run([*lan.prefix(1), sys.executable, "-m", "puller", "-port=7946",
                           f"-state-dir={nodes[1].state_dir}", "pull", "web", "--all"],
                          capture_output=True, text=True, timeout=240)
    assert pull.returncode != 0
    assert f"failed on {nodes[0].node}" in pull.stderr and "code 3" in pull.stderr


def test_a_failure_in_the_second_wave_rolls_the_first_back(fleet, images, cleanup):
    nodes, ctl = fleet
    flaky = f"flaky-{cleanup.run_id}"
    build_image(f"{images.repo}:{flaky}", "flaky")
    nodes[0].write("web", service(images.repo, "v1", ctl, cleanup, rollout=AT_ONCE))
    deployed(nodes, f"{images.repo}:v1")
    v1 = image_of(nodes[0])
    untouched = container(nodes[2])["Id"]
    nodes[0].write("web", service(images.repo, flaky, ctl, cleanup))
    wait_until(lambda: image_of(nodes[0]) not in ("", v1) and running(nodes[0]), timeout=30,
               what="the canary to take the release")
    open(os.path.join(ctl, "fail"), "w").close()  # from now on it dies at its start
    wait_until(lambda: view(nodes[2]).get("halted"), timeout=60, what="the rollout to halt")
    assert view(nodes[2])["halted"].startswith(f"failed on {nodes[1].node}: ")
    wait_until(lambda: image_of(nodes[0]) == v1 and running(nodes[0]), timeout=30,
               what="the canary to roll back")
    wait_until(lambda: view(nodes[0])["nodes"][nodes[0].node]["state"] == "reverted",
               timeout=10, what="the canary to report its rollback")
    # put back by its own planner (a background job: it may end a pass later)
    wait_until(lambda: image_of(nodes[1]) == v1 and running(nodes[1]), timeout=20,
               what="the failed node to run its old container again")
    assert container(nodes[2])["Id"] == untouched  # never reached
    result = pull_all(nodes[2])
    assert result.returncode != 0
    assert f"failed on {nodes[1].node}" in result.stderr
    assert f"rolled back on {nodes[0].node}" in result.stderr


def test_a_tag_moved_mid_rollout_leaves_every_node_on_one_digest(fleet, images, cleanup):
    nodes, ctl = fleet
    moving = f"{images.repo}:mv-{cleanup.run_id}"
    build_image(moving, "one")
    one = image_id_of(moving)
    nodes[0].write("web", service(images.repo, f"mv-{cleanup.run_id}", ctl, cleanup))
    deployed(nodes, moving)
    build_image(moving, "two")
    two = image_id_of(moving)
    started_at = time.monotonic()
    quick = pull_all(nodes[1], "--no-wait")
    assert quick.returncode == 0, quick.stderr
    assert time.monotonic() - started_at < 20 and "done on" not in quick.stdout
    wait_until(lambda: image_of(nodes[0]) == two, timeout=30, what="the canary to take two")
    build_image(moving, "three")  # the tag moves while two is on its way
    three = image_id_of(moving)
    wait_until(lambda: [image_of(d) for d in nodes] == [two] * 3, timeout=60,
               what="every node to be on two at once")
    result = pull_all(nodes[1])  # waits for the rollout of three
    assert result.returncode == 0, result.stderr
    assert [image_of(d) for d in nodes] == [three] * 3
    assert f"done on {', '.join(d.node for d in nodes)}" in result.stdout
    assert one not in (two, three)


def test_a_killed_node_is_skipped_after_its_timeout(fleet, images, cleanup):
    nodes, ctl = fleet
    spec = "{canary: 1, parallel: 1, node_timeout: 4}"
    nodes[0].write("web", service(images.repo, "v1", ctl, cleanup, rollout=AT_ONCE))
    deployed(nodes, f"{images.repo}:v1")
    nodes[1].stop(signal.SIGKILL)
    nodes[0].write("web", service(images.repo, "v2", ctl, cleanup, rollout=spec))
    v2 = image_id_of(f"{images.repo}:v2")
    wait_until(lambda: image_of(nodes[2]) == v2 and running(nodes[2]), timeout=60,
               what="the third node to get past the dead one")
    wait_until(lambda: view(nodes[2]).get("ended"), timeout=30, what="the rollout to end")
    states = {n: item["state"] for n, item in view(nodes[2])["nodes"].items()}
    assert states == {nodes[0].node: "done", nodes[1].node: "skipped", nodes[2].node: "done"}
    result = pull_all(nodes[0])
    assert result.returncode != 0 and f"{nodes[1].node}: skipped" in result.stderr


def image_id_of(ref: str) -> str:
    return docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()


@pytest.fixture
def etcd(tmp_path):
    """A real etcd; requested before ``daemons``, it stops after them."""
    from ..etcdenv import EtcdCluster

    cluster = EtcdCluster(str(tmp_path / "etcd")).start()
    yield cluster
    cluster.close()


def test_through_etcd_the_waves_are_the_same(etcd, daemons, images, cleanup, tmp_path):
    """The etcd backend carries the rollout states in the nodes' status records."""
    store = f"-store={etcd.url('/rollout-' + cleanup.run_id)}"
    nodes = [daemons(n, "-interval=1", "-name-template={node}-{service}", store)
             for n in ("ea", "eb", "ec")]
    for daemon in nodes:
        wait_until(lambda: len(_answering(daemon)) == 3, timeout=30,
                   what=f"{daemon.node} to see every node's record")
    ctl = str(tmp_path)
    nodes[0].write("web", service(images.repo, "v1", ctl, cleanup, rollout=AT_ONCE))
    deployed(nodes, f"{images.repo}:v1")
    nodes[2].write("web", service(images.repo, "v2", ctl, cleanup))
    deployed(nodes, f"{images.repo}:v2")
    first, second, third = (started(d) for d in nodes)
    assert second >= first + HEALTH and third >= second + HEALTH, (first, second, third)
