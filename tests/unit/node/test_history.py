"""Rollback targets (pure): what ran immediately before the current definition."""

from __future__ import annotations

import pytest

from puller.node.history import NoRollback, rollback_fields

D1, D1_NEWER, D2 = "sha256:" + "1" * 64, "sha256:" + "a" * 64, "sha256:" + "2" * 64
V1 = {"name": "web", "bash": "docker run web", "repo": "web", "tag": "v1", "node": ""}
V2 = {**V1, "tag": "v2"}


def entry(fields, digest, source="file"):
    return {"fields": fields, "at": 0.0, "node": "n1", "source": source, "digest": digest}


def test_during_probation_the_target_is_the_release_that_runs_beside_it():
    # v1 proven, the tag moved and a pull deployed it, then v2 (on probation: it served)
    history = [entry(V1, D1), entry(V1, D1_NEWER, "image"), entry(V2, D2, "tag")]
    assert rollback_fields(history, V2) == {**V1, "digest": D1_NEWER}


def test_before_the_new_release_ran_at_all_the_target_is_what_ran_before():
    history = [entry(V1, D1), entry(V2, None, "tag")]
    assert rollback_fields(history, V2) == {**V1, "digest": D1}


def test_a_rollback_of_a_rollback_goes_forward_again():
    history = [entry(V1, D1), entry(V2, D2, "tag"), entry({**V1, "digest": D1}, D1, "rollback")]
    assert rollback_fields(history, {**V1, "digest": D1}) == {**V2, "digest": D2}


def test_nothing_ran_before():
    with pytest.raises(NoRollback, match="no earlier deployed revision"):
        rollback_fields([entry(V1, D1)], V1)


def test_a_peers_edit_is_recorded_as_peer_with_its_origin_node(tmp_path):
    from puller.node.history import History

    history = History(str(tmp_path / "history.json"), "n1")
    history.observe({"web": V1}, {}, now=1.0)
    history.expect("web", "peer", node="n2")
    history.observe({"web": V2}, {}, now=2.0)
    history.observe({"web": V1}, {}, now=3.0)  # then a local edit
    assert [(e["source"], e["node"]) for e in history.revisions("web")] == [
        ("file", "n1"), ("peer", "n2"), ("file", "n1")]
