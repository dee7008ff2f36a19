"""Several real puller daemons: on loopback (the play setup) or in network namespaces."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from ..testenv import free_port, wait_until

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(HERE)))  # the checkout: its puller runs


def pytest_collection_modifyitems(items):
    for item in items:
        if str(item.fspath).startswith(HERE):
            item.add_marker(pytest.mark.docker)


def free_port_pair() -> int:
    """A port p with p and p+1 free (sync port and API port)."""
    for _ in range(50):
        port = free_port()
        if port < 65000:
            try:
                import socket

                with socket.socket() as a, socket.socket() as b:
                    a.bind(("127.0.0.1", port))
                    b.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise RuntimeError("no free pair of ports")


@dataclass
class Daemon:
    """One `puller -d` process; prefix runs it elsewhere (e.g. ip netns exec NS)."""

    node: str
    directory: str
    port: int
    args: list[str]
    log_path: str
    prefix: list[str] = field(default_factory=list)
    python: str = sys.executable
    process: subprocess.Popen | None = None

    def start(self) -> "Daemon":
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            [*self.prefix, self.python, "-m", "puller", "-d", f"-node={self.node}",
             f"-dir={self.directory}", f"-port={self.port}", *self.args],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        log.close()
        return self

    def log(self) -> str:
        with open(self.log_path) as handle:
            return handle.read()

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        process = self.process
        if process is None or process.poll() is not None:
            return process.returncode if process else None
        process.send_signal(sig)
        try:
            return process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def path(self, service: str) -> str:
        return os.path.join(self.directory, f"{service}.yml")

    @property
    def state_dir(self) -> str:
        return next(arg.split("=", 1)[1] for arg in self.args if arg.startswith("-state-dir="))

    def api_key(self) -> str:
        """The key the daemon made in its state dir, for a call to its API."""
        with open(os.path.join(self.state_dir, "api.key")) as handle:
            return handle.read().strip()

    def read(self, service: str) -> str | None:
        try:
            with open(self.path(service)) as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def write(self, service: str, text: str) -> None:
        path = self.path(service)
        with open(path + ".tmp", "w") as handle:
            handle.write(text)
        os.replace(path + ".tmp", path)


@pytest.fixture
def daemons(tmp_path, cleanup):
    """Factory of daemons; every one is stopped at teardown.

    Each daemon has a state dir of its own, and so a generated cluster secret of
    its own, unless ``state`` names one to share (the play setup: daemons of one
    host share the default state dir, and so the secret) or the arguments pass
    an explicit secret."""
    started: list[Daemon] = []

    def make(name: str, *args: str, port: int | None = None, prefix: list[str] | None = None,
             directory: str | None = None, state: str | None = None,
             python: str = sys.executable) -> Daemon:
        node = f"{name}-{cleanup.run_id[:6]}"
        cleanup.nodes.append(node)
        directory = directory or str(tmp_path / f"dir-{name}")
        os.makedirs(directory, exist_ok=True)
        state_dir = state or str(tmp_path / f"state-{name}")
        daemon = Daemon(node, directory, port or free_port_pair(),
                        [f"-state-dir={state_dir}", *args],
                        str(tmp_path / f"{name}.log"), prefix or [], python)
        started.append(daemon)
        return daemon.start()

    yield make
    for daemon in started:
        daemon.stop(signal.SIGKILL if daemon.alive() else signal.SIGTERM)


def definition(name: str, image: str, node: str = "", tag: str = "v1", extra: str = "",
               label: str = "") -> str:
    bash = f"docker run --init {('--label ' + label) if label else ''} {extra} {image} sleep 100000"
    return (f"name: {name}\nbash: '{' '.join(bash.split())}'\nrepo: {image}\ntag: {tag}\n"
            f"node: '{node}'\n")


def converged(daemons, service: str, text: str | None) -> bool:
    return all(d.read(service) == text for d in daemons)


def wait_converged(daemons, service: str, text: str | None, timeout: float = 20):
    return wait_until(lambda: converged(daemons, service, text), timeout=timeout,
                      what=f"{service} to be the same on every node")
