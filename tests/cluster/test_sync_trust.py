"""The sync channel, attacked: another local user, a remote -join, a frame that claims to be
this node, and work done before authentication (connection caps, frame deadline, memory)."""

from __future__ import annotations

import os
import socket
import stat
import struct
import threading
import time

import pytest

from puller import constants
from puller.cluster.frames import encode

from .conftest import definition, free_port_pair
from .unprivileged import NOBODY, SYSTEM_PYTHON, Unprivileged
from ..netns import SUBNET, Lan
from ..testenv import wait_until

QUIET = ("-zeroconf=false", "-interval=1")


@pytest.fixture(scope="module")
def unprivileged():
    scratch = Unprivileged()
    try:
        scratch.setup().check()
        yield scratch
    finally:
        scratch.close()


@pytest.fixture
def secret(tmp_path) -> bytes:
    value = b"an-explicit-cluster-secret"
    (tmp_path / "secret").write_bytes(value + b"\n")
    os.chmod(tmp_path / "secret", 0o600)
    return value


def started(daemon) -> None:
    wait_until(lambda: "syncing on" in daemon.log() or not daemon.alive(), timeout=30,
               what=f"{daemon.node} to start")
    assert daemon.alive(), daemon.log()


def frame(message: dict, secret: bytes, sender: str, addr: str = "127.0.0.1:1") -> bytes:
    return encode(message, secret=secret, cluster=constants.DEFAULT_CLUSTER, sender=sender,
                  addr=addr, wall_ms=int(time.time() * 1000), nonce=os.urandom(8).hex())


def connect(port: int, source: str = "127.0.0.1", timeout: float = 5) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def answered(port: int, secret: bytes, source: str = "127.0.0.1") -> bool:
    """A legitimate peer's request gets an answer."""
    with connect(port, source) as sock:
        sock.sendall(frame({"type": "peers", "body": {}}, secret, "legit-peer"))
        try:
            return len(sock.recv(4)) == 4
        except OSError:
            return False


def closed_at_once(sock: socket.socket, within: float = 1.0) -> bool:
    """True when the server closes the connection within ``within`` s without a word."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def closed_now(sock: socket.socket) -> bool:
    """True when the server has closed the connection already."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


# Attack 4 ------------------------------------------------------------------------------


def test_a_daemon_run_by_nobody_cannot_push_a_definition_to_roots(
        daemons, images, cleanup, unprivileged):
    # root's state dir made beforehand, readable by all: only the secret file's mode protects it
    root_state = os.path.join(unprivileged.root, "root-state")
    os.makedirs(root_state, mode=0o755)
    root = daemons("root", *QUIET, state=root_state)
    started(root)
    home = unprivileged.home("pwn")
    evil_dir = os.path.join(home, "defs")
    os.makedirs(evil_dir)
    os.chown(evil_dir, NOBODY, NOBODY)
    with open(os.path.join(evil_dir, "pwn4.yml"), "w") as handle:
        handle.write(definition("pwn4", images.repo, node="^nowhere$", label=cleanup.label))
    intruder = daemons("pwn", *QUIET, f"-join=127.0.0.1:{root.port}", directory=evil_dir,
                       state=os.path.join(home, "state"), prefix=unprivileged.prefix(home),
                       python=SYSTEM_PYTHON)
    started(intruder)
    assert "pwn4: local edit" in intruder.log()
    wait_until(lambda: "refused" in root.log() or root.read("pwn4") is not None, timeout=20,
               what="the root daemon to hear from the intruder")
    time.sleep(3)  # the intruder pushed at start and tries again every 2 s
    assert root.read("pwn4") is None, root.log()
    assert "does not match the cluster secret" in root.log()
    assert root.alive() and intruder.alive()

    # nor can it borrow root's secret: the file is root's alone
    borrow = daemons("borrow", *QUIET, f"-join=127.0.0.1:{root.port}", directory=evil_dir,
                     state=root_state, prefix=unprivileged.prefix(home), python=SYSTEM_PYTHON)
    assert borrow.process.wait(timeout=30) == 1, borrow.log()
    # refused at start: the API key or the secret in root's state dir is not its to use
    assert "Permission denied" in borrow.log() or "owned by another user" in borrow.log()
    assert root.read("pwn4") is None


