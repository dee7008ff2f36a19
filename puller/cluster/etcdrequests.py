"""Requests between nodes through etcd: ``puller pull NAME --all`` with ``-store=etcd``.

- ``PREFIX/requests/ID`` holds one request (``{"kind", "body", "from"}``)
  under a lease: a node that asks puts it there, every other node sees it by
  a watch, runs its handler (the same ``handlers`` the gossip backend serves)
  on a thread of its own, and puts its answer at ``PREFIX/answers/ID/NODE``.
- The asking node waits until every node it knew to be up answered, or the
  deadline passed; a node that did not answer is an entry with an error.
- Requests and answers expire with their lease: nothing is left behind, and a
  node that starts later never runs an old request.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from typing import Callable

from .. import constants
from .backend import Handler
from .etcdclient import Compacted, EtcdClient, EtcdDown, KeyValue
from .storeurl import StoreConfig

log = logging.getLogger(__name__)

LEASE = int(constants.API_PASS_TIMEOUT) + 60  # seconds a request and its answers are kept
POLL = 0.5  # seconds between reads of the answers while waiting
RETRY = 2.0  # seconds before the watch is opened again after etcd failed


class EtcdRequests:
    """Answers other nodes' requests and asks them; ``close()`` through the ``stop`` event."""

    def __init__(self, client: EtcdClient, store: StoreConfig, node: str,
                 handlers: dict[str, Handler], stop: threading.Event):
        self.client = client
        self.node = node
        self.handlers = handlers
        self.requests = store.key_of("requests") + "/"
        self.answers = store.key_of("answers") + "/"
        self._stop = stop

    # Answering -----------------------------------------------------------------------

    def follow(self) -> None:
        """Until stopped: watch for requests from now on and answer each once."""
        while not self._stop.is_set():
            try:
                revision, _ = self.client.get_prefix(self.requests)  # older ones are not ours
                for _revision, changes in self.client.watch(self.requests, revision + 1,
                                                            self._stop):
                    for kv in changes:
                        self._take(kv)
            except (EtcdDown, Compacted) as exc:
                log.debug("requests through etcd: %s; watching again", exc)
                self._stop.wait(RETRY)
            except Exception:  # never let the thread die
                log.exception("answering requests through etcd failed; going on")
                self._stop.wait(RETRY)

    def _take(self, kv: KeyValue) -> None:
        if kv.value is None:
            return  # a request that expired
        try:
            request = json.loads(kv.value)
            kind, body, sender = request["kind"], request["body"], request["from"]
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed request at %s", kv.key)
            return
        handler = self.handlers.get(kind) if isinstance(kind, str) else None
        if sender == self.node or handler is None or not isinstance(body, dict):
            return
        ident = kv.key[len(self.requests):]
        threading.Thread(target=self._answer, args=(ident, handler, body, kind, sender),
                         name="puller-etcd-answer", daemon=True).start()

    def _answer(self, ident: str, handler: Handler, body: dict, kind: str, sender: str) -> None:
        log.info("node %s asks for %s %s", sender, kind, body.get("service", ""))
        try:
            answer = handler(body)
        except Exception as exc:  # told to the asking node, never fatal here
            answer = {"node": self.node, "error": str(exc)}
        try:
            lease = self.client.grant(LEASE)
            self.client.put(f"{self.answers}{ident}/{self.node}",
                            json.dumps({**answer, "node": self.node}, default=str), lease=lease)
        except EtcdDown as exc:
            log.warning("cannot answer %s's %s request through etcd: %s", sender, kind, exc)

    # Asking --------------------------------------------------------------------------

    def ask(self, kind: str, body: dict, nodes: list[str],
            timeout: float = constants.API_PASS_TIMEOUT,
            clock: Callable[[], float] = time.monotonic) -> list[dict]:
        """Ask ``nodes`` (the others that are up); their answers, and an error entry
        for each that did not answer within ``timeout`` seconds."""
        ident = f"{self.node}-{secrets.token_hex(8)}"
        lease = self.client.grant(LEASE)
        self.client.put(self.requests + ident,
                        json.dumps({"kind": kind, "body": body, "from": self.node}), lease=lease)
        deadline = clock() + timeout
        answers: dict[str, dict] = {}
        while not self._stop.is_set():
            _, kvs = self.client.get_prefix(f"{self.answers}{ident}/")
            answers = {kv.key.rsplit("/", 1)[-1]: _load(kv) for kv in kvs}
            if set(nodes) <= set(answers) or clock() >= deadline:
                break
            self._stop.wait(POLL)
        missing = [{"node": node, "addr": "etcd",
                    "error": f"no answer through etcd within {timeout:g} s"}
                   for node in sorted(set(nodes) - set(answers))]
        return [answers[node] for node in sorted(answers)] + missing


def _load(kv: KeyValue) -> dict:
    try:
        answer = json.loads(kv.value or "")
    except ValueError:
        answer = None
    node = kv.key.rsplit("/", 1)[-1]
    return answer if isinstance(answer, dict) else {"node": node, "error": "a malformed answer"}
