"""Integration fixtures: a real engine, a real registry, real images."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

import threading
import urllib.request

from puller.daemon import Config, Daemon

from ..cluster.conftest import free_port_pair
from ..testenv import Cleanup, free_port, wait_until

HERE = os.path.dirname(__file__)


def pytest_collection_modifyitems(items):
    for item in items:
        if str(item.fspath).startswith(HERE):
            item.add_marker(pytest.mark.docker)


@dataclass
class Node:
    """One puller node driven pass by pass in this process."""

    daemon: Daemon
    directory: str
    cleanup: Cleanup

    @property
    def name(self) -> str:
        return self.daemon.config.node

    def write(self, service: str, **fields: str) -> str:
        path = os.path.join(self.directory, f"{service}.yml")
        body = "".join(f"{key}: {value}\n" for key, value in {"name": service, **fields}.items())
        with open(path + ".tmp", "w") as handle:
            handle.write(body)
        os.replace(path + ".tmp", path)
        return path

    def web(self, service: str, repo: str, tag: str = "v1", port: int | None = None,
            extra: str = "", node: str = "", health_timeout: float | None = 0,
            command: str = "httpd -f -p 80 -h /www", update: str | None = None,
            rollout: str | None = None) -> int:
        """Write an httpd service publishing ``port`` (a free one by default).
        ``health_timeout`` 0 (the tests' default) removes a predecessor at once;
        ``update`` is its update policy (auto when None); ``rollout`` its rollout
        field as YAML flow text."""
        port = port or free_port()
        bash = (f"docker run -p 127.0.0.1:{port}:80 {extra} --init --label {self.cleanup.label} "
                f"{repo} {command}")
        fields = {"bash": f"'{bash}'", "repo": repo, "tag": tag, "node": f"'{node}'"}
        if health_timeout is not None:
            fields["health_timeout"] = str(health_timeout)
        if update is not None:
            fields["update"] = update
        if rollout is not None:
            fields["rollout"] = rollout
        self.write(service, **fields)
        return port

    def tick(self, **kwargs):
        return self.daemon.tick(**kwargs)


@pytest.fixture
def node(tmp_path, cleanup):
    directory = tmp_path / "defs"
    directory.mkdir()
    daemon = Daemon(Config(node=cleanup.node(), directory=str(directory),
                           state_dir=str(tmp_path / "state")))
    with daemon:
        yield Node(daemon, str(directory), cleanup)


@dataclass
class LiveNode(Node):
    """A daemon running its loop and API in a thread of this process."""

    thread: threading.Thread | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.daemon.config.port + 1}"

    @property
    def state_dir(self) -> str:
        """Where the daemon keeps its API key (api.key), as the CLI looks for it."""
        return self.daemon.config.state_dir

    def call(self, method: str, path: str, body: bytes | None = None,
             key: str | None = None) -> tuple[int, dict]:
        import json
        import urllib.error

        headers = {"Content-Type": "application/json"}
        key = key if key is not None else self.daemon.apikey  # the daemon's, made or given
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.api + path, data=body, method=method,
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read())


@pytest.fixture
def live_node(tmp_path, cleanup):
    """Factory: start a daemon (loop + API) in a thread; stopped at teardown."""
    nodes: list[LiveNode] = []

    def start(**overrides) -> LiveNode:
        directory = tmp_path / f"defs-{len(nodes)}"
        directory.mkdir()
        # no mDNS: a node of this test must not find another test's (or session's) daemons
        settings = {"node": cleanup.node(), "directory": str(directory),
                    "port": free_port_pair(), "interval": 600.0, "zeroconf": False,
                    "state_dir": str(tmp_path / f"state-{len(nodes)}"), **overrides}
        daemon = Daemon(Config(**settings))
        thread = threading.Thread(target=daemon.run, name="test-daemon")
        live = LiveNode(daemon, str(directory), cleanup, thread)
        nodes.append(live)
        thread.start()
        wait_until(lambda: _answers(live.api), timeout=20, what="the daemon's API")
        return live

    yield start
    for live in nodes:
        live.daemon.stop()
        live.thread.join(timeout=30)
        live.daemon.close()


def _answers(api: str) -> bool:
    try:
        with urllib.request.urlopen(api + "/v1/health", timeout=1):
            return True
    except OSError:
        return False
