"""The HTTP API on port+1: JSON in and out, errors as JSON with a message.

There is always a key: every endpoint but ``GET /v1/health`` wants
``Authorization: Bearer <key>``. Host, Origin, Content-Type and the key are
checked (``guard``) before a body is read; bodies are size-capped, a
definition as a file is. Served over TLS when given a context. The log
never shows a query string (a webhook's ``?key=``).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable, Protocol

from .. import __version__, constants
from ..errors import PullerError
from ..images.freshness import Freshness
from ..images.hooks import HookError, Push, parse_notification
from ..node.definitions import Scan
from ..node.history import History
from ..node.report import PassReport, service_result
from .guard import Guard, own_names
from .routing import ApiProblem, Request, Route, find, route
from .services import list_services  # noqa: F401  (importing it registers the definition routes)

log = logging.getLogger(__name__)


class NodeControl(Protocol):
    """What the API needs of the daemon, handed in at construction."""

    history: History
    freshness: Freshness  # the registry's digests; ``head(ref)`` asks it at once

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

    def approve_here(self, name: str) -> dict: ...  # deploy the update that waits, wait for it

    def ask_cluster(self, kind: str, body: dict) -> list[dict]: ...  # every other node

    def peers(self) -> list[dict]: ...  # the peer table

    def rollout(self, name: str) -> dict | None: ...  # where its rollout stands, if it has one


class Api:
    """Serves the daemon's API in a thread; ``close()`` is idempotent."""

    def __init__(self, node: NodeControl, host: str, port: int, apikey: str,
                 hook_key: str | None = None, hosts: Iterable[str] = (), tls=None):
        self.node = node
        self.write_lock = threading.RLock()  # one definition write (or bulk PUT) at a time
        api = self

        class _Handler(_RequestHandler):
            owner = api

        self.server = ThreadingHTTPServer((host, port), _Handler)
        self.server.daemon_threads = True
        if tls is not None:  # the handshake runs in the connection's thread, under its timeout
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True,
                                                 do_handshake_on_connect=False)
        self.address = self.server.server_address
        self.scheme = "https" if tls is not None else "http"
        self.guard = Guard(apikey, self.address[1], hook_key, own_names(hosts), tls is not None)
        self._thread: threading.Thread | None = None

    def start(self) -> "Api":
        self._thread = threading.Thread(target=self.server.serve_forever, name="puller-api",
                                        daemon=True)
        self._thread.start()
        log.info("HTTP API on %s://%s:%s", self.scheme, self.address[0], self.address[1])
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

    def admit(self, method: str, path: str, query: str, headers: Any, has_body: bool
              ) -> tuple[Route, dict[str, str]]:
        """The route for a request, once its headers pass every check (else ApiProblem)."""
        guard = self.guard
        problem = guard.host_problem(headers.get("Host")) or guard.origin_problem(
            headers.get("Origin"))
        if problem:
            raise ApiProblem(*problem)
        found, params = find(method, path)
        hook = found.access == "hook"
        problem = guard.content_type_problem(method, has_body, headers.get("Content-Type"), hook)
        if problem:
            raise ApiProblem(*problem)
        if found.access != "public" and not guard.authorized(headers.get("Authorization"),
                                                             query, hook):
            raise ApiProblem(401, "missing or wrong API key: send Authorization: Bearer <key>; "
                                  "the key is the daemon's -apikey-file or PULLER_APIKEY, else "
                                  "the api.key in its -state-dir, which only root may read")
        return found, params

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

    _unread = 0  # bytes of the body not read yet
    _trusted = False  # the request passed the checks: its body is worth reading

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        log.debug('%s "%s" %s', self.client_address[0], _loggable(self.requestline), code)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s %s", self.client_address[0], _loggable(format % args))

    def handle(self) -> None:
        try:
            handshake = getattr(self.connection, "do_handshake", None)  # TLS
            if handshake is not None:
                handshake()
            super().handle()
        except OSError as exc:  # a client that went away, or does not speak TLS
            log.debug("API client %s: %s", self.client_address[0], exc)

    def _handle(self) -> None:
        path, _, query = self.path.partition("?")
        path = path.rstrip("/") or "/"
        self._trusted = False
        try:
            status, payload = self._serve(path, query)
        except ApiProblem as exc:
            status, payload = exc.status, {"error": exc.message}
        except Exception:  # a bug must not kill the server thread
            log.exception("API %s %s failed", self.command, path)
            status, payload = 500, {"error": "internal error; see the daemon's log"}
        self._send(status, payload, close=not self._discard())

    def _serve(self, path: str, query: str) -> tuple[int, Any]:
        if "Transfer-Encoding" in self.headers:
            self._unread = -1
            raise ApiProblem(411, "send the body with a Content-Length; chunked bodies are "
                                  "not read")
        try:
            self._unread = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self._unread = -1
        if self._unread < 0:
            raise ApiProblem(400, "malformed Content-Length")
        found, params = self.owner.admit(self.command, path, query, self.headers,
                                         has_body=self._unread > 0)
        self._trusted = True
        if self._unread > found.max_body:
            what = ("a definition, as for a file" if found.max_body < constants.API_MAX_BODY
                    else "the body")
            raise ApiProblem(413, f"{what} must be at most {found.max_body} bytes")
        body = self.rfile.read(self._unread) if self._unread else b""
        self._unread = 0
        return found.handler(self.owner, Request(self.command, path, params, body,
                                                 self.headers, query))

    def _discard(self) -> bool:
        """Read what is left of a refused body, so the client sees the answer rather
        than a reset: a little for a stranger, more for a client with the key.
        False when the connection must close instead."""
        left = self._unread
        limit = 8 * constants.API_MAX_BODY if self._trusted else constants.API_DISCARD_UNTRUSTED
        if left < 0 or left > limit:
            return False
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                return False
            left -= len(chunk)
        self._unread = 0
        return True

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


