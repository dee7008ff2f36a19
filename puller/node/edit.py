"""Changing a definition file the way a careful person would: only what changes.

The file is the interface: a person writes it, comments it, orders and
quotes it their way. When puller changes a field (``puller tag``, a
rollback, a PUT of a partial change) it replaces exactly the text of that
field's value, adds a missing field as one line at the end, or removes the
line(s) of a field that goes; every other byte stays. (A round trip through
a YAML library re-spaces and re-quotes what it did not change, so the edit
is made on the text, at the spans the YAML parser reports.)

When the ``bash:`` line's image token carries a tag or a digest, that token
is rewritten in the same edit, so the line never says ``web:v1`` while v2
runs. Pure: text in, text out.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

import yaml

from ..errors import DefinitionError

_PLAIN_SAFE = re.compile(r"[A-Za-z0-9_./@+-][A-Za-z0-9_./@:+ -]*\Z")


def edit_text(text: str, changes: Mapping[str, Any], path: str) -> str:
    """``text`` with each field in ``changes`` set to its value (None: removed).

    Raises ``DefinitionError`` when the file is not a block mapping of plain
    fields that can be edited in place (a flow mapping, say).
    """
    entries = _entries(text, path)
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement), spans of text
    appended = []
    for key, value in changes.items():
        entry = entries.get(key)
        if entry is None:
            if value is not None:
                appended.append(f"{key}: {scalar(value)}\n")
            continue
        key_node, value_node = entry
        if value is None:
            start = text.rfind("\n", 0, key_node.start_mark.index) + 1
            end = text.find("\n", value_node.end_mark.index)
            edits.append((start, len(text) if end < 0 else end + 1, ""))
        else:
            style = value_node.style if isinstance(value_node, yaml.ScalarNode) else None
            start, end = value_node.start_mark.index, value_node.end_mark.index
            span = text[start:end]
            kept = span[len(span.rstrip("\n")):]  # a block scalar ends with its line break
            edits.append((start, end, scalar(value, style) + kept))
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    if appended:
        text = (text if text.endswith("\n") or not text else text + "\n") + "".join(appended)
    return text


def _entries(text: str, path: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise DefinitionError(path, f"cannot be edited in place: not valid YAML ({exc})") from None
    if not isinstance(node, yaml.MappingNode) or node.flow_style:
        raise DefinitionError(path, "cannot be edited in place: not a block mapping "
                                    "(one `field: value` per line)")
    entries = {}
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode):
            entries[str(key.value)] = (key, value)
    return entries


def scalar(value: Any, style: str | None = None) -> str:
    """``value`` as YAML scalar text; a string keeps ``style`` (' or ") when it had one."""
    if not isinstance(value, str):
        return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    if style == '"':
        return json.dumps(value, ensure_ascii=False)
    if style == "'" or not _plain_is_string(value):
        return "'" + value.replace("'", "''") + "'"
    return value


def _plain_is_string(value: str) -> bool:
    """True when ``value`` written plain reads back as this very string."""
    if not value or not _PLAIN_SAFE.match(value) or value != value.strip() or " #" in value:
        return False
    try:
        return yaml.safe_load(value) == value
    except yaml.YAMLError:
        return False


def retag_image_token(bash: str, image: str, new_image: str) -> str | None:
    """``bash`` with its image token ``image`` replaced by ``new_image``; None when
    the token does not stand in the line as one plain word exactly once."""
    pattern = re.compile(r"(?<![^\s'\"])" + re.escape(image) + r"(?![^\s'\"])")
    found = pattern.findall(bash)
    if len(found) != 1:
        return None
    return pattern.sub(lambda _: new_image, bash, count=1)
