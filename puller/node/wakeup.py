"""What the loop waits on between passes: an event, and a signal on any thread.

Python runs a signal handler on the main thread only, and only once that
thread runs Python code again. A process-directed SIGTERM may be delivered to
any thread; when it lands on another one (a watcher, a worker), the main
thread, blocked in a wait of up to ``-interval`` seconds, would not notice it
before the wait ends. So once ``signal_fd()`` was asked for (and given to
``signal.set_wakeup_fd``), the loop waits with ``select`` on a socket pair:
``set()`` writes a byte to it, and so does the interpreter's own C-level
signal handler, whatever thread the signal lands on; the wait ends at once
and the main thread runs the handler.
"""

from __future__ import annotations

import select
import socket
import threading


class Wakeup:
    """A ``threading.Event`` whose ``wait`` also ends when a signal arrives
    (once ``signal_fd()`` is given to ``signal.set_wakeup_fd``).

    ``close()`` is idempotent."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._pair: tuple[socket.socket, socket.socket] | None = None  # made by signal_fd()

    def signal_fd(self) -> int:
        """The (non-blocking) descriptor for ``signal.set_wakeup_fd``."""
        with self._lock:
            if self._pair is None:
                reader, writer = socket.socketpair()
                reader.setblocking(False)
                writer.setblocking(False)
                self._pair = reader, writer
            return self._pair[1].fileno()

    def set(self) -> None:
        self._event.set()
        with self._lock:
            if self._pair is None:
                return
            try:
                self._pair[1].send(b"\0")
            except OSError:
                pass  # full (a wake-up is pending anyway) or closed

    def is_set(self) -> bool:
        return self._event.is_set()

    def clear(self) -> None:
        self._event.clear()
        self._drain()

    def wait(self, timeout: float | None = None) -> bool:
        """Until ``set()``, a signal, or ``timeout`` seconds; True when set."""
        pair = self._pair
        if pair is None or self._event.is_set():
            return self._event.wait(timeout)
        try:
            select.select([pair[0]], [], [], timeout)
        except (OSError, ValueError):  # closed: wait as an event alone
            return self._event.wait(timeout)
        self._drain()  # a signal's byte must not end the next wait too
        return self._event.is_set()

    def _drain(self) -> None:
        pair = self._pair
        if pair is None:
            return
        try:
            while pair[0].recv(4096):
                pass
        except OSError:  # nothing more to read, or closed
            pass

    def close(self) -> None:
        with self._lock:
            pair, self._pair = self._pair, None
        if pair is not None:
            pair[0].close()
            pair[1].close()
