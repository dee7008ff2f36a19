"""A -state-dir the daemon cannot write is refused at start, before anything runs."""

from __future__ import annotations

import os

import click
import pytest

from puller import cli
from puller.daemon import Config


@pytest.fixture
def no_daemon(monkeypatch):
    import puller.daemon

    monkeypatch.setattr(puller.daemon, "Daemon", lambda config: pytest.fail("must not start"))


def test_a_state_dir_under_a_file_is_refused(tmp_path, no_daemon):
    (tmp_path / "file").write_text("")
    with pytest.raises(click.ClickException) as caught:
        cli.run_daemon(Config(node="n1", state_dir=str(tmp_path / "file" / "state")))
    message = caught.value.message
    assert "-state-dir" in message and str(tmp_path / "file" / "state") in message
    assert "cannot be written" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes a read-only directory anyway")
def test_a_read_only_state_dir_is_refused(tmp_path, no_daemon):
    state = tmp_path / "state"
    state.mkdir(mode=0o500)
    with pytest.raises(click.ClickException) as caught:
        cli.run_daemon(Config(node="n1", state_dir=str(state)))
    assert "-state-dir" in caught.value.message


def test_a_writable_state_dir_is_made_and_left_clean(tmp_path):
    state = tmp_path / "new" / "state"
    cli.check_state_dir(str(state))
    assert state.is_dir() and os.listdir(state) == []
