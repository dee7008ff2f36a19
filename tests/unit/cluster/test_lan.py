"""The gossip backend's own threads: they survive whatever one round hits."""

from __future__ import annotations

import threading

from puller import constants
from puller.cluster.lan import Cluster, ClusterConfig

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
