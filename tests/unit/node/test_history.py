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
