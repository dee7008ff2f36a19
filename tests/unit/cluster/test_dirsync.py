"""The directory ↔ records mapping: nothing a person wrote is overwritten or deleted."""

from __future__ import annotations

import os
import time

import pytest

from puller import constants
from puller.cluster.dirsync import DirectorySync
from puller.cluster.versions import Clock, Record, Store, Version

VALID = """name: web
bash: docker run web
repo: web
tag: {tag}
"""
DRAFT = "name: web\nbash: docker run web\nrepo: [ half-finished\n"


def sync(directory) -> DirectorySync:
    return DirectorySync("n1", str(directory), Clock("n1"), Store())


def peer(name: str, text: str | None, later: int = 1000) -> Record:
    """A record from node n2, made ``later`` ms from now."""
    return Record(name, Version(int(time.time() * 1000) + later, 0, "n2"), text)


def won(dirsync: DirectorySync, record: Record) -> None:
    """As the gossip does: merge, then write what won (under the lock)."""
    with dirsync.lock:
        assert dirsync.store.merge(record)
        dirsync.apply([record])


def read(path) -> str:
    with open(path) as handle:
        return handle.read()


@pytest.fixture(autouse=True)
def no_grace(monkeypatch):
    monkeypatch.setattr(constants, "DELETE_GRACE", 0.0)


def test_a_peer_record_replaces_the_text_puller_synced(tmp_path):
    (tmp_path / "web.yml").write_text(VALID.format(tag="v1"))
    dirsync = sync(tmp_path)
    with dirsync.lock:
        assert [r.name for r in dirsync.local_changes()] == ["web"]
    won(dirsync, peer("web", VALID.format(tag="v2")))
    assert read(tmp_path / "web.yml") == VALID.format(tag="v2")
    assert dirsync.conflicts == {}


def test_an_invalid_draft_is_never_overwritten_by_a_peer(tmp_path):
    (tmp_path / "web.yml").write_text(DRAFT)
    dirsync = sync(tmp_path)
    with dirsync.lock:
        assert dirsync.local_changes() == []  # a draft gets no version
    won(dirsync, peer("web", VALID.format(tag="v2")))
    assert read(tmp_path / "web.yml") == DRAFT
    assert "web.yml: local draft differs from the cluster's version from n2" in \
        dirsync.conflicts["web"]


def test_a_draft_over_a_synced_file_is_not_overwritten_nor_deleted(tmp_path):
    (tmp_path / "web.yml").write_text(VALID.format(tag="v1"))
    dirsync = sync(tmp_path)
    with dirsync.lock:
        dirsync.local_changes()
    (tmp_path / "web.yml").write_text(DRAFT)  # the person starts editing
    won(dirsync, peer("web", VALID.format(tag="v2"), later=1000))
    assert read(tmp_path / "web.yml") == DRAFT
    won(dirsync, peer("web", None, later=2000))  # and a peer deletes the service
    assert read(tmp_path / "web.yml") == DRAFT
    assert "deletion from n2" in dirsync.conflicts["web"]


def test_deleting_the_draft_brings_the_clusters_version(tmp_path):
    (tmp_path / "web.yml").write_text(DRAFT)
    dirsync = sync(tmp_path)
    won(dirsync, peer("web", VALID.format(tag="v2")))
    os.unlink(tmp_path / "web.yml")
    with dirsync.lock:
        assert dirsync.local_changes() == []  # no tombstone: the person gave way
    assert read(tmp_path / "web.yml") == VALID.format(tag="v2")
    assert dirsync.conflicts == {}


def test_fixing_the_draft_versions_it_and_ends_the_conflict(tmp_path):
    (tmp_path / "web.yml").write_text(DRAFT)
    dirsync = sync(tmp_path)
    received = peer("web", VALID.format(tag="v2"))
    won(dirsync, received)
    (tmp_path / "web.yml").write_text(VALID.format(tag="v3"))
    with dirsync.lock:
        [edit] = dirsync.local_changes()
    assert edit.text == VALID.format(tag="v3") and edit.version > received.version
    assert dirsync.conflicts == {}


def test_a_peers_garbage_is_refused_and_named(tmp_path):
    dirsync = sync(tmp_path)
    won(dirsync, peer("web", "\x00garbage: [ not yaml"))
    assert not (tmp_path / "web.yml").exists()
    assert "refused the definition from n2" in dirsync.conflicts["web"]


def test_a_tombstone_never_deletes_what_is_not_a_definition(tmp_path):
    (tmp_path / "notes.yml").write_text("just: some notes\n")
    dirsync = sync(tmp_path)
    won(dirsync, peer("notes", None))
    assert (tmp_path / "notes.yml").exists()
    assert "notes.yml" in dirsync.conflicts["notes"]


def test_yml_and_yaml_side_by_side_sync_nothing_for_that_name(tmp_path):
    (tmp_path / "web.yml").write_text(VALID.format(tag="v1"))
    (tmp_path / "web.yaml").write_text(VALID.format(tag="v0"))
    dirsync = sync(tmp_path)
    with dirsync.lock:
        assert dirsync.local_changes() == []
    won(dirsync, peer("web", VALID.format(tag="v2")))
    assert read(tmp_path / "web.yml") == VALID.format(tag="v1")
    assert read(tmp_path / "web.yaml") == VALID.format(tag="v0")
    assert "web.yml and web.yaml" in dirsync.conflicts["web"]


def test_files_written_for_peers_are_private(tmp_path):
    dirsync = sync(tmp_path)
    won(dirsync, peer("web", VALID.format(tag="v2")))
    assert os.stat(tmp_path / "web.yml").st_mode & 0o777 == 0o600


def test_the_synced_text_survives_a_restart(tmp_path):
    (tmp_path / "web.yml").write_text(VALID.format(tag="v1"))
    first = sync(tmp_path)
    with first.lock:
        first.local_changes()
    (tmp_path / "web.yml").write_text(DRAFT)
    second = sync(tmp_path)
    second.load_state()
    won(second, peer("web", VALID.format(tag="v2")))
    assert read(tmp_path / "web.yml") == DRAFT


def test_a_peers_change_is_reported_with_its_origin(tmp_path):
    (tmp_path / "web.yml").write_text(VALID.format(tag="v1"))
    dirsync = sync(tmp_path)
    written = []
    dirsync.on_written = lambda name, origin: written.append((name, origin))
    with dirsync.lock:
        dirsync.local_changes()
    won(dirsync, peer("web", VALID.format(tag="v2")))
    assert written == [("web", "n2")]
    # a comment changes no field: no history entry will follow, so none is announced
    won(dirsync, peer("web", "# note\n" + VALID.format(tag="v2"), later=2000))
    assert written == [("web", "n2")]


def test_a_refused_peer_record_is_not_reported_as_written(tmp_path):
    (tmp_path / "web.yml").write_text(DRAFT)
    dirsync = sync(tmp_path)
    written = []
    dirsync.on_written = lambda name, origin: written.append((name, origin))
    won(dirsync, peer("web", VALID.format(tag="v2")))
    assert written == [] and "web" in dirsync.conflicts
