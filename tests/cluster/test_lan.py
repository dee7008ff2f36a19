"""Three hosts on a LAN (network namespaces): zeroconf discovery, partitions, wrong secrets."""

from __future__ import annotations

import os
import time

import pytest

from .conftest import definition, wait_converged
from ..netns import Lan
from ..testenv import inspect, wait_until

LAN_FLAGS = ("-interval=1", "-name-template={node}-{service}")


@pytest.fixture
def lan():
    with Lan(3) as lan:
        yield lan


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret"
    path.write_text("a-secret-shared-by-the-cluster\n")
    path.chmod(0o600)
    return str(path)


def test_zeroconf_alone_finds_the_peers_and_an_edit_reaches_all(lan, daemons, images, cleanup,
                                                                secret):
    nodes = [daemons(f"lan{i + 1}", *LAN_FLAGS, f"-secret-file={secret}", port=7946,
                     prefix=lan.prefix(i)) for i in range(3)]
    text = definition("lan-svc", images.repo, node=f"^{nodes[2].node}$", label=cleanup.label)
    nodes[0].write("lan-svc", text)
    wait_converged(nodes, "lan-svc", text, timeout=30)
    wait_until(lambda: (inspect(f"{nodes[2].node}-lan-svc") or {}).get("State", {}).get("Running"),
               timeout=30, what="the matching node to deploy")
    assert inspect(f"{nodes[0].node}-lan-svc") is None
    for node in nodes:
        assert "Traceback" not in node.log()


def test_a_partition_heals_and_every_node_agrees(lan, daemons, images, cleanup, secret):
    nodes = [daemons(f"part{i + 1}", *LAN_FLAGS, f"-secret-file={secret}", port=7946,
                     prefix=lan.prefix(i)) for i in range(3)]
    base = definition("split", images.repo, node="^nowhere$", label=cleanup.label)
    nodes[1].write("split", base)
    wait_converged(nodes, "split", base, timeout=30)

    lan.cut(0)
    edits = nodes[0].log().count("split: local edit")
    alone = base.replace("tag: v1", "tag: alone")
    nodes[0].write("split", alone)
    wait_until(lambda: nodes[0].log().count("split: local edit") > edits, timeout=10,
               what="the isolated node to version its edit")
    time.sleep(0.5)
    majority = base.replace("tag: v1", "tag: majority")
    other = definition("other", images.repo, node="^nowhere$", label=cleanup.label)
    nodes[1].write("split", majority)  # versioned later: the highest version
    nodes[2].write("other", other)
    wait_converged(nodes[1:], "split", majority, timeout=30)
    assert nodes[0].read("split") == alone

    lan.heal(0)
    wait_converged(nodes, "split", majority, timeout=30)
    wait_converged(nodes, "other", other, timeout=30)


def test_a_node_with_the_wrong_secret_is_refused(lan, daemons, images, cleanup, secret, tmp_path):
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-secret\n")
    good = [daemons(f"ok{i + 1}", *LAN_FLAGS, f"-secret-file={secret}", port=7946,
                    prefix=lan.prefix(i)) for i in range(2)]
    intruder = daemons("intruder", *LAN_FLAGS, f"-secret-file={wrong}",
                       f"-join={lan.address(0)}:7946", port=7946, prefix=lan.prefix(2))
    evil = definition("evil", images.repo, label=cleanup.label)
    intruder.write("evil", evil)
    fine = definition("fine", images.repo, node="^nowhere$", label=cleanup.label)
    good[0].write("fine", fine)
    wait_converged(good, "fine", fine, timeout=30)
    wait_until(lambda: "refused" in good[0].log() or "refused" in good[1].log(), timeout=30,
               what="a refusal in the log")
    assert all(node.read("evil") is None for node in good)
    assert intruder.read("fine") is None
    assert all(node.alive() for node in [*good, intruder])
    assert not os.path.exists(os.path.join(good[0].directory, "evil.yml"))
