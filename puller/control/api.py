"""The HTTP API on port+1: JSON in and out, errors as JSON with a message.

Bound to 127.0.0.1 unless an API key is set; with a key, every endpoint but
``GET /v1/health`` wants ``Authorization: Bearer <key>`` (compared in
constant time). Request bodies are size-capped.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable, Protocol

from .. import __version__, constants
from ..errors import PullerError
from ..images.hooks import HookError, Push, parse_notification
from ..node.definitions import Scan
from ..node.history import History
from ..node.report import PassReport, service_result
from . import services as _definition_endpoints  # noqa: F401  (registers their routes)
from .routing import ROUTES, ApiProblem, Request, route

log = logging.getLogger(__name__)


class NodeControl(Protocol):
    """What the API needs of the daemon, handed in at construction."""

    history: History

    @property
    def node(self) -> str: ...  # this node's name

    @property
    def directory(self) -> str: ...  # the definitions directory

    def scan(self) -> Scan: ...  # the definitions, as the daemon reads them

    def status(self) -> dict: ...  # this node's status (plain JSON data)

    def request_pass(self, services: Iterable[str] = (),
                     pushes: Iterable[Push] = ()) -> Future: ...  # -> PassReport

    def wake(self) -> None: ...  # a definition changed: pass soon

    def pull_here(self, name: str) -> dict: ...  # check and deploy now, wait for it

    def ask_cluster(self, kind: str, body: dict) -> list[dict]: ...  # every other node

    def peers(self) -> list[dict]: ...  # the peer table


class Api:
    """Serves the daemon's API in a thread; ``close()`` is idempotent."""

    def __init__(self, node: NodeControl, host: str, port: int, apikey: str | None = None):
        self.node = node
        self.apikey = apikey
        self.write_lock = threading.RLock()  # one definition write (or bulk PUT) at a time
        api = self

        class _Handler(_RequestHandler):
            owner = api

        self.server = ThreadingHTTPServer((host, port), _Handler)
        self.server.daemon_threads = True
        self.address = self.server.server_address
        self._thread: threading.Thread | None = None

    def start(self) -> "Api":
        self._thread = threading.Thread(target=self.server.serve_forever, name="puller-api",
                                        daemon=True)
        self._thread.start()
        log.info("HTTP API on http://%s:%s%s", self.address[0], self.address[1],
                 "" if self.apikey else " (no API key: loopback only)")
        return self

    def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self.server.shutdown()
            thread.join(timeout=5)
        self.server.server_close()

    def __enter__(self) -> "Api":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def authorized(self, header: str | None) -> bool:
        if not self.apikey:
            return True
        scheme, _, token = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self.apikey.encode())

    def key_in_query(self, query: str) -> bool:
        """Webhook senders that cannot set a header (Docker Hub) may pass ?key=."""
        import urllib.parse

        keys = urllib.parse.parse_qs(query).get("key", [])
        return bool(self.apikey) and any(
            hmac.compare_digest(key.encode(), self.apikey.encode()) for key in keys)

    def dispatch(self, request: Request) -> tuple[int, Any]:
        allowed = []
        for method, regex, handler, public in ROUTES:
            match = regex.match(request.path)
            if not match:
                continue
            allowed.append(method)
            if method != request.method:
                continue
            if not public and not self.authorized(request.headers.get("Authorization")) and not (
                    regex.pattern.startswith("^/v1/hooks/") and self.key_in_query(request.query)):
                raise ApiProblem(401, "missing or wrong API key: send Authorization: Bearer <key>")
            return handler(self, Request(request.method, request.path, match.groupdict(),
                                         request.body, request.headers, request.query))
        if allowed:
            raise ApiProblem(405, f"{request.method} is not allowed here; use {', '.join(allowed)}")
        raise ApiProblem(404, f"no such endpoint: {request.method} {request.path}")

    def wait(self, future, what: str) -> PassReport:
        try:
            return future.result(timeout=constants.API_PASS_TIMEOUT)
        except FutureTimeout:
            raise ApiProblem(504, f"{what} is taking longer than "
                                  f"{constants.API_PASS_TIMEOUT:.0f} s; it goes on") from None
        except PullerError as exc:
            raise ApiProblem(500, f"{what} failed: {exc}") from None


