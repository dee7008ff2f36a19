"""``track: RANGE`` against a real registry and engine: the tags listing (pages,
Bearer auth) and a tracked service that follows its range, and only its range.

Docker Distribution 2.8 (Debian's) answers ``tags/list`` whole, ignoring
``n``; newer registries (Distribution 3, Docker Hub, GitLab, Harbor) page it
with ``n``, ``last`` and a ``Link`` header. ``PagingProxy`` stands in front of
the real registry and pages its real answer as the distribution spec says,
passing everything else (auth challenges, tokens) through untouched.
"""

from __future__ import annotations

import http.server
import json
import threading
import urllib.error
import urllib.parse
import urllib.request

import pytest

from puller.images.credentials import Credentials
from puller.images.hooks import Push
from puller.images.reference import Reference
from puller.images.registry import AuthenticationError, RegistryClient, RegistryError

from ..testenv import (Registry, TokenServer, build_image, docker_login, fetch, free_port,
                       serving)

USER, PASSWORD = "tracker", "tracker-secret"


def publish(host: str, path: str, tag: str, content: str) -> str:
    """Push through the registry's other name (localhost), so the node's own
    local tags stay as its pulls left them."""
    return build_image(f"{host.replace('127.0.0.1', 'localhost')}/{path}:{tag}", content)


