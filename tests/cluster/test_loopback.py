"""The seed's play setup: several daemons on one host, joined with -join, on loopback."""

from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request

import pytest

from .conftest import definition, wait_converged
from ..testenv import inspect, wait_until

PLAY = ("-zeroconf=false", "-interval=1", "-name-template={node}-{service}")


@pytest.fixture
def play_state(tmp_path) -> str:
    """One state dir for the daemons of the play setup, as with the default
    -state-dir on one host: they share its generated cluster secret."""
    return str(tmp_path / "state")


def test_play_setup_syncs_edits_and_deletions_and_deploys_on_the_matching_node(
        daemons, images, cleanup, play_state):
    first = daemons("xob-1", *PLAY, state=play_state)
    second = daemons("xob-2", *PLAY, f"-join=127.0.0.1:{first.port}", state=play_state)
    third = daemons("xob-3", *PLAY, f"-join=127.0.0.1:{first.port}", state=play_state)
    nodes = [first, second, third]
    text = definition("play", images.repo, node=f"^{second.node}$", label=cleanup.label)
    third.write("play", text)
    wait_converged(nodes, "play", text)
    wait_until(lambda: (inspect(f"{second.node}-play") or {}).get("State", {}).get("Running"),
               timeout=20, what="the matching node to deploy")
    assert inspect(f"{first.node}-play") is None and inspect(f"{third.node}-play") is None

    # the cluster trigger: every node checks and deploys now, one answer per node
    result = subprocess.run([sys.executable, "-m", "puller", f"-port={first.port}",
                             f"-state-dir={first.state_dir}", "pull", "play", "--all", "--json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    answers = {a.get("node"): a for a in json.loads(result.stdout)["nodes"]}
    assert set(answers) == {d.node for d in nodes}
    assert answers[second.node]["runs_here"] and not answers[first.node]["runs_here"]
    wait_until(lambda: len(_cluster(third)["nodes"]) == 3, timeout=20,
               what="node 3 to learn of node 2 through the seed")
    with urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{third.port + 1}/v1/propagate-and-pull/play",
            headers={"Authorization": f"Bearer {third.api_key()}"}), timeout=120) as response:
        assert len(json.loads(response.read())["nodes"]) == 3
    status = _cluster(first)
    assert sorted(n["node"] for n in status["nodes"]) == sorted(d.node for d in nodes)

    edited = text.replace("tag: v1", "tag: v2")
    first.write("play", edited)
    wait_converged(nodes, "play", edited)
    # where and how the change was made: on node 1, by a peer as node 2 sees it
    wait_until(lambda: _history(second, "play")[-1]["fields"]["tag"] == "v2", timeout=20,
               what="node 2's history to record the edit")
    assert {k: _history(second, "play")[-1][k] for k in ("source", "node")} == {
        "source": "peer", "node": first.node}

    import os

    os.remove(second.path("play"))
    wait_converged(nodes, "play", None)
    wait_until(lambda: inspect(f"{second.node}-play") is None, timeout=20,
               what="the container to go with its definition")
    for daemon in nodes:
        assert "Traceback" not in daemon.log()


def test_the_seed_dies_and_the_others_carry_on_then_it_comes_back_without_resurrecting(
        daemons, images, cleanup, play_state):
    seed = daemons("seed", *PLAY, state=play_state)
    a = daemons("a", *PLAY, f"-join=127.0.0.1:{seed.port}", state=play_state)
    b = daemons("b", *PLAY, f"-join=127.0.0.1:{seed.port}", state=play_state)
    keep = definition("keep", images.repo, node="^nowhere$", label=cleanup.label)
    gone = definition("gone", images.repo, node="^nowhere$", label=cleanup.label)
    seed.write("keep", keep)
    seed.write("gone", gone)
    wait_converged([seed, a, b], "keep", keep)
    wait_converged([seed, a, b], "gone", gone)
    wait_until(lambda: "127.0.0.1:%d" % b.port in json.dumps(_cluster(a)), timeout=20,
               what="a to learn of b through the seed")

    seed.stop(signal.SIGKILL)
    newer = keep.replace("tag: v1", "tag: v2")
    a.write("keep", newer)
    import os

    os.remove(a.path("gone"))
    wait_converged([a, b], "keep", newer)
    wait_converged([a, b], "gone", None)

    seed.start()  # with its stale dir: the old keep, and gone still there
    wait_converged([seed, a, b], "keep", newer, timeout=30)
    wait_converged([seed, a, b], "gone", None, timeout=30)
    time.sleep(3)  # and it stays so
    assert seed.read("gone") is None and a.read("gone") is None


