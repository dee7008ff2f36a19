"""A bad definition's fault says what stays in force, not that it was dropped."""

from __future__ import annotations

from puller.errors import DefinitionError
from puller.node.definitions import Scan, parse_definition
from puller.node.reconciler import definition_fault

WEB = "name: web\nbash: docker run nginx\nrepo: nginx\n"


def test_a_broken_file_with_a_good_past_keeps_the_last_good_definition():
    error = DefinitionError("/defs/web.yml", "field 'tag' must be a string", 4)
    scan = Scan({"web": parse_definition(WEB, "/defs/web.yml")}, (error,))
    fault = definition_fault(error, scan)
    assert "ignored" not in fault and str(error) in fault
    assert "the last good definition of web stays in force" in fault


def test_a_file_never_good_changes_nothing():
    error = DefinitionError("/defs/api.yml", "missing field 'repo'")
    fault = definition_fault(error, Scan({}, (error,), frozenset({"api"})))
    assert "ignored" not in fault and "no good definition of api" in fault
    assert "containers" in fault and "left alone" in fault
