"""The registry client: challenge and Retry-After parsing (pure), and the HEAD
conversation against a scripted HTTP server on loopback (no registry, no docker)."""

from __future__ import annotations

import email.utils
import hashlib
import http.server
import json
import threading
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from puller.images.credentials import Credentials
from puller.images.reference import Reference
from puller.images.registry import (
    MANIFEST_TYPES,
    AuthenticationError,
    RegistryClient,
    RegistryError,
    Unsupported,
    api_host,
    parse_challenge,
    parse_retry_after,
    scheme_for,
)

DIGEST = "sha256:" + "ab" * 32

# parse_challenge ----------------------------------------------------------------

CHALLENGES = [
    pytest.param(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/nginx:pull"',
        "bearer", {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                   "scope": "repository:library/nginx:pull"}, id="docker-hub"),
    pytest.param('Basic realm="test"', "basic", {"realm": "test"}, id="basic"),
    pytest.param('BASIC Realm="x"', "basic", {"realm": "x"}, id="case-insensitive"),
    pytest.param("Bearer", "bearer", {}, id="no-params"),
    pytest.param("", "", {}, id="empty"),
    pytest.param('Basic realm=test, charset=UTF-8', "basic", {"realm": "test", "charset": "UTF-8"},
                 id="bare-tokens"),
    pytest.param('Bearer scope="repository:a:pull,push",realm="http://h/t"', "bearer",
                 {"scope": "repository:a:pull,push", "realm": "http://h/t"}, id="comma-in-quotes"),
    pytest.param('Bearer realm="http://h/t?a=b&c=d",service="s"', "bearer",
                 {"realm": "http://h/t?a=b&c=d", "service": "s"}, id="equals-in-quotes"),
    pytest.param(r'Basic realm="say \"hi\" \\ there"', "basic", {"realm": r'say "hi" \ there'},
                 id="quoted-pair"),
    pytest.param('  Bearer   realm = "r" ,  error="insufficient_scope"', "bearer",
                 {"realm": "r", "error": "insufficient_scope"}, id="spaces"),
]


@pytest.mark.parametrize("header, scheme, params", CHALLENGES)
def test_parse_challenge(header, scheme, params):
    assert parse_challenge(header) == (scheme, params)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@settings(max_examples=200, deadline=None, database=None)
@given(st.sampled_from(["Bearer", "Basic", "bearer"]),
       st.dictionaries(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8),
                       st.text(max_size=30), max_size=5))
def test_parse_challenge_reads_back_any_quoted_params(scheme, params):
    header = scheme + " " + ",".join(f"{key}={_quote(value)}" for key, value in params.items())
    assert parse_challenge(header) == (scheme.lower(), params)


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(max_size=120))
def test_parse_challenge_never_fails(header):
    scheme, params = parse_challenge(header)
    assert isinstance(scheme, str) and scheme == scheme.lower()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items())


# parse_retry_after --------------------------------------------------------------

NOW = 1_700_000_000.0


@pytest.mark.parametrize("value, expected", [
    ("120", 120.0),
    (" 7 ", 7.0),
    ("0", 0.0),
    (None, None),
    ("", None),
    ("soon", None),
    ("-5", None),
    ("1.5", None),
    ("²", None),  # a digit to str.isdigit, not to float()
    (email.utils.formatdate(NOW + 30, usegmt=True), 30.0),
    (email.utils.formatdate(NOW - 30, usegmt=True), 0.0),  # already past
    ("Tue, 14 Nov 2023 22:13:50 -0000", 30.0),  # no zone given: GMT, not local time
    ("Tuesday, 14-Nov-23 22:13:50 GMT", 30.0),  # RFC 850, still allowed by HTTP
])
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value, NOW) == expected


@given(st.integers(min_value=0, max_value=10**9))
def test_retry_after_seconds(seconds):
    assert parse_retry_after(str(seconds), NOW) == float(seconds)


@given(st.integers(min_value=0, max_value=10**7))
def test_retry_after_http_date(delay):
    value = email.utils.formatdate(NOW + delay, usegmt=True)
    assert parse_retry_after(value, NOW) == pytest.approx(delay)


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(max_size=60))
def test_retry_after_never_fails(value):
    seconds = parse_retry_after(value, NOW)
    assert seconds is None or seconds >= 0.0


# scheme_for, api_host -----------------------------------------------------------

@pytest.mark.parametrize("domain, scheme", [
    ("127.0.0.1:5000", "http"),
    ("127.3.2.1", "http"),
    ("localhost", "http"),
    ("localhost:5000", "http"),
    ("[::1]:5000", "http"),
    ("[::1]", "http"),
    ("docker.io", "https"),
    ("gcr.io", "https"),
    ("europe-docker.pkg.dev", "https"),
    ("registry.example.com:443", "https"),
    ("10.0.0.1:5000", "https"),
    ("[2001:db8::1]:5000", "https"),
    ("localhost.example.com", "https"),
])
def test_scheme_for(domain, scheme):
    assert scheme_for(domain) == scheme


