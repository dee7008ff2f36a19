"""Fixtures for every test: no test may leak a thread."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from .testenv import Cleanup, Engine, Registry, build_image


@pytest.fixture(autouse=True)
def no_thread_leak():
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        leaked = [t for t in threading.enumerate()
                  if t not in before and t.is_alive() and not t.name.startswith("pydevd")]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"threads leaked by the test: {[t.name for t in leaked]}"


@pytest.fixture(scope="session")
def engine():
    engine = Engine()
    try:
        engine.ensure()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def registry(engine):
    registry = Registry().start()
    yield registry
    registry.close()


@dataclass(frozen=True)
class Images:
    repo: str  # REGISTRY/web, tags v1 and v2 serve "v1" and "v2"


@pytest.fixture(scope="session")
def images(registry):
    repo = f"{registry.host}/web"
    build_image(f"{repo}:v1", "v1")
    build_image(f"{repo}:v2", "v2")
    yield Images(repo)


@pytest.fixture
def cleanup(engine):
    cleanup = Cleanup()
    yield cleanup
    cleanup.close()
