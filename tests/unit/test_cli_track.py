"""`puller status` and `puller ls` show a tracked service's range and what it resolved to."""

from __future__ import annotations

from click.testing import CliRunner

from puller import cli, commands

DIGEST = "sha256:" + "a" * 64


def test_status_shows_the_range_beside_the_resolved_image(monkeypatch):
    answer = {"nodes": [{"node": "n1", "services": {
        "web": {"track": "^1.0", "resolved": "1.3.0", "state": "running",
                "image": "reg/web:1.3.0", "running_digest": DIGEST, "registry_digest": DIGEST,
                "error": None},
        "api": {"track": "^2", "resolved": None, "state": "absent", "image": "reg/api",
                "running_digest": None, "registry_digest": None,
                "error": "no tag of reg/api matches ^2 yet"}}}], "peers": []}
    monkeypatch.setattr(commands, "_call", lambda ctx, *args: answer)
    result = CliRunner().invoke(cli.cli, ["status"])
    assert result.exit_code == 0, result.output
    [web] = [line for line in result.output.splitlines() if " web " in line]
    assert "reg/web:1.3.0 (track ^1.0)" in web
    [api] = [line for line in result.output.splitlines() if " api " in line]
    assert "reg/api (track ^2)" in api and "no tag of reg/api matches ^2 yet" in api


def test_ls_shows_the_range_of_a_tracked_service(monkeypatch):
    answer = {"node": "n1", "errors": [], "services": [
        {"name": "web", "repo": "reg/web", "track": "^1.0", "node": "", "runs_here": True}]}
    monkeypatch.setattr(commands, "_call", lambda ctx, *args: answer)
    result = CliRunner().invoke(cli.cli, ["ls"])
    assert result.exit_code == 0, result.output
    assert "track ^1.0" in result.output.splitlines()[1]
