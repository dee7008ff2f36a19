"""The API key: made once into the state dir, shared, found by root's client."""

from __future__ import annotations

import logging
import os
import stat
import threading

import pytest

from puller.control.keys import (ApiKeyError, ApiKeyUnreadable, check_key, client_key,
                                 configured_key, is_local, load_or_create, read_key_file)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_made_at_the_first_start_private_and_reused(tmp_path):
    state = tmp_path / "state"
    key, made = load_or_create(str(state))
    assert made and len(key) >= 40
    assert mode(state) == 0o700 and mode(state / "api.key") == 0o600
    assert load_or_create(str(state)) == (key, False)
    assert os.listdir(state) == ["api.key"]  # no temp file left


def test_an_existing_state_dir_keeps_its_mode(tmp_path):
    os.chmod(tmp_path, 0o755)
    key, made = load_or_create(str(tmp_path))
    assert made and mode(tmp_path) == 0o755 and mode(tmp_path / "api.key") == 0o600


def test_daemons_starting_together_agree_on_one_key(tmp_path):
    state = str(tmp_path / "state")
    results, barrier = [], threading.Barrier(8)

    def start():
        barrier.wait()
        results.append(load_or_create(state))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({key for key, _ in results}) == 1
    assert [made for _, made in results].count(True) == 1
    assert os.listdir(state) == ["api.key"]


def test_a_key_file_others_may_change_is_refused(tmp_path):
    path = tmp_path / "api.key"
    path.write_text("planted\n")
    os.chmod(path, 0o622)
    with pytest.raises(ApiKeyError, match="writable by others"):
        load_or_create(str(tmp_path))


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_key_file_of_another_user_is_refused(tmp_path):
    path = tmp_path / "api.key"
    path.write_text("planted\n")
    os.chmod(path, 0o600)
    os.chown(path, 65534, 65534)
    with pytest.raises(ApiKeyError, match="owned by another user"):
        load_or_create(str(tmp_path))


def test_a_key_file_every_user_may_read_is_used_with_a_warning(tmp_path, caplog):
    path = tmp_path / "api.key"
    path.write_text("shared-key\n")
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING):
        assert load_or_create(str(tmp_path)) == ("shared-key", False)
    assert "readable by every user" in caplog.text


def test_a_state_dir_that_cannot_be_made_says_what_to_do(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ApiKeyError, match="-state-dir"):
        load_or_create(str(blocker / "state"))


@pytest.mark.parametrize("text, key", [
    ("abc\n", "abc"), ("  abc  \n\n", "abc"), ("A-z_0.9~!", "A-z_0.9~!")])
def test_good_keys(text, key):
    assert check_key(text, "here") == key


@pytest.mark.parametrize("text", ["", " \n", "two words", "one\ntwo", "tab\tkey", "é"])
def test_bad_keys_are_refused_as_they_could_not_be_a_header(text):
    with pytest.raises(ApiKeyError, match="one line of visible ASCII"):
        check_key(text, "here")


def test_read_key_file(tmp_path, monkeypatch):
    path = tmp_path / "key"
    assert read_key_file(str(path), missing_ok=True) is None
    with pytest.raises(ApiKeyError, match="does not exist"):
        read_key_file(str(path))
    path.write_text("k1\n")
    assert read_key_file(str(path)) == "k1"

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("builtins.open", denied)
    with pytest.raises(ApiKeyUnreadable) as raised:
        read_key_file(str(path))
    assert str(raised.value) == (f"permission denied reading the API key in {path}: the API is "
                                 "root's; run as root or set PULLER_APIKEY")


def test_a_file_wins_over_a_value(tmp_path):
    path = tmp_path / "key"
    path.write_text("from-file\n")
    assert configured_key(str(path), "from-value", "-apikey") == "from-file"
    assert configured_key(None, "from-value", "-apikey") == "from-value"
    assert configured_key(None, " ", "-apikey") is None
    assert configured_key(None, None, "-apikey") is None


def test_the_client_takes_the_environment_then_a_file_then_the_local_daemons(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "api.key").write_text("daemons\n")
    given = tmp_path / "given"
    given.write_text("given\n")
    local = "http://127.0.0.1:7947"
    assert client_key(local, "env", str(given), str(state)) == "env"
    assert client_key(local, None, str(given), str(state)) == "given"
    assert client_key(local, None, None, str(state)) == "daemons"
    assert client_key(local, None, None, str(tmp_path / "none")) is None
    # the local daemon's key never goes to another host
    assert client_key("https://box-2.example:7947", None, None, str(state)) is None
    assert client_key("https://box-2.example:7947", "env", None, str(state)) == "env"


@pytest.mark.parametrize("url, local", [
    ("http://127.0.0.1:7947", True),
    ("http://127.1.2.3", True),
    ("https://localhost:7947/", True),
    ("http://[::1]:7947", True),
    ("http://box.localhost:7947", True),
    ("http://user@127.0.0.1:7947", True),
    ("http://box-2.example:7947", False),
    ("http://10.0.0.2:7947", False),
    ("http://127.0.0.1.evil.example", False),
    ("http://[::2]:7947", False),
])
def test_is_local(url, local):
    assert is_local(url) is local
