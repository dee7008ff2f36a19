"""What puller writes into -dir is private: run lines carry secrets and run as root."""

from __future__ import annotations

import os
import stat

import pytest

from puller import constants
from puller.errors import DefinitionError
from puller.fsutil import write_atomically
from puller.node.writer import write_definition

FIELDS = {"name": "web", "bash": "docker run busybox true", "repo": "busybox"}


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_definition_is_0600(tmp_path):
    service = write_definition(str(tmp_path), FIELDS)
    assert mode(service.path) == 0o600


def test_a_rewritten_definition_loses_what_others_could_do(tmp_path):
    path = tmp_path / "web.yml"
    path.write_text("name: web\nbash: docker run busybox false\nrepo: busybox\n")
    os.chmod(path, 0o664)
    write_definition(str(tmp_path), FIELDS)
    assert mode(path) == 0o660  # its owner's and group's bits stay
    os.chmod(path, 0o600)
    write_definition(str(tmp_path), {**FIELDS, "tag": "v2"})
    assert mode(path) == 0o600


def test_a_definition_over_the_file_cap_is_not_written(tmp_path):
    padded = {**FIELDS, "bash": FIELDS["bash"] + " " + "x" * constants.MAX_DEFINITION_BYTES}
    with pytest.raises(DefinitionError, match="over 262144 bytes"):
        write_definition(str(tmp_path), padded)
    assert os.listdir(tmp_path) == []


def test_new_files_are_0600_and_old_ones_keep_their_mode(tmp_path):
    path = tmp_path / "state.json"
    write_atomically(str(path), "{}")
    assert mode(path) == 0o600
    os.chmod(path, 0o640)
    write_atomically(str(path), "{}")
    assert mode(path) == 0o640
    write_atomically(str(path), "{}", mode=0o600)
    assert mode(path) == 0o600