def test_concurrent_edits_end_the_same_everywhere(daemons, images, cleanup, play_state):
    a = daemons("ca", *PLAY, state=play_state)
    b = daemons("cb", *PLAY, f"-join=127.0.0.1:{a.port}", state=play_state)
    base = definition("both", images.repo, node="^nowhere$", label=cleanup.label)
    a.write("both", base)
    wait_converged([a, b], "both", base)
    for round_ in range(3):
        a.write("both", base.replace("tag: v1", f"tag: a{round_}"))
        b.write("both", base.replace("tag: v1", f"tag: b{round_}"))
        wait_until(lambda: a.read("both") == b.read("both"), timeout=20,
                   what="both nodes to agree")
        assert a.read("both") in (base.replace("tag: v1", f"tag: a{round_}"),
                                  base.replace("tag: v1", f"tag: b{round_}"))


def test_bad_frames_are_refused_logged_and_change_nothing(daemons, images, cleanup, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("right-secret\n")
    node = daemons("guard", *PLAY, f"-secret-file={secret}", "-bind=127.0.0.1")
    wait_until(lambda: "syncing on" in node.log(), timeout=20, what="the daemon to start")
    from puller.cluster.frames import encode, refusal

    evil = {"type": "push", "body": {"records": [{
        "name": "evil", "version": [int(time.time() * 1000) + 10_000, 0, "x"],
        "text": definition("evil", images.repo, label=cleanup.label)}]}}

    def send(data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", node.port), timeout=5) as sock:
            sock.sendall(data)
            sock.settimeout(3)
            try:
                return sock.recv(1 << 16)
            except (socket.timeout, ConnectionResetError):
                return b""

    now = int(time.time() * 1000)
    wrong = encode(evil, secret=b"wrong-secret", cluster="default", sender="x",
                   addr="127.0.0.1:1", wall_ms=now, nonce="n1")
    assert send(wrong) == refusal()  # the joiner is told why, and nothing more
    good = encode(evil, secret=b"right-secret", cluster="default", sender="x",
                  addr="127.0.0.1:1", wall_ms=now, nonce="n2")
    forged = good[:-20] + bytes(b ^ 1 for b in good[-20:-19]) + good[-19:]
    assert send(forged) in (b"", refusal())  # a broken MAC: malformed or forged
    stale = encode(evil, secret=b"right-secret", cluster="default", sender="x",
                   addr="127.0.0.1:1", wall_ms=now - 3_600_000, nonce="n3")
    assert send(stale) == b""
    assert send(struct.pack(">I", 1 << 30)) == b""  # oversized
    assert send(b"\x00\x00\x00\x05garbage") == b""
    assert send(b"GET / HTTP/1.0\r\n\r\n") == b""
    time.sleep(1)
    assert node.alive()
    assert node.read("evil") is None
    log = node.log()
    assert "refused" in log
    # a genuine frame is accepted, once; its replay is refused
    fresh = encode({"type": "peers", "body": {}}, secret=b"right-secret", cluster="default",
                   sender="x", addr="127.0.0.1:1", wall_ms=int(time.time() * 1000), nonce="n9")
    assert send(fresh) != b""
    assert send(fresh) == b""
    assert node.alive()


def _cluster(daemon) -> dict:
    with urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{daemon.port + 1}/v1/cluster",
            headers={"Authorization": f"Bearer {daemon.api_key()}"}), timeout=10) as response:
        return json.loads(response.read())


def test_without_an_explicit_secret_the_sync_port_stays_on_loopback(daemons):
    open_wide = daemons("wide", "-zeroconf=false", "-bind=0.0.0.0")
    assert open_wide.process.wait(timeout=30) == 1
    assert "refusing to sync on 0.0.0.0 without an explicit cluster secret" in open_wide.log()
    quiet = daemons("quiet", "-zeroconf=false")
    wait_until(lambda: "listens on 127.0.0.1 only" in quiet.log(), timeout=20,
               what="the start-up warning")
    assert quiet.alive()


def _history(daemon, service: str) -> list[dict]:
    with urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{daemon.port + 1}/v1/services/{service}/history",
            headers={"Authorization": f"Bearer {daemon.api_key()}"}), timeout=10) as response:
        return json.loads(response.read())["revisions"]


def test_a_node_joining_with_another_secret_is_told_plainly(daemons, tmp_path):
    right, wrong = tmp_path / "right", tmp_path / "wrong"
    right.write_text("right-secret\n")
    wrong.write_text("wrong-secret\n")
    host = daemons("auth-a", *PLAY, f"-secret-file={right}", "-bind=127.0.0.1")
    joiner = daemons("auth-b", *PLAY, f"-secret-file={wrong}", "-bind=127.0.0.1",
                     f"-join=127.0.0.1:{host.port}")
    wait_until(lambda: "refused this node: authentication failed" in joiner.log(), timeout=20,
               what="the joiner to be told why it is refused")
    assert "-secret-file" in joiner.log()
    assert "right-secret" not in joiner.log() and host.node not in joiner.log().split(
        "refused this node")[1].split("\n")[0]
