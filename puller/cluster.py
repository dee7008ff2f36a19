"""The cluster: peers found by zeroconf and -join seeds; definitions synced
over a tiny authenticated TCP protocol, so an edit on one node reaches all.

- ``Cluster.sync_dir()`` turns the definitions directory into versioned
  records (a local edit gets a new hybrid-logical-clock version, a deleted
  file a tombstone) and pushes changes to every known peer at once.
- Every ``SYNC_INTERVAL`` seconds a few random peers are asked for a digest
  of all versions; on a mismatch each side sends what the other lacks
  (``gossip.Gossip``). Peers tell each other the peers they know, so one seed
  bootstraps the whole membership, and a seed's death changes nothing.
- Records received from peers are written atomically into the directory,
  where the daemon's watcher sees them like an edit.
- A peer's death is noticed by failed exchanges, not by mDNS.
Version metadata lives in ``<dir>/.puller-state.json``, not in the YAML.
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import socket
import socketserver
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from . import constants
from .definitions import (definition_path, is_definition_file, parse_definition, read_text,
                          remove_definition)
from .errors import DefinitionError, PullerError
from .frames import PROTOCOL_VERSION, FrameError, Receiver, encode, frame_length
from .fsutil import write_atomically
from .gossip import MAX_STEPS, Gossip, GossipError
from .versions import TOMBSTONE_GRACE_MS, Clock, Record, Store, Version

log = logging.getLogger(__name__)

STATE_FILE = ".puller-state.json"
SERVICE_TYPE = "_puller._tcp.local."


def wall_ms() -> int:
    return int(time.time() * 1000)


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
        return _join_host_port(self.host, self.port)


@dataclass(frozen=True)
class ClusterConfig:
    node: str
    directory: str
    port: int
    bind: str  # the sync port's address: loopback unless a secret is set
    cluster: str  # the cluster's name: two clusters on one LAN stay apart
    secret: bytes | None
    join: tuple[str, ...] = ()  # seeds, host[:port]
    zeroconf: bool = True


class Cluster:
    """Owns the sync server, the anti-entropy thread and zeroconf; ``close()`` is idempotent."""

    def __init__(self, config: ClusterConfig, on_change: Callable[[], None],
                 handlers: dict[str, Callable[[dict], dict]] | None = None):
        self.config = config
        self.node = config.node
        self.secret = config.secret or b""
        self.on_change = on_change
        self.handlers = handlers or {}  # extra request types: "pull", "status"
        self.clock = Clock(config.node)
        self.lock = threading.RLock()
        self.store = Store()
        self.gossip = Gossip(self.store)
        self.receiver = Receiver(self.secret, config.cluster)
        self.peers: dict[str, Peer] = {}
        self._first_scan = True
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: socketserver.ThreadingTCPServer | None = None
        self._zeroconf = None
        self._browser = None
        self._info = None
        self._warned: dict[str, str] = {}
        self._absent_since: dict[str, float] = {}
        # files unchanged since the last look (same stat) are not read again
        self._read_cache: dict[str, tuple[tuple, tuple[str, int] | None]] = {}
        # addresses that are this node itself (peers pass them around too)
        self._self_addrs = {_join_host_port(a, config.port)
                            for a in {*_local_addresses("0.0.0.0"), "127.0.0.1", config.bind}}
        for seed in config.join:
            host, port = parse_address(seed)
            self._add_peer(host, port, seed=True)
        self._load_state()

    # State file ----------------------------------------------------------------------

    @property
    def state_path(self) -> str:
        return os.path.join(self.config.directory, STATE_FILE)

    def _load_state(self) -> None:
        try:
            with open(self.state_path) as handle:
                data = json.load(handle)
            records = [Record.from_json(item) for item in data.get("records", [])]
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("cluster state %s cannot be read (%s); versions start afresh",
                        self.state_path, exc)
            return
        with self.lock:
            self.store.merge_all(records)
            for record in records:
                self.clock.observe(record.version, wall_ms())
            self._first_scan = False

    def _save_state(self) -> None:
        data = {"node": self.node,
                "records": [record.to_json() for _, record in sorted(self.store.records.items())]}
        try:
            write_atomically(self.state_path, json.dumps(data, indent=1, sort_keys=True),
                             mode=0o600)  # run lines may carry secrets
        except OSError as exc:
            log.warning("cannot write the cluster state %s: %s", self.state_path, exc)

    # Directory ↔ records -------------------------------------------------------------

    def _read_dir(self) -> tuple[dict[str, tuple[str, int]], set[str]] | None:
        """Valid definitions on disk (name → (text, mtime ms)) and names present
        at all (valid or not); None when the directory cannot be listed."""
        valid: dict[str, tuple[str, int]] = {}
        present: set[str] = set()
        try:
            names = sorted(os.listdir(self.config.directory))
        except OSError as exc:
            self._warn_once("dir", f"cannot list {self.config.directory}: {exc}; "
                                   "nothing is synced until it can be read")
            return None
        for filename in names:
            if not is_definition_file(filename):
                continue
            name = os.path.splitext(filename)[0]
            present.add(name)
            if name in valid:
                continue  # name.yaml and name.yml: the first, as the daemon does
            path = os.path.join(self.config.directory, filename)
            try:
                st = os.stat(path)
            except OSError:
                continue
            key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            cached = self._read_cache.get(filename)
            if cached is not None and cached[0] == key:
                if cached[1] is not None:
                    valid[name] = cached[1]
                continue
            found: tuple[str, int] | None = None
            try:
                text = read_text(path)
                parse_definition(text, path)
                found = (text, st.st_mtime_ns // 1_000_000)
            except (OSError, DefinitionError):
                pass  # a broken file is not propagated; the daemon reports it
            except Exception as exc:  # bad input never stops the sync
                log.warning("%s cannot be read: %s", path, exc)
            self._read_cache[filename] = (key, found)
            if found is not None:
                valid[name] = found
        for filename in set(self._read_cache) - set(names):
            del self._read_cache[filename]
        return valid, present

    def sync_dir(self) -> list[Record]:
        """Version local edits and deletions; push them to every peer at once."""
        changed: list[Record] = []
        # The directory is read under the lock that received records are merged
        # and written under: a file read before a peer's write landed would
        # otherwise look like a local edit, and revert it with a newer version.
        with self.lock:
            found = self._read_dir()
            if found is None:
                return []  # an unreadable directory proves no deletion
            valid, present = found
            now = wall_ms()
            for name, (text, mtime) in sorted(valid.items()):
                record = self.store.get(name)
                if record is not None and record.text == text:
                    continue
                if record is None and self._first_scan:
                    # found at start with no recorded version: its mtime (never
                    # later than now: a future mtime would beat every edit)
                    version = Version(min(mtime, now), 0, self.node)
                    self.clock.observe(version, now)
                else:
                    version = self.clock.now(now)
                new = Record(name, version, text)
                if self.store.merge(new):
                    changed.append(new)
            for name in sorted(self.store.live()):
                if name in present:
                    self._absent_since.pop(name, None)
                    continue
                # a file away for a moment (an editor saving by rename) is no deletion
                since = self._absent_since.setdefault(name, time.monotonic())
                if time.monotonic() - since < constants.DELETE_GRACE:
                    continue
                self._absent_since.pop(name, None)
                tombstone = Record(name, self.clock.now(now), None)
                if self.store.merge(tombstone):
                    changed.append(tombstone)
            self.store.expire_tombstones(now, TOMBSTONE_GRACE_MS)
            self._first_scan = False
            if changed:
                self._save_state()
        if changed:
            for record in changed:
                log.info("%s: local %s, version %s", record.name,
                         "deletion" if record.deleted else "edit", record.version.to_json())
            self._push_all(changed)
        return changed

    def _apply(self, won: list[Record]) -> None:
        """Write records that won into the directory (lock held)."""
        for record in won:
            try:
                if record.deleted:
                    removed = remove_definition(self.config.directory, record.name)
                    if removed:
                        log.info("%s: deleted by %s", record.name, record.version.node)
                else:
                    path = definition_path(self.config.directory, record.name)
                    write_atomically(path, record.text or "")
                    log.info("%s: updated from %s (version %s)", record.name,
                             record.version.node, record.version.to_json())
            except OSError as exc:
                log.error("%s: cannot write the definition received from %s: %s",
                          record.name, record.version.node, exc)
        self._save_state()

    # Server --------------------------------------------------------------------------

    def start(self) -> "Cluster":
        cluster = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                cluster._serve_connection(self.request, self.client_address)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.sync_dir()  # before listening: nothing to clean up if it fails
        try:
            self._server = Server((self.config.bind, self.config.port), Handler)
        except OSError as exc:
            raise PullerError(f"cannot listen for peers on {self.config.bind}:{self.config.port}: "
                              f"{exc.strerror or exc}; is another puller running? "
                              "(-port picks another)") from None
        if not self.config.secret:
            log.warning("no cluster secret (-secret-file or PULLER_SECRET): the sync port "
                        "listens on %s only, and no remote node can join", self.config.bind)
        log.info("cluster %r: node %s syncing on %s:%s", self.config.cluster, self.node,
                 self.config.bind, self.config.port)
        self.sync_dir()
        self._spawn(self._server.serve_forever, "puller-sync-server")
        self._spawn(self._anti_entropy, "puller-anti-entropy")
        if self.config.zeroconf:
            self._start_zeroconf()
        return self

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _serve_connection(self, sock: socket.socket, address: tuple) -> None:
        sock.settimeout(constants.SYNC_TIMEOUT)
        try:
            while not self._stop.is_set():
                payload = _read_frame(sock)
                if payload is None:
                    return
                envelope = self.receiver.decode(payload, wall_ms())
                self._learn_peer(envelope.addr, envelope.sender, address[0])
                reply = self._handle(envelope.message)
                if reply is not None:
                    sock.sendall(self._encode(reply, sock))
        except FrameError as exc:
            self._warn_once(f"frame {address[0]}", f"refused a frame from {address[0]}: {exc}")
        except (OSError, GossipError, ValueError) as exc:
            log.debug("connection from %s dropped: %s", address[0], exc)

    def _handle(self, message: dict) -> dict | None:
        kind = message.get("type")
        if kind == "peers":
            return {"type": "peers-reply", "body": {"peers": self.live_peer_addrs()}}
        if kind in self.handlers:
            return {"type": f"{kind}-reply", "body": self.handlers[kind](message.get("body") or {})}
        with self.lock:
            reply, won = self.gossip.handle(message)
            if won:
                self._observe(won)
                self._apply(won)
        if won:
            self.on_change()
        return reply

    def _observe(self, records: list[Record]) -> None:
        for record in records:
            self.clock.observe(record.version, wall_ms())

    def _encode(self, message: dict, sock: socket.socket) -> bytes:
        local = sock.getsockname()[0]
        return encode(message, secret=self.secret, cluster=self.config.cluster, sender=self.node,
                      addr=_join_host_port(local, self.config.port), wall_ms=wall_ms(),
                      nonce=secrets.token_hex(12))

    # Peers ---------------------------------------------------------------------------

    def _add_peer(self, host: str, port: int, node: str | None = None, seed: bool = False) -> None:
        key = _join_host_port(host, port)
        if node == self.node or key in self._self_addrs:
            return
        with self.lock:
            peer = self.peers.get(key)
            if peer is None:
                self.peers[key] = Peer(host, port, node, seed)
                log.info("peer %s%s", key, f" ({node})" if node else "")
            elif node and peer.node != node:
                peer.node = node

    def _learn_peer(self, addr: str, node: str, seen_from: str) -> None:
        try:
            host, port = parse_address(addr)
        except PullerError:
            return
        if host in ("0.0.0.0", "::"):
            host = seen_from
        self._add_peer(host, port, node)

    def live_peer_addrs(self) -> list[str]:
        with self.lock:
            return sorted(key for key, peer in self.peers.items() if peer.failures < 3)

    def peer_table(self) -> list[dict[str, Any]]:
        with self.lock:
            return [{"addr": key, "node": p.node, "seed": p.seed, "last_ok": p.last_ok,
                     "failures": p.failures} for key, p in sorted(self.peers.items())]

    # Client --------------------------------------------------------------------------

    def exchange(self, peer: Peer, messages: list[dict],
                 timeout: float = constants.SYNC_TIMEOUT) -> list[dict]:
        """Send messages over one connection; returns the replies (each within ``timeout``)."""
        with self._connect(peer, timeout) as sock:
            return [self._request(sock, peer, message) for message in messages]

    @staticmethod
    def _connect(peer: Peer, timeout: float = constants.SYNC_TIMEOUT) -> socket.socket:
        sock = socket.create_connection((peer.host, peer.port), timeout=constants.SYNC_TIMEOUT)
        sock.settimeout(timeout)
        return sock

    def _sync_with(self, peer: Peer) -> None:
        """One push-pull exchange, and the peer's peers."""
        try:
            with self._connect(peer) as sock:
                with self.lock:
                    request = self.gossip.sync_request()
                reply = self._request(sock, peer, request)
                for _ in range(MAX_STEPS):  # answer each reply until we have nothing to say
                    with self.lock:
                        answer, won = self.gossip.handle(reply)
                        if won:
                            self._observe(won)
                            self._apply(won)
                    if won:
                        self.on_change()
                    if answer is None:
                        break
                    reply = self._request(sock, peer, answer)
                peers = self._request(sock, peer, {"type": "peers", "body": {}})
        except (OSError, FrameError, GossipError, ValueError) as exc:
            self._failed(peer, exc)
            return
        self._ok(peer)
        for addr in (peers.get("body") or {}).get("peers", []):
            if isinstance(addr, str):
                try:
                    host, port = parse_address(addr)
                except PullerError:
                    continue
                self._add_peer(host, port)

    def _request(self, sock: socket.socket, peer: Peer, message: dict) -> dict:
        sock.sendall(self._encode(message, sock))
        payload = _read_frame(sock)
        if payload is None:
            raise ConnectionError("the peer closed the connection")
        envelope = self.receiver.decode(payload, wall_ms())
        if envelope.sender == self.node:
            raise ConnectionError("that address is this node itself")
        peer.node = envelope.sender
        return envelope.message

    def _ok(self, peer: Peer) -> None:
        with self.lock:
            if peer.failures >= 3:
                log.info("peer %s (%s) is reachable again", peer.addr, peer.node)
            peer.failures, peer.last_ok, peer.next_try = 0, time.time(), 0.0

    def _failed(self, peer: Peer, exc: Exception) -> None:
        with self.lock:
            peer.failures += 1
            # short backoff: a partition must heal within seconds of the link coming back
            delay = min(constants.SYNC_INTERVAL * (2 ** min(peer.failures, 3)),
                        constants.PEER_BACKOFF_MAX)
            peer.next_try = time.time() + delay
            if peer.failures == 3:
                log.warning("peer %s (%s) unreachable after 3 tries: %s", peer.addr,
                            peer.node or "?", exc)
            else:
                log.debug("peer %s: %s", peer.addr, exc)
            if isinstance(exc, ConnectionError) and "itself" in str(exc):
                self.peers.pop(peer.addr, None)
                self._self_addrs.add(peer.addr)

    def _push_all(self, records: list[Record]) -> None:
        with self.lock:
            message = self.gossip.push(records)
            targets = [p for p in self.peers.values() if p.failures < 3]
        for peer in targets:
            threading.Thread(target=self._push_one, args=(peer, message),
                             name="puller-push", daemon=True).start()

    def _push_one(self, peer: Peer, message: dict) -> None:
        try:
            self.exchange(peer, [message])
        except (OSError, FrameError, ValueError) as exc:
            self._failed(peer, exc)
        else:
            self._ok(peer)

    def _anti_entropy(self) -> None:
        last_look = time.monotonic()
        while not self._stop.wait(constants.SYNC_INTERVAL * random.uniform(0.8, 1.2)):
            if time.monotonic() - last_look > constants.REANNOUNCE_CHECK:
                last_look = time.monotonic()
                self._reannounce_if_moved()
            now = time.time()
            with self.lock:
                due = [p for p in self.peers.values() if p.next_try <= now]
            chosen = random.sample(due, min(constants.SYNC_FANOUT, len(due)))
            # in parallel: a peer that does not answer must not hold up the others
            threads = [threading.Thread(target=self._sync_with, args=(peer,), daemon=True,
                                        name="puller-sync") for peer in chosen]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

    def broadcast(self, kind: str, body: dict) -> list[dict]:
        """Ask every live peer (``pull``, ``status``); replies of those that answered."""
        with self.lock:
            # one request per node, even when it is known under several addresses
            by_node: dict[str, Peer] = {}
            for p in self.peers.values():
                if p.failures < 3:
                    by_node.setdefault(p.node or p.addr, p)
            targets = list(by_node.values())
        results: list[dict] = []
        lock = threading.Lock()

        def ask(peer: Peer) -> None:
            try:
                [reply] = self.exchange(peer, [{"type": kind, "body": body}],
                                        timeout=constants.API_PASS_TIMEOUT)
            except (OSError, FrameError, ValueError) as exc:
                with lock:
                    results.append({"node": peer.node, "addr": peer.addr, "error": str(exc)})
                return
            with lock:
                results.append(reply.get("body") or {})

        threads = [threading.Thread(target=ask, args=(p,), daemon=True) for p in targets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=constants.API_PASS_TIMEOUT)
        return results

    # zeroconf ------------------------------------------------------------------------

    def _start_zeroconf(self) -> None:
        try:
            from zeroconf import InterfaceChoice, IPVersion, ServiceBrowser, ServiceInfo, Zeroconf
        except ImportError as exc:  # pragma: no cover - a runtime dependency
            log.warning("zeroconf unavailable (%s): only -join peers", exc)
            return
        interfaces = ([self.config.bind] if self.config.bind not in ("0.0.0.0", "::")
                      else InterfaceChoice.All)
        try:
            zc = Zeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
        except OSError as exc:
            log.warning("zeroconf cannot start (%s): only -join peers", exc)
            return
        self._zeroconf = zc
        cluster = self

        class Listener:
            def add_service(self, zc_: Zeroconf, type_: str, name: str) -> None:
                cluster._resolve(zc_, type_, name)

            update_service = add_service

            def remove_service(self, zc_: Zeroconf, type_: str, name: str) -> None:
                log.debug("mDNS: %s went away", name)

        self._browser = ServiceBrowser(zc, SERVICE_TYPE, Listener())
        addresses = [socket.inet_aton(a) for a in _local_addresses(self.config.bind)]
        self._info = ServiceInfo(
            SERVICE_TYPE, f"{self.node}.{SERVICE_TYPE}", port=self.config.port,
            addresses=addresses,
            properties={"node": self.node, "cluster": self.config.cluster,
                        "v": str(PROTOCOL_VERSION)})
        try:
            zc.register_service(self._info, cooperating_responders=True)
        except Exception as exc:  # NonUniqueNameException and friends: not fatal
            log.warning("zeroconf: cannot announce this node (%s); peers must -join it", exc)
            self._info = None

    def _reannounce_if_moved(self) -> None:
        """The node's addresses changed (a new lease, an interface up): tell the LAN."""
        zc, info = self._zeroconf, self._info
        if zc is None or info is None:
            return
        addresses = sorted(_local_addresses(self.config.bind))
        if addresses == sorted(info.parsed_addresses()):
            return
        from zeroconf import ServiceInfo

        self._info = ServiceInfo(SERVICE_TYPE, info.name, port=info.port,
                                 addresses=[socket.inet_aton(a) for a in addresses],
                                 properties=info.properties)
        try:
            zc.update_service(self._info)
            log.info("zeroconf: addresses changed to %s; announced again", ", ".join(addresses))
        except Exception as exc:  # never fatal: peers also learn through the sync
            log.warning("zeroconf: cannot announce the new addresses: %s", exc)

    def _resolve(self, zc, type_: str, name: str) -> None:
        info = zc.get_service_info(type_, name, timeout=3000)
        if info is None:
            return
        props = {k.decode(): (v.decode() if isinstance(v, bytes) else v)
                 for k, v in (info.properties or {}).items()}
        if props.get("cluster") != self.config.cluster or props.get("node") == self.node:
            return
        for address in info.parsed_addresses():
            self._add_peer(address, info.port, props.get("node"))

    # Lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        self._stop.set()
        zc, self._zeroconf = self._zeroconf, None
        if zc is not None:
            try:
                if self._info is not None:
                    zc.unregister_service(self._info)
                if self._browser is not None:
                    self._browser.cancel()
            finally:
                zc.close()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    def _warn_once(self, key: str, message: str) -> None:
        if self._warned.get(key) != message:
            log.warning("%s", message)
            self._warned[key] = message
        else:
            log.debug("%s", message)


def _read_frame(sock: socket.socket) -> bytes | None:
    header = _read_exactly(sock, 4)
    if header is None:
        return None
    length = frame_length(header)
    payload = _read_exactly(sock, length)
    if payload is None:
        raise ConnectionError("the connection closed in the middle of a frame")
    return payload


def _read_exactly(sock: socket.socket, count: int) -> bytes | None:
    chunks, got = [], 0
    while got < count:
        chunk = sock.recv(min(count - got, 1 << 16))
        if not chunk:
            if got == 0:
                return None
            raise ConnectionError("the connection closed in the middle of a frame")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _local_addresses(bind: str) -> list[str]:
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

