"""Membership: the peers this node knows, and whether they answer.

Peers come from ``-join`` seeds, from zeroconf, from frames (the address a
sender says it listens on) and from each other's peer lists. Without an
explicit cluster secret (``loopback_only``) only loopback peers are taken,
whichever the source, and a remote seed is refused. A peer's death is
noticed by failed exchanges, not by mDNS, whose records outlive a killed
process by minutes: after three failures in a row it is left out of pushes,
broadcasts and peer lists, and tried again after a short backoff.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable

from .. import constants
from ..errors import PullerError

log = logging.getLogger(__name__)

DEAD_AFTER = 3  # failed exchanges in a row before a peer counts as down


def parse_address(text: str, default_port: int = constants.DEFAULT_PORT) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` → (host, port)."""
    text = text.strip()
    if not text:
        raise PullerError("an empty -join address")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    try:
        number = int(port) if port else default_port
    except ValueError:
        raise PullerError(f"-join {text!r}: the port must be a number") from None
    if not 0 < number < 65536:
        raise PullerError(f"-join {text!r}: the port must be between 1 and 65535")
    return host, number


def is_loopback(host: str) -> bool:
    """``127.0.0.0/8``, ``::1`` or ``localhost``."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def local_addresses(bind: str) -> list[str]:
    """The addresses other hosts can reach this node on (``bind`` itself unless a wildcard)."""
    if bind not in ("0.0.0.0", "::"):
        return [bind]
    import ifaddr

    found = []
    for adapter in ifaddr.get_adapters():
        if adapter.nice_name.startswith(("docker", "br-", "veth")):
            continue  # container networks: unreachable from other hosts
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                found.append(ip.ip)
    return found or ["127.0.0.1"]


@dataclass
class Peer:
    host: str
    port: int
    node: str | None = None
    seed: bool = False
    last_ok: float = 0.0
    failures: int = 0
    next_try: float = 0.0

    @property
    def addr(self) -> str:
        return join_host_port(self.host, self.port)

    @property
    def live(self) -> bool:
        return self.failures < DEAD_AFTER


class Membership:
    """The peer table; thread-safe, and never calls out while holding its lock."""

    def __init__(self, node: str, port: int, bind: str, loopback_only: bool = False):
        self.node = node
        self.port = port
        self.loopback_only = loopback_only
        self.lock = threading.Lock()
        self.peers: dict[str, Peer] = {}
        # addresses that are this node itself (peers pass them around too)
        self.self_addrs = {join_host_port(a, port)
                           for a in {*local_addresses("0.0.0.0"), "127.0.0.1", bind}}

    def add(self, host: str, port: int, node: str | None = None, seed: bool = False) -> None:
        key = join_host_port(host, port)
        if node == self.node or key in self.self_addrs:
            return
        if self.loopback_only and not is_loopback(host):
            log.debug("ignored peer %s: without an explicit cluster secret, loopback peers only",
                      key)
            return
        with self.lock:
            peer = self.peers.get(key)
            if peer is None:
                self.peers[key] = Peer(host, port, node, seed)
                log.info("peer %s%s", key, f" ({node})" if node else "")
            elif node and peer.node != node:
                peer.node = node

    def add_seed(self, text: str) -> None:
        host, port = parse_address(text)
        if self.loopback_only and not is_loopback(host):
            raise PullerError(
                f"refusing -join={text} without an explicit cluster secret: the generated one "
                "is for the daemons of this host, which talk to loopback peers only; give "
                "every node the same secret with -secret-file (or PULLER_SECRET) to join "
                f"{host}")
        self.add(host, port, seed=True)

    def learn(self, addr: str, node: str | None = None, seen_from: str | None = None) -> None:
        """An address a frame or a peer list names; a wildcard means ``seen_from``."""
        try:
            host, port = parse_address(addr)
        except PullerError:
            return
        if host in ("0.0.0.0", "::"):
            if seen_from is None:
                return
            host = seen_from
        self.add(host, port, node)

    def learn_all(self, addrs: Iterable[Any]) -> None:
        for addr in addrs:
            if isinstance(addr, str):
                self.learn(addr)

    def live(self) -> list[Peer]:
        with self.lock:
            return [p for p in self.peers.values() if p.live]

    def live_addrs(self) -> list[str]:
        with self.lock:
            return sorted(key for key, peer in self.peers.items() if peer.live)

    def due(self, now: float) -> list[Peer]:
        """Peers whose backoff is over: the candidates of an anti-entropy round."""
        with self.lock:
            return [p for p in self.peers.values() if p.next_try <= now]

    def one_per_node(self) -> list[Peer]:
        """Live peers, one per node even when it is known under several addresses."""
        with self.lock:
            by_node: dict[str, Peer] = {}
            for p in self.peers.values():
                if p.live:
                    by_node.setdefault(p.node or p.addr, p)
            return list(by_node.values())

    def table(self) -> list[dict[str, Any]]:
        with self.lock:
            return [{"addr": key, "node": p.node, "seed": p.seed, "last_ok": p.last_ok,
                     "failures": p.failures} for key, p in sorted(self.peers.items())]

    def ok(self, peer: Peer) -> None:
        with self.lock:
            if not peer.live:
                log.info("peer %s (%s) is reachable again", peer.addr, peer.node)
            peer.failures, peer.last_ok, peer.next_try = 0, time.time(), 0.0

    def failed(self, peer: Peer, exc: Exception) -> None:
        with self.lock:
            peer.failures += 1
            # short backoff: a partition must heal within seconds of the link coming back
            delay = min(constants.SYNC_INTERVAL * (2 ** min(peer.failures, 3)),
                        constants.PEER_BACKOFF_MAX)
            peer.next_try = time.time() + delay
            if peer.failures == DEAD_AFTER:
                log.warning("peer %s (%s) unreachable after %d tries: %s", peer.addr,
                            peer.node or "?", DEAD_AFTER, exc)
            else:
                log.debug("peer %s: %s", peer.addr, exc)
            if isinstance(exc, SelfConnection):
                self.peers.pop(peer.addr, None)
                self.self_addrs.add(peer.addr)


class SelfConnection(ConnectionError):
    """The address answered with this node's own name."""

    def __init__(self) -> None:
        super().__init__("that address is this node itself")
