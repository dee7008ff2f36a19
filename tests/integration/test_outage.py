"""A docker outage under a running daemon: one line when it starts, one when it ends.

The daemon's docker CLI reaches the real engine through a unix-socket relay
of the test's own (``DOCKER_HOST``), which the test cuts and restores: the
engine the other tests use is never stopped.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from ..testenv import fetch, free_port, wait_until
from .test_process import write_web

ENGINE = "/var/run/docker.sock"


class Relay:
    """Forwards a unix socket to the docker engine's while it is up."""

    def __init__(self, path: str):
        self.path = path
        self.server: socket.socket | None = None
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()

    def up(self) -> None:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(self.path)
        server.listen(64)
        self.server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def down(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.shutdown(socket.SHUT_RDWR)  # wakes the accept() below
            server.close()
        os.unlink(self.path)
        with self.lock:
            for conn in self.connections:
                conn.close()
            self.connections.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            engine.connect(ENGINE)
            with self.lock:
                self.connections += [client, engine]
            for a, b in ((client, engine), (engine, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def relay(tmp_path):
    if not os.path.exists(ENGINE):
        pytest.skip(f"the engine's socket is not at {ENGINE}")
    relay = Relay(str(tmp_path / "docker.sock"))
    relay.up()
    yield relay
    if relay.server is not None:
        relay.down()


def test_a_docker_outage_is_one_line_when_it_starts_and_one_when_it_ends(
        relay, images, cleanup, tmp_path):
    directory = tmp_path / "defs"
    directory.mkdir()
    port = free_port()
    write_web(directory, "outage-web", images.repo, "v1", port, cleanup.label)
    log_path = tmp_path / "puller.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "puller", "-d", f"-node={cleanup.node('out')}",
             f"-dir={directory}", f"-port={free_port() - 1}", "-interval=1",
             f"-state-dir={tmp_path / 'state'}", "-zeroconf=false"],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "DOCKER_HOST": f"unix://{relay.path}"})
    try:
        wait_until(lambda: fetch(port) == "v1", timeout=30, what="the service deployed")
        relay.down()
        time.sleep(8)  # eight passes at -interval=1, were it not for the backoff
        during = log_path.read_text()
        relay.up()
        wait_until(lambda: "docker is back after" in log_path.read_text(), timeout=40,
                   what="the daemon to see docker again")
    finally:
        process.terminate()
        process.wait(timeout=15)
    text = log_path.read_text()
    assert during.count("docker is unreachable") == 1, during
    assert text.count("docker is unreachable") == 1
    assert text.count("docker is back after") == 1
    assert "pass failed" not in text
    assert fetch(port) == "v1"  # the container never stopped


def test_an_outage_backs_off_doubling_up_to_the_cap():
    import logging

    from puller.faults import Outage

    outage = Outage(logging.getLogger("test"), "docker is back")
    assert outage.delay(2.0, 60.0) == 2.0
    delays = []
    for i in range(8):
        outage.failed("docker is unreachable", float(i))
        delays.append(outage.delay(2.0, 60.0))
    assert delays == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    outage.ok(100.0)
    assert outage.delay(2.0, 60.0) == 2.0 and outage.since is None
