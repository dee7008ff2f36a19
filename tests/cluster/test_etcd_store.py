"""The etcd backend against a real etcd (started here on free loopback ports).

Backends are driven directly (no docker): a definition written on one node's
directory arrives in the others', survives etcd going away and coming back,
and a 3-member etcd that loses one member changes nothing.
"""

from __future__ import annotations

import os
import time

import pytest

from puller.cluster.etcd import CONFLICTS_DIR, EtcdBackend, EtcdBackendConfig
from puller.cluster.storeurl import parse_store_url

from ..etcdenv import EtcdCluster
from ..testenv import wait_until


def text(name: str, tag: str = "v1") -> str:
    return f"name: {name}\nbash: docker run busybox\nrepo: busybox\ntag: {tag}\n"


@pytest.fixture
def etcd(tmp_path):
    cluster = EtcdCluster(str(tmp_path / "etcd")).start()
    yield cluster
    cluster.close()


@pytest.fixture
def nodes(tmp_path):
    """Factory: a backend on its own directory; closed at teardown."""
    made: list[EtcdBackend] = []

    def make(url: str, name: str | None = None) -> EtcdBackend:
        name = name or f"n{len(made)}"
        directory = tmp_path / f"dir-{name}"
        directory.mkdir(exist_ok=True)
        backend = EtcdBackend(EtcdBackendConfig(name, str(directory), parse_store_url(url)),
                              on_change=lambda: None,
                              handlers={"status": lambda body: {"services": {}, "up": True}})
        made.append(backend.start())
        assert backend.wait_connected(10)
        return backend

    yield make
    for backend in made:
        backend.close()


def write(node: EtcdBackend, name: str, body: str) -> None:
    with open(os.path.join(node.config.directory, f"{name}.yml"), "w") as handle:
        handle.write(body)
    node.sync_dir()


def read(node: EtcdBackend, name: str) -> str | None:
    try:
        with open(os.path.join(node.config.directory, f"{name}.yml")) as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def delete(node: EtcdBackend, name: str) -> None:
    os.remove(os.path.join(node.config.directory, f"{name}.yml"))
    wait_until(lambda: node.sync_dir() and True or read(node, name) is None and
               node.store.get(name) is not None and node.store.get(name).deleted,
               timeout=5, what="the deletion versioned")


def test_edit_arrives_and_is_visible_with_etcdctl(etcd, nodes):
    one, two = nodes(etcd.url()), nodes(etcd.url())
    write(one, "web", text("web"))
    wait_until(lambda: read(two, "web") == text("web"), timeout=5, what="web on node 2")
    assert text("web") in etcd.etcdctl("get", "--prefix", "/puller/services/")
    write(two, "web", text("web", "v2"))
    wait_until(lambda: read(one, "web") == text("web", "v2"), timeout=5, what="v2 on node 1")
    assert one.problems() == {} and two.problems() == {}


def test_node_status_under_a_lease(etcd, nodes):
    one, two = nodes(etcd.url()), nodes(etcd.url())
    wait_until(lambda: [p["node"] for p in one.peer_table()] == [two.node], timeout=10,
               what="node 2 in node 1's peers")
    assert one.broadcast("status", {}) == [{"node": two.node, "services": {}, "up": True}]
    two.close()  # revokes its lease: it is gone at once
    wait_until(lambda: one.peer_table() == [], timeout=5, what="node 2 gone")


def test_deletion_anywhere_removes_it_everywhere(etcd, nodes):
    one, two, three = (nodes(etcd.url()) for _ in range(3))
    write(one, "web", text("web"))
    wait_until(lambda: read(three, "web") and read(two, "web"), timeout=5, what="web everywhere")
    delete(three, "web")
    wait_until(lambda: read(one, "web") is None and read(two, "web") is None, timeout=5,
               what="web deleted everywhere")
    assert "/puller/services/web" not in etcd.etcdctl("get", "--prefix", "/puller/services/")


def test_etcd_down_then_back_brings_the_edit_made_meanwhile(etcd, nodes):
    one, two = nodes(etcd.url()), nodes(etcd.url())
    write(one, "web", text("web"))
    wait_until(lambda: read(two, "web") == text("web"), timeout=5, what="web on node 2")
    etcd.close()
    write(one, "web", text("web", "v2"))  # applies locally; waits for etcd
    write(one, "db", text("db"))
    time.sleep(1)
    assert read(two, "web") == text("web")  # node 2 keeps its last definition
    assert one.outage.since is not None or not one.wait_connected(0)
    etcd.start()
    wait_until(lambda: read(two, "web") == text("web", "v2") and read(two, "db") == text("db"),
               timeout=40, what="the edits made while etcd was down, on node 2")
    assert one.problems() == {}


def test_edit_made_while_down_loses_to_a_newer_one_and_is_kept(etcd, nodes):
    one, two = nodes(etcd.url()), nodes(etcd.url())
    write(one, "web", text("web"))
    wait_until(lambda: read(two, "web") == text("web"), timeout=5, what="web on node 2")
    one.close()  # node 1 away: its edit cannot reach etcd
    write(one, "web", text("web", "mine"))
    write(two, "web", text("web", "theirs"))
    again = nodes(etcd.url(), name=one.node)  # node 1 back, on the same directory
    wait_until(lambda: read(again, "web") == text("web", "theirs"), timeout=10,
               what="etcd's version on node 1")
    assert "revision" in again.problems()["web"]
    with open(os.path.join(again.config.directory, CONFLICTS_DIR, "web.yml")) as handle:
        assert handle.read() == text("web", "mine")


def test_three_members_lose_one_and_nothing_changes(tmp_path, nodes):
    etcd = EtcdCluster(str(tmp_path / "etcd3"), members=3).start()
    try:
        one, two = nodes(etcd.url()), nodes(etcd.url())
        write(one, "web", text("web"))
        wait_until(lambda: read(two, "web") == text("web"), timeout=5, what="web on node 2")
        etcd.members[0].stop()  # the first endpoint each node talks to
        write(one, "web", text("web", "v2"))
        wait_until(lambda: read(two, "web") == text("web", "v2"), timeout=30,
                   what="v2 on node 2 through the other members")
        assert one.problems() == {} and two.problems() == {}
    finally:
        etcd.close()
