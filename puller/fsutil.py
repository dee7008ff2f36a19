"""Files written safely: a synced temp file beside the target, then a rename
(replace) or a link (create only if absent), then the directory synced; and
puller's JSON state files read back, a bad one told and never fatal."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from typing import Any, Callable


def write_temporary(path: str, text: str, mode: int) -> str:
    """``text`` in a new, synced temporary file beside ``path`` with ``mode``;
    its name. The caller renames or links it into place, or removes it."""
    handle, temp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                                    dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, mode)
    except BaseException:
        remove_if_present(temp)
        raise
    return temp


def fsync_directory(directory: str) -> None:
    """Make a rename or link in ``directory`` survive a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: str, text: str, mode: int | None = None) -> None:
    """Replace ``path`` with ``text`` so that a reader sees the old or the new
    content, never a part; a crash leaves no half-written file behind. The file
    keeps its mode (``mode``, or 0600, for a new one: what puller writes may
    carry secrets, and is puller's alone)."""
    if mode is None:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            mode = 0o600
    temp = write_temporary(path, text, mode)
    try:
        os.replace(temp, path)
    except BaseException:
        remove_if_present(temp)
        raise
    fsync_directory(os.path.dirname(os.path.abspath(path)))


def create_exclusively(path: str, text: str) -> bool:
    """Create ``path`` (0600) holding ``text`` unless the name exists: True if
    this call made it. The file appears whole or not at all, and of several
    processes racing, exactly one makes it (a link fails if the name exists)."""
    temp = write_temporary(path, text, 0o600)
    try:
        try:
            os.link(temp, path)
        except FileExistsError:
            return False
    finally:
        remove_if_present(temp)
    fsync_directory(os.path.dirname(os.path.abspath(path)))
    return True


def remove_if_present(path: str) -> None:
    """``os.unlink``, for a file that may already be gone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def read_json_object(path: str, bad: Callable[[str], None]) -> dict[str, Any]:
    """The JSON object in ``path``: ``{}`` when there is no such file, and when
    it cannot be read or holds something else, after ``bad(why)`` (the caller
    says what it does instead: start afresh, set the file aside)."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        bad(f"cannot be read ({exc})")
        return {}
    if not isinstance(data, dict):
        bad("is not a JSON object")
        return {}
    return data
