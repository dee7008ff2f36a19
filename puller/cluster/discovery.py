"""Finding peers on the LAN with zeroconf (``_puller._tcp.local.``).

The TXT record carries the node's name, the cluster's name and the protocol
version; services of other clusters and this node's own are ignored. mDNS
only finds peers: whether they are alive is the sync protocol's business.
Nothing here is fatal: without zeroconf a node still has its ``-join`` seeds.
"""

from __future__ import annotations

import logging
import socket
from typing import Callable

from .frames import PROTOCOL_VERSION
from .peers import local_addresses

log = logging.getLogger(__name__)

SERVICE_TYPE = "_puller._tcp.local."


class Discovery:
    """Announces this node and reports the peers it sees; ``close()`` is idempotent."""

    def __init__(self, node: str, cluster: str, port: int, bind: str,
                 found: Callable[[str, int, str | None], None]):
        self.node = node
        self.cluster = cluster
        self.port = port
        self.bind = bind
        self.found = found  # (address, port, node name)
        self._zeroconf = None
        self._browser = None
        self._info = None

    def start(self) -> "Discovery":
        try:
            from zeroconf import InterfaceChoice, IPVersion, ServiceBrowser, ServiceInfo, Zeroconf
        except ImportError as exc:  # pragma: no cover - a runtime dependency
            log.warning("zeroconf unavailable (%s): only -join peers", exc)
            return self
        interfaces = [self.bind] if self.bind not in ("0.0.0.0", "::") else InterfaceChoice.All
        try:
            zc = Zeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
        except OSError as exc:
            log.warning("zeroconf cannot start (%s): only -join peers", exc)
            return self
        self._zeroconf = zc
        discovery = self

        class Listener:
            def add_service(self, zc_: Zeroconf, type_: str, name: str) -> None:
                discovery._resolve(zc_, type_, name)

            update_service = add_service

            def remove_service(self, zc_: Zeroconf, type_: str, name: str) -> None:
                log.debug("mDNS: %s went away", name)

        # browse before registering: peers are seen sooner
        self._browser = ServiceBrowser(zc, SERVICE_TYPE, Listener())
        addresses = [socket.inet_aton(a) for a in local_addresses(self.bind)]
        self._info = ServiceInfo(
            SERVICE_TYPE, f"{self.node}.{SERVICE_TYPE}", port=self.port, addresses=addresses,
            properties={"node": self.node, "cluster": self.cluster, "v": str(PROTOCOL_VERSION)})
        try:
            zc.register_service(self._info, cooperating_responders=True)
        except Exception as exc:  # NonUniqueNameException and friends: not fatal
            log.warning("zeroconf: cannot announce this node (%s); peers must -join it", exc)
            self._info = None
        return self

    def reannounce_if_moved(self) -> None:
        """The node's addresses changed (a new lease, an interface up): tell the LAN."""
        zc, info = self._zeroconf, self._info
        if zc is None or info is None:
            return
        addresses = sorted(local_addresses(self.bind))
        if addresses == sorted(info.parsed_addresses()):
            return
        from zeroconf import ServiceInfo

        self._info = ServiceInfo(SERVICE_TYPE, info.name, port=info.port,
                                 addresses=[socket.inet_aton(a) for a in addresses],
                                 properties=info.properties)
        try:
            zc.update_service(self._info)
            log.info("zeroconf: addresses changed to %s; announced again", ", ".join(addresses))
        except Exception as exc:  # never fatal: peers also learn through the sync
            log.warning("zeroconf: cannot announce the new addresses: %s", exc)

    def _resolve(self, zc, type_: str, name: str) -> None:
        try:
            self._resolve_one(zc, type_, name)
        except Exception:  # malformed network input: logged and dropped, never fatal
            log.exception("zeroconf: cannot use the announcement of %s", name)

    def _resolve_one(self, zc, type_: str, name: str) -> None:
        info = zc.get_service_info(type_, name, timeout=3000)
        if info is None:
            return
        props = {k.decode(): (v.decode() if isinstance(v, bytes) else v)
                 for k, v in (info.properties or {}).items()}
        if props.get("cluster") != self.cluster or props.get("node") == self.node:
            return
        for address in info.parsed_addresses():
            self.found(address, info.port, props.get("node"))

    def close(self) -> None:
        zc, self._zeroconf = self._zeroconf, None
        if zc is None:
            return
        try:
            if self._info is not None:
                zc.unregister_service(self._info)
            if self._browser is not None:
                self._browser.cancel()
        finally:
            zc.close()
