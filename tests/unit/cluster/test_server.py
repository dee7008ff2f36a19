"""The sync port before authentication: a deadline per frame, connection caps, a byte budget."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from puller import constants
from puller.cluster.frames import Oversized
from puller.cluster.server import SyncServer, read_frame

from ...testenv import free_port, wait_until


def trickle(sock: socket.socket, declared: int, every: float, stop: threading.Event) -> None:
    """Announce a frame of ``declared`` bytes, then send it one byte every ``every`` s."""
    try:
        sock.sendall(struct.pack(">I", declared))
        for _ in range(declared):
            if stop.wait(every):
                return
            sock.sendall(b"x")
    except OSError:
        return


def test_the_whole_frame_must_arrive_within_the_deadline_not_each_read():
    reader, writer = socket.socketpair()
    stop = threading.Event()
    sender = threading.Thread(target=trickle, args=(writer, 40, 0.1, stop))
    with reader, writer:
        reader.settimeout(0.6)  # the deadline of the whole frame
        sender.start()
        started = time.monotonic()
        try:
            with pytest.raises((TimeoutError, ConnectionError)):
                read_frame(reader)
            assert time.monotonic() - started < 1.5
        finally:
            stop.set()
            sender.join()


def test_an_explicit_timeout_is_the_deadline_too():
    reader, writer = socket.socketpair()
    stop = threading.Event()
    sender = threading.Thread(target=trickle, args=(writer, 40, 0.1, stop))
    with reader, writer:
        sender.start()
        started = time.monotonic()
        try:
            with pytest.raises((TimeoutError, ConnectionError)):
                read_frame(reader, timeout=0.5)
            assert time.monotonic() - started < 1.5
        finally:
            stop.set()
            sender.join()


def test_a_frame_within_the_deadline_is_read_whole():
    reader, writer = socket.socketpair()
    with reader, writer:
        reader.settimeout(2)
        writer.sendall(struct.pack(">I", 5) + b"hello" + struct.pack(">I", 2) + b"ok")
        assert read_frame(reader) == b"hello"
        assert read_frame(reader) == b"ok"
        writer.close()
        assert read_frame(reader) is None


def test_an_oversized_length_is_refused_before_anything_is_read():
    reader, writer = socket.socketpair()
    with reader, writer:
        reader.settimeout(2)
        writer.sendall(struct.pack(">I", 1 << 30))
        with pytest.raises(Oversized):
            read_frame(reader)


def test_a_frame_past_the_byte_budget_is_refused_and_its_bytes_given_back():
    from puller.cluster.server import Budget, Busy

    budget = Budget(100_000)
    budget.take(30_000)  # another connection's frame on its way
    reader, writer = socket.socketpair()
    with reader, writer:
        reader.settimeout(2)
        sender = threading.Thread(target=lambda: writer.sendall(
            struct.pack(">I", 80_000) + b"x" * 80_000), daemon=True)
        sender.start()
        with pytest.raises(Busy):
            read_frame(reader, budget=budget)
        assert budget.free == 70_000
    sender.join(timeout=5)
    budget.give(30_000)
    reader, writer = socket.socketpair()
    with reader, writer:
        reader.settimeout(2)
        writer.sendall(struct.pack(">I", 5) + b"hello")
        assert read_frame(reader, budget=budget) == b"hello"
        assert budget.free == 100_000 - 5  # held until the caller is done with it
        budget.give(5)
    assert budget.free == 100_000


def _connect(source: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.settimeout(2)
    return sock


def _served(sock: socket.socket) -> bool:
    """True when the server took the connection (it says "ok"); False when it closed it."""
    try:
        return sock.recv(2) == b"ok"
    except ConnectionResetError:
        return False


def test_connections_past_the_caps_are_closed_at_once_and_slots_come_back(monkeypatch):
    monkeypatch.setattr(constants, "SYNC_MAX_CONNECTIONS", 6, raising=False)
    monkeypatch.setattr(constants, "SYNC_MAX_PER_ADDRESS", 3, raising=False)
    release = threading.Event()

    def serve(sock: socket.socket, address: tuple) -> None:
        sock.sendall(b"ok")
        release.wait(10)

    port = free_port()
    server = SyncServer("127.0.0.1", port, serve).start()
    opened: list[socket.socket] = []
    try:
        first = [_connect("127.0.0.1", port) for _ in range(5)]
        opened += first
        assert [_served(s) for s in first] == [True] * 3 + [False] * 2  # per address
        others = [_connect(source, port) for source in ("127.0.0.2", "127.0.0.2", "127.0.0.3",
                                                        "127.0.0.3", "127.0.0.4")]
        opened += others
        assert [_served(s) for s in others] == [True] * 3 + [False] * 2  # in total
        release.set()
        for sock in opened:
            sock.close()
        opened.clear()

        def accepted_again() -> bool:
            with _connect("127.0.0.1", port) as sock:
                return _served(sock)

        wait_until(accepted_again, timeout=5, what="the slots to be given back")
    finally:
        release.set()
        for sock in opened:
            sock.close()
        server.close()
