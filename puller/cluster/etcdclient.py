"""A small etcd v3 client over the HTTP gateway (``etcd3gw``), for the store backend.

``etcd3gw`` gives the session, the URL and the error mapping; this module adds
what the backend needs and ``etcd3gw`` lacks: several endpoints (the next is
tried when one stops answering), user/password auth, compare-and-swap on a
key's ``mod_revision``, and a watch that resumes from a revision and says
when that revision was compacted away. Keys and values are ``str`` here;
base64 stays inside. Every failure to talk to etcd is an ``EtcdDown``.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
from dataclasses import dataclass
from typing import Any, Iterator

import etcd3gw
import requests
from etcd3gw import exceptions as etcd_errors

from ..errors import PullerError
from .storeurl import StoreConfig

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 5.0  # seconds for one request
INVALID_TOKEN = "invalid auth token"
WATCH_IDLE = 15.0  # seconds a watch may stay silent before it is opened again


class EtcdDown(PullerError):
    """No endpoint answered (or one answered with an error)."""


class Compacted(Exception):
    """The watch's start revision was compacted: resync the prefix in full."""

    def __init__(self, revision: int):
        super().__init__(f"revision compacted up to {revision}")
        self.revision = revision


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: str | None  # None: deleted
    mod_revision: int


@dataclass(frozen=True)
class Outcome:
    """The result of a compare-and-swap: done, or the key as it is now."""

    ok: bool
    revision: int  # the store's revision after the transaction
    current: KeyValue | None  # when not ok: the key now (None: absent)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _unb64(data: str | None) -> str:
    return base64.b64decode(data or "").decode("utf-8", "replace")


def prefix_end(prefix: str) -> str:
    """The range end that covers every key starting with ``prefix``."""
    raw = prefix.encode("utf-8")
    return (raw[:-1] + bytes([raw[-1] + 1])).decode("utf-8")


def _kv(item: dict, deleted: bool = False) -> KeyValue:
    return KeyValue(_unb64(item.get("key")), None if deleted else _unb64(item.get("value")),
                    int(item.get("mod_revision", 0)))


