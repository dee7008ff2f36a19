"""Freshness against registries that want credentials: Basic auth (htpasswd),
Distribution's Bearer token auth, and Google registries (an access token from a
service-account key), with a real registry, a real token server and the engine."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import tempfile
from dataclasses import dataclass

import pytest

from puller.images.credentials import Credentials, from_auths
from puller.daemon import Config, Daemon
from puller.images.gcloud import DEFAULT_GOOGLE_REGISTRIES, USERNAME as GOOGLE_USER
from puller.images.hooks import Push
from puller.images.reference import Reference
from puller.images.registry import AuthenticationError, RegistryClient

from ..testenv import (
    Registry,
    serving,
    TokenServer,
    build_image,
    docker_login,
    fetch,
    htpasswd_config,
    image_id,
    inspect,
    service_account_file,
    write_htpasswd,
)
from .conftest import Node

USER, PASSWORD = "alice", "alice-secret"
PUBLISHER, PUBLISHER_PASSWORD = "publisher", "publisher-secret"


@pytest.fixture(autouse=True)
def no_metadata_server(monkeypatch):
    """google-auth must never look for a Google Cloud metadata server."""
    monkeypatch.setenv("NO_GCE_CHECK", "True")


@pytest.fixture
def scratch():
    """A temp dir for secrets (docker configs, keys, htpasswd), removed even on failure."""
    with tempfile.TemporaryDirectory(prefix="puller-auth-") as directory:
        yield pathlib.Path(directory)


@contextlib.contextmanager
def docker_config(directory):
    """DOCKER_CONFIG for the docker commands run meanwhile (by this thread)."""
    old = os.environ.get("DOCKER_CONFIG")
    os.environ["DOCKER_CONFIG"] = str(directory)
    try:
        yield
    finally:
        if old is None:
            del os.environ["DOCKER_CONFIG"]
        else:
            os.environ["DOCKER_CONFIG"] = old


@dataclass
class Publisher:
    """Pushes images with credentials of its own, through the registry's other
    name (localhost), so the node's local tag of the same image stays put."""

    config: str
    cleanup: object

    @staticmethod
    def host(registry_host: str) -> str:
        return registry_host.replace("127.0.0.1", "localhost")

    def login(self, registry_host: str, user: str = PUBLISHER,
              password: str = PUBLISHER_PASSWORD) -> None:
        docker_login(self.host(registry_host), user, password, self.config)

    def push(self, registry_host: str, path: str, tag: str, content: str) -> str:
        ref = f"{self.host(registry_host)}/{path}:{tag}"
        with docker_config(self.config):
            digest = build_image(ref, content)
        # by id: the node pulls the very same image, and a moved tag leaves it untagged
        self.cleanup.images.append(image_id(ref))
        return digest


@pytest.fixture
def publisher(scratch, cleanup):
    return Publisher(str(scratch / "publisher-docker"), cleanup)


@pytest.fixture
def user_config(scratch, monkeypatch):
    """The host's docker config, as puller and the docker CLI find it (DOCKER_CONFIG)."""
    directory = scratch / "user-docker"
    directory.mkdir()
    (directory / "config.json").write_text('{"auths": {}}\n')
    monkeypatch.setenv("DOCKER_CONFIG", str(directory))
    return directory


def container_id(name: str) -> str | None:
    data = inspect(name)
    return data["Id"] if data else None


