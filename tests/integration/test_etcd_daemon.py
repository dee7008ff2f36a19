"""Two daemons (loop + API, in this process) sharing their definitions through a real etcd.

An edit on node 1 becomes a container on node 2; with etcd stopped the
container and both daemons live on, and the edit made meanwhile arrives once
etcd is back; a deletion on node 2 removes the definition on node 1 too.
"""

from __future__ import annotations

import os

import pytest

from puller.cluster.storeurl import parse_store_url

from ..etcdenv import EtcdCluster
from ..testenv import inspect, serving, wait_until


@pytest.fixture
def etcd(tmp_path):
    cluster = EtcdCluster(str(tmp_path / "etcd")).start()
    yield cluster
    cluster.close()


def test_edit_on_one_node_runs_on_the_other_through_etcd(etcd, live_node, images):
    store = parse_store_url(etcd.url())
    one = live_node(store=store, interval=1.0)
    two = live_node(store=store, interval=1.0)
    port = one.web("etcd-web", images.repo, node=f"^{two.name}$")
    serving(port, "v1")  # on node 2, the only node whose name matches
    assert "etcd-web" in etcd.etcdctl("get", "--prefix", "/puller/services/")
    container = inspect("etcd-web")["Id"]

    etcd.close()  # etcd away: both daemons and the container live on
    one.web("etcd-web", images.repo, tag="v2", port=port, node=f"^{two.name}$")
    serving(port, "v1")
    assert inspect("etcd-web")["Id"] == container
    assert two.thread.is_alive() and one.thread.is_alive()

    etcd.start()  # the edit made meanwhile arrives
    serving(port, "v2", timeout=60)

    os.remove(os.path.join(two.directory, "etcd-web.yml"))  # deleted on node 2
    wait_until(lambda: inspect("etcd-web") is None, timeout=30, what="the container removed")
    wait_until(lambda: not os.path.exists(os.path.join(one.directory, "etcd-web.yml")),
               timeout=30, what="the definition gone on node 1")


def test_pull_all_reaches_every_node_through_etcd(etcd, live_node, images):
    store = parse_store_url(etcd.url())
    one = live_node(store=store, interval=600.0)
    two = live_node(store=store, interval=600.0)
    port = one.web("etcd-pull", images.repo, node=f"^{two.name}$")
    serving(port, "v1")
    wait_until(lambda: len(one.daemon.peers()) == 1, timeout=20, what="node 2's status in etcd")
    status, reply = one.call("POST", "/v1/services/etcd-pull/pull-all")
    assert status == 200, reply
    answers = {answer.get("node"): answer for answer in reply["nodes"]}
    assert set(answers) == {one.name, two.name}, reply
    assert answers[two.name]["runs_here"] and not answers[one.name]["runs_here"]
    assert not any(answer.get("error") for answer in answers.values()), reply