class EtcdClient:
    """Talks to the first endpoint that answers; thread-safe."""

    def __init__(self, config: StoreConfig):
        self.config = config
        self._lock = threading.Lock()
        self._index = 0
        self._clients = [etcd3gw.client(
            host=host, port=port, protocol="https" if config.tls else "http",
            ca_cert=config.ca, cert_cert=config.cert, cert_key=config.key,
            timeout=REQUEST_TIMEOUT, api_path="/v3/") for host, port in config.endpoints]
        if config.ca:
            # requests lets REQUESTS_CA_BUNDLE (set on many hosts) override a
            # session's CA: the store's own CA must decide, whatever the environment
            for client in self._clients:
                client.session.trust_env = False
        self._token: str | None = None
        self._watching: set[requests.Response] = set()  # open watches, closed by interrupt()

    @property
    def endpoint(self) -> str:
        host, port = self.config.endpoints[self._index]
        return f"{host}:{port}"

    def _client(self) -> Any:
        with self._lock:
            return self._clients[self._index]

    def _failed_over(self, client: Any) -> None:
        with self._lock:
            if self._clients[self._index] is client:
                self._index = (self._index + 1) % len(self._clients)
                self._token = None

    def call(self, path: str, body: dict) -> dict:
        """POST one request; on a dead endpoint, the next one is tried once each.
        An auth token etcd no longer knows (they expire) is renewed once."""
        last: Exception | None = None
        for _ in self._clients:
            client = self._client()
            try:
                try:
                    self._authenticate(client)
                    return client.post(client.get_url(path), json=body)
                except etcd_errors.Etcd3Exception as exc:
                    if not self.config.user or INVALID_TOKEN not in _detail(exc):
                        raise
                    self._authenticate(client, renew=True)
                    return client.post(client.get_url(path), json=body)
            except (etcd_errors.Etcd3Exception, requests.RequestException, ValueError) as exc:
                last = exc
                self._failed_over(client)
        raise EtcdDown(f"etcd does not answer at {', '.join(self._names())}: "
                       f"{_explain(last, self.config)}")

    def _names(self) -> list[str]:
        return [f"{host}:{port}" for host, port in self.config.endpoints]

    def _authenticate(self, client: Any, renew: bool = False) -> None:
        headers = client.session.headers
        if not self.config.user or (not renew and self._token and "Authorization" in headers):
            return
        headers.pop("Authorization", None)  # etcd refuses even a login that shows a stale token
        reply = client.post(client.get_url("/auth/authenticate"),
                            json={"name": self.config.user, "password": self.config.password})
        self._token = reply["token"]
        headers["Authorization"] = self._token

    # Keys ----------------------------------------------------------------------------

    def get_prefix(self, prefix: str) -> tuple[int, list[KeyValue]]:
        """The store's revision and every key under ``prefix``."""
        reply = self.call("/kv/range", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))})
        return int(reply["header"]["revision"]), [_kv(item) for item in reply.get("kvs", [])]

    def get(self, key: str) -> KeyValue | None:
        reply = self.call("/kv/range", {"key": _b64(key)})
        kvs = reply.get("kvs", [])
        return _kv(kvs[0]) if kvs else None

    def put(self, key: str, value: str, lease: int | None = None) -> int:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = lease
        return int(self.call("/kv/put", body)["header"]["revision"])

    def swap(self, key: str, value: str | None, mod_revision: int) -> Outcome:
        """Put ``value`` (or delete, for None) only if the key's ``mod_revision``
        is still ``mod_revision`` (0: the key must not exist)."""
        if value is None:
            change = {"request_delete_range": {"key": _b64(key)}}
        else:
            change = {"request_put": {"key": _b64(key), "value": _b64(value)}}
        reply = self.call("/kv/txn", {
            "compare": [{"key": _b64(key), "result": "EQUAL", "target": "MOD",
                         "mod_revision": mod_revision}],
            "success": [change], "failure": [{"request_range": {"key": _b64(key)}}]})
        revision = int(reply["header"]["revision"])
        if reply.get("succeeded"):
            return Outcome(True, revision, None)
        kvs = (reply.get("responses") or [{}])[0].get("response_range", {}).get("kvs", [])
        return Outcome(False, revision, _kv(kvs[0]) if kvs else None)

    # Leases --------------------------------------------------------------------------

    def grant(self, ttl: int) -> int:
        return int(self.call("/lease/grant", {"TTL": ttl})["ID"])

    def keepalive(self, lease: int) -> bool:
        """False when the lease expired (a new one is needed)."""
        reply = self.call("/lease/keepalive", {"ID": lease})
        return int((reply.get("result") or {}).get("TTL", 0)) > 0

    def revoke(self, lease: int) -> None:
        self.call("/lease/revoke", {"ID": lease})

    # Watch ---------------------------------------------------------------------------

    def watch(self, prefix: str, start_revision: int,
              stop: threading.Event) -> Iterator[tuple[int, list[KeyValue]]]:
        """``(revision, changes)`` from ``start_revision`` on, until the stream ends
        (then open it again from the last revision), ``stop`` is set, or etcd is
        gone (``EtcdDown``). ``Compacted`` when the revision is no longer kept."""
        client = self._client()
        request = {"create_request": {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix)),
                                      "start_revision": start_revision}}
        try:
            self._authenticate(client)
            response = client.session.post(client.get_url("/watch"), json=request, stream=True,
                                           timeout=(REQUEST_TIMEOUT, WATCH_IDLE))
        except (etcd_errors.Etcd3Exception, requests.RequestException) as exc:
            self._failed_over(client)
            raise EtcdDown(f"etcd at {self.endpoint} does not answer a watch: {exc}") from None
        self._watching.add(response)
        with response:
            try:
                yield from self._read_watch(response, stop)
            except requests.exceptions.ConnectionError as exc:
                if "timed out" in str(exc).lower():
                    return  # quiet for WATCH_IDLE: the caller opens it again
                self._failed_over(client)
                raise EtcdDown(f"the watch on {self.endpoint} broke: {exc}") from None
            except requests.RequestException as exc:
                self._failed_over(client)
                raise EtcdDown(f"the watch on {self.endpoint} broke: {exc}") from None

    def interrupt(self) -> None:
        """Wake the threads waiting in ``watch`` (from another thread, at close)."""
        watching, self._watching = self._watching, set()
        for response in watching:
            try:
                sock = socket.fromfd(response.raw._fp.fileno(), socket.AF_INET,
                                     socket.SOCK_STREAM)
                sock.shutdown(socket.SHUT_RDWR)  # the socket, not the duplicated descriptor
                sock.close()
            except Exception:  # already closed
                pass

    @staticmethod
    def _read_watch(response: requests.Response,
                    stop: threading.Event) -> Iterator[tuple[int, list[KeyValue]]]:
        if response.status_code != 200:
            raise EtcdDown(f"etcd refused the watch: HTTP {response.status_code}")
        for line in response.iter_lines(chunk_size=None):
            if stop.is_set():
                return
            if not line.strip():
                continue
            result = json.loads(line).get("result") or {}
            if int(result.get("compact_revision", 0)):
                raise Compacted(int(result["compact_revision"]))
            if result.get("canceled"):
                raise EtcdDown(f"etcd canceled the watch: {result.get('cancel_reason')}")
            revision = int((result.get("header") or {}).get("revision", 0))
            events = [_kv(e["kv"], deleted=e.get("type") == "DELETE")
                      for e in result.get("events", [])]
            if events:
                yield revision, events


def _detail(exc: BaseException | None) -> str:
    return str(getattr(exc, "detail_text", None) or exc)


# How a plain-HTTP request to a TLS port ends: the server answers in words, hangs up before
# answering, or resets the connection (which one depends on timing).
PLAIN_TO_TLS_SIGNS = ("HTTP request to an HTTPS", "RemoteDisconnected", "Connection aborted",
                      "Connection reset")


# How a TLS handshake without the client certificate etcd wants ends: an alert, or the
# connection closed or reset (which one depends on timing and the TLS version).
NO_CLIENT_CERT_SIGNS = ("BAD_CERTIFICATE", "CERTIFICATE_REQUIRED", "EOF occurred",
                        "Connection aborted", "Connection reset")


def _explain(exc: BaseException | None, config: StoreConfig) -> str:
    """Why a request failed, with the setting that fixes a TLS mismatch."""
    detail = _detail(exc)
    if "CERTIFICATE_VERIFY_FAILED" in detail:
        return (f"etcd's certificate is not trusted ({detail}); give the CA that signed it "
                "with -store-ca")
    if config.tls and not config.cert and any(sign in detail for sign in NO_CLIENT_CERT_SIGNS):
        return (f"etcd ended the TLS handshake ({detail}); it may want a client certificate: "
                "give one with -store-cert and -store-key")
    if not config.tls and any(sign in detail for sign in PLAIN_TO_TLS_SIGNS):
        return (f"{detail}; if etcd speaks TLS, give its CA with -store-ca (and a client "
                "certificate with -store-cert and -store-key, if it wants one)")
    return detail
