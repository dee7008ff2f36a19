"""Files written atomically: a temp file beside the target, fsync, rename, fsync the directory."""

from __future__ import annotations

import os
import stat
import tempfile


def write_atomically(path: str, text: str, mode: int | None = None) -> None:
    """Replace ``path`` with ``text`` so that a reader sees the old or the new
    content, never a part; a crash leaves no half-written file behind. The file
    keeps its mode (``mode``, or 0600, for a new one: what puller writes may
    carry secrets, and is puller's alone)."""
    directory = os.path.dirname(os.path.abspath(path))
    if mode is None:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            mode = 0o600
    handle, temp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                                    dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