@given(st.ip_addresses(v=4), st.integers(min_value=1, max_value=65535))
def test_scheme_for_any_ipv4(address, port):
    expected = "http" if address.is_loopback else "https"
    assert scheme_for(f"{address}:{port}") == expected == scheme_for(str(address))


@pytest.mark.parametrize("domain, host", [
    ("docker.io", "registry-1.docker.io"),
    ("gcr.io", "gcr.io"),
    ("127.0.0.1:5000", "127.0.0.1:5000"),
    ("index.docker.io", "index.docker.io"),  # references never carry it: parse makes it docker.io
])
def test_api_host(domain, host):
    assert api_host(domain) == host
    assert api_host(Reference.parse("nginx").domain) == "registry-1.docker.io"


# The client against a scripted server ----------------------------------------------


class Script(http.server.ThreadingHTTPServer):
    """Answers each request with ``handler(request) -> (status, headers, body)``;
    records the requests in ``seen``."""

    daemon_threads = True

    def __init__(self, handler):
        self.handler = handler
        self.seen: list[tuple[str, str, dict]] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    def _any(self):
        self.server.seen.append((self.command, self.path, dict(self.headers)))
        status, headers, body = self.server.handler(self)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = _any

    def log_message(self, *args):
        pass


@pytest.fixture
def script():
    servers = []

    def start(handler) -> Script:
        server = Script(handler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                                  name="test-script")
        thread.start()
        servers.append((server, thread))
        return server

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join()


def ref(server: Script, path: str = "web", tag: str = "live") -> Reference:
    return Reference.parse(f"{server.host}/{path}:{tag}")


def anonymous(domain):
    return None


def test_a_head_asks_for_all_four_manifest_types(script):
    server = script(lambda r: (200, {"Docker-Content-Digest": DIGEST}, b""))
    client = RegistryClient(anonymous)
    assert client.head_digest(ref(server)) == DIGEST
    method, path, headers = server.seen[0]
    assert (method, path) == ("HEAD", "/v2/web/manifests/live")
    assert set(headers["Accept"].split(", ")) == set(MANIFEST_TYPES)
    assert client.requests == 1


def test_no_digest_header_means_the_digest_of_the_manifest_body(script):
    body = json.dumps({"schemaVersion": 2}).encode()
    server = script(lambda r: (200, {}, body))
    assert RegistryClient(anonymous).head_digest(ref(server)) == (
        "sha256:" + hashlib.sha256(body).hexdigest())
    assert [m for m, _, _ in server.seen] == ["HEAD", "GET"]


@pytest.mark.parametrize("header", ["", "sha256:nothex", "md5:" + "ab" * 16, "sha256:" + "A" * 64])
def test_a_malformed_digest_header_means_the_digest_of_the_body(script, header):
    server = script(lambda r: (200, {"Docker-Content-Digest": header}, b"{}"))
    assert RegistryClient(anonymous).head_digest(ref(server)) == (
        "sha256:" + hashlib.sha256(b"{}").hexdigest())


def test_basic_auth_is_sent_at_once_once_the_registry_asked_for_it(script):
    def handler(request):
        if request.headers.get("Authorization") == "Basic dTpw":  # u:p
            return 200, {"Docker-Content-Digest": DIGEST}, b""
        return 401, {"WWW-Authenticate": 'Basic realm="test"'}, b""

    server = script(handler)
    client = RegistryClient(lambda domain: Credentials("u", "p"))
    assert client.head_digest(ref(server)) == DIGEST
    assert client.requests == 2  # the challenge, then the answer
    assert client.head_digest(ref(server)) == DIGEST
    assert client.requests == 3  # no second challenge


def test_basic_auth_without_a_login_says_docker_login(script):
    server = script(lambda r: (401, {"WWW-Authenticate": 'Basic realm="test"'}, b""))
    with pytest.raises(AuthenticationError) as caught:
        RegistryClient(anonymous).head_digest(ref(server))
    assert server.host in str(caught.value) and "docker login" in str(caught.value)


def test_a_refused_password_is_an_authentication_error(script):
    server = script(lambda r: (401, {"WWW-Authenticate": 'Basic realm="test"'}, b""))
    with pytest.raises(AuthenticationError) as caught:
        RegistryClient(lambda d: Credentials("u", "wrong")).head_digest(ref(server))
    assert caught.value.status == 401 and "docker login" in str(caught.value)


