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


def _rollout_answer(halted: str | None, states: dict[str, str]) -> dict:
    view = {"release": {"definition": "d", "digest": "sha256:" + "ab12" * 16},
            "waves": [[n] for n in sorted(states)], "wave": 2, "halted": halted,
            "ended": halted is not None,
            "nodes": {n: {"state": s, "wave": i + 1, "since": 1.0, "error": None}
                      for i, (n, s) in enumerate(sorted(states.items()))}}
    return {"nodes": [{"node": "roll-3", "services": {}, "rollouts": {"web": {"view": view}}}],
            "peers": []}


def test_status_shows_each_rollout_and_why_it_halted(monkeypatch):
    answer = _rollout_answer("failed on roll-1: exited with code 3",
                             {"roll-1": "failed", "roll-2": "waiting", "roll-3": "waiting"})
    monkeypatch.setattr(commands, "_call", lambda ctx, *args: answer)
    result = CliRunner().invoke(cli.cli, ["status"])
    assert result.exit_code == 0, result.output
    [row] = [line for line in result.output.splitlines() if line.startswith("web ")]
    assert "ab12ab12ab12" in row and "roll-1 failed, roll-2 waiting, roll-3 waiting" in row
    assert "halted: failed on roll-1: exited with code 3" in result.output


def test_pull_all_fails_naming_the_node_when_the_rollout_halted(monkeypatch):
    view = _rollout_answer("failed on roll-2: exited with code 3",
                           {"roll-1": "reverted", "roll-2": "failed", "roll-3": "waiting"}
                           )["nodes"][0]["rollouts"]["web"]["view"]
    answer = {"service": "web", "nodes": [], "rollout": {**view, "ok": False}}
    monkeypatch.setattr(commands, "_call", lambda ctx, *args: answer)
    result = CliRunner().invoke(cli.cli, ["pull", "web", "--all"])
    assert result.exit_code == 1
    assert "halted: failed on roll-2: exited with code 3" in result.output
    assert "rolled back on roll-1" in result.output and "roll-3: waiting" in result.output
    done = {**view, "halted": None, "ok": True}
    monkeypatch.setattr(commands, "_call", lambda ctx, *args: {"nodes": [], "rollout": done})
    result = CliRunner().invoke(cli.cli, ["pull", "web", "--all"])
    assert result.exit_code == 0 and "done on roll-1, roll-2, roll-3" in result.output


def test_pull_all_no_wait_asks_the_daemon_not_to_wait(monkeypatch):
    paths = []
    monkeypatch.setattr(commands, "_call",
                        lambda ctx, method, path, *a: paths.append(path) or {"nodes": []})
    assert CliRunner().invoke(cli.cli, ["pull", "web", "--all", "--no-wait"]).exit_code == 0
    assert paths == ["/v1/services/web/pull-all?wait=0"]