def warnings(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


# Basic auth --------------------------------------------------------------------------


@pytest.fixture
def basic_registry(engine, scratch):
    htpasswd = scratch / "htpasswd"
    write_htpasswd(htpasswd, {USER: PASSWORD, PUBLISHER: PUBLISHER_PASSWORD})
    registry = Registry(extra_config=htpasswd_config(htpasswd))
    try:
        yield registry.start()
    finally:
        registry.close()  # even when it failed to start


def test_basic_auth_a_moved_tag_is_read_by_a_head_and_deployed(
        node, basic_registry, user_config, publisher, cleanup):
    host = basic_registry.host
    docker_login(host, USER, PASSWORD, user_config)  # the node's own `docker login`
    publisher.login(host)
    path = f"basic-{cleanup.run_id}"
    ref = f"{host}/{path}:live"
    first = publisher.push(host, path, "live", "one")
    port = node.web("basic-auth", f"{host}/{path}", tag="live")

    report = node.tick()
    remote = report.remotes[ref]
    assert (remote.digest, remote.error, remote.fallback) == (first, None, False)
    serving(port, "one")

    second = publisher.push(host, path, "live", "two")
    asked = node.daemon.freshness.client.requests
    report = node.tick(pull_due=True)
    assert report.remotes[ref].digest == second
    # the registry is known to want Basic: one request, no second challenge
    assert node.daemon.freshness.client.requests - asked == 1
    assert [(pull.step.digest, pull.error) for pull in report.pulls] == [(second, None)]
    serving(port, "two")
    assert report.faults == {}


def test_basic_auth_without_a_login_falls_back_keeps_the_container_and_says_docker_login(
        node, basic_registry, user_config, publisher, cleanup, caplog):
    host = basic_registry.host
    docker_login(host, USER, PASSWORD, user_config)
    publisher.login(host)
    path = f"nologin-{cleanup.run_id}"
    ref = f"{host}/{path}:live"
    publisher.push(host, path, "live", "one")
    port = node.web("basic-nologin", f"{host}/{path}", tag="live")
    node.tick()
    serving(port, "one")
    name = node.daemon.config.container_name("basic-nologin")
    running = container_id(name)

    (user_config / "config.json").write_text('{"auths": {}}\n')  # the login is gone
    publisher.push(host, path, "live", "two")
    with caplog.at_level(logging.WARNING, logger="puller"):
        report = node.tick(pull_due=True)
    remote = report.remotes[ref]
    assert remote.fallback and remote.digest is None
    assert host in remote.error and f"docker login {host}" in remote.error
    # the fallback pull fails the same way, and changes nothing
    assert len(report.pulls) == 1 and "no basic auth credentials" in report.pulls[0].error
    assert report.plan.changes == ()
    assert container_id(name) == running and fetch(port) == "one"
    assert f"docker login {host}" in warnings(caplog)
    status = node.daemon.status()["services"]["basic-nologin"]
    assert host in status["error"] and "docker login" in status["error"]

    docker_login(host, USER, PASSWORD, user_config)  # logged in again: it recovers
    report = node.tick(pull_due=True)
    assert report.remotes[ref].error is None
    serving(port, "two")


# Bearer token auth (Distribution's `auth: token`) --------------------------------------


@pytest.fixture
def token_registry(engine):
    with TokenServer(users={USER: PASSWORD, PUBLISHER: PUBLISHER_PASSWORD}) as tokens:
        registry = Registry(extra_config=tokens.registry_auth_config())
        try:
            yield registry.start(), tokens
        finally:
            registry.close()


def test_token_auth_the_head_gets_a_token_with_the_docker_login_and_deploys(
        node, token_registry, user_config, publisher, cleanup):
    registry, tokens = token_registry
    host = registry.host
    docker_login(host, USER, PASSWORD, user_config)
    publisher.login(host)
    path = f"token-{cleanup.run_id}"
    ref = f"{host}/{path}:live"
    first = publisher.push(host, path, "live", "one")
    port = node.web("token-auth", f"{host}/{path}", tag="live")

    report = node.tick()
    assert report.remotes[ref].digest == first and report.remotes[ref].error is None
    serving(port, "one")
    mine = [r for r in tokens.requests if r.agent.startswith("Python-urllib")]
    assert [(r.user, r.scopes) for r in mine] == [(USER, (f"repository:{path}:pull",))]

    second = publisher.push(host, path, "live", "two")
    asked, issued = node.daemon.freshness.client.requests, len(tokens.requests)
    report = node.tick(pull_due=True)
    assert report.remotes[ref].digest == second
    assert node.daemon.freshness.client.requests - asked == 1  # the cached token
    assert not [r for r in tokens.requests[issued:] if r.agent.startswith("Python-urllib")]
    serving(port, "two")


def test_token_auth_refusals_name_the_registry_and_docker_login(token_registry, publisher,
                                                                cleanup):
    registry, tokens = token_registry
    host = registry.host
    publisher.login(host)
    path = f"refused-{cleanup.run_id}"
    publisher.push(host, path, "live", "one")
    reference = Reference.parse(f"{host}/{path}:live")
    for credentials, hint in [(None, f"run `docker login {host}`"),
                              (Credentials(USER, "wrong"), f"check `docker login {host}`")]:
        client = RegistryClient(lambda domain: credentials)
        with pytest.raises(AuthenticationError) as caught:
            client.head_digest(reference)
        assert host in str(caught.value) and hint in str(caught.value)
        assert tokens.url in str(caught.value)


# Google registries -------------------------------------------------------------------


@dataclass
class Google:
    registry: Registry
    tokens: TokenServer
    htpasswd: str
    key_file: str

    def rotate(self, token: str) -> None:
        """The token server issues a new token; the old one stops working."""
        self.tokens.google_token = token
        write_htpasswd(self.htpasswd, {GOOGLE_USER: token, PUBLISHER: PUBLISHER_PASSWORD})


@pytest.fixture
def google(engine, scratch, monkeypatch):
    with TokenServer(google_token="ya29.first") as tokens:
        htpasswd = str(scratch / "htpasswd")
        write_htpasswd(htpasswd, {GOOGLE_USER: "ya29.first", PUBLISHER: PUBLISHER_PASSWORD})
        registry = Registry(extra_config=htpasswd_config(htpasswd))
        try:
            registry.start()
            key_file = service_account_file(scratch / "service-account.json", tokens.url + "/token")
            monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", key_file)
            yield Google(registry, tokens, htpasswd, key_file)
        finally:
            registry.close()


def google_node(scratch, cleanup, google: Google, node_name: str | None = None) -> Node:
    """A node whose state dir (puller's own docker config) is in ``scratch``."""
    directory = scratch / "defs"
    directory.mkdir(exist_ok=True)
    config = Config(node=node_name or cleanup.node(), directory=str(directory),
                    state_dir=str(scratch / "state"),
                    google_registries=DEFAULT_GOOGLE_REGISTRIES + (google.registry.host,))
    return Node(Daemon(config), str(directory), cleanup)


def read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def test_google_registry_deploys_and_recovers_from_token_rotation(
        google, scratch, cleanup, user_config, publisher):
    host = google.registry.host
    publisher.login(host)
    home_config = os.path.join(os.path.expanduser("~"), ".docker", "config.json")
    before = read(str(user_config / "config.json")), read(home_config)
    path = f"gcr-{cleanup.run_id}"
    ref = f"{host}/{path}:live"
    first = publisher.push(host, path, "live", "one")
    node = google_node(scratch, cleanup, google)
    with node.daemon:
        port = node.web("google-auth", f"{host}/{path}", tag="live")
        report = node.tick()
        assert report.remotes[ref].digest == first and report.remotes[ref].error is None
        assert [pull.error for pull in report.pulls] == [None]
        serving(port, "one")
        assert len(google.tokens.google_requests()) == 1
        # logged in to puller's own docker config, in the state dir
        own = json.loads((scratch / "state" / "docker" / "config.json").read_text())
        assert from_auths(own, host) == Credentials(GOOGLE_USER, "ya29.first")

        # The token rotates: the HEAD is refused, the token refreshed once, the HEAD retried.
        google.rotate("ya29.second")
        second = publisher.push(host, path, "live", "two")
        report = node.tick(pull_due=True)
        assert report.remotes[ref].digest == second and report.remotes[ref].error is None
        assert [pull.error for pull in report.pulls] == [None]
        serving(port, "two")
        assert len(google.tokens.google_requests()) == 2

        # A push notification is only a trigger: the HEAD still decides (its digest
        # is a hint), so the refused HEAD refreshes the token as above.
        google.rotate("ya29.third")
        third = publisher.push(host, path, "live", "three")
        asked = node.daemon.freshness.client.requests
        report = node.tick(pushes=[Push(path, "live", third, host)])
        assert node.daemon.freshness.client.requests > asked
        assert report.remotes[ref].digest == third
        assert [pull.error for pull in report.pulls] == [None]
        serving(port, "three")
        assert len(google.tokens.google_requests()) == 3

        # A pinned digest is pulled without a HEAD: the pull is refused with the
        # stale login, then puller logs in with a fresh token and pulls again.
        google.rotate("ya29.fourth")
        fourth = publisher.push(host, path, "other", "four")
        definition = os.path.join(node.directory, "google-auth.yml")
        with open(definition) as handle:
            text = handle.read()
        with open(definition + ".tmp", "w") as handle:
            handle.write(text + f"digest: {fourth}\n")
        os.replace(definition + ".tmp", definition)
        report = node.tick()
        assert [pull.error for pull in report.pulls] == [None]
        serving(port, "four")
        assert len(google.tokens.google_requests()) == 4
        assert report.faults == {}

    # Neither the user's docker config nor ~/.docker was touched.
    assert (read(str(user_config / "config.json")), read(home_config)) == before


def test_google_registry_without_credentials_keeps_the_container_and_says_why(
        google, scratch, cleanup, user_config, publisher, monkeypatch, caplog):
    host = google.registry.host
    publisher.login(host)
    path = f"gcr-none-{cleanup.run_id}"
    ref = f"{host}/{path}:live"
    publisher.push(host, path, "live", "one")
    node = google_node(scratch, cleanup, google)
    with node.daemon:
        port = node.web("google-nocreds", f"{host}/{path}", tag="live")
        node.tick()
        serving(port, "one")
    name = node.daemon.config.container_name("google-nocreds")
    running = container_id(name)

    # puller restarts on a machine whose key file is gone
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(scratch / "missing.json"))
    publisher.push(host, path, "live", "two")
    restarted = google_node(scratch, cleanup, google, node_name=node.name)
    with restarted.daemon, caplog.at_level(logging.WARNING, logger="puller"):
        report = restarted.tick(pull_due=True)
        error = report.remotes[ref].error
        assert host in error and "GOOGLE_APPLICATION_CREDENTIALS" in error
        assert report.pulls == () and report.plan.changes == ()
        status = restarted.daemon.status()["services"]["google-nocreds"]
        assert host in status["error"] and "GOOGLE_APPLICATION_CREDENTIALS" in status["error"]
        assert status["state"] == "running"
    logged = warnings(caplog)
    assert host in logged and "GOOGLE_APPLICATION_CREDENTIALS" in logged
    assert container_id(name) == running and fetch(port) == "one"
    assert len(google.tokens.google_requests()) == 1  # only the first daemon got one
