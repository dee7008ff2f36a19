"""The credentials docker itself would use: docker config ``auths``, and the
credential helper protocol with a real (tiny) helper program on PATH; Google
access tokens and puller's own logins for Google registries."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from puller.images import credentials
from puller.images.credentials import (
    DOCKER_HUB_AUTH_KEY,
    Credentials,
    from_auths,
    from_helper,
    helper_for,
    lookup,
)
from puller.images.gcloud import (
    DEFAULT_GOOGLE_REGISTRIES,
    USERNAME as GOOGLE_USER,
    GoogleAuthError,
    GoogleLogins,
    GoogleTokens,
    is_google_registry,
)


def auth(user: str, password: str) -> dict:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


# from_auths ---------------------------------------------------------------------

@pytest.mark.parametrize("key, registry", [
    ("127.0.0.1:5000", "127.0.0.1:5000"),
    ("https://127.0.0.1:5000", "127.0.0.1:5000"),  # `docker login https://...` keeps the scheme
    ("http://127.0.0.1:5000", "127.0.0.1:5000"),
    ("https://registry.example.com/v1/", "registry.example.com"),
    ("https://registry.example.com/v2/", "registry.example.com"),
    ("registry.example.com/", "registry.example.com"),  # legacy keys: docker matches the host part
    ("https://gcr.io/some/path", "gcr.io"),
    (DOCKER_HUB_AUTH_KEY, "docker.io"),
    (DOCKER_HUB_AUTH_KEY, "index.docker.io"),
    ("index.docker.io", "docker.io"),
    ("docker.io", "docker.io"),
])
def test_auths_by_any_key_docker_accepts(key, registry):
    config = {"auths": {key: auth("alice", "s3cret")}}
    assert from_auths(config, registry) == Credentials("alice", "s3cret")


def test_docker_hub_prefers_its_official_key():
    config = {"auths": {"docker.io": auth("old", "x"), DOCKER_HUB_AUTH_KEY: auth("hub", "y")}}
    assert from_auths(config, "docker.io") == Credentials("hub", "y")


@pytest.mark.parametrize("config", [
    {},
    {"auths": {}},
    {"auths": {"other.example.com": auth("a", "b")}},
    {"auths": {"127.0.0.1:50000": auth("a", "b")}},  # another port is another registry
    {"auths": {"https://127.0.0.1:5000.evil": auth("a", "b")}},
    {"auths": {"127.0.0.1:5000": {}}},
    {"auths": {"127.0.0.1:5000": {"auth": ""}}},
    {"auths": {"127.0.0.1:5000": {"auth": base64.b64encode(b":nouser").decode()}}},
    {"auths": {"127.0.0.1:5000": "not an object"}},
    {"auths": ["not", "an", "object"]},
    {"auths": {"127.0.0.1:5000": {"auth": 42}}},
    {"auths": {"127.0.0.1:5000": {"username": "a", "password": None}}},
])
def test_no_credentials(config):
    assert from_auths(config, "127.0.0.1:5000") is None


def test_username_and_password_fields():
    config = {"auths": {"r.example.com": {"username": "bob", "password": "pw"}}}
    assert from_auths(config, "r.example.com") == Credentials("bob", "pw")


def test_a_password_may_hold_colons():
    config = {"auths": {"r.example.com": auth("bob", "a:b:c")}}
    assert from_auths(config, "r.example.com") == Credentials("bob", "a:b:c")


def test_bad_base64_is_skipped_with_a_warning(caplog):
    config = {"auths": {"r.example.com": {"auth": "%%%not base64%%%" * 3 + "\xff"}}}
    with caplog.at_level(logging.WARNING, logger="puller.images.credentials"):
        assert from_auths(config, "r.example.com") is None
    assert "r.example.com" in caplog.text


def test_secrets_never_show_in_repr():
    assert "s3cret" not in repr(Credentials("alice", "s3cret"))


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(min_size=1).filter(lambda u: ":" not in u), st.text())
def test_auth_round_trip(user, password):
    config = {"auths": {"r.example.com": auth(user, password)}}
    assert from_auths(config, "r.example.com") == Credentials(user, password)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=10), inner, max_size=3), max_leaves=12)


ENTRY = st.fixed_dictionaries({}, optional={"auth": JSON | st.text(), "username": JSON,
                                           "password": JSON})
CONFIGS = st.fixed_dictionaries({}, optional={
    "auths": JSON | st.dictionaries(
        st.sampled_from(["r.example.com", "https://r.example.com/", DOCKER_HUB_AUTH_KEY]),
        JSON | ENTRY),
    "credHelpers": JSON, "credsStore": JSON})


@settings(max_examples=150, deadline=None, database=None)
@given(CONFIGS, st.sampled_from(["r.example.com", "docker.io"]))
def test_any_config_gives_credentials_or_none(config, registry):
    found = from_auths(config, registry)
    assert found is None or isinstance(found, Credentials)
    helper = helper_for(config, registry)
    assert helper is None or (isinstance(helper, str) and helper)


# helper_for ---------------------------------------------------------------------

@pytest.mark.parametrize("config, registry, helper", [
    ({"credsStore": "desktop"}, "r.example.com", "desktop"),
    ({"credHelpers": {"gcr.io": "gcloud"}, "credsStore": "desktop"}, "gcr.io", "gcloud"),
    ({"credHelpers": {"gcr.io": "gcloud"}, "credsStore": "desktop"}, "r.example.com", "desktop"),
    ({"credHelpers": {"gcr.io": "gcloud"}}, "r.example.com", None),
    ({"credHelpers": {"https://gcr.io": "gcloud"}}, "gcr.io", "gcloud"),
    ({"credHelpers": {DOCKER_HUB_AUTH_KEY: "hub"}}, "docker.io", "hub"),
    ({"credHelpers": {"index.docker.io": "hub"}}, "docker.io", "hub"),
    ({}, "r.example.com", None),
    ({"credsStore": ""}, "r.example.com", None),
])
def test_helper_for(config, registry, helper):
    assert helper_for(config, registry) == helper


# from_helper: a real helper program on PATH --------------------------------------

HELPER = """#!/bin/sh
# docker-credential-test: the docker credential helper protocol, for tests
[ "$1" = get ] || { echo "unsupported: $1" >&2; exit 2; }
read -r server || true
printf '%s' "$server" >> "$(dirname "$0")/asked"
case "$server" in
  r.example.com) printf '{"ServerURL":"%s","Username":"alice","Secret":"from-helper"}\\n' "$server" ;;
  https://index.docker.io/v1/) printf '{"Username":"hubuser","Secret":"hubpass"}' ;;
  tokens.example.com) printf '{"Username":"<token>","Secret":"an-identity-token"}' ;;
  garbage.example.com) printf 'not json' ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
