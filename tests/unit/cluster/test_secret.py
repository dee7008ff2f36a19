"""The generated cluster secret: made once, private, shared by the daemons of one state dir."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from puller.cluster.secret import SECRET_FILE, generated_secret
from puller.errors import PullerError


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_first_start_makes_a_private_secret_in_a_private_state_dir(tmp_path):
    state = tmp_path / "new" / "state"
    secret = generated_secret(str(state))
    assert len(secret) >= 32
    assert mode(state) == 0o700
    assert mode(state / SECRET_FILE) == 0o600
    assert (state / SECRET_FILE).read_bytes().strip() == secret


def test_later_starts_reuse_it_and_an_existing_state_dir_keeps_its_mode(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    first = generated_secret(str(state))
    assert generated_secret(str(state)) == first
    assert mode(state) == 0o755
    assert mode(state / SECRET_FILE) == 0o600


def test_daemons_starting_together_agree_on_one_secret(tmp_path):
    state = str(tmp_path / "state")
    barrier = threading.Barrier(8)
    got: list[bytes] = []

    def start() -> None:
        barrier.wait()
        got.append(generated_secret(state))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 8 and len(set(got)) == 1
    assert os.listdir(state) == [SECRET_FILE]  # no temp file left behind


def test_a_secret_others_can_read_is_refused(tmp_path):
    generated_secret(str(tmp_path))
    os.chmod(tmp_path / SECRET_FILE, 0o644)
    with pytest.raises(PullerError, match="readable by other users"):
        generated_secret(str(tmp_path))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_a_secret_another_user_owns_is_refused(tmp_path):
    generated_secret(str(tmp_path))
    os.chown(tmp_path / SECRET_FILE, 65534, 65534)
    with pytest.raises(PullerError, match="owned by uid 65534"):
        generated_secret(str(tmp_path))


def test_an_empty_secret_file_is_refused(tmp_path):
    path = tmp_path / SECRET_FILE
    path.write_bytes(b"")
    os.chmod(path, 0o600)
    with pytest.raises(PullerError, match="empty"):
        generated_secret(str(tmp_path))
