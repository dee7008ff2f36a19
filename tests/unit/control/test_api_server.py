"""The API server's gate, on a real socket without docker: what a stranger's
request costs, chunked bodies, the definition cap, TLS, and a quiet log."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl

import pytest

from puller.control.api import Api
from puller.control.tls import server_context

from ...certs import certificate


class Node:
    """The least of NodeControl the gate's endpoints need."""

    node = "n1"
    directory = "/nonexistent"

    def request_pass(self, services=(), pushes=()):
        self.pushes = list(pushes)


@pytest.fixture
def api():
    with Api(Node(), "127.0.0.1", 0, "the-key") as served:
        yield served


def call(api, method, path, body=None, headers=None, connection=None):
    own = connection is None
    connection = connection or http.client.HTTPConnection(*api.address, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read()), response.getheader("Connection")
    finally:
        if own:
            connection.close()


def test_only_health_is_open(api):
    assert call(api, "GET", "/v1/health")[0] == 200
    for method, path in (("GET", "/v1/services"), ("GET", "/v1/status"), ("GET", "/v1/cluster"),
                         ("GET", "/v1/services/x/history"), ("POST", "/v1/services/x/pull")):
        status, answer, _ = call(api, method, path)
        assert status == 401 and "API key" in answer["error"], (method, path)


def test_a_strangers_small_body_is_skipped_and_the_connection_lives_on(api):
    connection = http.client.HTTPConnection(*api.address, timeout=10)
    try:
        status, _, close = call(api, "PUT", "/v1/services/x", b"x" * 10_000,
                                {"Content-Type": "application/json"}, connection)
        assert status == 401 and close is None
        assert call(api, "GET", "/v1/health", connection=connection)[0] == 200
    finally:
        connection.close()


def test_a_strangers_big_body_is_not_read(api):
    with socket.create_connection(api.address, timeout=10) as sock:
        sock.sendall(b"PUT /v1/services/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 401") and b"Connection: close" in answer


def test_a_chunked_body_is_refused(api):
    with socket.create_connection(api.address, timeout=10) as sock:
        sock.sendall(b"PUT /v1/services/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Authorization: Bearer the-key\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 411") and b"Connection: close" in answer


def test_a_definition_is_capped_like_a_file_before_it_is_read(api):
    status, answer, _ = call(api, "PUT", "/v1/services/x", b"#" * 300_000, {
        "Authorization": "Bearer the-key", "Content-Type": "application/yaml"})
    assert status == 413 and "262144" in answer["error"]


def test_the_log_never_shows_a_query(api, caplog):
    caplog.set_level(logging.DEBUG, logger="puller")
    body = json.dumps({"push_data": {"tag": "t"}, "repository": {"repo_name": "r"}})
    for key in ("the-key", "guessed-key"):
        call(api, "POST", f"/v1/hooks/registry?key={key}", body,
             {"Content-Type": "application/json"})
    with socket.create_connection(api.address, timeout=10) as sock:
        sock.sendall(b"BAD /v1/x?key=the-key\r\n\r\n")  # a malformed request line
        sock.recv(65536)
    assert "/v1/hooks/registry" in caplog.text
    assert "the-key" not in caplog.text and "guessed-key" not in caplog.text


def test_tls(tmp_path):
    cert, key = certificate(tmp_path)
    with Api(Node(), "127.0.0.1", 0, "the-key", tls=server_context(cert, key)) as served:
        assert served.scheme == "https"
        with socket.create_connection(served.address, timeout=10) as sock:  # plain HTTP
            sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert not sock.recv(65536).startswith(b"HTTP/")
        idle = socket.create_connection(served.address, timeout=10)  # no handshake at all
        try:
            context = ssl.create_default_context(cafile=cert)
            connection = http.client.HTTPSConnection(*served.address, timeout=10,
                                                     context=context)
            status, answer, _ = call(served, "GET", "/v1/health", connection=connection)
            connection.close()
            assert status == 200 and answer["status"] == "ok"
        finally:
            idle.close()


def test_a_bad_certificate_is_a_clear_error(tmp_path):
    from puller.errors import PullerError

    (tmp_path / "bad.pem").write_text("not a certificate")
    with pytest.raises(PullerError, match="cannot load the API's certificate"):
        server_context(str(tmp_path / "bad.pem"))
