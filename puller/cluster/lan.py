"""The gossip backend: a LAN cluster with no server of its own.

- ``sync_dir()`` turns the definitions directory into versioned records
  (``dirsync``) and pushes changes to every known peer at once.
- Every ``SYNC_INTERVAL`` seconds a few random peers are asked for a digest
  of all versions; on a mismatch each side sends what the other lacks
  (``gossip.Gossip``). Peers tell each other the peers they know, so one seed
  bootstraps the whole membership (``peers``), and a seed's death changes
  nothing; zeroconf finds peers on the LAN (``discovery``).
- Records received from peers are written atomically into the directory,
  where the daemon's watcher sees them like an edit.
- Frames are signed under the cluster secret (``frames``) and travel over the
  sync port (``server``). There is always a secret: an explicit one, or one
  generated into the state dir (``secret``) and shared by the daemons of one
  host; with the latter (``loopback_only``) the sync port listens on loopback,
  and only loopback peers are joined, learned or found by zeroconf.
- A frame that claims to come from this node itself is refused: it is
  another daemon given the same -node.
"""

from __future__ import annotations

import logging
import random
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from .. import constants
from ..errors import PullerError
from ..faults import OnceLog
from .backend import Handler
from .dirsync import DirectorySync, wall_ms
from .discovery import Discovery
from .frames import (Envelope, Forged, FrameError, Receiver, WrongCluster, encode, refusal,
                     refused_reason)
from .gossip import MAX_STEPS, Gossip, GossipError
from .peers import Membership, Peer, SelfConnection, is_loopback, join_host_port
from .server import Budget, Busy, SyncServer, read_frame
from .versions import Clock, FutureRecord, Record, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterConfig:
    node: str
    directory: str
    port: int
    bind: str  # the sync port's address: loopback unless the secret is explicit
    cluster: str  # the cluster's name: two clusters on one LAN stay apart
    secret: bytes  # explicit, or generated for the daemons of this host
    loopback_only: bool = True  # the secret was generated: loopback peers only
    join: tuple[str, ...] = ()  # seeds, host[:port]
    zeroconf: bool = True


