"""puller's JSON state files read back: missing is empty, bad is told, never fatal."""

from __future__ import annotations

import pytest

from puller.fsutil import read_json_object, write_atomically


def test_a_missing_file_is_empty_and_not_a_fault(tmp_path):
    told: list[str] = []
    assert read_json_object(str(tmp_path / "none.json"), told.append) == {}
    assert told == []


def test_an_object_written_atomically_reads_back(tmp_path):
    path = str(tmp_path / "state.json")
    write_atomically(path, '{"web": {"tag": "1.2.7"}}', mode=0o600)
    assert read_json_object(path, pytest.fail) == {"web": {"tag": "1.2.7"}}


@pytest.mark.parametrize("text, why", [("{not json", "cannot be read"),
                                       ("[1, 2]", "is not a JSON object"),
                                       ("\xff", "cannot be read")])
def test_a_bad_file_is_told_and_read_as_empty(tmp_path, text, why):
    path = tmp_path / "state.json"
    path.write_bytes(text.encode("latin-1"))
    told: list[str] = []
    assert read_json_object(str(path), told.append) == {}
    assert len(told) == 1 and told[0].startswith(why)
