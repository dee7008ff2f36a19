"""Arguments told as arguments: `rollback --to` a tag the registry lacks or a
malformed digest, and a PUT body checked at its own lines; nothing is written."""

from __future__ import annotations

import threading

import pytest
from click.testing import CliRunner

from puller import cli, commands
from puller.control.routing import ApiProblem, Request
from puller.control.services import rollback
from puller.images.registry import RegistryError
from puller.node.definitions import parse_definition

WEB = "name: web\nbash: docker run reg.example/web\nrepo: reg.example/web\ntag: v2\n"


class Freshness:
    def __init__(self, missing=()):
        self.missing = set(missing)
        self.asked = []

    def head(self, ref):
        self.asked.append(ref)
        if ref in self.missing:
            raise RegistryError("reg.example", f"{ref} was not found (tag or repository missing)",
                                404)
        return "sha256:" + "b" * 64


class Node:
    node = "n1"
    directory = "/nonexistent"

    def __init__(self, freshness):
        self.freshness = freshness
        self.history = self

    def scan(self):
        class Scan:
            services = {"web": parse_definition(WEB, "web.yml")}
        return Scan()

    def revisions(self, name):
        return []

    def expect(self, name, source):
        raise AssertionError("nothing may be written")


class Api:
    def __init__(self, freshness):
        self.node = Node(freshness)
        self.write_lock = threading.RLock()


def ask(api, body: bytes):
    return rollback(api, Request("POST", "/v1/services/web/rollback", {"name": "web"}, body, {}))


def test_a_tag_the_registry_does_not_have_is_refused():
    freshness = Freshness(missing={"reg.example/web:nosuchtag"})
    with pytest.raises(ApiProblem) as caught:
        ask(Api(freshness), b'{"to": "nosuchtag"}')
    assert caught.value.status == 409
    assert "reg.example/web:nosuchtag" in str(caught.value) and "nothing changed" in str(
        caught.value)
    assert freshness.asked == ["reg.example/web:nosuchtag"]


@pytest.mark.parametrize("to", ["sha256:abc", "bad tag!"])
def test_a_malformed_target_is_refused_as_an_argument_not_a_file_line(to):
    with pytest.raises(ApiProblem) as caught:
        ask(Api(Freshness()), ('{"to": "%s"}' % to).encode())
    assert caught.value.status == 400
    assert "web.yml" not in str(caught.value) and repr(to) in str(caught.value)


def test_the_cli_refuses_a_malformed_digest_before_asking(monkeypatch):
    monkeypatch.setattr(commands, "_call", lambda *args: pytest.fail("nothing may be sent"))
    result = CliRunner().invoke(cli.cli, ["rollback", "web", "--to", "sha256:abc"])
    assert result.exit_code == 2
    assert "--to" in result.output and "sha256:abc" in result.output
    assert "64" in result.output


def test_a_put_body_is_checked_at_its_own_lines():
    from puller.control.services import put_service

    body = b"# web\nname: web\nbash: docker run nginx\nrepo: nginx\ntag: 1.10\n"
    with pytest.raises(ApiProblem) as caught:
        put_service(Api(Freshness()), Request("PUT", "/v1/services/web", {"name": "web"}, body,
                                              {}))
    assert caught.value.status == 400
    assert str(caught.value).startswith("line 5 of the body: field 'tag' must be a string")
    assert 'tag: "1.10"' in str(caught.value) and "web.yml" not in str(caught.value)