# No explicit secret: loopback only ------------------------------------------------------


def test_the_generated_secret_is_private_and_kept_across_restarts(daemons, tmp_path):
    state = tmp_path / "fresh" / "state"
    node = daemons("gen", *QUIET, state=str(state))
    started(node)
    path = state / "cluster.secret"
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    first = path.read_bytes()
    assert len(first.strip()) >= 32
    assert str(path) in node.log()
    node.stop()
    node.start()
    wait_until(lambda: node.log().count("syncing on") == 2, timeout=30, what="the restart")
    assert path.read_bytes() == first


@pytest.fixture
def lan():
    with Lan(1) as lan:
        yield lan


def test_without_an_explicit_secret_a_remote_join_is_refused_at_start(daemons, lan):
    # in a namespace of its own: whatever the daemon does, no packet leaves the test bridge
    far = daemons("far", *QUIET, f"-join={SUBNET}.9:7946", prefix=lan.prefix(0))
    assert far.process.wait(timeout=30) == 1, far.log()
    assert "without an explicit cluster secret" in far.log()
    assert "-secret-file" in far.log()
    near = daemons("near", *QUIET, "-join=127.0.0.1:7946", "-join=localhost:7946",
                   prefix=lan.prefix(0))
    started(near)


# Frames that claim to be this node ----------------------------------------------------


def test_a_frame_claiming_to_come_from_this_node_is_refused(daemons, images, cleanup, secret,
                                                            tmp_path):
    node = daemons("self", *QUIET, f"-secret-file={tmp_path / 'secret'}", "-bind=127.0.0.1")
    started(node)
    record = {"name": "mirror", "version": [int(time.time() * 1000), 0, node.node],
              "text": definition("mirror", images.repo, node="^nowhere$", label=cleanup.label)}
    for _ in range(2):
        with connect(node.port) as sock:
            sock.sendall(frame({"type": "push", "body": {"records": [record]}}, secret, node.node))
            assert closed_at_once(sock, within=3)
    time.sleep(1)
    assert node.read("mirror") is None
    log = node.log()
    assert log.count(f"claims to be this node ({node.node})") == 1, log
    assert node.alive() and answered(node.port, secret)


def test_a_node_that_reaches_itself_under_another_name_drops_that_address_quietly(daemons):
    port = free_port_pair()
    node = daemons("itself", *QUIET, f"-join=localhost:{port}", port=port)
    started(node)
    wait_until(lambda: "peer localhost:" in node.log(), timeout=10, what="the seed")
    time.sleep(3 * constants.SYNC_INTERVAL)
    assert "claims to be this node" not in node.log()
    assert "unreachable" not in node.log()
    assert node.alive()


# Bounded work before authentication ----------------------------------------------------


def test_connections_past_the_per_address_cap_are_closed_at_once(daemons, secret, tmp_path):
    node = daemons("caps", *QUIET, f"-secret-file={tmp_path / 'secret'}", "-bind=127.0.0.1")
    started(node)
    held = [connect(node.port) for _ in range(20)]
    try:
        time.sleep(0.5)
        closed = sum(closed_now(sock) for sock in held)
        assert closed == 20 - 8, f"{closed} of 20 connections from one address were closed"
        assert node.alive()
        assert answered(node.port, secret, source="127.0.0.2")  # another address still gets in
    finally:
        for sock in held:
            sock.close()
    assert "too many connections" in node.log()