class Cluster:
    """Owns the sync server, the anti-entropy thread and zeroconf; ``close()`` is idempotent.
    Implements ``backend.ClusterBackend``."""

    def __init__(self, config: ClusterConfig, on_change: Callable[[], None],
                 handlers: dict[str, Handler] | None = None,
                 on_written: Callable[[str, str], None] | None = None):
        if not config.secret:
            raise PullerError("the cluster secret is empty")
        if config.loopback_only and not is_loopback(config.bind):
            raise PullerError(f"refusing to sync on {config.bind} without an explicit cluster "
                              "secret: a definition is a docker run line run as root on every "
                              "node; give every node the same -secret-file (or PULLER_SECRET), "
                              "or leave -bind out")
        self.config = config
        self.node = config.node
        self.secret = config.secret
        self.on_change = on_change
        self.handlers = handlers or {}  # extra request types: "pull", "status"
        self.store = Store()
        self.dir = DirectorySync(config.node, config.directory, Clock(config.node), self.store)
        self.dir.on_written = on_written  # (name, origin node) of a peer's change written here
        self.lock = self.dir.lock  # the merge lock: the store and the directory
        self.gossip = Gossip(self.store)
        self.receiver = Receiver(self.secret, config.cluster)
        self.members = Membership(config.node, config.port, config.bind, config.loopback_only)
        self._budget = Budget(constants.SYNC_MAX_BUFFERED)  # frames not yet verified
        self._once = OnceLog(log)
        self._refused: dict[str, str] = {}  # name → a peer's record refused, and why
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: SyncServer | None = None
        self._discovery: Discovery | None = None
        for seed in config.join:
            self.members.add_seed(seed)
        self.dir.load_state()

    # Local edits -----------------------------------------------------------------------

    def sync_dir(self) -> list[Record]:
        """Version local edits and deletions; push them to every peer at once."""
        with self.lock:
            changed = self.dir.local_changes()
        for record in changed:
            log.info("%s: local %s, version %s", record.name,
                     "deletion" if record.deleted else "edit", record.version.to_json())
        if changed:
            self._push_all(changed)
        return changed

    def _merge_reply(self, message: dict, sender: str) -> dict | None:
        """Handle a gossip message: records that won are written; the answer, if
        any. Records refused (too far in the future) are never silent: logged
        once with their sender, and shown by ``problems()``."""
        refused: list[FutureRecord] = []
        with self.lock:
            answer, won = self.gossip.handle(message, wall_ms(), refused)
            if won:
                self.dir.apply(won)
                for record in won:
                    self._refused.pop(record.name, None)
            for future in refused:
                message_text = f"{future} (sent by {sender})"
                self._refused[future.record.name] = message_text
                self._once.warning(f"future {future.record.name} from {sender}", message_text)
        if won:
            self.on_change()
        return answer

    # Server --------------------------------------------------------------------------

    def start(self) -> "Cluster":
        self.sync_dir()  # before listening: nothing to clean up if it fails
        self._server = SyncServer(self.config.bind, self.config.port, self._serve_connection)
        if self.config.loopback_only:
            log.warning("no explicit cluster secret (-secret-file or PULLER_SECRET): the sync "
                        "port listens on %s only, and only the daemons of this host sharing "
                        "its state dir can join", self.config.bind)
        log.info("cluster %r: node %s syncing on %s:%s", self.config.cluster, self.node,
                 self.config.bind, self.config.port)
        self.sync_dir()
        self._server.start()
        self._spawn(self._anti_entropy, "puller-anti-entropy")
        if self.config.zeroconf:
            # on the sync port's address: loopback alone without an explicit secret
            self._discovery = Discovery(self.node, self.config.cluster, self.config.port,
                                        self.config.bind, self.members.add).start()
        return self

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _serve_connection(self, sock: socket.socket, address: tuple) -> None:
        sock.settimeout(constants.SYNC_TIMEOUT)  # for each whole frame, not each read
        try:
            while not self._stop.is_set():
                envelope = self._receive(sock)
                if envelope is None:
                    return
                if envelope.sender == self.node:
                    self._once.warning(f"self {address[0]}", (
                        f"refused a frame from {address[0]} that claims to be this node "
                        f"({self.node}): is another daemon running with the same -node? "
                        "Give each node a name of its own"))
                    return
                self.members.learn(envelope.addr, envelope.sender, address[0])
                reply = self._handle(envelope.message, f"{envelope.sender} at {address[0]}")
                if reply is not None:
                    sock.sendall(self._encode(reply, sock))
        except FrameError as exc:
            self._once.warning(f"frame {address[0]}", f"refused a frame from {address[0]}: {exc}")
            if isinstance(exc, (Forged, WrongCluster)):
                try:  # tell the joiner why, and nothing more
                    sock.sendall(refusal())
                except OSError:
                    pass
        except Busy as exc:
            self._once.warning(f"busy {address[0]}",
                               f"dropped a connection from {address[0]}: {exc}")
        except (OSError, GossipError, ValueError) as exc:
            log.debug("connection from %s dropped: %s", address[0], exc)

    def _receive(self, sock: socket.socket) -> Envelope | None:
        """The next frame, verified; its bytes count against the budget until then."""
        payload = read_frame(sock, budget=self._budget)
        if payload is None:
            return None
        try:
            return self.receiver.decode(payload, wall_ms())
        finally:
            self._budget.give(len(payload))

    def _handle(self, message: dict, sender: str = "a peer") -> dict | None:
        kind = message.get("type")
        if kind == "peers":
            return {"type": "peers-reply", "body": {"peers": self.members.live_addrs()}}
        if kind in self.handlers:
            return {"type": f"{kind}-reply", "body": self.handlers[kind](message.get("body") or {})}
        return self._merge_reply(message, sender)

    def _encode(self, message: dict, sock: socket.socket) -> bytes:
        local = sock.getsockname()[0]
        return encode(message, secret=self.secret, cluster=self.config.cluster, sender=self.node,
                      addr=join_host_port(local, self.config.port), wall_ms=wall_ms(),
                      nonce=secrets.token_hex(12))

    # Peers ---------------------------------------------------------------------------

    def live_peer_addrs(self) -> list[str]:
        return self.members.live_addrs()

    def peer_table(self) -> list[dict[str, Any]]:
        return self.members.table()

    def problems(self) -> dict[str, str]:
        with self.lock:
            return {**self._refused, **self.dir.conflicts}

    # Client --------------------------------------------------------------------------

    def exchange(self, peer: Peer, messages: list[dict],
                 timeout: float = constants.SYNC_TIMEOUT) -> list[dict]:
        """Send messages over one connection; returns the replies (each within ``timeout``)."""
        with self._connect(peer, timeout) as sock:
            return [self._request(sock, peer, message) for message in messages]

    def _connect(self, peer: Peer, timeout: float = constants.SYNC_TIMEOUT) -> socket.socket:
        sock = socket.create_connection((peer.host, peer.port), timeout=constants.SYNC_TIMEOUT)
        if self._is_self(sock):
            sock.close()
            raise SelfConnection()  # our own server would refuse our frames as its own
        sock.settimeout(timeout)
        return sock

    def _is_self(self, sock: socket.socket) -> bool:
        """The connection reached this node's own sync port."""
        host, port = sock.getpeername()[:2]
        if port != self.config.port:
            return False
        if self.config.bind in ("0.0.0.0", "::"):
            return host == sock.getsockname()[0]  # an address of this host
        return host == self.config.bind

    def _sync_with(self, peer: Peer) -> None:
        """One push-pull exchange, and the peer's peers."""
        try:
            with self._connect(peer) as sock:
                with self.lock:
                    request = self.gossip.sync_request()
                reply = self._request(sock, peer, request)
                sender = f"{peer.node or 'a peer'} at {peer.addr}"
                for _ in range(MAX_STEPS):  # answer each reply until we have nothing to say
                    answer = self._merge_reply(reply, sender)
                    if answer is None:
                        break
                    reply = self._request(sock, peer, answer)
                peers = self._request(sock, peer, {"type": "peers", "body": {}})
        except (OSError, FrameError, GossipError, ValueError) as exc:
            self.members.failed(peer, exc)
            return
        self.members.ok(peer)
        self.members.learn_all((peers.get("body") or {}).get("peers", []))

    def _request(self, sock: socket.socket, peer: Peer, message: dict) -> dict:
        sock.sendall(self._encode(message, sock))
        payload = read_frame(sock)
        if payload is None:
            raise ConnectionError("the peer closed the connection")
        reason = refused_reason(payload)
        if reason is not None:
            self._once.warning(f"refused by {peer.addr}", (
                f"peer {peer.addr} refused this node: {reason}; give every node the same "
                "-secret-file (or PULLER_SECRET) and -cluster"))
            raise ConnectionError(f"refused: {reason}")
        envelope = self.receiver.decode(payload, wall_ms())
        if envelope.sender == self.node:
            raise SelfConnection()
        peer.node = envelope.sender
        return envelope.message

    def _push_all(self, records: list[Record]) -> None:
        with self.lock:
            message = self.gossip.push(records)
        for peer in self.members.live():
            threading.Thread(target=self._push_one, args=(peer, message),
                             name="puller-push", daemon=True).start()

    def _push_one(self, peer: Peer, message: dict) -> None:
        try:
            self.exchange(peer, [message])
        except (OSError, FrameError, ValueError) as exc:
            self.members.failed(peer, exc)
        else:
            self.members.ok(peer)

    def _anti_entropy(self) -> None:
        """Rounds until ``close()``; whatever one round hits, the next one runs."""
        last_look = time.monotonic()
        failures = 0
        while not self._stop.wait(constants.SYNC_INTERVAL * random.uniform(0.8, 1.2)
                                  * min(2 ** failures, 8)):
            try:
                if time.monotonic() - last_look > constants.REANNOUNCE_CHECK:
                    last_look = time.monotonic()
                    if self._discovery is not None:
                        self._discovery.reannounce_if_moved()
                self._round()
            except Exception:  # never let the thread die: log, back off, go on
                failures += 1
                log.exception("anti-entropy round failed (%d in a row); going on", failures)
            else:
                failures = 0

    def _round(self) -> None:
        """Push-pull with a few random peers, in parallel."""
        due = self.members.due(time.time())
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

        threads = [threading.Thread(target=ask, args=(p,), daemon=True)
                   for p in self.members.one_per_node()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=constants.API_PASS_TIMEOUT)
        return results

    # Lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        self._stop.set()
        discovery, self._discovery = self._discovery, None
        if discovery is not None:
            discovery.close()
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
