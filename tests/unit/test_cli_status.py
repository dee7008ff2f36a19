"""`puller status` with a peer that did not answer: a row, not a traceback."""

from __future__ import annotations

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
