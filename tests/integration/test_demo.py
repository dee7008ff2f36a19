"""scripts/demo cleans up however it ends: its daemon stopped, its hello container gone."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid

import pytest

from ..testenv import docker, fetch, inspect, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HELLO_PORT = 8080  # examples/services/hello.yml publishes it
REGISTRY_PORT = 5000  # the demo's registry, started unless one answers there
HELLO = "hello from puller\n"  # the page of the image the demo builds


def free_pair() -> int:
    """A free loopback port whose successor is free too: the daemon's sync port and API."""
    for _ in range(100):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise AssertionError("no two consecutive free ports")


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("how, status", [
    ("SIGTERM", 143),  # the script alone is told to stop (kill, a supervisor, a CI timeout)
    ("SIGHUP", 129),  # its terminal went away
    ("Ctrl-C", 130),  # SIGINT to the whole foreground process group
])
def test_the_demo_stops_its_daemon_and_removes_hello_however_it_ends(engine, tmp_path, how,
                                                                     status):
    if inspect("hello") is not None or listening(HELLO_PORT):
        pytest.skip("a hello container, or something on port 8080, is there already")
    registry_was_up = listening(REGISTRY_PORT)
    port = free_pair()
    env = {**os.environ, "PULLER_DEMO_INSTALL": "0", "PULLER_STATE_DIR": str(tmp_path / "state"),
           "PULLER_PORT": str(port), "PULLER_ZEROCONF": "false",
           "PULLER_CLUSTER": f"demo-test-{uuid.uuid4().hex[:8]}",
           # A SIGTERM that lands on another thread than the daemon's main one is
           # handled when the main loop next wakes: at most a second later, not 30.
           "PULLER_INTERVAL": "1"}
    log_path = tmp_path / "demo.log"
    with open(log_path, "w") as log:
        demo = subprocess.Popen(["bash", "scripts/demo"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            wait_until(lambda: demo.poll() is not None or fetch(HELLO_PORT) == HELLO,
                       timeout=120, what="the demo to serve hello")
            assert demo.poll() is None and listening(port)
        except AssertionError:
            raise AssertionError(f"the demo did not start:\n{log_path.read_text()}") from None

        signalled = time.monotonic()
        if how == "Ctrl-C":
            os.killpg(demo.pid, signal.SIGINT)
        else:
            demo.send_signal(getattr(signal, how))
        assert demo.wait(timeout=60) == status, log_path.read_text()
        # the daemon stopped when told to (the demo would KILL it after 30 s)
        assert time.monotonic() - signalled < 25, log_path.read_text()
        assert inspect("hello") is None, log_path.read_text()
        assert not listening(port), "the demo's daemon still runs"
        assert listening(REGISTRY_PORT) == registry_was_up, "the demo's registry still runs"
    finally:
        try:  # whatever the demo left running: its group, even once the script is gone
            os.killpg(demo.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        demo.wait()
        docker("rm", "-f", "hello", check=False)  # it was not there before the test
