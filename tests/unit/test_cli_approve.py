"""`puller approve NAME [--all]`: what it asks and how it answers."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from puller import cli, commands

UPDATE = {"running": "1.2.5", "available": "1.2.7", "message": "update available: ..."}


def deployed(node: str) -> dict:
    return {"node": node, "service": "web", "runs_here": True, "approved": True,
            "update": UPDATE, "steps": [{"action": "recreate", "reason": "image changed"}],
            "errors": []}


def run(monkeypatch, answer, *args):
    calls = []

    def call(ctx, method, path, body=None):
        calls.append((method, path))
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(commands, "_call", call)
    return CliRunner().invoke(cli.cli, ["approve", *args]), calls


def test_approve_deploys_and_names_both_versions(monkeypatch):
    result, calls = run(monkeypatch, deployed("n1"), "web")
    assert result.exit_code == 0, result.output
    assert calls == [("POST", "/v1/services/web/approve")]
    assert "web on n1: approved 1.2.5 → 1.2.7; recreate: image changed" in result.output


def test_nothing_to_approve_exits_1_with_the_daemon_s_reason(monkeypatch):
    refusal = click.ClickException("nothing to approve: no new image of web waits (HTTP 409)")
    result, _ = run(monkeypatch, refusal, "web")
    assert result.exit_code == 1 and "nothing to approve" in result.output


@pytest.mark.parametrize("flag", ["--all", "-all"])
def test_all_asks_every_node_and_fails_only_when_none_approved(monkeypatch, flag):
    idle = {"node": "n2", "runs_here": True, "approved": False,
            "reason": "nothing to approve: no new image of web waits on node n2"}
    result, calls = run(monkeypatch, {"service": "web", "nodes": [deployed("n1"), idle]},
                        "web", flag)
    assert result.exit_code == 0, result.output
    assert calls == [("POST", "/v1/services/web/approve-all")]
    assert "n2: nothing to approve" in result.output
    result, _ = run(monkeypatch, {"service": "web", "nodes": [idle]}, "web", flag)
    assert result.exit_code == 1 and "no new image of web waits on any node" in result.output
