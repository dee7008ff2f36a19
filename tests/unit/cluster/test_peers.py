"""Membership without an explicit secret: loopback peers only, from every source."""

from __future__ import annotations

import pytest

from puller.cluster.peers import Membership, is_loopback
from puller.errors import PullerError


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.9.8.7", True), ("::1", True), ("localhost", True),
    ("10.213.0.2", False), ("0.0.0.0", False), ("seed-host", False), ("::", False),
    ("", False),
])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_loopback_only_membership_learns_no_remote_peer():
    members = Membership("me", 7946, "127.0.0.1", loopback_only=True)
    members.add("10.213.0.2", 7946, "zeroconf-peer")  # from zeroconf
    members.learn("10.213.0.3:7946", "frame-peer", "127.0.0.1")  # from a frame's addr
    members.learn_all(["10.213.0.4:7946", "[fd00::4]:7946", "example.com:7946"])  # a peer list
    members.learn("0.0.0.0:7710", "wild", "10.213.0.5")  # a wildcard seen from afar
    assert members.live_addrs() == []
    members.learn("127.0.0.1:7710", "play-2")
    members.learn("0.0.0.0:7711", "play-3", "127.0.0.1")
    members.add("::1", 7712, "play-4")
    assert members.live_addrs() == ["127.0.0.1:7710", "127.0.0.1:7711", "[::1]:7712"]


def test_loopback_only_membership_refuses_a_remote_seed():
    members = Membership("me", 7946, "127.0.0.1", loopback_only=True)
    members.add_seed("127.0.0.1:7710")
    members.add_seed("localhost:7711")
    for seed in ("10.213.0.2:7946", "seed-host", "[fd00::1]:7946"):
        with pytest.raises(PullerError, match="secret"):
            members.add_seed(seed)
    assert members.live_addrs() == ["127.0.0.1:7710", "localhost:7711"]


def test_with_an_explicit_secret_remote_peers_are_learned():
    members = Membership("me", 7946, "0.0.0.0")
    members.add_seed("10.213.0.2:7946")
    members.learn("10.213.0.3:7946", "b")
    assert members.live_addrs() == ["10.213.0.2:7946", "10.213.0.3:7946"]
