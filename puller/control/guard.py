"""Who may talk to the API, from the request's headers alone (before its body is read).

- ``Host`` must name this node: a loopback name or address, one of this
  host's own names or addresses, or a ``-api-host`` value; a page that
  rebinds its own DNS name to this node is refused.
- An ``Origin`` (only browsers send one) must be this API itself; a
  cross-site request from a web page is refused.
- A write with a body must say it is JSON or YAML (the registry's
  notification type on the hook), which a browser cannot send cross-site
  without asking first.
- Every endpoint but ``GET /v1/health`` wants the API key (``Authorization:
  Bearer``, compared in constant time); the registry hook also takes the
  hook key, in the header or as ``?key=``.

Each check answers None (fine) or (HTTP status, message).
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
import urllib.parse
from typing import Iterable

WRITE_TYPES = frozenset({"application/json", "application/yaml", "application/x-yaml",
                         "text/yaml"})
HOOK_TYPES = frozenset({"application/json", "application/vnd.docker.distribution.events.v1+json"})
WRITES = frozenset({"PUT", "POST", "DELETE", "PATCH"})

Problem = tuple[int, str] | None


def own_names(extra: Iterable[str] = ()) -> frozenset[str]:
    """This host's names (looked up once, at start) and the ``-api-host`` values."""
    names = {"localhost", socket.gethostname(), socket.getfqdn(), *extra}
    return frozenset(_normal(name) for name in names if name)


def _normal(name: str) -> str:
    return name.strip().lower().rstrip(".")


def split_host(value: str) -> tuple[str, int | None]:
    """``host[:port]`` or ``[v6]:port`` → (host, port or None); ValueError if malformed."""
    value = value.strip()
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(value)
        port = rest[1:]
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    else:
        host, port = value, ""
    if not host or (port and not port.isdigit()):
        raise ValueError(value)
    return _normal(host), int(port) if port else None


def _is_local_address(host: str) -> bool | None:
    """True for a loopback address or one of this host's; False for another
    address; None when ``host`` is a name."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if address.is_loopback:
        return True
    if address.is_unspecified or address.is_multicast:
        return False
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((host, 0))  # only an address of this host can be bound
        return True
    except OSError:
        return False


class Guard:
    """The checks for one API; ``port`` is the API's own (for Origin)."""

    def __init__(self, apikey: str, port: int, hook_key: str | None = None,
                 names: frozenset[str] = frozenset({"localhost"}), tls: bool = False):
        if not apikey:
            raise ValueError("the API always has a key")
        self.apikey = apikey.encode()
        self.hook_key = hook_key.encode() if hook_key else None
        self.port = port
        self.names = names
        self.tls = tls

    def allowed_host(self, host: str) -> bool:
        local = _is_local_address(host)
        if local is not None:
            return local
        return host in self.names or host.endswith(".localhost")

    def host_problem(self, value: str | None) -> Problem:
        if not value:
            return 400, "a Host header is required"
        try:
            host, _ = split_host(value)
        except ValueError:
            return 400, f"malformed Host header {value[:100]!r}"
        if not self.allowed_host(host):
            return 403, (f"Host {host[:100]!r} is not this node's name or address (a DNS "
                         "rebinding web page sends its own); start the daemon with -api-host "
                         f"{host[:100]} if this node is reached by that name")
        return None

    def origin_problem(self, value: str | None) -> Problem:
        """Browsers send Origin; only a page of this very API may pass (it serves none)."""
        if value is None:
            return None
        try:
            parsed = urllib.parse.urlsplit(value.strip())
            port = parsed.port or {"http": 80, "https": 443}.get(parsed.scheme)
            host = _normal(parsed.hostname or "")
        except ValueError:  # a malformed Origin is a foreign one
            parsed, port, host = None, None, ""
        if not (parsed and host and port == self.port and self.allowed_host(host)
                and parsed.scheme == ("https" if self.tls else "http")):
            return 403, (f"cross-site request refused: Origin {value[:100]!r} is not this API; "
                         "the API is for puller's own client and scripts, not web pages")
        return None

    def content_type_problem(self, method: str, has_body: bool, value: str | None,
                             hook: bool) -> Problem:
        if method not in WRITES or not has_body:
            return None
        media_type = (value or "").split(";", 1)[0].strip().lower()
        allowed = HOOK_TYPES if hook else WRITE_TYPES
        if media_type not in allowed:
            return 415, (f"Content-Type {media_type or 'none'!r} is not accepted for a write; "
                         f"send {' or '.join(sorted(allowed))}")
        return None

    def authorized(self, header: str | None, query: str = "", hook: bool = False) -> bool:
        """The API key in ``Authorization: Bearer``; on the hook, the hook key too,
        there or as ``?key=`` (for senders that cannot set a header)."""
        keys = [self.apikey] + ([self.hook_key] if hook and self.hook_key else [])
        offered = []
        scheme, _, token = (header or "").strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            offered.append(token.strip().encode())
        if hook and query:
            offered += [key.encode() for key in urllib.parse.parse_qs(query).get("key", [])]
        return any(hmac.compare_digest(given, key) for given in offered for key in keys)
