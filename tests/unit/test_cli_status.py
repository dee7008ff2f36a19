"""`puller status` with a peer that did not answer: a row, not a traceback."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from puller import cli, commands


def test_an_unreachable_peer_is_a_row(monkeypatch):
    answer = {"nodes": [
        {"node": "n1", "services": {"web": {
            "state": "running", "image": "web:v1", "running_digest": "sha256:" + "a" * 64,
            "registry_digest": "sha256:" + "a" * 64, "error": None}}},
        {"node": "n2", "addr": "10.0.0.2:7946", "error": "timed out"},
    ], "peers": []}
    monkeypatch.setattr(commands, "_call", lambda ctx, *args: answer)
    result = CliRunner().invoke(cli.cli, ["status"])
    assert result.exit_code == 0, result.output
    assert "web" in result.output and "running" in result.output
    [row] = [line for line in result.output.splitlines() if line.startswith("n2")]
    assert "unreachable" in row and "timed out" in row


LONG = ("`docker run` failed with exit code 125: docker: Error response from daemon: driver "
        "failed programming external connectivity on endpoint web: Bind for 0.0.0.0:8080 "
        "failed: port is already allocated.")


def _answer():
    return {"nodes": [
        {"node": "n1", "services": {"web": {
            "state": "failed", "image": "web:v1", "running_digest": None,
            "registry_digest": None, "error": LONG}}},
        {"node": "n2", "services": {}},
    ], "peers": []}


def test_a_node_without_services_is_a_row(monkeypatch):
    monkeypatch.setattr(commands, "_call", lambda ctx, *args: _answer())
    result = CliRunner().invoke(cli.cli, ["status"])
    assert result.exit_code == 0, result.output
    [row] = [line for line in result.output.splitlines() if line.startswith("n2")]
    assert "no services" in row


def test_a_long_error_is_wrapped_not_cut(monkeypatch):
    monkeypatch.setattr(commands, "_call", lambda ctx, *args: _answer())
    result = CliRunner().invoke(cli.cli, ["status"])
    assert result.exit_code == 0, result.output
    assert "port is already allocated" in result.output
    assert all(len(line) < 200 for line in result.output.splitlines())


@pytest.mark.parametrize("flag", ["-wide", "--wide"])
def test_wide_keeps_each_error_on_its_row(monkeypatch, flag):
    monkeypatch.setattr(commands, "_call", lambda ctx, *args: _answer())
    result = CliRunner().invoke(cli.cli, ["status", flag])
    assert result.exit_code == 0, result.output
    [row] = [line for line in result.output.splitlines() if line.startswith("n1")]
    assert row.endswith(LONG)
