"""Docker image references, parsed and normalised as Docker does it.

Follows the grammar and the normalisation of distribution/reference
(``ParseNormalizedNamed``): ``cassandra`` is ``docker.io/library/cassandra``,
``user/app`` is ``docker.io/user/app``, ``index.docker.io`` is ``docker.io``,
and ``127.0.0.1:5000/web`` names a repository on that registry. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ImageReferenceError

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
NAME_TOTAL_LENGTH_MAX = 255

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[[a-fA-F0-9:]+\]"
_DOMAIN = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_DOMAIN_RE = re.compile(_DOMAIN)
_TAG_RE = re.compile(_TAG)
_REFERENCE_RE = re.compile(
    rf"(?P<domain>{_DOMAIN})/(?P<path>{_PATH})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?"
)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")
# The digest algorithms docker can verify, with the length of their hex.
_DIGEST_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}


@dataclass(frozen=True)
class Reference:
    """A normalised image reference: ``domain/path[:tag][@digest]``."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse ``text`` as ``docker pull`` would; raise ImageReferenceError if invalid."""
        if not text:
            raise ImageReferenceError(text, "it is empty")
        if _IDENTIFIER_RE.fullmatch(text):
            raise ImageReferenceError(
                text, "a 64-character hexadecimal string is an image id, not a repository name"
            )
        domain, remainder = _split_domain(text)
        repository = remainder.split(":", 1)[0].split("@", 1)[0]
        if repository.lower() != repository:
            raise ImageReferenceError(text, "the repository name must be lowercase")
        match = _REFERENCE_RE.fullmatch(f"{domain}/{remainder}")
        if match is None:
            raise ImageReferenceError(text, _explain(domain, remainder))
        name = f"{match['domain']}/{match['path']}"
        if len(name) > NAME_TOTAL_LENGTH_MAX:
            raise ImageReferenceError(
                text,
                f"the repository name must not be longer than {NAME_TOTAL_LENGTH_MAX} characters",
            )
        digest = match["digest"]
        if digest is not None:
            _check_digest(text, digest)
        return cls(match["domain"], match["path"], match["tag"], digest)

    @property
    def name(self) -> str:
        """The canonical repository name, e.g. ``docker.io/library/cassandra``."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The repository as a user writes it, e.g. ``cassandra`` or ``user/app``.

        Docker Hub's domain and ``library/`` are left out, unless the shorter
        form would be read back as another repository (``docker.io/a.b/c``).
        """
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        familiar = self.path
        if familiar.startswith(OFFICIAL_PREFIX) and "/" not in familiar[len(OFFICIAL_PREFIX) :]:
            familiar = familiar[len(OFFICIAL_PREFIX) :]
        if "/".join(_split_domain(familiar)) != self.name:
            return self.name
        return familiar

    def with_tag(self, tag: str) -> str:
        """``familiar_name:tag``; raise ImageReferenceError for an invalid tag."""
        if not _TAG_RE.fullmatch(tag):
            raise ImageReferenceError(f"{self.familiar_name}:{tag}", _TAG_RULE)
        return f"{self.familiar_name}:{tag}"

    def with_digest(self, digest: str) -> str:
        """``familiar_name@digest``; raise ImageReferenceError for an invalid digest."""
        text = f"{self.familiar_name}@{digest}"
        if not re.fullmatch(_DIGEST, digest):
            raise ImageReferenceError(text, _DIGEST_RULE)
        _check_digest(text, digest)
        return text

    def same_repository(self, other: Reference) -> bool:
        """True when both references name the same repository, whatever tag or digest."""
        return self.name == other.name

    def __str__(self) -> str:
        text = self.familiar_name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def is_tag(text: str) -> bool:
    """Is ``text`` a tag docker accepts (1 to 128 of letters, digits, '_', '.', '-')?"""
    return _TAG_RE.fullmatch(text) is not None


def same_repository(a: str, b: str) -> bool:
    """True when two reference strings name the same repository.

    Raises ImageReferenceError if either is not a valid reference.
    """
    return Reference.parse(a).same_repository(Reference.parse(b))


_TAG_RULE = (
    "a tag is 1 to 128 letters, digits, '_', '.' or '-', and does not start with '.' or '-'"
)
_DIGEST_RULE = "a digest is ALGORITHM:HEX, e.g. sha256: followed by 64 lowercase hex digits"


def _split_domain(text: str) -> tuple[str, str]:
    """Split off the registry domain, defaulting to Docker Hub (``splitDockerDomain``)."""
    first, slash, rest = text.partition("/")
    is_domain = slash and (
        "." in first or ":" in first or first == "localhost" or first.lower() != first
    )
    domain, remainder = (first, rest) if is_domain else (DEFAULT_DOMAIN, text)
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_PREFIX + remainder
    return domain, remainder


def _check_digest(text: str, digest: str) -> None:
    """Refuse a digest docker could not verify."""
    algorithm, _, hex_part = digest.partition(":")
    length = _DIGEST_HEX_LENGTH.get(algorithm)
    if length is None:
        raise ImageReferenceError(
            text, f"unsupported digest algorithm {algorithm!r}; {_DIGEST_RULE}"
        )
    if len(hex_part) != length or not re.fullmatch(r"[a-f0-9]+", hex_part):
        raise ImageReferenceError(
            text, f"a {algorithm} digest is {length} lowercase hexadecimal digits"
        )


def _explain(domain: str, remainder: str) -> str:
    """Say which part of an unparsable reference is wrong."""
    if not _DOMAIN_RE.fullmatch(domain):
        return f"{domain!r} is not a valid registry host[:port]"
    path, _, suffix = remainder.partition("@")
    path, colon, tag = path.partition(":")
    if colon and not _TAG_RE.fullmatch(tag):
        return _TAG_RULE
    if suffix or "@" in remainder:
        if not re.fullmatch(_DIGEST, suffix):
            return _DIGEST_RULE
    return (
        "a repository name is lowercase letters and digits, in '/'-separated "
        "components joined by '.', '_', '__' or '-'"
    )
