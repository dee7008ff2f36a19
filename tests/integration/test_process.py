"""The daemon as users run it: `puller -d -node=... -dir=...` in its own process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from ..cluster.conftest import free_port_pair
from ..testenv import fetch, free_port, inspect, wait_until
from .test_slow_stop import env_of, write_stubborn


@pytest.fixture
def daemon_process(tmp_path, cleanup):
    directory = tmp_path / "defs"
    directory.mkdir()
    node = cleanup.node("proc")
    log_path = tmp_path / "puller.log"
    processes = []

    def start(*extra: str) -> subprocess.Popen:
        log = open(log_path, "a")
        process = subprocess.Popen(
            [sys.executable, "-m", "puller", "-d", f"-node={node}", f"-dir={directory}",
             f"-port={free_port_pair()}", f"-state-dir={tmp_path / 'state'}", *extra],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        processes.append(process)
        return process

    start.directory = directory
    start.node = node
    start.log = lambda: log_path.read_text()
    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def write_web(directory, name, repo, tag, port, label):
    bash = f"docker run -p 127.0.0.1:{port}:80 --init --label {label} {repo} httpd -f -p 80 -h /www"
    path = os.path.join(directory, f"{name}.yml")
    with open(path + ".tmp", "w") as handle:
        handle.write(f"name: {name}\nbash: '{bash}'\nrepo: {repo}\ntag: {tag}\n")
    os.replace(path + ".tmp", path)


def test_file_events_wake_the_daemon_and_sigterm_leaves_containers_running(
        daemon_process, images, cleanup):
    # a long interval: only the file watcher can explain a quick deploy
    process = daemon_process("-interval=600")
    port = free_port()
    wait_until(lambda: "watching" in daemon_process.log(), timeout=20, what="the daemon to start")
    write_web(daemon_process.directory, "web-p", images.repo, "v1", port, cleanup.label)
    wait_until(lambda: fetch(port) == "v1", timeout=15, what="v1 deployed after the file appeared")
    started = time.monotonic()
    write_web(daemon_process.directory, "web-p", images.repo, "v2", port, cleanup.label)
    wait_until(lambda: fetch(port) == "v2", timeout=15, what="v2 deployed after the edit")
    assert time.monotonic() - started < 10

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    assert "stopped; containers keep running" in daemon_process.log()
    assert inspect("web-p")["State"]["Running"]
    assert fetch(port) == "v2"


def test_a_restarted_daemon_process_keeps_the_same_containers(daemon_process, images, cleanup):
    port = free_port()
    write_web(daemon_process.directory, "web-q", images.repo, "v1", port, cleanup.label)
    first = daemon_process("-interval=600")
    wait_until(lambda: fetch(port) == "v1", timeout=20, what="v1 deployed")
    ident = inspect("web-q")["Id"]
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=15) == 0
    second = daemon_process("-interval=600", "-verbose")
    wait_until(lambda: "keep web-q: up to date" in daemon_process.log(), timeout=20,
               what="the restarted daemon's first pass")
    assert inspect("web-q")["Id"] == ident
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=15) == 0


def test_the_daemon_stops_within_a_second_whatever_thread_gets_the_signal(daemon_process):
    """A signal sent to the process may be delivered to any of its threads;
    the loop waiting out a long -interval must notice it at once."""
    rounds = [(signal.SIGTERM, "a worker"), (signal.SIGINT, "a worker"),
              (signal.SIGTERM, "main"), (signal.SIGTERM, "a worker")]
    took = []
    for count, (signum, thread) in enumerate(rounds, start=1):
        process = daemon_process("-interval=600", "-zeroconf=false")
        wait_until(lambda: daemon_process.log().count("watching") == count, timeout=20,
                   what="the daemon to start")
        time.sleep(0.5)  # the loop waits for its next pass
        tasks = sorted(int(task) for task in os.listdir(f"/proc/{process.pid}/task"))
        others = [task for task in tasks if task != process.pid]
        target = process.pid if thread == "main" else others[-1]
        sent = time.monotonic()
        os.kill(target, signum)  # kill(2) of a thread id: delivered to that thread
        try:
            assert process.wait(timeout=10) == 0
        except subprocess.TimeoutExpired:
            pytest.fail(f"{signum.name} to {thread} thread: still running after 10 s")
        took.append(time.monotonic() - sent)
    assert max(took) < 2.0, took


def test_a_stop_during_a_slow_recreate_lets_it_end(daemon_process, images, cleanup):
    """SIGTERM while a recreate waits out its old container's grace period:
    the daemon waits for the deploy (bounded), so the service is not left with
    its old container stopped as .prev and no new one."""
    name = f"stubborn-{uuid.uuid4().hex[:6]}"
    write_stubborn(daemon_process.directory, name, images.repo, "1", cleanup.label)
    process = daemon_process("-interval=600", "-zeroconf=false")
    wait_until(lambda: "V=1" in env_of(name), timeout=30, what="the service deployed")
    write_stubborn(daemon_process.directory, name, images.repo, "2", cleanup.label)
    wait_until(lambda: inspect(f"{name}.prev") is not None, timeout=10,
               what="the recreate to begin")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=40) == 0
    assert "waiting up to" in daemon_process.log()
    assert "V=2" in env_of(name)
    assert inspect(f"{name}.prev") is None
