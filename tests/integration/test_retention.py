"""Image retention against the real engine and a registry of the test's own:
old pulled images go after a proven deploy, the last releases stay (and an
exact rollback to them works with the registry down), and nothing puller did
not pull, or that a container uses, is ever removed."""

from __future__ import annotations

import json
import os

import pytest

from ..testenv import Registry, build_image, docker, image_id, serving, wait_until
from .test_control import puller


@pytest.fixture
def own_registry(engine):
    """A registry this test may stop (the session's is shared)."""
    registry = Registry().start()
    yield registry
    registry.close()


def push_releases(registry, cleanup, count: int) -> tuple[str, list[str]]:
    """v1..vN pushed to a repository of this test; the engine forgets them, so
    puller must pull each one. (repository, digests)"""
    repo = f"{registry.host}/keep-{cleanup.run_id}"
    publisher = repo.replace("127.0.0.1", "localhost")
    digests = []
    for n in range(1, count + 1):
        digests.append(build_image(f"{publisher}:v{n}", f"v{n}"))
        docker("image", "rm", f"{publisher}:v{n}")
    return repo, digests


def present(ref_or_id: str) -> bool:
    return docker("image", "inspect", ref_or_id, check=False).returncode == 0


def test_old_pulled_images_go_the_last_releases_and_foreign_ones_stay(
        live_node, own_registry, cleanup):
    node = live_node(keep_images=2)
    repo, digests = push_releases(own_registry, cleanup, 6)
    foreign_build = build_image(f"{repo}:local", "built here", push=False)  # never pulled
    port = None
    ids = {}
    for n in range(1, 7):
        port = node.web("keep", repo, tag=f"v{n}", port=port)
        serving(port, f"v{n}", timeout=30)
        ids[n] = image_id(f"{repo}@{digests[n - 1]}")
        if n == 1:  # a person tags a pulled image by hand: it is theirs too now
            docker("tag", f"{repo}:v1", f"{repo}:by-hand")
        if n == 2:  # a stopped container, not puller's, uses v2
            docker("run", "--label", cleanup.label, f"{repo}:v2", "true")
    wait_until(lambda: not present(ids[3]) and not present(ids[4]), timeout=30,
               what="the pulled images of v3 and v4 to be removed")
    for n in (5, 6):
        assert present(ids[n]), f"v{n} is among the last two releases"
    assert present(ids[1]), "v1 carries a tag puller did not give it"
    assert present(ids[2]), "v2 is used by a stopped container"
    assert present(foreign_build), "an image puller did not pull"
    with open(os.path.join(node.state_dir, "pulled.json")) as handle:
        assert set(json.load(handle)) == {ids[1], ids[2], ids[5], ids[6]}

    # the registry is down: an exact rollback to a kept release needs none
    own_registry.stop()
    result = puller(node, "rollback", "keep")
    assert result.returncode == 0, result.stderr
    assert digests[4] in result.stdout
    serving(port, "v5", timeout=30)
    assert present(ids[6])


def test_keep_images_zero_turns_retention_off(node, registry, cleanup):
    node.daemon.close()
    from puller.daemon import Config, Daemon

    config = node.daemon.config
    with Daemon(Config(node=config.node, directory=config.directory,
                       state_dir=config.state_dir, keep_images=0)) as daemon:
        repo, digests = push_releases(registry, cleanup, 3)
        port = None
        for n in range(1, 4):
            port = node.web("kept-all", repo, tag=f"v{n}", port=port)
            daemon.tick()
            serving(port, f"v{n}")
        for digest in digests:
            assert present(f"{repo}@{digest}")
        assert not os.path.exists(os.path.join(config.state_dir, "pulled.json"))


def test_an_engine_refusal_is_quiet_and_never_fatal(node, registry, cleanup, monkeypatch, caplog):
    """Were the policy ever to name an image in use, the engine refuses (no
    force): the run goes on, the image and its record stay."""
    import logging

    from puller.node import pruner

    repo, digests = push_releases(registry, cleanup, 1)
    port = node.web("refused", repo, tag="v1")
    node.tick()
    serving(port, "v1")
    running = image_id(f"{repo}@{digests[0]}")
    assert set(node.daemon.pulled.snapshot()) == {running}
    monkeypatch.setattr(pruner, "removable", lambda pulled, *args: tuple(pulled))
    with caplog.at_level(logging.DEBUG, logger="puller.node.pruner"):
        assert node.daemon.pruner.run({f"{repo}:v1"}) == ()
    assert "the engine refused to remove it" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert present(running) and set(node.daemon.pulled.snapshot()) == {running}
    serving(port, "v1")
