"""The cluster node's handling of peers' records, without sockets: time is not trusted."""

from __future__ import annotations

import logging

from puller.cluster import Cluster, ClusterConfig
from puller.versions import MAX_INT, Record, Version

WEB = "name: web\nbash: docker run nginx\nrepo: nginx\n"


def test_a_forged_tombstone_from_the_future_is_refused_and_logged_with_its_sender(tmp_path, caplog):
    (tmp_path / "web.yml").write_text(WEB)
    config = ClusterConfig(node="n1", directory=str(tmp_path), port=7946, bind="127.0.0.1",
                           cluster="test", secret=None, zeroconf=False)
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