def _loggable(text: str) -> str:
    """A request line for the log: no query string (a webhook's ?key=), no control
    characters."""
    return re.sub(r"[\x00-\x1f\x7f]", "?", re.sub(r"\?\S*", "?...", text))


# Endpoints ----------------------------------------------------------------------


@route("GET", "/v1/health", access="public")
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
    answer = {"service": name, "nodes": results}
    if "wait=0" not in request.query.split("&"):  # a rollout: wait for it to end
        digests = {r["registry_digest"] for r in results if r.get("registry_digest")}
        held = _held(results)  # it waits for a person (update: notify|manual), not for time
        rollout = await_rollout(api.node, name, digests, timeout=0 if held else
                                constants.API_PASS_TIMEOUT)
        if rollout is not None:
            answer["rollout"] = {**rollout, "held": held} if held else rollout
    return 200, answer


def _held(results: list[dict]) -> dict[str, str]:
    """The nodes whose answer holds the new image for approval: node → why."""
    return {str(r.get("node")): step["reason"] for r in results
            for step in r.get("steps") or [] if step.get("action") == "hold"}


def await_rollout(node: "NodeControl", name: str, digests: set[str],
                  timeout: float = constants.API_PASS_TIMEOUT) -> dict | None:
    """This node's view of ``name``'s rollout once it ended for its current
    definition (and for the registry's digest, when known); None without a rollout."""
    deadline = time.monotonic() + timeout
    while True:
        view = node.rollout(name)
        if view is None:
            return None
        release = view.get("release") or {}
        if (view.get("ended") and release.get("definition") == view.get("definition")
                and (not digests or release.get("digest") in digests)):
            return {**view, "ok": _succeeded(view)}
        if time.monotonic() >= deadline:
            return {**view, "ok": False, "timed_out": timeout}
        time.sleep(0.25)


def _succeeded(view: dict) -> bool:
    """Every node of the rollout runs the release."""
    return not view.get("halted") and all(
        item.get("state") == "done" for item in (view.get("nodes") or {}).values())


route("GET", "/v1/propagate-and-pull/{name}")(pull_everywhere)  # the original's path


@route("POST", "/v1/services/{name}/approve")
def approve(api: Api, request: Request) -> tuple[int, Any]:
    """Deploy the new image that waits for approval (update: manual|notify) here."""
    name = request.params["name"]
    if name not in api.node.scan().services:
        raise ApiProblem(404, f"no service {name!r} is defined")
    result = api.node.approve_here(name)
    if result.get("error"):
        raise ApiProblem(500, f"the approval of {name} failed: {result['error']}")
    if not result["runs_here"]:
        raise ApiProblem(404, f"service {name!r} does not run on node {api.node.node}")
    if not result["approved"]:
        raise ApiProblem(409, result["reason"])
    return 200, result


@route("POST", "/v1/services/{name}/approve-all")
def approve_everywhere(api: Api, request: Request) -> tuple[int, Any]:
    """Every node deploys the new image of the service that waits there; one answer per node."""
    name = request.params["name"]
    if name not in api.node.scan().services:
        raise ApiProblem(404, f"no service {name!r} is defined")
    results = [api.node.approve_here(name)]
    results += api.node.ask_cluster("approve", {"service": name})
    return 200, {"service": name, "nodes": results}


@route("POST", "/v1/hooks/registry", access="hook")
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
