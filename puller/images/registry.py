"""Read a tag's current digest from a registry with one manifest HEAD.

A HEAD on ``/v2/<name>/manifests/<tag>`` is cheap and, on Docker Hub, not
counted against the pull limits. The Accept header names all four manifest
types: without the docker v2 type, Distribution answers with the old schema-1
manifest and a different digest. Anonymous registries, Basic auth and the
Bearer token challenge are supported, with the credentials docker would use.
The same client lists a repository's tags (``list_tags``, for ``track:``).
"""

from __future__ import annotations

import base64
import datetime
import email.message
import email.utils
import hashlib
import http.client
import ipaddress
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Callable

from ..errors import PullerError
from .credentials import Credentials
from .reference import Reference

log = logging.getLogger(__name__)

MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)
DOCKER_HUB_API = "registry-1.docker.io"
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))', re.DOTALL)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
_DIGEST = re.compile(r"sha(?:256:[0-9a-f]{64}|384:[0-9a-f]{96}|512:[0-9a-f]{128})")
_NEXT_LINK = re.compile(r'<([^>]*)>\s*;(?:[^,]*;)?\s*rel\s*=\s*"?next"?', re.IGNORECASE)
MAX_TAG_PAGES = 1000  # pages of a tags listing, at most


class RegistryError(PullerError):
    """A registry that could not answer the digest of a tag."""

    def __init__(self, registry: str, reason: str, status: int | None = None,
                 retry_after: float | None = None):
        self.registry = registry
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"registry {registry}: {reason}")


class AuthenticationError(RegistryError):
    """401/403: no, wrong or stale credentials."""


