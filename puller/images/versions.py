"""Semver ranges of ``track:`` and the tag a range picks (pure).

npm's semantics, through ``node-semver`` (a port of npm's own library): a
range is ``^1.2``, ``~1.2``, ``1.x``, ``>=1.2 <2``, an exact ``1.2.3``, or
``||`` of those; the highest tag that satisfies it wins; a pre-release
(``1.3.0-rc.1``, ``1.6.0-alpine``) is chosen only when the range itself names
a pre-release of the same ``major.minor.patch``. A range is read strictly
(``>=1.2 garbage`` is refused, not read as ``>=1.2``); tags loosely
(``v1.2.3`` counts as 1.2.3); tags that are not versions at all (``latest``,
``sha-abc12``, ``1.2``) are ignored.
"""

from __future__ import annotations

import functools
from typing import Iterable

import nodesemver

MAX_RANGE_LENGTH = 256  # characters of a range, at most


def valid_range(text: str) -> str | None:
    """``text`` as node-semver normalises it (``^1.2`` → ``>=1.2.0 <2.0.0``), or
    None when it is not a range (``latest``, ``1.2.3.4``)."""
    if not text.strip() or len(text) > MAX_RANGE_LENGTH:
        return None
    try:
        return nodesemver.valid_range(text, loose=False)  # strict: a typo is an error
    except (ValueError, TypeError, IndexError):
        return None


def version_of(tag: str):
    """The tag read as a version (loose: ``v1.2.3``), or None when it is none."""
    try:
        return nodesemver.parse(tag, loose=True)
    except (ValueError, TypeError):
        return None


@functools.lru_cache(maxsize=8192)
def _canonical(tag: str) -> str | None:
    """``tag`` as the version it spells (``v1.2.3+b7`` → ``1.2.3``), parsed once."""
    version = version_of(tag)
    return None if version is None else str(version)


def best_tag(tags: Iterable[str], range_: str) -> str | None:
    """The highest of ``tags`` that satisfies ``range_`` (npm's pre-release
    rule included), or None. Tags naming the same version (``1.2.3``,
    ``v1.2.3``, ``1.2.3+b7``) are told apart by spelling: the plain one first,
    then the shortest, then the first in sort order, so the choice never
    depends on the order the registry listed them in."""
    versions = {tag: version for tag in set(tags) if (version := _canonical(tag)) is not None}
    try:
        best = nodesemver.max_satisfying(sorted(set(versions.values())), range_, loose=False)
    except (ValueError, TypeError, IndexError):
        return None
    if best is None:
        return None
    same = [tag for tag, version in versions.items() if version == best]
    return min(same, key=lambda tag: (tag != best, len(tag), tag))


def satisfies(tag: str, range_: str) -> bool:
    """Does ``tag`` (a version) satisfy ``range_``?"""
    version = _canonical(tag)
    if version is None:
        return False
    try:
        return bool(nodesemver.satisfies(version, range_, loose=False))
    except (ValueError, TypeError, IndexError):
        return False
