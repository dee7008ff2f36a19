"""The only ways puller changes a definition file: validated first, written
atomically, edited in place (``edit``), several at once all or none, and a
file that is not a valid definition of that name is never removed.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from .. import constants
from ..errors import DefinitionError
from ..fsutil import fsync_directory, remove_if_present, write_temporary
from ..images.reference import Reference
from .definitions import (DEFINITION_MODE, FIELDS, NAME_RE, Service, definition_fields,
                          definition_path, parse_definition, read_definition, render_definition)
from .edit import edit_text, retag_image_token


def write_definition(directory: str, fields: dict[str, Any]) -> Service:
    """Validate ``fields`` exactly as a file is validated, then write the file
    atomically. Nothing is written when they are invalid."""
    [service] = write_definitions(directory, [fields])
    return service


def write_definitions(directory: str, items: list[dict[str, Any]]) -> list[Service]:
    """Write several definitions, all or none: every one is validated and
    written to a temporary file first, then they are renamed into place; a
    failure on the way (a full disk, a rename refused) puts back what was
    there before and removes what was new."""
    prepared = [_prepare(directory, fields) for fields in items]
    staged: list[tuple[str, str, str | None]] = []  # (path, temporary, backup of the old)
    try:
        for path, text, _ in prepared:
            staged.append((path, _stage(path, text), None))
        for i, (path, temporary, _) in enumerate(staged):
            backup = _backup(path)
            staged[i] = (path, temporary, backup)
            os.replace(temporary, path)
    except BaseException:
        _undo(staged)
        raise
    for _, _, backup in staged:
        if backup is not None:
            remove_if_present(backup)
    fsync_directory(directory)
    return [service for _, _, service in prepared]


def _prepare(directory: str, fields: dict[str, Any]) -> tuple[str, str, Service]:
    """The file, its new text (the old text edited in place) and the service it defines."""
    name = fields.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise DefinitionError(os.path.join(directory, f"{name}.yml"),
                              f"name {name!r} is not a valid service name")
    path = definition_path(directory, name)
    try:
        with open(path, encoding="utf-8") as handle:
            existing: str | None = handle.read(constants.MAX_DEFINITION_BYTES + 1)
    except FileNotFoundError:
        existing = None
    except (OSError, UnicodeDecodeError):
        existing = ""
    text = _edited(existing, fields, path) if existing else render_definition(fields)
    if len(text.encode()) > constants.MAX_DEFINITION_BYTES:
        raise DefinitionError(path, f"the definition is over {constants.MAX_DEFINITION_BYTES} "
                                    "bytes, the most a file may hold")
    return path, text, parse_definition(text, path)


def _stage(path: str, text: str) -> str:
    """``text`` in a synced temporary file beside ``path``, with the mode ``path`` will have."""
    return write_temporary(path, text, _private_mode(path))


def _backup(path: str) -> str | None:
    """A hard link to the file about to be replaced (None when there is none)."""
    backup = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.bak")
    remove_if_present(backup)
    try:
        os.link(path, backup)
    except FileNotFoundError:
        return None
    return backup


def _undo(staged: list[tuple[str, str, str | None]]) -> None:
    """Put back what was there before the renames, and drop the temporaries."""
    for path, temporary, backup in staged:
        if os.path.exists(temporary):
            remove_if_present(temporary)
            continue  # never renamed: the old file is untouched
        if backup is not None:
            os.replace(backup, path)
        else:
            remove_if_present(path)


def _private_mode(path: str) -> int:
    """0600 for a new file; an existing file keeps its owner's and group's bits,
    never others' (a run line carries secrets and is run as root)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode) & 0o770
    except FileNotFoundError:
        return DEFINITION_MODE


def _edited(existing: str, fields: dict[str, Any], path: str) -> str:
    """The file's own text with only the fields that change changed (``edit``);
    a whole new text when the old one cannot be read as a definition."""
    try:
        old = parse_definition(existing, path)
    except DefinitionError:
        return render_definition(fields)
    before = definition_fields(old)
    wanted = {key: value for key, value in fields.items() if value is not None}
    changes: dict[str, Any] = {}
    for key in FIELDS:
        if wanted.get(key) != before.get(key) and not (key == "node" and not wanted.get(key)
                                                        and not before.get(key)):
            changes[key] = wanted.get(key) if wanted.get(key) not in ("", None) else None
    if ("tag" in changes or "digest" in changes) and "bash" not in changes:
        token = _image_token(old, wanted)
        if token is not None:
            changes["bash"] = token
    try:
        return edit_text(existing, changes, path)
    except DefinitionError:
        return render_definition(fields)


def _image_token(old: Service, wanted: dict[str, Any]) -> str | None:
    """The bash line with its image token moved to the new tag or digest, when
    the token names one (``web:v1``), spelled as the person spelled the
    repository; None when it names none."""
    token = old.run.image
    image = Reference.parse(token)
    if not (image.tag or image.digest):
        return None
    base = token.split("@", 1)[0]
    if ":" in base.rsplit("/", 1)[-1]:
        base = base.rsplit(":", 1)[0]
    new = (f"{base}@{wanted['digest']}" if wanted.get("digest")
           else f"{base}:{wanted.get('tag') or constants.DEFAULT_TAG}")
    return retag_image_token(old.bash, token, new)


def removable_definition(directory: str, name: str) -> str | None:
    """The file a deletion of ``name`` may remove: the one file that is a valid
    definition of that name. None when there is no file; ``DefinitionError``
    when what is there is not one (a draft, notes, two files): puller never
    deletes what is not a definition."""
    path = definition_path(directory, name)
    if not os.path.lexists(path):
        return None
    try:
        read_definition(path)
    except DefinitionError as exc:
        raise DefinitionError(path, f"not deleted: it is not a valid definition of {name} "
                                    f"({exc.reason}); fix or delete it by hand") from None
    return path


def remove_definition(directory: str, name: str) -> list[str]:
    """Delete the file defining ``name``; returns the paths removed (none when
    there was no file). ``DefinitionError`` when the file is not a valid
    definition of ``name``: it is left alone."""
    path = removable_definition(directory, name)
    if path is None:
        return []
    try:
        os.unlink(path)
    except FileNotFoundError:
        return []
    return [path]
