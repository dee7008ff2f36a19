"""One slow pull never holds up the other services.

The slow image comes through a relay in front of the real test registry
that answers the registry API at once but holds every layer download until
the test lets it go.
"""

from __future__ import annotations

import http.client
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ..testenv import build_image, docker, fetch, free_port, wait_until


class SlowRegistry:
    """Forwards to ``upstream``; blob downloads wait for ``release``."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.release = threading.Event()
        self.blob_requests = 0
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                if "/blobs/" in self.path:
                    relay.blob_requests += 1
                    relay.release.wait(timeout=120)
                self.forward()

            do_HEAD = do_GET  # noqa: N815

            def forward(self):
                host, port = relay.upstream.split(":")
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(self.command, self.path, headers=headers)
                answer = conn.getresponse()
                body = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body) if self.command != "HEAD"
                                                       else answer.getheader("Content-Length", 0)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
                conn.close()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "SlowRegistry":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def slow_registry(registry):
    with SlowRegistry(registry.host) as slow:
        yield slow


def test_a_slow_pull_does_not_hold_up_the_other_services(live_node, registry, images,
                                                         slow_registry):
    path = f"slow-{uuid.uuid4().hex[:8]}"
    build_image(f"{registry.host}/{path}:v1", "slow v1")
    docker("image", "rm", f"{registry.host}/{path}:v1")
    node = live_node(interval=600.0)
    slow_port = node.web("slow", f"{slow_registry.host}/{path}", tag="v1")
    wait_until(lambda: slow_registry.blob_requests > 0, timeout=30,
               what="the slow image's download to begin")
    started = time.monotonic()
    fast_port = node.web("fast", images.repo, tag="v1")
    wait_until(lambda: fetch(fast_port) == "v1", timeout=15,
               what="the other service deployed while the slow pull hangs")
    status, body = node.call("POST", "/v1/services/fast/pull")
    assert status == 200 and body["service"] == "fast"
    assert time.monotonic() - started < 20
    assert "pulling" in node.daemon.status()["services"]["slow"]["error"]
    assert fetch(slow_port) is None
    slow_registry.release.set()
    wait_until(lambda: fetch(slow_port) == "slow v1", timeout=60,
               what="the slow service deployed once its image arrived")
