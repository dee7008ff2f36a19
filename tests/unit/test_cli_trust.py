"""The command line's keys and API options (the daemon side and the client side)."""

from __future__ import annotations

import logging

import pytest
from click.testing import CliRunner

from puller import cli, commands



def run(argv, env=None):
    return CliRunner().invoke(cli.cli, argv, env={"PULLER_APIKEY": None, "PULLER_HOOK_KEY": None,
                                                  **(env or {})})


def test_without_a_key_the_daemon_makes_one(started):
    assert run(["-d"]).exit_code == 0
    [config] = started
    assert config.apikey is None and config.hook_key is None
    assert config.api_addr is None and not config.api_insecure


def test_apikey_on_the_command_line_works_and_warns(started, caplog):
    with caplog.at_level(logging.WARNING):
        assert run(["-d", "-apikey=k1"]).exit_code == 0
    assert started[0].apikey == "k1"
    assert "visible to every user" in caplog.text and "/proc" in caplog.text


def test_apikey_from_the_environment_does_not_warn(started, caplog):
    with caplog.at_level(logging.WARNING):
        assert run(["-d"], env={"PULLER_APIKEY": "k2"}).exit_code == 0
    assert started[0].apikey == "k2"
    assert "visible" not in caplog.text


def test_apikey_file_wins(started, caplog, tmp_path):
    path = tmp_path / "key"
    path.write_text("from-file\n")
    with caplog.at_level(logging.WARNING):
        result = run(["-d", f"-apikey-file={path}"], env={"PULLER_APIKEY": "k3"})
    assert result.exit_code == 0, result.output
    assert started[0].apikey == "from-file" and "the file wins" in caplog.text
    assert run(["-d"], env={"PULLER_APIKEY_FILE": str(path)}).exit_code == 0
    assert started[1].apikey == "from-file"


@pytest.mark.parametrize("argv, env, fragment", [
    (["-d", "-apikey-file=/nonexistent/key"], {}, "does not exist"),
    (["-d", "-apikey=two words"], {}, "one line of visible ASCII"),
    (["-d", "-hook-key-file=/nonexistent/key"], {}, "-hook-key-file"),
    (["-d"], {"PULLER_HOOK_KEY": "a b"}, "PULLER_HOOK_KEY"),
    (["-d", "-api-cert-key=/x.pem"], {}, "-api-cert"),
])
def test_bad_keys_and_tls_options_are_clear_errors(started, argv, env, fragment):
    result = run(argv, env)
    assert result.exit_code == 2 and fragment in result.output, result.output
    assert started == []


def test_hook_key_and_api_options(started, tmp_path):
    path = tmp_path / "hook"
    path.write_text("hook-from-file\n")
    result = run(["-d", "-api-host=a.example,b.example", "-api-host", "c.example",
                  "-api-addr=0.0.0.0", "-api-cert=/c.pem", "-api-cert-key=/k.pem",
                  "-api-insecure", f"-hook-key-file={path}"])
    assert result.exit_code == 0, result.output
    config = started[0]
    assert config.api_hosts == ("a.example", "b.example", "c.example")
    assert (config.api_addr, config.api_cert, config.api_cert_key, config.api_insecure) == (
        "0.0.0.0", "/c.pem", "/k.pem", True)
    assert config.hook_key == "hook-from-file"
    assert run(["-d"], env={"PULLER_HOOK_KEY": "hook-env", "PULLER_API_HOST": "x y"}).exit_code == 0
    assert started[1].hook_key == "hook-env" and started[1].api_hosts == ("x", "y")


def test_the_client_warns_about_a_key_on_its_command_line(monkeypatch):
    monkeypatch.setattr(commands.ClientSettings, "client", lambda self: pytest.fail("no call"))
    result = CliRunner().invoke(cli.cli, ["-apikey=k", "ls", "--help"])
    assert result.exit_code == 0
    assert "warning: -apikey on the command line is visible" in result.output


def test_the_client_settings_carry_what_finds_the_key(monkeypatch):
    seen = []
    monkeypatch.setattr(commands, "_call", lambda ctx, *args: seen.append(ctx.obj) or {
        "services": [], "errors": []})
    result = CliRunner().invoke(cli.cli, ["-port=7000", "-state-dir=/s", "-api-ca=/ca.pem",
                                          "-apikey-file=/f", "ls"], env={"PULLER_APIKEY": None})
    assert result.exit_code == 0, result.output
    [settings] = seen
    assert (settings.api_url, settings.apikey, settings.apikey_file, settings.state_dir,
            settings.ca) == ("http://127.0.0.1:7001", None, "/f", "/s", "/ca.pem")