def test_a_trickling_sender_is_cut_off_at_the_frame_deadline(daemons, secret, tmp_path):
    node = daemons("trickle", *QUIET, f"-secret-file={tmp_path / 'secret'}", "-bind=127.0.0.1")
    started(node)
    with connect(node.port) as sock:
        sock.sendall(struct.pack(">I", 1000))
        start = time.monotonic()
        cut = None
        while time.monotonic() - start < 15:
            try:
                sock.sendall(b"{")
            except OSError:
                cut = time.monotonic() - start
                break
            if closed_at_once(sock, within=0.5):
                cut = time.monotonic() - start
                break
    assert cut is not None, "a sender trickling a byte every 0.5 s held its connection 15 s"
    assert cut < constants.SYNC_TIMEOUT + 1.5, f"cut after {cut:.1f} s"
    assert node.alive() and answered(node.port, secret)


def _flood(port: int, sources: list[str], declared: int, sent: int, hold: threading.Event,
           results: list[str]) -> None:
    """From each source in turn, one connection: announce ``declared`` bytes, send ``sent``
    at once; keep every connection open until ``hold``."""
    chunk = b"x" * (1 << 16)
    socks = []
    try:
        for source in sources:
            try:
                sock = connect(port, source, timeout=5)
            except OSError:
                results.append("refused")
                continue
            socks.append(sock)
            try:
                sock.sendall(struct.pack(">I", declared))
                for _ in range(sent // len(chunk)):
                    sock.sendall(chunk)
                results.append("sent")
            except OSError:
                results.append("cut")
        hold.wait(20)
    finally:
        for sock in socks:
            sock.close()


def test_memory_stays_bounded_under_a_flood_of_big_unfinished_frames(daemons, secret, tmp_path):
    node = daemons("flood", *QUIET, f"-secret-file={tmp_path / 'secret'}", "-bind=127.0.0.1")
    started(node)
    time.sleep(1)
    pid = node.process.pid
    before = rss_kib(pid)
    hold = threading.Event()
    results: list[str] = []
    # 150 connections from 150 loopback addresses (no per-address cap helps), 15 per thread,
    # each announcing a 4 MiB frame and sending all of it but the last 64 KiB
    sources = [f"127.0.{1 + i // 250}.{2 + i % 250}" for i in range(150)]
    threads = [threading.Thread(target=_flood, daemon=True, name="flood",
                                args=(node.port, sources[i:i + 15], 4 << 20, (4 << 20) - (1 << 16), hold,
                                      results)) for i in range(0, 150, 15)]
    peak = before
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            peak = max(peak, rss_kib(pid))
            time.sleep(0.05)
        peak = max(peak, rss_kib(pid, "VmHWM"))
    finally:
        hold.set()
        for thread in threads:
            thread.join(timeout=30)
    grown = (peak - before) / 1024
    print(f"\nflood of 150 unfinished 4 MiB frames: daemon RSS {before / 1024:.0f} MB before, "
          f"peak {peak / 1024:.0f} MB (+{grown:.0f} MB); {results.count('sent')} sent, "
          f"{results.count('cut')} cut, {results.count('refused')} refused")
    assert grown < 100, f"RSS grew by {grown:.0f} MB"
    assert node.alive()
    wait_until(lambda: answered(node.port, secret), timeout=10, what="a legitimate peer's answer")


def test_without_an_explicit_secret_zeroconf_brings_no_remote_peer(daemons, tmp_path, secret):
    with Lan(2) as lan:
        shared = f"-secret-file={tmp_path / 'secret'}"
        remote = daemons("zremote", "-interval=1", shared, port=7946, prefix=lan.prefix(1))
        # a neighbour on the same host listening to the LAN's mDNS (as avahi would): the
        # host has then joined the mDNS group on eth0
        neighbour = daemons("zneighbour", "-interval=1", shared, port=7950,
                            prefix=lan.prefix(0))
        local = daemons("zlocal", "-interval=1", "-verbose", port=7946, prefix=lan.prefix(0))
        started(local)
        wait_until(lambda: f"peer {lan.address(1)}:7946" in neighbour.log(), timeout=30,
                   what="the neighbour to find the remote node by zeroconf")
        started(remote)
        time.sleep(3)
        assert f"peers: peer {SUBNET}." not in local.log(), local.log()
        assert local.alive()
        assert f"peers: peer {lan.address(0)}:7946" not in remote.log()  # nor is it announced
