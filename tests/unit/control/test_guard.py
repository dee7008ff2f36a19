"""The API's gate, from headers alone: Host, Origin, Content-Type, keys."""

from __future__ import annotations

import socket

import pytest

from puller.control.guard import Guard, own_names, split_host

PORT = 7947


@pytest.fixture
def guard():
    return Guard("the-key", PORT, hook_key="hook-key", names=own_names(["puller.example.org"]))


@pytest.mark.parametrize("value, status", [
    ("127.0.0.1:7947", None),
    ("127.0.0.1", None),
    ("127.9.9.9:80", None),
    ("localhost:7947", None),
    ("LOCALHOST.:7947", None),
    ("[::1]:7947", None),
    ("box.localhost:7947", None),
    ("puller.example.org:7947", None),  # -api-host
    (f"{socket.gethostname()}:7947", None),
    ("evil.example:7947", 403),  # DNS rebinding: the page's own name
    ("evil.example", 403),
    ("localhost.evil.example", 403),
    ("0.0.0.0:7947", 403),
    ("224.0.0.1", 403),
    ("192.0.2.1:7947", 403),  # TEST-NET: not this host's address
    ("", 400),
    (None, 400),
    ("127.0.0.1:http", 400),
    ("[::1", 400),
])
def test_host(guard, value, status):
    problem = guard.host_problem(value)
    assert (problem[0] if problem else None) == status, problem


def test_a_refused_host_says_how_to_allow_it(guard):
    status, message = guard.host_problem("box-1.lan:7947")
    assert status == 403 and "box-1.lan" in message and "-api-host" in message


@pytest.mark.parametrize("value, tls, refused", [
    (None, False, False),  # not a browser
    (f"http://127.0.0.1:{PORT}", False, False),
    (f"http://localhost:{PORT}", False, False),
    (f"https://localhost:{PORT}", True, False),
    ("http://evil.example", False, True),
    (f"http://evil.example:{PORT}", False, True),
    ("http://localhost:8080", False, True),  # another site on this host
    ("http://localhost", False, True),
    (f"https://localhost:{PORT}", False, True),
    (f"http://localhost:{PORT}", True, True),
    ("null", False, True),  # a sandboxed page or a file
    ("", False, True),
    ("http://[::1", False, True),
])
def test_origin(value, tls, refused):
    guard = Guard("k", PORT, tls=tls)
    problem = guard.origin_problem(value)
    assert (problem is not None) is refused, problem
    if refused:
        assert problem[0] == 403 and "cross-site" in problem[1]


@pytest.mark.parametrize("method, body, value, hook, status", [
    ("PUT", True, "application/json", False, None),
    ("PUT", True, "application/json; charset=utf-8", False, None),
    ("PUT", True, "Application/YAML", False, None),
    ("PUT", True, "application/x-yaml", False, None),
    ("PUT", True, "text/yaml", False, None),
    ("POST", True, "text/plain", False, 415),  # what a cross-site form or fetch may send
    ("POST", True, "application/x-www-form-urlencoded", False, 415),
    ("POST", True, "multipart/form-data; boundary=x", False, 415),
    ("DELETE", True, None, False, 415),
    ("POST", False, None, False, None),  # a trigger without a body
    ("GET", True, "text/plain", False, None),
    ("POST", True, "application/vnd.docker.distribution.events.v1+json", True, None),
    ("POST", True, "application/json", True, None),
    ("POST", True, "application/yaml", True, 415),
    ("POST", True, "application/vnd.docker.distribution.events.v1+json", False, 415),
])
def test_content_type(guard, method, body, value, hook, status):
    problem = guard.content_type_problem(method, body, value, hook)
    assert (problem[0] if problem else None) == status, problem


@pytest.mark.parametrize("header, query, hook, ok", [
    ("Bearer the-key", "", False, True),
    ("bearer the-key", "", False, True),
    ("Bearer  the-key ", "", False, True),
    ("Bearer wrong", "", False, False),
    ("Bearer ", "", False, False),
    ("Basic the-key", "", False, False),
    ("the-key", "", False, False),
    (None, "", False, False),
    (None, "key=the-key", False, False),  # a query key opens the hook only
    ("Bearer hook-key", "", False, False),  # the hook key opens the hook only
    ("Bearer hook-key", "", True, True),
    ("Bearer the-key", "", True, True),
    (None, "key=hook-key", True, True),
    (None, "key=the-key", True, True),
    (None, "key=wrong&other=1", True, False),
    (None, "key=wrong&key=hook-key", True, True),
    (None, "", True, False),
])
def test_keys(guard, header, query, hook, ok):
    assert guard.authorized(header, query, hook) is ok


def test_without_a_hook_key_the_hook_takes_the_api_key_only():
    guard = Guard("the-key", PORT)
    assert guard.authorized(None, "key=the-key", hook=True)
    assert not guard.authorized(None, "key=", hook=True)
    assert not guard.authorized("Bearer ", "", hook=True)


def test_there_is_always_a_key():
    with pytest.raises(ValueError):
        Guard("", PORT)


@pytest.mark.parametrize("value, expected", [
    ("a.b:80", ("a.b", 80)),
    ("A.B.", ("a.b", None)),
    ("[::1]:7947", ("::1", 7947)),
    ("::1", ("::1", None)),
    ("[fe80::1]", ("fe80::1", None)),
])
def test_split_host(value, expected):
    assert split_host(value) == expected
