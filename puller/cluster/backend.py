"""The boundary between the daemon and "the cluster", whichever backend runs it.

The daemon's loop needs five things of a cluster, and nothing else:

- ``sync_dir()``: publish local edits — version what changed in the
  definitions directory and send it to the other nodes;
- peers' records arrive by themselves: the backend writes them into the
  directory (the directory stays the truth a person can read and edit) and
  calls the ``on_change`` it was built with, which wakes the loop;
- ``peer_table()``: who the other nodes are, and whether they answer;
- ``problems()``: what it could not apply (a local draft in the way);
- ``broadcast(kind, body)``: ask every other node (``pull``, ``status``);
  each node answers through the ``handlers`` the backend was built with.

A backend is built with ``(config, on_change, handlers)``, started with
``start()`` and stopped with ``close()`` (idempotent). The gossip backend
(``puller.cluster.lan``) is the default; others plug in behind this protocol
without touching the loop.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

#: what a node answers to another node's request: body in, body out
Handler = Callable[[dict], dict]


class ClusterBackend(Protocol):
    def start(self) -> "ClusterBackend":
        """Begin syncing; raises ``PullerError`` when it cannot (a port in use)."""

    def sync_dir(self) -> list[Any]:
        """Publish local edits and deletions in the directory; returns what changed."""

    def peer_table(self) -> list[dict[str, Any]]:
        """The other nodes: address, node name, last success, failures."""

    def problems(self) -> dict[str, str]:
        """What cannot be applied now, by service: a local draft in the way of
        the cluster's version, a refused record. Shown by ``puller status``."""

    def broadcast(self, kind: str, body: dict) -> list[dict]:
        """Ask every live node; the answers of those that answered (errors as entries)."""

    def close(self) -> None:
        """Stop every thread the backend started; idempotent."""
