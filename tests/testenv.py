"""Real parts for tests and benchmarks: a Docker engine, a registry, test images.

Nothing here is mocked. ``Engine.ensure()`` uses the running engine or starts
``dockerd`` (and stops it again); ``Registry`` runs Docker Distribution
(``docker-registry``) on a free loopback port with storage in a temp dir;
``build_image`` makes a busybox image whose ``/www/index.html`` tells its
version, so a test can see which image a container runs by fetching a page.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field

BUSYBOX_APPLETS = ("sh", "sleep", "httpd", "cat", "echo", "false", "true", "ls", "wget")
TEST_LABEL = "puller-test.run"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def docker(*args: str, check: bool = True, timeout: float = 120, input: str | None = None
           ) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check,
                          timeout=timeout, input=input)


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def fetch(port: int, path: str = "/", timeout: float = 1.0) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return response.read().decode()
    except (urllib.error.URLError, OSError, ConnectionError):
        return None


class Engine:
    """A reachable Docker engine: the running one, or a ``dockerd`` started here."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.log_path: str | None = None

    @staticmethod
    def reachable() -> bool:
        try:
            return docker("info", check=False, timeout=20).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def ensure(self) -> "Engine":
        if self.reachable():
            return self
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise RuntimeError("no Docker engine is reachable and dockerd is not installed: "
                               "install docker.io (bash .ci/run does)")
        handle, self.log_path = tempfile.mkstemp(prefix="puller-dockerd-", suffix=".log")
        self.process = subprocess.Popen([dockerd, "--iptables=false"], stdout=handle,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        os.close(handle)
        try:
            wait_until(self.reachable, timeout=60, interval=0.5, what="dockerd to answer")
        except AssertionError:
            self.close()
            raise
        return self

    def close(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Registry:
    """Docker Distribution on a free port of 127.0.0.1, storage in a temp dir."""

    extra_config: str = ""
    host: str = ""
    root: str = ""
    process: subprocess.Popen | None = None

    def start(self) -> "Registry":
        """Start (or start again, on the same port and storage)."""
        binary = shutil.which("docker-registry") or shutil.which("registry")
        if binary is None:
            raise RuntimeError("docker-registry is not installed: apt-get install docker-registry")
        if not self.root:
            self.root = tempfile.mkdtemp(prefix="puller-registry-")
            self.host = f"127.0.0.1:{free_port()}"
        config = os.path.join(self.root, "config.yml")
        with open(config, "w") as handle:
            handle.write(
                "version: 0.1\n"
                "log: {level: info}\n"
                f"storage: {{filesystem: {{rootdirectory: {self.root}/data}}, delete: {{enabled: true}}}}\n"
                f"http: {{addr: {self.host}}}\n" + self.extra_config
            )
        log = open(os.path.join(self.root, "registry.log"), "a")
        self.process = subprocess.Popen([binary, "serve", config], stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_until(lambda: self._answers(), timeout=20, what="the registry to answer")
        return self

    def stop(self) -> None:
        """Stop the registry process; its storage stays for a restart."""
        process, self.process = self.process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def log(self) -> str:
        with open(os.path.join(self.root, "registry.log")) as handle:
            return handle.read()

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1):
                return True
        except urllib.error.HTTPError as exc:
            return exc.code == 401
        except OSError:
            return False

    def close(self) -> None:
        self.stop()
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)


def build_image(ref: str, content: str, cmd: str = '["/bin/sh"]', push: bool = True) -> str:
    """Import a busybox image whose /www/index.html is ``content``; push it.
    Returns the pushed digest (or the image id when not pushed)."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    with tempfile.TemporaryDirectory(prefix="puller-image-") as root:
        os.makedirs(os.path.join(root, "bin"))
        os.makedirs(os.path.join(root, "www"))
        os.makedirs(os.path.join(root, "tmp"))
        shutil.copy2(busybox, os.path.join(root, "bin", "busybox"))
        for applet in BUSYBOX_APPLETS:
            os.symlink("busybox", os.path.join(root, "bin", applet))
        with open(os.path.join(root, "www", "index.html"), "w") as handle:
            handle.write(content)
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-c", f"CMD {cmd}", "-", ref], stdin=tar.stdout,
                       check=True, capture_output=True, timeout=120)
        tar.stdout.close()
        tar.wait()
    if not push:
        return docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
    out = docker("push", ref).stdout
    for word in out.split():
        if word.startswith("sha256:"):
            return word
    raise AssertionError(f"no digest in docker push output: {out}")


@dataclass
class Cleanup:
    """Removes, even after a failure, every container a test made (by label)."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    nodes: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{TEST_LABEL}={self.run_id}"

    def node(self, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.nodes.append(name)
        return name

    def close(self) -> None:
        filters = [f"label={self.label}"] + [f"label=io.puller.node={n}" for n in self.nodes]
        ids: set[str] = set()
        for flt in filters:
            ids.update(docker("ps", "-aq", "--filter", flt, check=False).stdout.split())
        if ids:
            docker("rm", "-f", *sorted(ids), check=False)
        if self.images:
            docker("image", "rm", "-f", *self.images, check=False)


def image_id(ref: str) -> str:
    return docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()


def inspect(name: str) -> dict | None:
    result = docker("container", "inspect", name, check=False)
    if result.returncode != 0:
        return None
    return json.loads(result.stdout)[0]
