"""Several LAN hosts on one machine: network namespaces on a test bridge.

The bridge lives in a namespace of its own, so nothing touches the machine's
real network; addresses come from a private test range used only inside
these namespaces. ``close()`` kills every process left in them and deletes
them, even after a failed test.
"""

from __future__ import annotations

import subprocess
import uuid

SUBNET = "10.213.0"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


class Lan:
    def __init__(self, hosts: int):
        tag = uuid.uuid4().hex[:6]
        self.lan = f"pl{tag}-lan"
        self.names = [f"pl{tag}-n{i}" for i in range(1, hosts + 1)]
        self.veths = [f"pv{tag}{i}" for i in range(1, hosts + 1)]
        self._made: list[str] = []

    def address(self, index: int) -> str:
        return f"{SUBNET}.{index + 1}"

    def setup(self) -> "Lan":
        try:
            ip("netns", "add", self.lan)
            self._made.append(self.lan)
            ip("-n", self.lan, "link", "set", "lo", "up")
            ip("-n", self.lan, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0",
               "stp_state", "0")
            ip("-n", self.lan, "link", "set", "br0", "up")
            for i, (name, veth) in enumerate(zip(self.names, self.veths)):
                ip("netns", "add", name)
                self._made.append(name)
                ip("-n", name, "link", "set", "lo", "up")
                ip("link", "add", veth, "netns", self.lan, "type", "veth", "peer", "name", "eth0",
                   "netns", name)
                ip("-n", self.lan, "link", "set", veth, "master", "br0", "up")
                ip("-n", name, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
                ip("-n", name, "link", "set", "eth0", "up")
                ip("-n", name, "route", "add", "224.0.0.0/4", "dev", "eth0")
        except BaseException:
            self.close()
            raise
        return self

    def prefix(self, index: int) -> list[str]:
        """Run a command on host ``index``: ``[*prefix, argv...]``."""
        return ["ip", "netns", "exec", self.names[index]]

    def cut(self, index: int) -> None:
        ip("-n", self.lan, "link", "set", self.veths[index], "down")

    def heal(self, index: int) -> None:
        ip("-n", self.lan, "link", "set", self.veths[index], "up")

    def close(self) -> None:
        for name in reversed(self._made):
            pids = ip("netns", "pids", name, check=False).stdout.split()
            if pids:
                subprocess.run(["kill", "-9", *pids], capture_output=True, check=False)
            ip("netns", "del", name, check=False)
        self._made.clear()

    def __enter__(self) -> "Lan":
        return self.setup()

    def __exit__(self, *exc: object) -> None:
        self.close()
