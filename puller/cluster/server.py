"""The sync port: a TCP server of length-prefixed frames, and reading one frame.

The server owns its thread; each connection is handed to ``serve(sock,
address)``. What a frame means (authentication, gossip) is the caller's.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from typing import Callable

from ..errors import PullerError
from .frames import frame_length


def read_frame(sock: socket.socket) -> bytes | None:
    """One frame's payload; None when the peer closed the connection between frames."""
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


class SyncServer:
    """Listens on the sync port; ``close()`` is idempotent."""

    def __init__(self, bind: str, port: int,
                 serve: Callable[[socket.socket, tuple], None]):
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                serve(self.request, self.client_address)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

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