"""


@pytest.fixture
def helper(tmp_path, monkeypatch):
    """``docker-credential-test`` on PATH; returns the file of servers it was asked about."""
    program = tmp_path / "docker-credential-test"
    program.write_text(HELPER)
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    return tmp_path / "asked"


def test_a_helper_is_asked_for_the_server_on_stdin(helper):
    assert from_helper("test", "r.example.com") == Credentials("alice", "from-helper")
    assert helper.read_text() == "r.example.com"


def test_a_helper_is_asked_for_docker_hub_by_its_official_key(helper):
    for name in ("docker.io", "index.docker.io"):
        assert from_helper("test", name) == Credentials("hubuser", "hubpass")
    assert helper.read_text() == DOCKER_HUB_AUTH_KEY * 2


@pytest.mark.parametrize("registry", ["unknown.example.com", "garbage.example.com",
                                      "tokens.example.com"])
def test_a_helper_without_usable_credentials(helper, registry):
    # not found (exit 1), not JSON, an identity token (no use for Basic auth)
    assert from_helper("test", registry) is None


@pytest.mark.parametrize("name", ["missing", "../test", ""])
def test_a_helper_that_cannot_run(helper, name, caplog):
    with caplog.at_level(logging.DEBUG, logger="puller.images.credentials"):
        assert from_helper(name, "r.example.com") is None
    assert "helper" in caplog.text


def test_a_broken_helper_is_reported_once(helper, caplog, monkeypatch):
    monkeypatch.setattr(credentials, "_warned", set())
    with caplog.at_level(logging.DEBUG, logger="puller.images.credentials"):
        for _ in range(3):
            assert from_helper("absent", "r.example.com") is None
    levels = [r.levelno for r in caplog.records if "docker-credential-absent" in r.getMessage()]
    assert levels == [logging.WARNING, logging.DEBUG, logging.DEBUG]


def write_config(directory, config: dict) -> str:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as handle:
        json.dump(config, handle)
    return str(directory)


def test_lookup_reads_DOCKER_CONFIG_and_asks_the_helper_first(helper, tmp_path, monkeypatch):
    directory = write_config(tmp_path / "docker", {
        "auths": {"r.example.com": auth("inline", "x"), "other.example.com": auth("o", "p")},
        "credHelpers": {"r.example.com": "test"}})
    monkeypatch.setenv("DOCKER_CONFIG", directory)
    assert lookup("r.example.com") == Credentials("alice", "from-helper")
    assert lookup("other.example.com") == Credentials("o", "p")
    assert lookup("nowhere.example.com") is None


def test_lookup_falls_back_to_auths_when_the_helper_has_nothing(helper, tmp_path):
    directory = write_config(tmp_path / "docker", {
        "auths": {"unknown.example.com": auth("inline", "x")}, "credsStore": "test"})
    assert lookup("unknown.example.com", directory) == Credentials("inline", "x")


def test_lookup_without_a_config(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    assert credentials.config_dir() == str(tmp_path / "none")
    assert lookup("r.example.com") is None


def test_an_unreadable_config_counts_as_none(tmp_path, caplog):
    (tmp_path / "config.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="puller.images.credentials"):
        assert lookup("r.example.com", str(tmp_path)) is None
    assert "config" in caplog.text


# Google registries: tokens and logins, with google-auth's credentials faked ---------


@pytest.mark.parametrize("domain, google", [
    ("gcr.io", True), ("eu.gcr.io", True), ("europe-west1-docker.pkg.dev", True),
    ("docker.io", False), ("gcr.io.example.com", False), ("evilgcr.io", False),
    ("127.0.0.1:5000", False),
])
def test_is_google_registry(domain, google):
    assert is_google_registry(domain) is google
    assert is_google_registry(domain, DEFAULT_GOOGLE_REGISTRIES + ("127.0.0.1:*",)) is (
        google or domain.startswith("127.0.0.1:"))


class FakeCredentials:
    """google-auth credentials: ``valid`` until told otherwise; each refresh a new token."""

    def __init__(self):
        self.refreshes = 0
        self.token = None
        self.valid = False

    def refresh(self, request):
        self.refreshes += 1
        self.token = f"token-{self.refreshes}"
        self.valid = True


@pytest.fixture
def tokens():
    tokens = GoogleTokens()
    tokens._credentials = FakeCredentials()
    return tokens


def test_a_token_is_refreshed_only_when_invalid_or_refused(tokens):
    assert tokens.current() is None
    assert tokens.token("gcr.io") == "token-1"
    assert tokens.token("gcr.io") == "token-1"
    assert tokens.credentials("gcr.io") == Credentials(GOOGLE_USER, "token-1")
    tokens._credentials.valid = False  # about to expire
    assert tokens.token("gcr.io") == "token-2"
    assert tokens.token("gcr.io", force_refresh=True) == "token-3"
    # refused token-3: refresh; a second check refused token-3 too: already done
    assert tokens.token("gcr.io", force_refresh=True, stale="token-3") == "token-4"
    assert tokens.token("gcr.io", force_refresh=True, stale="token-3") == "token-4"
    assert tokens.current() == "token-4"


def test_no_google_credentials_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # never ask a metadata server
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(GoogleAuthError) as caught:
        GoogleTokens().token("eu.gcr.io")
    message = str(caught.value)
    assert "eu.gcr.io" in message and "GOOGLE_APPLICATION_CREDENTIALS" in message
    assert "missing.json" in message  # google-auth's own reason, first line only
    assert "\n" not in message


def test_a_broken_key_file_is_a_clear_error(tmp_path, monkeypatch):
    key = tmp_path / "key.json"
    key.write_text(json.dumps({"type": "service_account", "private_key": "not a key",
                               "client_email": "a@b", "token_uri": "http://127.0.0.1:9/"}))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    with pytest.raises(GoogleAuthError) as caught:
        GoogleTokens().token("gcr.io")
    assert "GOOGLE_APPLICATION_CREDENTIALS" in str(caught.value)


class FakeDocker:
    def __init__(self):
        self.logins = []

    def login(self, registry, username, password, config_dir):
        self.logins.append((registry, username, password, config_dir))


def test_logins_go_to_puller_s_own_config_once_per_token(tokens, tmp_path):
    docker = FakeDocker()
    own = str(tmp_path / "state" / "docker")
    logins = GoogleLogins(docker, tokens, own)
    assert logins.config_for("nginx:latest") is None  # the host's own docker config
    assert logins.config_for("127.0.0.1:5000/web:live") is None
    assert docker.logins == [] and tokens.current() is None  # no token asked for either
    assert logins.config_for("gcr.io/project/web:live") == own
    assert logins.config_for("gcr.io/project/api") == own
    assert docker.logins == [("gcr.io", GOOGLE_USER, "token-1", own)]
    assert os.path.isdir(own)
    assert logins.config_for("eu.gcr.io/project/web") == own  # another registry: its own login
    assert logins.config_for("gcr.io/project/web:live", refresh=True) == own
    assert docker.logins[1:] == [("eu.gcr.io", GOOGLE_USER, "token-1", own),
                                 ("gcr.io", GOOGLE_USER, "token-2", own)]
    tokens._credentials.valid = False
    logins.config_for("gcr.io/project/web:live")
    assert docker.logins[-1] == ("gcr.io", GOOGLE_USER, "token-3", own)