def test_bearer_token_is_fetched_with_the_credentials_and_cached(script):
    issued = []

    def handler(request):
        url = urllib.parse.urlsplit(request.path)
        if url.path == "/token":
            query = urllib.parse.parse_qs(url.query)
            issued.append((query, request.headers.get("Authorization")))
            return 200, {}, json.dumps({"token": "t0k", "expires_in": 300}).encode()
        if request.headers.get("Authorization") == "Bearer t0k":
            return 200, {"Docker-Content-Digest": DIGEST}, b""
        realm = f"http://{request.server.host}/token?client=puller"
        return 401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="reg",'
                     'scope="repository:web:pull"'}, b""

    server = script(handler)
    client = RegistryClient(lambda d: Credentials("u", "p"))
    assert client.head_digest(ref(server)) == DIGEST
    query, authorization = issued[0]
    # the realm's own query is kept, ours appended with &
    assert query == {"client": ["puller"], "service": ["reg"], "scope": ["repository:web:pull"]}
    assert authorization == "Basic dTpw"
    assert client.head_digest(ref(server)) == DIGEST
    assert len(issued) == 1 and client.requests == 4  # HEAD, token, HEAD; then one HEAD
    client.forget_tokens(server.host)
    client.head_digest(ref(server))
    assert len(issued) == 2


@pytest.mark.parametrize("answer", [{"token": "t0k"}, {"access_token": "t0k", "expires_in": "x"},
                                    {"token": "t0k", "expires_in": 1}, {"token": "t0k",
                                                                        "expires_in": None}])
def test_a_token_lives_at_least_60_s(script, answer):
    def handler(request):
        if request.path.startswith("/token"):
            return 200, {}, json.dumps(answer).encode()
        if request.headers.get("Authorization") == "Bearer t0k":
            return 200, {"Docker-Content-Digest": DIGEST}, b""
        return 401, {"WWW-Authenticate": f'Bearer realm="http://{request.server.host}/token"'}, b""

    server = script(handler)
    client = RegistryClient(anonymous)
    assert client.head_digest(ref(server)) == client.head_digest(ref(server)) == DIGEST
    assert client.requests == 4  # the token was cached


def test_a_token_server_refusing_says_docker_login(script):
    def handler(request):
        if request.path.startswith("/token"):
            return 401, {}, b""
        return 401, {"WWW-Authenticate": f'Bearer realm="http://{request.server.host}/token"'}, b""

    server = script(handler)
    with pytest.raises(AuthenticationError) as caught:
        RegistryClient(anonymous).head_digest(ref(server))
    message = str(caught.value)
    assert "token server" in message and f"docker login {server.host}" in message


@pytest.mark.parametrize("answer", [b'{"nothing": 1}', b"[]", b"not json", b'{"token": 5}'])
def test_a_token_answer_without_a_token_is_unsupported(script, answer):
    def handler(request):
        if request.path.startswith("/token"):
            return 200, {}, answer
        return 401, {"WWW-Authenticate": f'Bearer realm="http://{request.server.host}/token"'}, b""

    with pytest.raises(Unsupported):
        RegistryClient(anonymous).head_digest(ref(script(handler)))


@pytest.mark.parametrize("header", ['Negotiate', 'Bearer service="x"', 'Bearer realm="nope:/x"'])
def test_an_unusable_challenge_is_unsupported(script, header):
    server = script(lambda r: (401, {"WWW-Authenticate": header}, b""))
    with pytest.raises(Unsupported):
        RegistryClient(anonymous).head_digest(ref(server))


@pytest.mark.parametrize("status, error, retry_after", [
    (404, RegistryError, None),
    (429, RegistryError, 17.0),
    (503, RegistryError, 17.0),
    (405, Unsupported, None),
    (403, AuthenticationError, None),
])
def test_failures(script, status, error, retry_after):
    server = script(lambda r: (status, {"Retry-After": "17"}, b""))
    with pytest.raises(error) as caught:
        RegistryClient(anonymous).head_digest(ref(server))
    assert type(caught.value) is error
    assert caught.value.status == status and caught.value.retry_after == retry_after
    assert server.host in str(caught.value)


def test_a_redirected_head_stays_a_head_and_keeps_credentials_home(script):
    elsewhere = script(lambda r: (200, {"Docker-Content-Digest": DIGEST}, b""))

    def handler(request):
        if request.headers.get("Authorization") != "Basic dTpw":
            return 401, {"WWW-Authenticate": 'Basic realm="test"'}, b""
        return 307, {"Location": f"http://{elsewhere.host}/v2/web/manifests/live"}, b""

    server = script(handler)
    client = RegistryClient(lambda d: Credentials("u", "p"))
    assert client.head_digest(ref(server)) == DIGEST
    method, _, headers = elsewhere.seen[0]
    assert method == "HEAD"  # a GET would count as a pull on Docker Hub
    assert "Authorization" not in headers


def test_an_unreachable_registry(script):
    server = script(lambda r: (200, {}, b""))
    host = server.host
    server.shutdown()
    server.server_close()
    with pytest.raises(RegistryError) as caught:
        RegistryClient(anonymous, timeout=2).head_digest(Reference.parse(f"{host}/web:live"))
    assert "cannot be reached" in str(caught.value)
