"""What the loop waits on between passes: an event, and a signal on any thread.

Python runs a signal handler on the main thread only, and only once that
thread runs Python code again. A process-directed SIGTERM may be delivered to
any thread; when it lands on another one (a watcher, a worker), the main
thread, blocked in a wait of up to ``-interval`` seconds, would not notice it
before the wait ends. So the loop waits with ``select`` on a socket pair:
``set()`` writes a byte to it, and the interpreter's own C-level signal
handler writes one too (``signal.set_wakeup_fd``, whatever thread the signal
lands on), so the wait ends at once and the main thread runs the handler.
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
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._lock = threading.Lock()

    def signal_fd(self) -> int:
        """The (non-blocking) descriptor for ``signal.set_wakeup_fd``."""
        return self._writer.fileno()

    def set(self) -> None:
        self._event.set()
        with self._lock:
            if self._writer.fileno() < 0:
                return
            try:
                self._writer.send(b"\0")
            except (BlockingIOError, OSError):
                pass  # full: a wake-up is pending anyway

    def is_set(self) -> bool:
        return self._event.is_set()

    def clear(self) -> None:
        self._event.clear()
        self._drain()

    def wait(self, timeout: float | None = None) -> bool:
        """Until ``set()``, a signal, or ``timeout`` seconds; True when set."""
        if not self._event.is_set():
            try:
                select.select([self._reader], [], [], timeout)
            except (OSError, ValueError):  # closed: wait as an event alone
                return self._event.wait(timeout)
            self._drain()  # a signal's byte must not end the next wait too
        return self._event.is_set()

    def _drain(self) -> None:
        try:
            while self._reader.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        with self._lock:
            self._reader.close()
            self._writer.close()
