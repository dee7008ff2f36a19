"""The cluster secret generated when none is given: ``<state dir>/cluster.secret``.

The sync channel always has a secret. Without ``-secret-file`` or
``PULLER_SECRET``, the first start writes a random one into the state dir,
readable by its owner alone (0600; the state dir is made 0700 when puller
creates it). Later starts read it again, and so do the other daemons of the
same user and state dir (the play setup: several nodes on one host), so they
talk to each other and nobody else can sign a frame. The file is written
under a temporary name and linked into place, an exclusive create: two
daemons starting together agree on one secret, and none reads a half-written
file.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat

from ..errors import PullerError
from ..fsutil import create_exclusively

log = logging.getLogger(__name__)

SECRET_FILE = "cluster.secret"
SECRET_BYTES = 32  # of randomness, written as hex

_ADVICE = "or give every node of the cluster the same -secret-file (or PULLER_SECRET)"


def generated_secret(state_dir: str) -> bytes:
    """This user's generated cluster secret in ``state_dir``, made at the first call."""
    path = os.path.join(state_dir, SECRET_FILE)
    _private_dir(state_dir)
    try:
        secret = _read(path)
    except FileNotFoundError:
        secret = _create(path)
    else:
        log.info("cluster secret: %s (generated at the first start)", path)
    return secret


def _private_dir(path: str) -> None:
    """Make ``path`` 0700 if it does not exist; an existing one is left as it is."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        os.mkdir(path, 0o700)
        os.chmod(path, 0o700)  # whatever the umask
    except FileExistsError:
        return
    except OSError as exc:
        raise PullerError(f"cannot create the state dir {path}: {exc.strerror or exc}; "
                          "-state-dir picks another") from None


def _read(path: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise PullerError(f"cannot read the cluster secret {path}: {exc.strerror or exc}; "
                          f"run puller as the user who owns it, {_ADVICE}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if info.st_uid != os.geteuid():
            raise PullerError(f"the cluster secret {path} is owned by uid {info.st_uid}, not by "
                              f"this user (uid {os.geteuid()}): whoever wrote it can sign frames; "
                              f"delete it (a new one is made at start), {_ADVICE}")
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise PullerError(f"the cluster secret {path} is readable by other users "
                              f"(mode {stat.S_IMODE(info.st_mode):o}), who can then make every "
                              "node run any container as root; delete it (a new one is made at "
                              "start; restart the daemons sharing it) or chmod 600 it")
        secret = handle.read().strip()
    if not secret:
        raise PullerError(f"the cluster secret {path} is empty; delete it (a new one is made "
                          f"at start), {_ADVICE}")
    return secret


def _create(path: str) -> bytes:
    directory = os.path.dirname(os.path.abspath(path))
    try:
        made = create_exclusively(path, secrets.token_hex(SECRET_BYTES) + "\n")
    except OSError as exc:
        raise PullerError(f"cannot write a cluster secret into {directory}: "
                          f"{exc.strerror or exc}; -state-dir picks another, {_ADVICE}") from None
    if made:  # else another daemon was first: then its secret it is
        log.info("generated a cluster secret in %s: the daemons sharing this state dir share "
                 "it", path)
    return _read(path)
