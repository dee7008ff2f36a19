"""An image's version as a person knows it (pure): the tag when it is a
version, else the image's ``org.opencontainers.image.version`` label, else
its short digest. Used by status, the update policy and the notifications,
so every message names a release the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# a tag that names a version (v1, 1.2.5, 2024.01-rc1), unlike latest or main
VERSION_TAG = re.compile(r"v?\d+([._-][0-9A-Za-z]+)*\Z")


@dataclass(frozen=True)
class Version:
    """What a service runs (or could run), as a person knows it."""

    tag: str | None = None
    digest: str | None = None  # the registry digest, else a local image id
    oci: str | None = None  # the image's org.opencontainers.image.version label

    @property
    def short_digest(self) -> str | None:
        return f"{self.digest[:19]}…" if self.digest else None

    def label(self) -> str:
        """The tag when it is a version, else the OCI version label, else the short digest."""
        if self.tag and VERSION_TAG.match(self.tag):
            return self.tag
        return self.oci or self.short_digest or self.tag or "?"

    def detail(self) -> str:
        """The label, with the digest (or a tag that is no version) after it."""
        label, extra = self.label(), self.short_digest
        if label == extra:
            extra = self.tag
        return f"{label} ({extra})" if extra and extra != label else label


def change(old: Version | None, new: Version) -> str:
    """``old → new`` for a person; when both read the same (a tag moved in the
    registry, no version label), the digests tell them apart."""
    if old is None:
        return f"nothing → {new.label()}"
    if old.label() == new.label() and old.digest != new.digest:
        return f"{old.detail()} → {new.detail()}"
    return f"{old.label()} → {new.label()}"
