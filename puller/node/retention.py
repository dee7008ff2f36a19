"""Which pulled images may go (pure): the image retention policy.

An image is removed only when every one of these holds:

- puller pulled it (it is in the record of pulls, ``pulled``: image id → the
  references puller gave it), and it is still present locally;
- no container uses it, running or stopped, puller's or not (``in_use``);
- no current definition's reference resolves to it locally (``current``): an
  update waiting for approval, or a release about to be deployed, stays;
- it is not among the last ``keep`` releases (distinct digests) of any
  service in the history, so an exact rollback to those needs no registry;
- it carries no tag puller did not give it (a person's ``docker tag``).

``keep`` 0 (or less) turns removal off. Nothing here does I/O.
"""

from __future__ import annotations

from typing import AbstractSet, Any, Iterable, Mapping, Sequence

from ..errors import ImageReferenceError
from ..images.reference import Reference
from .container import Image

Release = tuple[str, str]  # (canonical repository name, digest)


def _repository(text: str) -> str | None:
    try:
        return Reference.parse(text).name
    except ImageReferenceError:
        return None


def kept_releases(revisions: Mapping[str, Sequence[Mapping[str, Any]]],
                  keep: int) -> frozenset[Release]:
    """The last ``keep`` distinct releases (repository, digest) of each service,
    newest first, from the history's revisions (entries with a ``digest`` and
    ``fields.repo``); revisions that never ran (no digest) do not count."""
    kept: set[Release] = set()
    if keep <= 0:
        return frozenset()
    for entries in revisions.values():
        seen: list[Release] = []
        for entry in reversed(entries):
            fields = entry.get("fields") if isinstance(entry, Mapping) else None
            digest = entry.get("digest") if isinstance(entry, Mapping) else None
            repo = fields.get("repo") if isinstance(fields, Mapping) else None
            name = _repository(repo) if isinstance(repo, str) else None
            if not isinstance(digest, str) or name is None:
                continue
            if (name, digest) not in seen:
                seen.append((name, digest))
            if len(seen) >= keep:
                break
        kept.update(seen)
    return frozenset(kept)


def releases_of(image: Image) -> frozenset[Release]:
    """The (repository, digest) pairs a local image is known by."""
    found = set()
    for text in image.repo_digests:
        try:
            parsed = Reference.parse(text)
        except ImageReferenceError:
            continue
        if parsed.digest:
            found.add((parsed.name, parsed.digest))
    return frozenset(found)


def _tags(refs: Iterable[str]) -> set[tuple[str, str]] | None:
    """(repository, tag) of each tagged reference; None if one cannot be read."""
    tags = set()
    for text in refs:
        try:
            parsed = Reference.parse(text)
        except ImageReferenceError:
            return None
        if parsed.tag is not None or parsed.digest is None:
            tags.add((parsed.name, parsed.tag or "latest"))
    return tags


def foreign_tags(image: Image, given: Iterable[str]) -> bool:
    """True when the image carries a tag that is not one puller gave it (or a
    tag that cannot be read: then nobody can say whose it is)."""
    have = _tags(image.repo_tags)
    ours = _tags(given)
    if have is None:
        return True
    return bool(have - (ours or set()))


def removable(pulled: Mapping[str, Iterable[str]], local: Mapping[str, Image],
              in_use: AbstractSet[str], current: AbstractSet[str],
              kept: AbstractSet[Release], keep: int) -> tuple[str, ...]:
    """The ids of the images to remove, sorted (see the module's rules)."""
    if keep <= 0:
        return ()
    chosen = []
    for image_id in sorted(pulled):
        image = local.get(image_id)
        if image is None or image.id != image_id:
            continue  # gone already, or not the image the record names
        if image_id in in_use or image_id in current:
            continue
        if releases_of(image) & kept:
            continue
        if foreign_tags(image, pulled[image_id]):
            continue
        chosen.append(image_id)
    return tuple(chosen)