class PagingProxy:
    """``tags/list`` of ``upstream`` in pages of ``n`` (spec: sorted, after ``last``,
    ``Link: <...>; rel="next"``); every other request and answer passed through."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.pages: list[str] = []  # the tags/list requests served
        self._server = None
        self._thread = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "PagingProxy":
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                proxy._forward(self)

            def do_HEAD(self):  # noqa: N802
                proxy._forward(self)

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, name="test-paging-proxy")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _forward(self, handler) -> None:
        url = urllib.parse.urlsplit(handler.path)
        headers = {k: v for k, v in handler.headers.items() if k in ("Authorization", "Accept")}
        request = urllib.request.Request(f"http://{self.upstream}{url.path}", headers=headers,
                                         method=handler.command)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, answer, body = response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                status, answer, body = exc.code, exc.headers, exc.read()
        extra = {}
        if status == 200 and url.path.endswith("/tags/list"):
            self.pages.append(handler.path)
            body, extra = self._page(url, json.loads(body))
        handler.send_response(status)
        for name in ("Content-Type", "WWW-Authenticate", "Docker-Content-Digest"):
            if answer.get(name):
                handler.send_header(name, answer[name])
        for name, value in extra.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command == "GET":
            handler.wfile.write(body)

    @staticmethod
    def _page(url, data: dict) -> tuple[bytes, dict]:
        query = urllib.parse.parse_qs(url.query)
        n, last = int(query.get("n", ["0"])[0]), query.get("last", [None])[0]
        tags = sorted(tag for tag in data.get("tags") or [] if last is None or tag > last)
        extra = {}
        if n and len(tags) > n:
            tags = tags[:n]
            following = urllib.parse.urlencode({"n": n, "last": tags[-1]})
            extra["Link"] = f'<{url.path}?{following}>; rel="next"'
        return json.dumps({"name": data.get("name"), "tags": tags}).encode(), extra


def write_tracked(node, name: str, repo: str, range_: str, port: int) -> None:
    bash = (f"docker run -p 127.0.0.1:{port}:80 --init --label {node.cleanup.label} "
            f"{repo} httpd -f -p 80 -h /www")
    node.write(name, bash=f"'{bash}'", repo=repo, track=f"'{range_}'", node="''",
               health_timeout="0")


def test_tags_are_listed_page_by_page(registry, cleanup):
    path = f"pages-{cleanup.run_id}"
    tags = ["1.0.0", "1.1.0", "v1.2.0", "2.0.0", "latest"]
    for tag in tags:
        publish(registry.host, path, tag, tag)
    client = RegistryClient(lambda domain: None)
    # the registry itself: one answer, whole
    assert sorted(client.list_tags(Reference.parse(f"{registry.host}/{path}"))) == sorted(tags)
    with PagingProxy(registry.host) as proxy:
        reference = Reference.parse(f"{proxy.host}/{path}")
        before = client.requests
        assert sorted(client.list_tags(reference, page_size=2)) == sorted(tags)
        assert client.requests - before == 3  # 2 + 2 + 1: every page, each once
        assert proxy.pages == [f"/v2/{path}/tags/list?n=2", f"/v2/{path}/tags/list?n=2&last=1.1.0",
                               f"/v2/{path}/tags/list?n=2&last=latest"]
        with pytest.raises(RegistryError, match=f"repository {path}-missing was not found"):
            client.list_tags(Reference.parse(f"{proxy.host}/{path}-missing"), page_size=2)


def test_tags_are_listed_with_a_bearer_token_and_refused_without(engine, cleanup, tmp_path,
                                                                 monkeypatch):
    with TokenServer(users={USER: PASSWORD}) as tokens:
        registry = Registry(extra_config=tokens.registry_auth_config())
        try:
            registry.start()
            _token_auth(registry, tokens, cleanup, tmp_path, monkeypatch)
        finally:
            registry.close()


def _token_auth(registry, tokens, cleanup, tmp_path, monkeypatch):
    config = tmp_path / "docker"  # the publisher's docker login, not the user's
    docker_login(registry.host.replace("127.0.0.1", "localhost"), USER, PASSWORD, config)
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    path = f"bearer-{cleanup.run_id}"
    for tag in ("1.0.0", "1.1.0", "1.2.0"):
        publish(registry.host, path, tag, tag)
    with PagingProxy(registry.host) as proxy:
        reference = Reference.parse(f"{proxy.host}/{path}")
        client = RegistryClient(lambda domain: Credentials(USER, PASSWORD))
        assert sorted(client.list_tags(reference, page_size=2)) == ["1.0.0", "1.1.0", "1.2.0"]
        assert len(proxy.pages) == 2
        mine = [r for r in tokens.requests if r.agent.startswith("Python-urllib")]
        # one token, for pulling that repository, reused for the second page
        assert [(r.user, r.scopes) for r in mine] == [(USER, (f"repository:{path}:pull",))]
        with pytest.raises(AuthenticationError, match=f"run `docker login {proxy.host}`"):
            RegistryClient(lambda domain: None).list_tags(reference)


def test_a_tracked_service_follows_its_range_and_only_its_range(node, registry, cleanup):
    path = f"track-{cleanup.run_id}"
    repo = f"{registry.host}/{path}"
    for tag in ("0.9.0", "1.0.0", "1.2.0", "1.3.0-rc.1", "latest"):
        publish(registry.host, path, tag, tag)
    port = free_port()
    write_tracked(node, "tracked", repo, "^1.0", port)

    report = node.tick()
    assert report.faults == {}
    serving(port, "1.2.0")  # the highest 1.x; not the pre-release, not latest
    status = node.daemon.status()["services"]["tracked"]
    assert (status["track"], status["resolved"], status["image"]) == ("^1.0", "1.2.0",
                                                                     f"{repo}:1.2.0")

    digest = publish(registry.host, path, "1.3.0", "1.3.0")
    node.tick()  # not due: nothing asked, nothing changes
    assert fetch(port) == "1.2.0"
    report = node.tick(pull_due=True)  # a due check: the new tag is listed, pulled, run
    serving(port, "1.3.0")
    status = node.daemon.status()["services"]["tracked"]
    assert (status["resolved"], status["running_digest"]) == ("1.3.0", digest)
    revisions = node.daemon.history.revisions("tracked")
    assert [(r["source"], r["fields"]["tag"]) for r in revisions] == [("file", "1.2.0"),
                                                                      ("track", "1.3.0")]

    publish(registry.host, path, "2.0.0", "2.0.0")  # outside the range
    report = node.tick(pull_due=True)
    assert report.plan.changes == () and fetch(port) == "1.3.0"
    assert node.daemon.status()["services"]["tracked"]["resolved"] == "1.3.0"

    # a registry notification of a push lists the tags at once, like it checks a digest
    publish(registry.host, path, "1.4.0", "1.4.0")
    node.tick(pushes=[Push(path, "1.4.0", host=registry.host)])
    serving(port, "1.4.0")


def test_a_range_nothing_matches_waits_with_why_and_a_new_tag_ends_it(node, registry, cleanup):
    path = f"trackwait-{cleanup.run_id}"
    repo = f"{registry.host}/{path}"
    publish(registry.host, path, "1.0.0", "1.0.0")
    port = free_port()
    write_tracked(node, "waits", repo, "^2", port)
    report = node.tick()
    assert report.faults == {"service waits": f"waits: no tag of {repo} matches ^2 yet"}
    assert node.daemon.status()["services"]["waits"]["error"] == (
        f"no tag of {repo} matches ^2 yet")
    publish(registry.host, path, "2.1.0", "2.1.0")
    node.tick(pull_due=True)
    serving(port, "2.1.0")


def test_the_resolution_survives_a_registry_outage_and_a_restart(tmp_path, registry, cleanup):
    from puller.daemon import Config, Daemon

    from .conftest import Node

    own = Registry().start()
    try:
        path = f"trackdown-{cleanup.run_id}"
        repo = f"{own.host}/{path}"
        for tag in ("1.0.0", "1.1.0"):
            publish(own.host, path, tag, tag)
        config = Config(node=cleanup.node(), directory=str(tmp_path / "defs"),
                        state_dir=str(tmp_path / "state"))
        (tmp_path / "defs").mkdir()
        port = free_port()
        with Daemon(config) as daemon:
            node = Node(daemon, config.directory, cleanup)
            write_tracked(node, "steady", repo, "~1", port)
            node.tick()
            serving(port, "1.1.0")
        own.stop()
        with Daemon(config) as daemon:  # restarted while the registry is down
            report = Node(daemon, config.directory, cleanup).tick()
            assert report.plan.changes == () and fetch(port) == "1.1.0"
            assert f"registry {repo} tags" in report.faults
            assert daemon.status()["services"]["steady"]["resolved"] == "1.1.0"
    finally:
        own.close()
