"""The CLI client: service names checked, paths encoded, no CR/LF on the wire."""

from __future__ import annotations

import socket
import threading
from urllib.parse import unquote

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from puller import cli, constants
from puller.control.client import Client, InvalidServiceName, UnsafeRequest, service_path
from puller.node.definitions import NAME_RE
from puller.errors import PullerError

SMUGGLER = "x HTTP/1.1\r\nContent-Length: 0\r\n\r\nDELETE /v1/services/prod"
BAD_NAMES = [SMUGGLER, "web\n", "a b", "../cluster", "a/b", "a?b", "", ".hidden", "_x", "é"]


class FakeDaemon:
    """A real socket in a thread that records the raw bytes of each connection
    and answers each with 200 and a JSON object."""

    ANSWER = b'{"path": "web.yml", "runs_here": true, "service": {"tag": "v2"}}'

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.connections: list[bytes] = []
        self._idle = threading.Event()  # no connection being read
        self._idle.set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fake-daemon")
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self._idle.clear()
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data and (chunk := conn.recv(1 << 16)):
                    data += chunk
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                             % (len(self.ANSWER), self.ANSWER))
                conn.shutdown(socket.SHUT_WR)
                while chunk := conn.recv(1 << 16):  # all the client sent, until it closes
                    data += chunk
                self.connections.append(data)
            self._idle.set()

    def requests(self) -> list[tuple[str, dict[str, str], bytes]]:
        """Every request received, as a server reading the bytes would see them."""
        assert self._idle.wait(5), "the client never closed its connection"
        found = []
        for data in self.connections:
            while data:
                head, _, data = data.partition(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                headers = dict(line.split(": ", 1) for line in header_lines)
                length = int(headers.get("Content-Length", 0))
                found.append((request_line, headers, data[:length]))
                data = data[length:]
        return found

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def daemon():
    fake = FakeDaemon()
    yield fake
    fake.close()


def run(daemon: FakeDaemon, *args: str):
    return CliRunner().invoke(cli.cli, ["-api", daemon.url, *args], env={"PULLER_APIKEY": "k"})


def test_apply_refuses_a_name_that_would_smuggle_a_second_request(daemon, tmp_path):
    # The attack: a second request, carrying the user's own key, deleted prod.yml.
    path = tmp_path / "x.yml"
    path.write_text('name: "x HTTP/1.1\\r\\nContent-Length: 0\\r\\n\\r\\nDELETE /v1/services/prod"\n'
                    "bash: docker run nginx\nrepo: nginx\n")
    result = run(daemon, "apply", str(path))
    assert result.exit_code == 1
    assert f"{path}:1: name " in result.output and "is not a valid" in result.output
    assert daemon.requests() == []


def test_a_good_apply_sends_exactly_one_well_formed_request(daemon, tmp_path):
    text = "name: web\nbash: docker run nginx\nrepo: nginx\n"
    (tmp_path / "web.yml").write_text(text)
    result = run(daemon, "apply", str(tmp_path / "web.yml"))
    assert result.exit_code == 0, result.output
    [(request_line, headers, body)] = daemon.requests()
    assert request_line == "PUT /v1/services/web HTTP/1.1"
    assert headers["Authorization"] == "Bearer k" and body == text.encode()


@pytest.mark.parametrize("command", [
    ["rm", "{}"], ["tag", "{}", "v2"], ["rollback", "{}"], ["history", "{}"], ["pull", "{}"],
    ["pull", "--all", "{}"],
])
@pytest.mark.parametrize("name", BAD_NAMES)
def test_every_command_refuses_a_bad_name_before_sending_anything(daemon, command, name):
    result = run(daemon, *[name if word == "{}" else word for word in command])
    assert result.exit_code == 1, result.output
    assert "is not a valid service name" in result.output
    assert daemon.requests() == []


@pytest.mark.parametrize("command,request_line", [
    (["rm", "web"], "DELETE /v1/services/web HTTP/1.1"),
    (["tag", "web", "v2"], "POST /v1/services/web/tag HTTP/1.1"),
    (["rollback", "web.2"], "POST /v1/services/web.2/rollback HTTP/1.1"),
])
def test_good_names_reach_the_daemon_in_one_request(daemon, command, request_line):
    run(daemon, *command)
    assert [line for line, _, _ in daemon.requests()] == [request_line]


def test_every_path_segment_is_percent_encoded():
    assert service_path("web") == "/v1/services/web"
    assert service_path("web_1.a-b", "tag") == "/v1/services/web_1.a-b/tag"
    assert service_path("web", "a/b c?\r\n") == "/v1/services/web/a%2Fb%20c%3F%0D%0A"


@pytest.mark.parametrize("name", BAD_NAMES + ["-x", None, 7, ["web"]])
def test_a_name_the_definitions_refuse_is_refused(name):
    with pytest.raises(InvalidServiceName) as caught:
        service_path(name)
    assert isinstance(caught.value, PullerError)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=20))
def test_the_client_applies_the_rule_of_the_definitions(name):
    assert NAME_RE.pattern == constants.SERVICE_NAME_PATTERN
    try:
        path = service_path(name)
    except InvalidServiceName:
        assert not NAME_RE.match(name)
        return
    assert NAME_RE.match(name)
    assert path.isascii() and path.isprintable() and " " not in path
    assert unquote(path.rsplit("/", 1)[1]) == name


@pytest.mark.parametrize("apikey,path,where", [
    ("k", "/v1/services/x HTTP/1.1\r\nX-Evil: 1", "path"),
    ("k", "/v1/services/a b", "path"),
    ("k\r\nX-Evil: 1", "/v1/services", "Authorization header"),
    ("k\n", "/v1/services", "Authorization header"),
])
def test_no_line_break_reaches_the_request_line_or_a_header(daemon, apikey, path, where):
    with pytest.raises(UnsafeRequest, match=where):
        Client(daemon.url, apikey).call("GET", path)
    assert daemon.requests() == []


def test_an_api_url_with_a_line_break_is_refused(daemon):
    with pytest.raises(UnsafeRequest, match="API URL"):
        Client(daemon.url + "\r\nX-Evil: 1").call("GET", "/v1/services")
    assert daemon.requests() == []


def test_apply_reports_the_files_own_path_and_line(daemon, tmp_path):
    path = tmp_path / "web.yml"
    path.write_text("# the web service\n\nname: web\nbash: docker run nginx\nrepo: nginx\n"
                    "tag: 1.10\n")
    result = run(daemon, "apply", str(path))
    assert result.exit_code == 1
    assert f"{path}:6: field 'tag' must be a string" in result.output
    assert 'tag: "1.10"' in result.output
    assert daemon.requests() == []


def test_apply_refuses_a_name_other_than_the_file_name_as_the_directory_does(daemon, tmp_path):
    path = tmp_path / "web.yml"
    path.write_text("name: api\nbash: docker run nginx\nrepo: nginx\n")
    result = run(daemon, "apply", str(path))
    assert result.exit_code == 1
    assert f"{path}:1: name 'api' does not match the file name" in result.output
    assert daemon.requests() == []


def test_apply_of_a_file_without_a_name_takes_the_file_name(daemon, tmp_path):
    path = tmp_path / "web.yml"
    path.write_text("bash: docker run nginx\nrepo: nginx\n")
    result = run(daemon, "apply", str(path))
    assert result.exit_code == 0, result.output
    [(request_line, _headers, _body)] = daemon.requests()
    assert request_line == "PUT /v1/services/web HTTP/1.1"
