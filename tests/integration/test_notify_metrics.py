"""Notifications and metrics of a real daemon: Apprise posts to a local receiver,
Prometheus text scraped over HTTP."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from puller import constants
from puller.daemon import Config, Daemon

from ..testenv import free_port, serving, wait_until


class Receiver:
    """A local HTTP server taking Apprise's json:// posts: it records them and
    answers ``status``, or never answers while ``hang`` (until closed)."""

    def __init__(self, status: int = 200, hang: bool = False):
        self.posts: list[dict] = []
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.posts.append(json.loads(body))
                if hang:
                    receiver.release.wait(30)
                    return
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="test-receiver")
        self.thread.start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.server.server_address[1]}/hook"

    def messages(self) -> list[str]:
        return [post["message"] for post in list(self.posts)]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def value(text: str, name: str, labels: str = "") -> float:
    pattern = "^" + re.escape(name + (f"{{{labels}}}" if labels else "")) + r" (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_a_deploy_is_told_once_and_the_metrics_move(live_node, images, receivers, monkeypatch):
    monkeypatch.setattr(constants, "NOTIFY_BATCH", 0.3)
    receiver, metrics_port = receivers(), free_port()
    live = live_node(notify=(receiver.url,), metrics=f"127.0.0.1:{metrics_port}")
    port = live.web("web-n", images.repo, tag="v1")
    serving(port, "v1")
    wait_until(lambda: receiver.messages(), what="the first deploy's notification")
    before = scrape(metrics_port)
    assert value(before, "puller_deploys_total", 'result="ok",service="web-n"') == 1
    live.web("web-n", images.repo, tag="v2", port=port)
    serving(port, "v2")
    wait_until(lambda: len(receiver.messages()) >= 2, what="the second deploy's notification")
    time.sleep(0.5)  # nothing more comes
    messages = receiver.messages()
    upgrade = [m for m in messages if "v1 → v2" in m]
    assert len(upgrade) == 1 and len(messages) == 2, messages
    assert upgrade[0].startswith(f"web-n on {live.name}: v1 → v2 (sha256:")
    assert "deployed" in upgrade[0]
    after = scrape(metrics_port)
    assert value(after, "puller_deploys_total", 'result="ok",service="web-n"') == 2
    assert value(after, "puller_pass_seconds_count") > value(before, "puller_pass_seconds_count")
    assert value(after, "puller_docker_calls_total") > value(before, "puller_docker_calls_total")
    assert value(after, "puller_service_up", 'service="web-n"') == 1
    assert 'version="v2"' in after and value(after, "puller_last_pass_timestamp_seconds") > 0


def test_a_hanging_or_failing_destination_does_not_delay_the_next_deploy(
        tmp_path, cleanup, images, receivers, monkeypatch):
    for name, setting in (("NOTIFY_BATCH", 0.0), ("NOTIFY_TIMEOUT", 6.0),
                          ("NOTIFY_RETRY_WAIT", 0.1)):
        monkeypatch.setattr(constants, name, setting)
    hanging, failing, good = receivers(hang=True), receivers(status=500), receivers()
    directory = tmp_path / "defs"
    directory.mkdir()
    config = Config(node=cleanup.node(), directory=str(directory), zeroconf=False,
                    state_dir=str(tmp_path / "state"), notify=(hanging.url, failing.url, good.url))
    with Daemon(config) as daemon:
        from .conftest import Node

        node = Node(daemon, str(directory), cleanup)
        port = node.web("web-h", images.repo, tag="v1")
        node.tick()
        serving(port, "v1")
        wait_until(lambda: hanging.posts, what="the hanging receiver to be called")
        node.web("web-h", images.repo, tag="v2", port=port)
        started = time.monotonic()
        report = node.tick()
        took = time.monotonic() - started
        assert all(outcome.ok for outcome in report.outcomes), report.outcomes
        serving(port, "v2")
        assert took < 4.0, f"the deploy took {took:.1f} s behind a hanging destination"
        # the other destinations are not held up by the hanging one either
        wait_until(lambda: any("v1 → v2" in m for m in good.messages()), timeout=5,
                   what="the good receiver to hear of v2")
        wait_until(lambda: len(failing.posts) >= 2, timeout=5,
                   what="the failing receiver to be tried again")
