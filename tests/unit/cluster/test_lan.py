"""The gossip backend's own threads: they survive whatever one round hits."""

from __future__ import annotations

import logging
import threading

from puller import constants
from puller.cluster.lan import Cluster, ClusterConfig
from puller.cluster.versions import MAX_INT, Record, Version

from ...testenv import free_port, wait_until


class BrokenDiscovery:
    def __init__(self):
        self.calls = 0

    def reannounce_if_moved(self):
        self.calls += 1
        raise OSError("the network interface went away")

    def close(self):
        pass


def test_the_anti_entropy_thread_survives_an_exception_in_the_reannounce(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "SYNC_INTERVAL", 0.01)
    monkeypatch.setattr(constants, "REANNOUNCE_CHECK", 0.0)
    cluster = Cluster(ClusterConfig(node="n1", directory=str(tmp_path), port=free_port(),
                                    bind="127.0.0.1", cluster="test", secret=b"s" * 32,
                                    zeroconf=False), on_change=lambda: None)
    discovery = BrokenDiscovery()
    cluster._discovery = discovery
    thread = threading.Thread(target=cluster._anti_entropy, daemon=True)
    thread.start()
    try:
        wait_until(lambda: discovery.calls >= 3, timeout=10, what="three rounds")
        assert thread.is_alive()
    finally:
        cluster.close()
        cluster._stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()


WEB = "name: web\nbash: docker run nginx\nrepo: nginx\n"


def test_a_forged_tombstone_from_the_future_is_refused_and_logged_with_its_sender(tmp_path, caplog):
    (tmp_path / "web.yml").write_text(WEB)
    config = ClusterConfig(node="n1", directory=str(tmp_path), port=7946, bind="127.0.0.1",
                           cluster="test", secret=b"s" * 32, zeroconf=False)
    cluster = Cluster(config, on_change=lambda: None)
    try:
        cluster.sync_dir()
        forged = Record("web", Version(MAX_INT, MAX_INT, "evil"), None)
        with caplog.at_level(logging.WARNING, logger="puller.cluster"):
            reply = cluster._handle({"type": "push", "body": {"records": [forged.to_json()]}},
                                    "evil at 192.0.2.9")
        assert reply == {"type": "ack", "body": {}}
        assert (tmp_path / "web.yml").read_text() == WEB
        assert not cluster.store.get("web").deleted
        [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert "refused web" in warning and "sent by evil at 192.0.2.9" in warning
    finally:
        cluster.close()