class Unsupported(RegistryError):
    """The registry answered, but not in a way a HEAD can use: fall back to a pull."""


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="...",scope="..."`` → ("bearer", {...}) (pure)."""
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for match in _CHALLENGE_PARAM.finditer(rest):
        quoted, bare = match.group(2), match.group(3)
        # a quoted-string may escape any character with a backslash (RFC 7230 3.2.6)
        params[match.group(1).lower()] = (_QUOTED_PAIR.sub(r"\1", quoted)
                                          if quoted is not None else bare)
    return scheme.lower(), params


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or HTTP date) (pure)."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]+", value):  # not str.isdigit(): "²" is a digit to it
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" or asctime: HTTP dates are always GMT
        when = when.replace(tzinfo=datetime.timezone.utc)
    try:
        return max(0.0, when.timestamp() - now)
    except (OverflowError, ValueError):
        return None


def api_host(domain: str) -> str:
    return DOCKER_HUB_API if domain == "docker.io" else domain


def scheme_for(domain: str) -> str:
    """Docker talks plain HTTP to loopback registries; TLS to every other."""
    host = domain.rsplit(":", 1)[0] if not domain.startswith("[") else domain[1:].split("]")[0]
    if host == "localhost":
        return "http"
    try:
        return "http" if ipaddress.ip_address(host).is_loopback else "https"
    except ValueError:
        return "https"


@dataclass
class _Token:
    value: str
    expires: float


class RegistryClient:
    """Manifest HEADs and tags listings; ``requests`` counts the HTTP requests made (for tests and benchmarks)."""

    def __init__(self, credentials_for: Callable[[str], Credentials | None],
                 timeout: float = 10.0):
        self.credentials_for = credentials_for
        self.timeout = timeout
        self.requests = 0
        self._tokens: dict[tuple[str, str], _Token] = {}
        self._basic: set[str] = set()  # registries that answered a Basic challenge
        self._lock = threading.Lock()

    def head_digest(self, reference: Reference) -> str:
        """The digest the registry serves for ``reference``'s tag right now."""
        domain = reference.domain
        tag = reference.tag or "latest"
        url = f"{scheme_for(domain)}://{api_host(domain)}/v2/{reference.path}/manifests/{tag}"
        response, headers = self._authorized(
            "HEAD", url, reference, {"Accept": ", ".join(MANIFEST_TYPES)})
        if response.status == 200:
            digest = response.headers.get("Docker-Content-Digest")
            if digest and _DIGEST.fullmatch(digest.strip()):
                return digest.strip()
            # No header (some registries): the digest of the manifest body.
            body = self._request("GET", url, headers, domain)
            if body.status == 200:
                return "sha256:" + hashlib.sha256(body.body).hexdigest()
            raise Unsupported(domain, "no Docker-Content-Digest header", body.status)
        raise self._error(domain, reference, response)

    def list_tags(self, reference: Reference, page_size: int | None = None) -> list[str]:
        """Every tag of ``reference``'s repository (``GET /v2/<name>/tags/list``),
        page after page as the registry's ``Link`` header leads; ``page_size``
        asks for pages of that many (``n``), else the registry chooses."""
        domain = reference.domain
        url = f"{scheme_for(domain)}://{api_host(domain)}/v2/{reference.path}/tags/list"
        if page_size:
            url += f"?n={page_size}"
        tags: list[str] = []
        seen = {url}
        for _ in range(MAX_TAG_PAGES):
            response, _ = self._authorized("GET", url, reference, {"Accept": "application/json"})
            if response.status != 200:
                raise self._tags_error(domain, reference, response)
            tags.extend(parse_tags(response.body, domain, reference.path))
            following = next_page(url, response.headers.get("Link"))
            if following is None:
                return tags
            if following in seen or _origin(following) != _origin(url):
                raise Unsupported(domain, f"the tags of {reference.path} lead to "
                                  f"{following!r}, which puller does not follow", 200)
            seen.add(following)
            url = following
        raise RegistryError(domain, f"{reference.path} has more than {MAX_TAG_PAGES} pages "
                                    "of tags; puller stops there")

    def _authorized(self, method: str, url: str, reference: Reference,
                    headers: dict[str, str]) -> tuple["_Response", dict[str, str]]:
        """A request for ``reference``'s repository with the credentials it wants
        (a cached token, Basic when known to want it, else after its challenge)."""
        domain = reference.domain
        scope = f"repository:{reference.path}:pull"
        headers = dict(headers)
        token = self._cached_token(domain, scope)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif domain in self._basic:
            # known to want Basic: send it at once, one request instead of two
            credentials = self.credentials_for(domain)
            if credentials is not None:
                headers["Authorization"] = _basic(credentials)
        response = self._request(method, url, headers, domain)
        if response.status == 401:
            headers["Authorization"] = self._authorize(domain, scope, response)
            response = self._request(method, url, headers, domain)
        return response, headers

    def _tags_error(self, domain: str, reference: Reference, response: "_Response"
                    ) -> RegistryError:
        if response.status == 404:
            return RegistryError(domain, f"repository {reference.path} was not found", 404)
        if response.status in (405, 400, 406):
            return Unsupported(domain, f"listing the tags of {reference.path} answered "
                                       f"{response.status}", response.status)
        return self._error(domain, reference, response)

    def _error(self, domain: str, reference: Reference, response: "_Response") -> RegistryError:
        status = response.status
        if status in (401, 403):
            return AuthenticationError(
                domain, f"not authorized to read {reference.path} ({status}); "
                f"check `docker login {domain}` on this node", status)
        if status == 404:
            return RegistryError(domain, f"{reference.path}:{reference.tag or 'latest'} "
                                 "was not found (tag or repository missing)", status)
        if status == 429:
            return RegistryError(domain, "rate limited (429)", status,
                                 parse_retry_after(response.headers.get("Retry-After"), time.time()))
        if status in (405, 400, 406):
            return Unsupported(domain, f"HEAD of a manifest answered {status}", status)
        return RegistryError(domain, f"answered {status} for {reference.path}", status,
                             parse_retry_after(response.headers.get("Retry-After"), time.time()))

    # Auth -----------------------------------------------------------------------

    def _cached_token(self, domain: str, scope: str) -> str | None:
        with self._lock:
            token = self._tokens.get((domain, scope))
        if token and token.expires > time.time() + 10:
            return token.value
        return None

    def _authorize(self, domain: str, scope: str, response: "_Response") -> str:
        header = response.headers.get("WWW-Authenticate", "")
        scheme, params = parse_challenge(header)
        credentials = self.credentials_for(domain)
        if scheme == "basic":
            with self._lock:
                self._basic.add(domain)
            if credentials is None:
                raise AuthenticationError(domain, "needs a login and this node has none: "
                                          f"run `docker login {domain}`", 401)
            return _basic(credentials)
        if scheme != "bearer" or urllib.parse.urlsplit(params.get("realm", "")).scheme not in (
                "http", "https"):
            raise Unsupported(domain, f"unknown auth challenge {header!r}", 401)
        query = {"service": params.get("service", ""), "scope": params.get("scope", scope)}
        realm = params["realm"]
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(
            {k: v for k, v in query.items() if v})
        headers = {"Authorization": _basic(credentials)} if credentials else {}
        token_response = self._request("GET", url, headers, domain)
        if token_response.status != 200:
            hint = ("check `docker login " + domain + "` on this node" if credentials else
                    "this node has no login for it: run `docker login " + domain + "`")
            raise AuthenticationError(domain, f"the token server {_origin(realm)} answered "
                                      f"{token_response.status}; {hint}", token_response.status)
        try:
            data = json.loads(token_response.body)
            value = data.get("token") or data["access_token"]
        except (ValueError, KeyError, AttributeError):
            raise Unsupported(domain, "the token server's answer has no token", 200) from None
        if not isinstance(value, str) or not value:
            raise Unsupported(domain, "the token server's answer has no token", 200)
        try:  # the spec: 60 s when not said, and never less
            lifetime = max(60.0, float(data.get("expires_in") or 60))
        except (TypeError, ValueError):
            lifetime = 60.0
        expires = time.time() + lifetime
        with self._lock:
            self._tokens[(domain, scope)] = _Token(value, expires)
        return f"Bearer {value}"

    def forget_tokens(self, domain: str) -> None:
        """Forget what is known of ``domain``'s auth (after its credentials changed)."""
        with self._lock:
            for key in [key for key in self._tokens if key[0] == domain]:
                del self._tokens[key]
            self._basic.discard(domain)

    # HTTP -----------------------------------------------------------------------

    def _request(self, method: str, url: str, headers: dict[str, str], domain: str) -> "_Response":
        with self._lock:
            self.requests += 1
        try:
            request = urllib.request.Request(url, method=method, headers=headers)
            with _OPENER.open(request, timeout=self.timeout) as response:
                body = response.read() if method == "GET" else b""
                return _Response(response.status, response.headers, body)
        except urllib.error.HTTPError as exc:
            with exc:
                return _Response(exc.code, exc.headers, b"")
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise RegistryError(domain, f"cannot be reached: {reason}") from None
        except ValueError as exc:  # a URL urllib cannot use (a token realm, say)
            raise Unsupported(domain, f"cannot request {url!r}: {exc}") from None


