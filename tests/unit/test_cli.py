"""The command line: the seed's Go-style flags, the -- spellings and PULLER_* variables."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from puller import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))



@pytest.mark.parametrize("argv", [
    ["-d", "-node=box-1", "-dir=/x/y", "-port=7710", "-interval=2", "-pull-every=3"],
    ["-d", "-node", "box-1", "-dir", "/x/y", "-port", "7710", "-interval", "2", "-pull-every", "3"],
    ["--daemon", "--node", "box-1", "--dir=/x/y", "--port", "7710", "--interval=2", "--pull-every", "3"],
])
def test_go_style_and_double_dash_flags_mean_the_same(started, argv):
    result = CliRunner().invoke(cli.cli, argv, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [config] = started
    assert (config.node, config.directory, config.port, config.interval, config.pull_every) == (
        "box-1", "/x/y", 7710, 2.0, 3)


def test_environment_variables(started):
    env = {"PULLER_NODE": "env-node", "PULLER_DIR": "/env/dir", "PULLER_INTERVAL": "5",
           "PULLER_PORT": "8000", "PULLER_PULL_EVERY": "4"}
    result = CliRunner().invoke(cli.cli, ["-d"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [config] = started
    assert (config.node, config.directory, config.port, config.interval, config.pull_every) == (
        "env-node", "/env/dir", 8000, 5.0, 4)


def test_defaults(started):
    result = CliRunner().invoke(cli.cli, ["-d"], env={"PULLER_NODE": None}, catch_exceptions=False)
    assert result.exit_code == 0
    [config] = started
    assert config.directory == "/etc/puller" and config.port == 7946
    assert config.interval == 30.0 and config.pull_every == 1
    assert config.node  # the host name


@pytest.mark.parametrize("argv,fragment", [
    (["-d", "-interval=0"], "-interval"),
    (["-d", "-pull-every=0"], "-pull-every"),
    (["-d", "-port=70000"], "-port"),
    (["-d", "-node="], "node name must not be empty"),
    (["-d", "-nodes=x"], "No such option"),
])
def test_bad_flags_are_clear_errors(started, argv, fragment):
    result = CliRunner().invoke(cli.cli, argv)
    assert result.exit_code == 2
    assert fragment in result.output
    assert started == []


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "puller", "--help"],
    [sys.executable, os.path.join(ROOT, "puller.py"), "--help"],
    [sys.executable, "-m", "puller", "-help"],
])
def test_help_works_every_way(command):
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    for flag in ("-node", "-dir", "-port", "-interval", "-pull-every", "-verbose", "-d, --daemon"):
        assert flag in result.stdout


def test_notify_is_repeatable_and_its_variable_a_list(started):
    argv = ["-d", "-node=n", "-notify=json://a/x", "--notify", "ntfy://t1,ntfy://t2",
            "-metrics=127.0.0.1:9947"]
    result = CliRunner().invoke(cli.cli, argv, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    env = {"PULLER_NOTIFY": "json://a/x, ntfy://t1 ntfy://t2", "PULLER_METRICS": ":9947"}
    result = CliRunner().invoke(cli.cli, ["-d", "-node=n"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    flags, variables = started
    assert flags.notify == variables.notify == ("json://a/x", "ntfy://t1", "ntfy://t2")
    assert (flags.metrics, variables.metrics) == ("127.0.0.1:9947", ":9947")


def test_metrics_are_off_by_default(started):
    CliRunner().invoke(cli.cli, ["-d", "-node=n"], catch_exceptions=False)
    assert started[0].metrics is None and started[0].notify == ()


@pytest.mark.parametrize("argv,env,keep", [
    (["-d"], {}, 3),
    (["-d", "-keep-images=0"], {}, 0),
    (["-d", "--keep-images", "5"], {}, 5),
    (["-d"], {"PULLER_KEEP_IMAGES": "1"}, 1),
])
def test_keep_images_defaults_to_three_and_zero_turns_retention_off(started, argv, env, keep):
    result = CliRunner().invoke(cli.cli, argv, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert started[0].keep_images == keep


def test_keep_images_help_says_how_to_turn_it_off(started):
    result = CliRunner().invoke(cli.cli, ["-d", "-keep-images=-1"])
    assert result.exit_code == 2 and "-keep-images" in result.output and started == []
    help_text = " ".join(CliRunner().invoke(cli.cli, ["--help"]).output.split())
    assert "0 turns retention off" in help_text and "never removed" in help_text
