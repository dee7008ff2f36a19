"""The etcd backend: the definitions live in etcd, the directory mirrors them.

- ``PREFIX/services/NAME`` holds a definition's YAML text. A local edit is
  versioned by ``DirectorySync`` (as with the gossip) and written with a
  compare-and-swap on the key's ``mod_revision`` (``etcdmirror`` has the rule);
  a change in etcd arrives by a watch and is written into the directory,
  where the daemon's watcher sees it like an edit. A person's draft is never
  overwritten; deletions are deletes.
- A watch that ends is opened again from the last revision seen; after an
  outage, or when that revision was compacted, the prefix is read in full and
  every service is settled again (pending local edits pushed, others taken).
- ``PREFIX/nodes/NODE`` holds this node's status (the daemon's ``status()``)
  under a lease of ``NODE_TTL`` seconds: ``peer_table()`` and
  ``broadcast("status")`` read them; a node that stops vanishes. Other
  requests (``pull``) are relayed through etcd by ``etcdrequests``.
- etcd down: nothing changes on the node (the containers run their last
  definitions, local edits still apply locally); one line is logged, the
  backend retries with backoff, and catches up when etcd is back.

There is no gossip and no zeroconf in this mode.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..faults import Outage
from ..fsutil import write_atomically
from .backend import Handler
from .dirsync import DirectorySync, wall_ms
from .etcdclient import Compacted, EtcdClient, EtcdDown, KeyValue
from .etcdmirror import Action, MirrorState, decide
from .etcdrequests import EtcdRequests
from .storeurl import StoreConfig
from .versions import Clock, Record, Store, Version

log = logging.getLogger(__name__)

MIRROR_FILE = ".puller-etcd.json"
CONFLICTS_DIR = ".puller-conflicts"
NODE_TTL = 10  # seconds a node's status outlives its last keepalive
STATUS_EVERY = 2.0  # seconds between keepalives (the status is put when it changed)
RETRY_MIN, RETRY_MAX = 0.5, 15.0  # seconds between tries while etcd is down


@dataclass(frozen=True)
class EtcdBackendConfig:
    node: str
    directory: str
    store: StoreConfig


class EtcdBackend:
    """Implements ``backend.ClusterBackend`` on etcd; owns three threads; ``close()`` is idempotent."""

    def __init__(self, config: EtcdBackendConfig, on_change: Callable[[], None],
                 handlers: dict[str, Handler] | None = None,
                 on_written: Callable[[str, str], None] | None = None):
        self.config = config
        self.node = config.node
        self.on_change = on_change
        self.handlers = handlers or {}
        self.client = EtcdClient(config.store)
        self.services = config.store.key_of("services") + "/"
        self.nodes = config.store.key_of("nodes") + "/"
        self.store = Store()
        self.dir = DirectorySync(config.node, config.directory, Clock(config.node), self.store)
        self.dir.on_written = on_written  # (name, origin node) of a peer's change written here
        self.lock = self.dir.lock
        self.mirror = MirrorState()
        self.lost: dict[str, str] = {}  # name → a local edit that lost to etcd's version
        self.outage = Outage(log, "etcd answers again")
        self._connected = threading.Event()  # the prefix was read since the last failure
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # other nodes' requests (pull), relayed through etcd; status is the node records
        relayed = {kind: handler for kind, handler in self.handlers.items() if kind != "status"}
        self.relay = EtcdRequests(self.client, config.store, self.node, relayed, self._stop)
        self.dir.load_state()
        self._load_mirror()

    # State ---------------------------------------------------------------------------

    @property
    def mirror_path(self) -> str:
        return os.path.join(self.config.directory, MIRROR_FILE)

    def _load_mirror(self) -> None:
        try:
            with open(self.mirror_path) as handle:
                self.mirror = MirrorState.from_json(json.load(handle))
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            log.warning("%s cannot be read (%s); etcd's versions win over the directory's",
                        self.mirror_path, exc)

    def _save_mirror(self) -> None:
        try:
            write_atomically(self.mirror_path, json.dumps(self.mirror.to_json(), indent=1),
                             mode=0o600)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.mirror_path, exc)

    # Local edits → etcd ---------------------------------------------------------------

    def sync_dir(self) -> list[Record]:
        """Version local edits and deletions; write them to etcd unless it is down."""
        with self.lock:
            changed = self.dir.local_changes()
            for record in changed:
                log.info("%s: local %s", record.name, "deletion" if record.deleted else "edit")
                self.mirror.pending.add(record.name)
            if changed:
                self._save_mirror()
            if self._connected.is_set() and self.mirror.pending:
                try:
                    for name in sorted(self.mirror.pending):
                        self._push(name)
                except EtcdDown as exc:
                    self._down(exc)
                self._save_mirror()
        return changed

    def _push(self, name: str) -> None:
        """Write a pending local edit as a swap on ``seen``; on a miss, settle
        against what etcd holds now (lock held)."""
        record = self.store.get(name)
        local = record.text if record is not None else None
        outcome = self.client.swap(self.services + name, local, self.mirror.seen.get(name, 0))
        if outcome.ok:
            log.info("%s: written to etcd (revision %d)", name, outcome.revision)
            self.mirror.settled(name, outcome.revision if local is not None else 0)
            self.lost.pop(name, None)
        else:
            self._settle(name, outcome.current)

    def _settle(self, name: str, kv: KeyValue | None) -> None:
        """Bring one service to agreement (lock held): push, take or keep."""
        record = self.store.get(name)
        local = record.text if record is not None else None
        etcd_text, etcd_rev = (kv.value, kv.mod_revision) if kv is not None else (None, 0)
        action = decide(etcd_text, etcd_rev, local, self.mirror.seen.get(name, 0),
                        name in self.mirror.pending)
        if action is Action.PUSH:
            return self._push(name)
        if action is Action.CONFLICT:
            self._keep_aside(name, local, etcd_rev)
        if action in (Action.CONFLICT, Action.TAKE):
            self._take(name, etcd_text)
        self.mirror.settled(name, etcd_rev)

    def _keep_aside(self, name: str, text: str | None, etcd_rev: int) -> None:
        """A local edit lost to a newer version in etcd: keep it, say where."""
        what = "deletion" if text is None else "edit"
        where = ""
        if text is not None:
            folder = os.path.join(self.config.directory, CONFLICTS_DIR)
            try:
                os.makedirs(folder, mode=0o700, exist_ok=True)
                path = os.path.join(folder, f"{name}.yml")
                write_atomically(path, text, mode=0o600)
                where = f"; it is kept in {os.path.join(CONFLICTS_DIR, name + '.yml')}"
            except OSError as exc:
                where = f"; it could not be kept aside: {exc}"
        message = (f"{name}: the local {what} made while etcd could not be reached lost to a "
                   f"newer version in etcd (revision {etcd_rev}){where}; edit the file again "
                   "to replace etcd's version")
        self.lost[name] = message
        log.warning("%s", message)

    def _take(self, name: str, text: str | None) -> None:
        """Write etcd's version (or deletion) into the directory (lock held)."""
        stamp = self.dir.clock.now(wall_ms())
        record = Record(name, Version(stamp.wall, stamp.counter, "etcd"), text)
        if self.store.merge(record):
            self.dir.apply([record])
            self.on_change()

    # etcd → the directory -------------------------------------------------------------

    def _follow(self) -> None:
        """Until ``close()``: read the prefix, then watch it; back off while etcd is down."""
        while not self._stop.is_set():
            try:
                revision = self._resync()
                while not self._stop.is_set():
                    for revision, changes in self.client.watch(self.services, revision + 1,
                                                               self._stop):
                        self._changes(revision, changes)
            except Compacted as exc:
                log.info("the watch's revision was compacted (%s); reading %s in full",
                         exc, self.services)
            except EtcdDown as exc:
                if self._stop.is_set():
                    break
                self._down(exc)
                self._stop.wait(self.outage.delay(RETRY_MIN, RETRY_MAX))
            except Exception:  # never let the thread die: log, back off, go on
                log.exception("following etcd failed; going on")
                self._stop.wait(RETRY_MAX)

    def _resync(self) -> int:
        """Read every definition in etcd and settle every service; the revision read."""
        revision, kvs = self.client.get_prefix(self.services)
        in_etcd = {kv.key[len(self.services):]: kv for kv in kvs}
        with self.lock:
            # edits made while away are versioned first
            self.mirror.pending.update(r.name for r in self.dir.local_changes())
            self.mirror.pending.update(n for n, r in self.store.records.items()
                                       if self._unconfirmed(n, r))
            names = set(in_etcd) | set(self.store.live()) | self.mirror.pending
            for name in sorted(names):
                if _valid_name(name):
                    self._settle(name, in_etcd.get(name))
            self.mirror.revision = revision
            self._save_mirror()
        self._connected.set()
        self.outage.ok(time.time())
        return revision

    def _unconfirmed(self, name: str, record: Record) -> bool:
        """A live local record that etcd never confirmed (a first start, say)."""
        return not record.deleted and name not in self.mirror.seen

    def _changes(self, revision: int, changes: list[KeyValue]) -> None:
        with self.lock:
            for kv in changes:
                name = kv.key[len(self.services):]
                if not _valid_name(name) or self.mirror.is_echo(name, kv.mod_revision):
                    continue
                self._settle(name, kv if kv.value is not None else None)
            self.mirror.revision = max(self.mirror.revision, revision)
            self._save_mirror()

    def _down(self, exc: EtcdDown) -> None:
        self._connected.clear()
        self.outage.failed(f"{exc}; every container keeps its last definition, local edits "
                           "wait for etcd; retrying with backoff", time.time())

    # Node status ---------------------------------------------------------------------

    def _heartbeat(self) -> None:
        """Keep ``PREFIX/nodes/NODE`` alive under a lease, holding this node's status."""
        lease, last = 0, None
        key = self.nodes + self.node
        while not self._stop.wait(0 if last is None else STATUS_EVERY):
            try:
                if not lease or not self.client.keepalive(lease):
                    lease, last = self.client.grant(NODE_TTL), None
                status = json.dumps(self._status(), sort_keys=True, default=str)
                if status != last:
                    self.client.put(key, status, lease=lease)
                    last = status
            except EtcdDown:
                lease, last = 0, ""  # the follower thread logs the outage
            except Exception:
                log.exception("could not publish this node's status; going on")
        if lease:
            try:
                self.client.revoke(lease)  # the others see this node go at once
            except EtcdDown:
                pass

    def _status(self) -> dict:
        handler = self.handlers.get("status")
        status = handler({}) if handler is not None else {"node": self.node}
        return {**status, "node": self.node}

    def _node_records(self) -> list[dict]:
        _, kvs = self.client.get_prefix(self.nodes)
        found = []
        for kv in kvs:
            try:
                status = json.loads(kv.value or "")
            except ValueError:
                continue
            if isinstance(status, dict) and kv.key[len(self.nodes):] != self.node:
                found.append(status)
        return found

    # ClusterBackend ------------------------------------------------------------------

    def start(self) -> "EtcdBackend":
        self.sync_dir()
        for target, name in ((self._follow, "puller-etcd-watch"),
                             (self._heartbeat, "puller-etcd-status"),
                             (self.relay.follow, "puller-etcd-requests")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("node %s: definitions in etcd at %s under %s", self.node,
                 ",".join(f"{h}:{p}" for h, p in self.config.store.endpoints), self.services)
        return self

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def peer_table(self) -> list[dict[str, Any]]:
        try:
            nodes = self._node_records()
        except EtcdDown:
            return []
        return [{"addr": f"etcd:{n.get('node')}", "node": n.get("node"), "seed": False,
                 "last_ok": n.get("time"), "failures": 0} for n in nodes]

    def problems(self) -> dict[str, str]:
        with self.lock:
            return {**self.lost, **self.dir.conflicts}

    def broadcast(self, kind: str, body: dict) -> list[dict]:
        """``status``: every other node's status record; other kinds (``pull``) are
        relayed through etcd to the nodes whose record is there (``etcdrequests``)."""
        try:
            nodes = self._node_records()
            if kind == "status":
                return nodes
            return self.relay.ask(kind, body, [str(n.get("node")) for n in nodes])
        except EtcdDown as exc:
            return [{"node": None, "addr": self.client.endpoint, "error": str(exc)}]

    def close(self) -> None:
        self._stop.set()
        self._connected.clear()  # a late sync_dir only versions and keeps edits pending
        self.client.interrupt()  # the watch waits on its socket
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()


def _valid_name(name: str) -> bool:
    try:
        Record(name, Version(0, 0, "etcd"), None)
    except ValueError:
        return False
    return True

