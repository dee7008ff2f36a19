"""A real etcd for the tests: members on free loopback ports, a temporary data dir.

``EtcdCluster`` starts one or more members, waits until they answer, and
stops them (``close()``, also on failure through the fixtures); a member can
be stopped and started again on the same data and ports.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

from .testenv import stop_process

ETCD = shutil.which("etcd")
ETCDCTL = shutil.which("etcdctl")


def need_etcd() -> None:
    if ETCD is None:
        pytest.skip("etcd is not installed (Debian: apt-get install etcd-server); "
                    "scripts/install-deps installs it")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Member:
    def __init__(self, name: str, data_dir: str, initial_cluster: str, client: int, peer: int,
                 tls: tuple[str, str] | None = None, extra: tuple[str, ...] = (),
                 client_certs: bool = True):
        self.name, self.data_dir = name, data_dir
        self.client_certs = client_certs
        self.client, self.peer = client, peer
        self.initial_cluster = initial_cluster
        self.tls = tls  # (cert, key): clients speak https (and show a certificate: client_certs)
        self.extra = extra
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client}"

    def start(self) -> None:
        url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.client}"
        peer = f"http://127.0.0.1:{self.peer}"
        client_certs = self.client_certs
        secure = () if self.tls is None else (
            "--cert-file", self.tls[0], "--key-file", self.tls[1],
            *(("--trusted-ca-file", self.tls[0], "--client-cert-auth") if client_certs else ()))
        self.log = open(self.data_dir + ".log", "ab")
        self.process = subprocess.Popen(
            [ETCD, "--name", self.name, "--data-dir", self.data_dir,
             "--listen-client-urls", url, "--advertise-client-urls", url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", self.initial_cluster, "--initial-cluster-state", "new",
             "--initial-cluster-token", os.path.basename(os.path.dirname(self.data_dir)),
             *secure, *self.extra],
            stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process(process)
            self.log.close()

    def healthy(self) -> bool:
        if self.tls is not None:  # /health wants a client certificate: ask etcdctl
            try:
                subprocess.run([ETCDCTL, f"--endpoints=https://{self.endpoint}",
                                f"--cacert={self.tls[0]}", f"--cert={self.tls[0]}",
                                f"--key={self.tls[1]}", "endpoint", "health"],
                               check=True, capture_output=True, timeout=5,
                               env={**os.environ, "ETCDCTL_API": "3"})
                return True
            except (subprocess.SubprocessError, OSError):
                return False
        try:
            with urllib.request.urlopen(f"http://{self.endpoint}/health", timeout=1) as reply:
                return b'"true"' in reply.read()
        except OSError:
            return False


class EtcdCluster:
    def __init__(self, root: str, members: int = 1, tls: tuple[str, str] | None = None,
                 extra: tuple[str, ...] = (), client_certs: bool = True):
        need_etcd()
        os.makedirs(root, exist_ok=True)
        names = [f"m{i}" for i in range(members)]
        ports = [(free_port(), free_port()) for _ in names]
        initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, (_, p) in zip(names, ports))
        self.tls = tls
        self.members = [Member(n, os.path.join(root, n), initial, c, p, tls, extra,
                               client_certs)
                        for n, (c, p) in zip(names, ports)]

    def start(self) -> "EtcdCluster":
        for member in self.members:
            member.start()
        self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while not any(m.healthy() for m in self.members if m.process is not None):
            if time.time() > deadline:
                raise TimeoutError("etcd did not become healthy")
            time.sleep(0.1)

    def url(self, prefix: str = "/puller") -> str:
        return "etcd://" + ",".join(m.endpoint for m in self.members) + prefix

    def etcdctl(self, *args: str) -> str:
        scheme = "https://" if self.tls else ""
        endpoints = ",".join(scheme + m.endpoint for m in self.members if m.process is not None)
        secure = () if self.tls is None else (
            f"--cacert={self.tls[0]}", f"--cert={self.tls[0]}", f"--key={self.tls[1]}")
        return subprocess.run([ETCDCTL, f"--endpoints={endpoints}", *secure, *args], check=True,
                              capture_output=True, text=True, timeout=20,
                              env={**os.environ, "ETCDCTL_API": "3"}).stdout

    def close(self) -> None:
        for member in self.members:
            member.stop()
