"""The API key: read from a file, or generated once into the state dir.

A daemon without ``-apikey-file``/``-apikey`` makes a random key at its first
start in ``<state-dir>/api.key`` (mode 0600, the state dir 0700), and reuses
it later; daemons of one root on one host share it. The file appears whole
or not at all (a temp file hard-linked to its name, which fails if the name
exists), so two daemons starting together agree on one key. The CLI client,
run as root, reads the same file; anyone else gets a clear "permission
denied".
"""

from __future__ import annotations

import os
import re
import stat

from ..errors import PullerError
from ..fsutil import create_exclusively

KEY_FILE = "api.key"
_KEY_RE = re.compile(r"[\x21-\x7e]{1,4096}")  # one line of visible ASCII: a header value


class ApiKeyError(PullerError):
    """A key that cannot be read or made; renders what to do."""


class ApiKeyUnreadable(ApiKeyError):
    """The key file exists, but this user may not read it."""

    def __init__(self, path: str):
        self.path = path
        super().__init__(f"permission denied reading the API key in {path}: the API is root's; "
                         "run as root or set PULLER_APIKEY")


def default_path(state_dir: str) -> str:
    return os.path.join(state_dir, KEY_FILE)


def check_key(key: str, where: str) -> str:
    key = key.strip()
    if not _KEY_RE.fullmatch(key):
        raise ApiKeyError(f"the API key from {where} must be one line of visible ASCII "
                          "characters, without spaces")
    return key


def read_key_file(path: str, missing_ok: bool = False) -> str | None:
    """The key in ``path`` (surrounding white space dropped); None if there is no
    such file and ``missing_ok``."""
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            text = handle.read(8192)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise ApiKeyError(f"cannot read the API key: {path} does not exist") from None
    except PermissionError:
        raise ApiKeyUnreadable(path) from None
    except OSError as exc:
        raise ApiKeyError(f"cannot read the API key in {path}: {exc.strerror or exc}") from None
    return check_key(text, path)


def configured_key(path: str | None, value: str | None, where: str) -> str | None:
    """A key given by file (which wins) or by value; None if neither."""
    if path:
        return read_key_file(path)
    return check_key(value, where) if value and value.strip() else None


def client_key(url: str, value: str | None, path: str | None, state_dir: str) -> str | None:
    """The client's key: PULLER_APIKEY (or -apikey), else -apikey-file, else the
    local daemon's ``<state_dir>/api.key`` (never sent to another host)."""
    if value:
        return check_key(value, "PULLER_APIKEY")
    if path:
        return read_key_file(path)
    if is_local(url):
        return read_key_file(default_path(state_dir), missing_ok=True)
    return None


def is_local(url: str) -> bool:
    """Does ``url`` name this host (a loopback address or name, or its host name)?"""
    import socket

    authority = url.partition("://")[2].partition("/")[0].rpartition("@")[2].lower()
    if authority.startswith("["):
        host = authority[1:].partition("]")[0]
    else:
        host = authority.rpartition(":")[0] if ":" in authority else authority
    return (host in ("localhost", "::1", socket.gethostname().lower())
            or re.fullmatch(r"127(\.\d{1,3}){3}", host) is not None or host.endswith(".localhost"))


def load_or_create(state_dir: str) -> tuple[str, bool]:
    """The daemon's key from ``<state_dir>/api.key``, made if missing: (key, made now)."""
    path = default_path(state_dir)
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        if _create(path):
            return _read(path), True
        _check_owner(path)
        return _read(path), False
    except ApiKeyError:
        raise
    except OSError as exc:
        raise ApiKeyError(f"cannot make the API key {path}: {exc.strerror or exc}; set -state-dir "
                        "to a directory of this user's, or -apikey-file") from None


def _read(path: str) -> str:
    key = read_key_file(path)
    assert key is not None
    return key


def _create(path: str) -> bool:
    """Write a new key to ``path`` unless a file is there; True if this call made it."""
    import secrets

    if os.path.lexists(path):
        return False
    return create_exclusively(path, secrets.token_urlsafe(32) + "\n")


def _check_owner(path: str) -> None:
    """Refuse a key file that someone else could have planted or can change."""
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        raise ApiKeyError(f"{path} is not a regular file; remove it and start again")
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise ApiKeyError(f"{path} is owned by another user or writable by others: anyone who "
                        "can change it chooses the API key; remove it (a new one is made) or "
                        f"fix its owner and mode (chmod 600 {path})")
    if info.st_mode & 0o004:
        import logging  # here: the client never gets this far, and starts faster without it

        logging.getLogger(__name__).warning("%s is readable by every user: anyone here may change definitions; "
                    "chmod 600 %s", path, path)
