"""The ``-store`` URL: ``etcd://HOST:PORT[,HOST:PORT...]/PREFIX``; pure, no I/O.

The hosts are the etcd members' client endpoints (the first that answers is
used, the others when it stops answering); the prefix roots every key puller
writes (``PREFIX/services/NAME``, ``PREFIX/nodes/NODE``). TLS files and the
user name and password come from their own flags and variables, not the URL,
so a password never lands in a process list or a log line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import PullerError

DEFAULT_ETCD_PORT = 2379
_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[A-Za-z0-9_.-]+))"
                        r"(?::(?P<port>\d{1,5}))?$")
_PREFIX = re.compile(r"^[A-Za-z0-9_.\-/]+$")


class StoreUrlError(PullerError):
    def __init__(self, url: str, reason: str):
        self.url, self.reason = url, reason
        super().__init__(f"-store={url!r}: {reason}; expected "
                         "etcd://HOST:PORT[,HOST:PORT...]/PREFIX, e.g. "
                         "etcd://10.0.0.1:2379,10.0.0.2:2379/puller")


@dataclass(frozen=True)
class StoreConfig:
    """Where the definitions live and how to reach it."""

    endpoints: tuple[tuple[str, int], ...]
    prefix: str  # "/puller": no trailing slash
    ca: str | None = None  # TLS: the CA file; with it the endpoints speak https
    cert: str | None = None  # TLS client certificate and key
    key: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        return bool(self.ca or self.cert)

    def key_of(self, *parts: str) -> str:
        """``PREFIX/part/part``."""
        return "/".join((self.prefix, *parts))


def parse_store_url(url: str, **options: str | None) -> StoreConfig:
    """A ``StoreConfig`` from the URL (and ``ca``, ``cert``, ``key``, ``user``,
    ``password``); ``StoreUrlError`` naming what is wrong."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "etcd":
        raise StoreUrlError(url, "only the etcd:// scheme is known")
    hosts, slash, prefix = rest.partition("/")
    if not hosts:
        raise StoreUrlError(url, "no HOST:PORT is given")
    endpoints = tuple(_endpoint(url, item) for item in hosts.split(","))
    prefix = prefix.strip("/")
    if not slash or not prefix:
        raise StoreUrlError(url, "no /PREFIX is given (the keys' root, such as /puller)")
    if not _PREFIX.match(prefix) or "//" in prefix:
        raise StoreUrlError(url, f"the prefix {prefix!r} may hold letters, digits, "
                                 "'_', '.', '-' and single '/' only")
    if bool(options.get("cert")) != bool(options.get("key")):
        raise StoreUrlError(url, "-store-cert and -store-key go together")
    if bool(options.get("user")) != bool(options.get("password")):
        raise StoreUrlError(url, "PULLER_STORE_USER and PULLER_STORE_PASSWORD go together")
    return StoreConfig(endpoints=endpoints, prefix="/" + prefix,
                       **{k: v or None for k, v in options.items()})


def _endpoint(url: str, item: str) -> tuple[str, int]:
    match = _HOST_PORT.match(item.strip())
    if not match:
        raise StoreUrlError(url, f"{item!r} is not HOST:PORT")
    port = int(match.group("port") or DEFAULT_ETCD_PORT)
    if not 1 <= port <= 65535:
        raise StoreUrlError(url, f"port {port} is out of range")
    return match.group("v6") or match.group("host"), port
