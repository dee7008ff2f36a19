"""The sync port: a TCP server of length-prefixed frames, and reading one frame.

The server owns its thread; each connection is handed to ``serve(sock,
address)``. What a frame means (authentication, gossip) is the caller's.

Work done for a peer before its frame is verified is bounded: connections
past ``SYNC_MAX_CONNECTIONS`` in all, or ``SYNC_MAX_PER_ADDRESS`` from one
address, are closed at once; a whole frame must arrive within its deadline
(a sender trickling a byte at a time holds nothing for long); a frame's
bytes are read as they come, never allocated from the length it announces,
and taken from a :class:`Budget` shared by every connection.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
import time
from collections import Counter
from typing import Callable

from .. import constants
from ..errors import PullerError
from ..faults import OnceLog
from .frames import HEADER, frame_length

log = logging.getLogger(__name__)

CHUNK = 1 << 16  # bytes asked of one recv()


class Busy(ConnectionError):
    """The bytes being received on the sync port, in all, would pass the budget."""


class Budget:
    """Bytes of frames being received and not yet verified, at most ``limit``;
    thread-safe. ``take`` raises :class:`Busy` rather than wait."""

    def __init__(self, limit: int):
        self.limit = limit
        self.free = limit
        self._lock = threading.Lock()

    def take(self, count: int) -> None:
        with self._lock:
            if count > self.free:
                raise Busy(f"more than {self.limit // (1 << 20)} MiB of frames are arriving "
                           "at once")
            self.free -= count

    def give(self, count: int) -> None:
        with self._lock:
            self.free += count


def read_frame(sock: socket.socket, timeout: float | None = None,
               budget: Budget | None = None) -> bytes | None:
    """One frame's payload; None when the peer closed the connection between frames.

    The whole frame, header included, must arrive within ``timeout`` seconds
    (by default the socket's timeout), or ``TimeoutError``. With a ``budget``,
    the payload's bytes stay taken from it: give them back
    (``budget.give(len(payload))``) once done with the payload.
    """
    original = sock.gettimeout()
    limit = original if timeout is None else timeout
    deadline = None if limit is None else time.monotonic() + limit
    try:
        header = _read_exactly(sock, HEADER, deadline)
        if header is None:
            return None
        length = frame_length(header)  # an oversized length is refused before any read
        payload = _read_exactly(sock, length, deadline, budget)
        if payload is None:
            raise ConnectionError("the connection closed in the middle of a frame")
        return payload
    finally:
        sock.settimeout(original)


def _read_exactly(sock: socket.socket, count: int, deadline: float | None,
                  budget: Budget | None = None) -> bytes | None:
    chunks, got = [], 0
    try:
        while got < count:
            want = min(count - got, CHUNK)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("a frame did not arrive in time")
                sock.settimeout(left)
            if budget is not None:
                budget.take(want)
            try:
                chunk = sock.recv(want)
            except BaseException:
                if budget is not None:
                    budget.give(want)
                raise
            if budget is not None:
                budget.give(want - len(chunk))  # what did not come (yet)
            if not chunk:
                if got == 0:
                    return None
                raise ConnectionError("the connection closed in the middle of a frame")
            chunks.append(chunk)
            got += len(chunk)
    except BaseException:
        if budget is not None:
            budget.give(got)
        raise
    return b"".join(chunks)


class _Slots:
    """Connections being served, in all and by address; thread-safe."""

    def __init__(self, total: int, per_address: int):
        self.total = total
        self.per_address = per_address
        self._lock = threading.Lock()
        self._by_address: Counter[str] = Counter()
        self._count = 0

    def take(self, address: str) -> bool:
        with self._lock:
            if self._count >= self.total or self._by_address[address] >= self.per_address:
                return False
            self._count += 1
            self._by_address[address] += 1
            return True

    def give(self, address: str) -> None:
        with self._lock:
            self._count -= 1
            self._by_address[address] -= 1
            if self._by_address[address] <= 0:
                del self._by_address[address]


class SyncServer:
    """Listens on the sync port; ``close()`` is idempotent. Connections past the
    caps (``SYNC_MAX_CONNECTIONS``, ``SYNC_MAX_PER_ADDRESS``) are closed at once."""

    def __init__(self, bind: str, port: int,
                 serve: Callable[[socket.socket, tuple], None]):
        slots = _Slots(constants.SYNC_MAX_CONNECTIONS, constants.SYNC_MAX_PER_ADDRESS)
        once = OnceLog(log)

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                try:
                    serve(self.request, self.client_address)
                finally:
                    slots.give(self.client_address[0])

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True
            request_queue_size = 128

            def process_request(self, request, client_address) -> None:
                address = client_address[0]
                if not slots.take(address):
                    once.warning(f"full {address}", (
                        f"too many connections to the sync port: closing those from {address} "
                        f"past {slots.per_address} from one address, {slots.total} in all"))
                    self.shutdown_request(request)
                    return
                try:
                    super().process_request(request, client_address)
                except BaseException:
                    slots.give(address)
                    raise

        try:
            self._server: socketserver.ThreadingTCPServer | None = Server((bind, port), Handler)
        except OSError as exc:
            raise PullerError(f"cannot listen for peers on {bind}:{port}: "
                              f"{exc.strerror or exc}; is another puller running? "
                              "(-port picks another)") from None
        self._thread: threading.Thread | None = None

    def start(self) -> "SyncServer":
        if self._server is not None and self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            name="puller-sync-server", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        if self._thread is not None:
            server.shutdown()
            self._thread.join(timeout=5)
        server.server_close()
