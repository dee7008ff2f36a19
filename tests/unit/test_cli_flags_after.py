"""Flags after the subcommand: both spellings of every client option, and the
connection flags, which fall back to the group's values."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from puller import cli, commands

LISTED = {"services": [], "errors": [], "revisions": []}


@pytest.fixture
def calls(monkeypatch):
    seen = []

    def fake(ctx, method, path, body=None):
        seen.append((ctx.obj, method, path, body))
        if path.endswith("/rollback") or path.endswith("/tag"):
            return {"service": {"tag": "v1"}}
        if path.endswith("/pull-all"):
            return {"nodes": []}
        return LISTED

    monkeypatch.setattr(commands, "_call", fake)
    return seen


def run(*argv):
    return CliRunner().invoke(cli.cli, list(argv), env={"PULLER_APIKEY": None})


@pytest.mark.parametrize("flag", ["-json", "--json"])
def test_json_takes_both_spellings(calls, flag):
    result = run("ls", flag)
    assert result.exit_code == 0, result.output
    assert '"services": []' in result.output


@pytest.mark.parametrize("argv", [["ls", "-port=7000"], ["ls", "--port", "7000"],
                                  ["-port=9000", "ls", "-port=7000"]])
def test_port_after_the_subcommand(calls, argv):
    result = run(*argv)
    assert result.exit_code == 0, result.output
    [(settings, *_)] = calls
    assert settings.api_url == "http://127.0.0.1:7001"


def test_every_connection_flag_after_the_subcommand(calls):
    result = run("-state-dir=/g", "-api-ca=/g.pem", "history", "web", "-api=https://h:1",
                 "-state-dir=/s", "-api-ca=/ca.pem", "-apikey-file=/f")
    assert result.exit_code == 0, result.output
    [(settings, method, path, _)] = calls
    assert (settings.api_url, settings.apikey_file, settings.state_dir, settings.ca) == (
        "https://h:1", "/f", "/s", "/ca.pem")
    assert (method, path) == ("GET", "/v1/services/web/history")


def test_the_groups_values_stay_when_a_subcommand_does_not_override_them(calls):
    result = run("-port=7000", "-state-dir=/s", "ls", "-api-ca=/ca.pem")
    assert result.exit_code == 0, result.output
    [(settings, *_)] = calls
    assert (settings.api_url, settings.state_dir, settings.ca) == (
        "http://127.0.0.1:7001", "/s", "/ca.pem")


@pytest.mark.parametrize("argv,path,body", [
    (["rollback", "web", "-to", "v1"], "/v1/services/web/rollback", {"to": "v1"}),
    (["rollback", "web", "-to=v1"], "/v1/services/web/rollback", {"to": "v1"}),
    (["pull", "-all", "web"], "/v1/services/web/pull-all", None),
    (["tag", "web", "v1", "-json"], "/v1/services/web/tag", {"tag": "v1"}),
])
def test_single_dash_options_of_each_command(calls, argv, path, body):
    result = run(*argv)
    assert result.exit_code == 0, result.output
    [(_, _, called, sent)] = calls
    assert (called, sent) == (path, body)
