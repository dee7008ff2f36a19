"""Faults logged once: what ends is said plainly."""

from __future__ import annotations

import logging

from puller.faults import FaultLog


def test_a_fault_that_ends_is_named_not_called_resolved(caplog):
    faults = FaultLog(logging.getLogger("test.faults"))
    with caplog.at_level(logging.INFO, logger="test.faults"):
        faults.update({"web.yml": "bad definition: web.yml:3: ..."})
        faults.update({"web.yml": "bad definition: web.yml:3: ..."})
        faults.update({})
    assert [r.getMessage() for r in caplog.records] == [
        "bad definition: web.yml:3: ...", "no longer: bad definition: web.yml:3: ..."]