@dataclass
class _Response:
    status: int
    headers: "email.message.Message"
    body: bytes


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else url


def _basic(credentials: Credentials) -> str:
    raw = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def next_page(url: str, link: str | None) -> str | None:
    """The next page of a listing from its ``Link`` header (``</v2/x/tags/list?last=b&n=2>;
    rel="next"``), made absolute against ``url``; None on the last page (pure)."""
    match = _NEXT_LINK.search(link or "")
    return urllib.parse.urljoin(url, match.group(1)) if match else None


def parse_tags(body: bytes, domain: str, path: str) -> list[str]:
    """The tags of one page of ``/v2/<name>/tags/list`` (``{"name", "tags": [...]}``;
    ``tags`` may be null when there is none) (pure)."""
    try:
        data = json.loads(body)
    except ValueError:
        raise Unsupported(domain, f"the tags of {path} are not JSON", 200) from None
    tags = data.get("tags") if isinstance(data, dict) else ()
    if tags is None:
        return []
    if not isinstance(tags, list):
        raise Unsupported(domain, f"the tags of {path} are not a list", 200)
    return [tag for tag in tags if isinstance(tag, str)]


class _NoRedirectToOtherHosts(urllib.request.HTTPRedirectHandler):
    """Follow redirects but never send the Authorization header to another host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is None:
            return None
        # urllib turns a redirected HEAD into a GET: a full manifest GET, which
        # Docker Hub counts as a pull. Keep it a HEAD.
        new.method = req.get_method() if req.get_method() == "HEAD" else None
        if urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_NoRedirectToOtherHosts())
