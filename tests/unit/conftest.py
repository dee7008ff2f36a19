"""Fixtures of the pure tests."""

from __future__ import annotations

import pytest

from puller import cli


@pytest.fixture
def started(monkeypatch):
    """``puller -d ...`` parses its flags and hands the Config here instead of running."""
    configs = []
    monkeypatch.setattr(cli, "run_daemon", configs.append)
    monkeypatch.setattr(cli, "_setup_logging", lambda verbose: None)
    return configs