class _RequestHandler(BaseHTTPRequestHandler):
    owner: Api
    server_version = f"puller/{__version__}"
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds a client may stay silent before its connection is closed

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s %s", self.address_string(), format % args)

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionError, TimeoutError) as exc:  # a client that went away
            log.debug("API client %s: %s", self.client_address[0], exc)

    def _handle(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > constants.API_MAX_BODY:
            if 0 < length <= 8 * constants.API_MAX_BODY:
                # read what was sent, so the client sees the answer, not a reset
                while length > 0:
                    chunk = self.rfile.read(min(length, 1 << 16))
                    if not chunk:
                        break
                    length -= len(chunk)
                length = 1
            self._send(413 if length > 0 else 400,
                       {"error": f"the body must be at most {constants.API_MAX_BODY} bytes"},
                       close=True)
            return
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        path = path.rstrip("/") or "/"
        try:
            status, payload = self.owner.dispatch(Request(self.command, path, {}, body,
                                                          self.headers, query))
        except ApiProblem as exc:
            status, payload = exc.status, {"error": exc.message}
        except Exception:  # a bug must not kill the server thread
            log.exception("API %s %s failed", self.command, path)
            status, payload = 500, {"error": "internal error; see the daemon's log"}
        self._send(status, payload)

    def _send(self, status: int, payload: Any, close: bool = False) -> None:
        data = (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode()
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _handle


# Endpoints ----------------------------------------------------------------------


@route("GET", "/v1/health", public=True)
def health(api: Api, request: Request) -> tuple[int, Any]:
    return 200, {"status": "ok", "node": api.node.node, "version": __version__}


@route("GET", "/v1/status")
def status(api: Api, request: Request) -> tuple[int, Any]:
    return 200, api.node.status()


def _pull(api: Api, request: Request) -> tuple[int, Any]:
    name = request.params["name"]
    report = api.wait(api.node.request_pass(services=[name]), f"the pull of {name}")
    service = report.scan.services.get(name)
    if service is None:
        raise ApiProblem(404, f"no service {name!r} is defined")
    if not service.matches(api.node.node):
        raise ApiProblem(404, f"service {name!r} does not run on node {api.node.node}")
    return 200, {"node": api.node.node, **service_result(report, name, service.image_ref)}


route("POST", "/v1/services/{name}/pull")(_pull)
route("GET", "/v1/pull/{name}")(_pull)  # the original's path


@route("POST", "/v1/services/{name}/pull-all")
def pull_everywhere(api: Api, request: Request) -> tuple[int, Any]:
    """Every node checks and deploys the service now; one answer per node."""
    name = request.params["name"]
    results = [api.node.pull_here(name)]
    results += api.node.ask_cluster("pull", {"service": name})
    if name not in api.node.scan().services:
        raise ApiProblem(404, f"no service {name!r} is defined")
    return 200, {"service": name, "nodes": results}


route("GET", "/v1/propagate-and-pull/{name}")(pull_everywhere)  # the original's path


@route("POST", "/v1/hooks/registry")
def registry_hook(api: Api, request: Request) -> tuple[int, Any]:
    try:
        pushes = parse_notification(request.json())
    except HookError as exc:
        raise ApiProblem(400, f"not a registry notification: {exc}") from None
    if pushes:
        api.node.request_pass(pushes=pushes)  # the registry must not wait for a deploy
    return 202, {"accepted": len(pushes)}


@route("GET", "/v1/cluster")
def cluster(api: Api, request: Request) -> tuple[int, Any]:
    """Every reachable node's status (this one first), and this node's peers."""
    nodes = [api.node.status()]
    nodes += api.node.ask_cluster("status", {})
    return 200, {"nodes": nodes, "peers": api.node.peers()}
