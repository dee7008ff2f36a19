"""Store benchmark: an edit on one node → the file on the other, through etcd vs the gossip.

    python -m bench.etcd [--rounds N] [--fanout M]

In this process, no docker: two etcd backends on one etcd (started here on
free loopback ports, a temporary data dir) and two gossip backends on
loopback (-zeroconf off, node 2 joined to node 1, an explicit secret). Each
round writes a new tag into node 1's file and calls its ``sync_dir()`` (what
the daemon's watcher does on the event), then polls node 2's file every 2 ms.
Medians over the rounds. Then the watch fan-out: M etcd backends on one etcd,
one edit, the time until the file is in all M directories.

Prints a Markdown report. Everything it starts is stopped, even on failure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

from puller.cluster.etcd import EtcdBackend, EtcdBackendConfig
from puller.cluster.lan import Cluster, ClusterConfig
from puller.cluster.storeurl import parse_store_url
from tests.etcdenv import EtcdCluster, free_port

POLL = 0.002
TIMEOUT = 30.0


def text(tag: str) -> str:
    return f"name: web\nbash: docker run busybox\nrepo: busybox\ntag: {tag}\n"


def edit_arrives(writer, directories: list[str], tag: str) -> float:
    """Seconds from the write on ``writer`` until every directory holds it."""
    wanted = text(tag)
    path = os.path.join(writer.config.directory, "web.yml")
    started = time.perf_counter()
    with open(path + ".tmp", "w") as handle:
        handle.write(wanted)
    os.replace(path + ".tmp", path)
    writer.sync_dir()
    pending = list(directories)
    while pending:
        if time.perf_counter() - started > TIMEOUT:
            raise SystemExit(f"the edit did not arrive in {len(pending)} directories")
        pending = [d for d in pending if _read(os.path.join(d, "web.yml")) != wanted]
        if pending:
            time.sleep(POLL)
    return time.perf_counter() - started


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def etcd_nodes(root: str, url: str, count: int) -> list[EtcdBackend]:
    store = parse_store_url(url)
    made = []
    for i in range(count):
        directory = os.path.join(root, f"etcd-{i}")
        os.makedirs(directory)
        made.append(EtcdBackend(EtcdBackendConfig(f"e{i}", directory, store), lambda: None,
                                {"status": lambda body: {}}).start())
    for node in made:
        node.wait_connected(10)
    return made


def gossip_nodes(root: str) -> list[Cluster]:
    first = free_port()
    made = []
    for i, port in enumerate((first, free_port())):
        directory = os.path.join(root, f"gossip-{i}")
        os.makedirs(directory)
        config = ClusterConfig(node=f"g{i}", directory=directory, port=port, bind="127.0.0.1",
                               cluster="bench", secret=b"bench-secret-0123456789abcdef",
                               join=() if i == 0 else (f"127.0.0.1:{first}",), zeroconf=False)
        made.append(Cluster(config, lambda: None, {}).start())
    return made


def rounds(nodes, count: int, label: str) -> list[float]:
    edit_arrives(nodes[0], [nodes[1].config.directory], f"{label}-warm")  # peers known
    return [edit_arrives(nodes[0], [nodes[1].config.directory], f"{label}-{i}")
            for i in range(count)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--fanout", type=int, default=50)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="puller-bench-etcd-")
    etcd = EtcdCluster(os.path.join(root, "etcd")).start()
    opened: list = []
    try:
        opened += etcd_nodes(root, etcd.url("/bench-pair"), 2)
        through_etcd = rounds(opened[-2:], args.rounds, "etcd")
        opened += gossip_nodes(root)
        through_gossip = rounds(opened[-2:], args.rounds, "gossip")
        fan = etcd_nodes(os.path.join(root, "fan"), etcd.url("/bench-fan"), args.fanout)
        opened += fan
        edit_arrives(fan[0], [n.config.directory for n in fan[1:]], "fan-warm")
        fanout = [edit_arrives(fan[0], [n.config.directory for n in fan[1:]], f"fan-{i}")
                  for i in range(3)]
    finally:
        for node in opened:
            node.close()
        etcd.close()
    ms = lambda values: f"{statistics.median(values) * 1000:.1f} ms"  # noqa: E731
    print(f"| edit → file on the other node ({args.rounds} rounds) | median | max |")
    print("|---|---|---|")
    print(f"| through etcd (one member, loopback) | {ms(through_etcd)} | "
          f"{max(through_etcd) * 1000:.1f} ms |")
    print(f"| through the gossip (loopback) | {ms(through_gossip)} | "
          f"{max(through_gossip) * 1000:.1f} ms |")
    print(f"| etcd watch fan-out: edit → file in all {args.fanout - 1} other directories "
          f"(3 rounds) | {ms(fanout)} | {max(fanout) * 1000:.1f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
