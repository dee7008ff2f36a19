"""Is each image still fresh? Ask the registry with manifest HEADs.

``Freshness.check`` asks the registry for the current digest of each tag, in
a bounded pool, with a per-registry rate limit that honours ``429`` and
``Retry-After``. A registry that fails is retried with backoff, its error
kept as the ref's state (reported once by the daemon, never acted upon: the
running container stays). What each ref's registry said is kept, with when,
for status.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence, TypeVar

from .. import constants
from ..backoff import next_backoff
from ..errors import ImageReferenceError, PullerError
from .credentials import Credentials, lookup
from .gcloud import DEFAULT_GOOGLE_REGISTRIES, GoogleTokens, is_google_registry
from .reference import Reference
from .registry import AuthenticationError, RegistryClient, RegistryError, Unsupported

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Remote:
    """What the registry last said of one tag."""

    digest: str | None = None  # the tag's current digest
    error: str | None = None  # why the last check failed
    fallback: bool = False  # a HEAD cannot tell: pull the tag to know
    checked_at: float = 0.0
    attempts: int = 0  # failed checks in a row
    retry_at: float = 0.0  # not asked again before (after a failure)


class RateLimit:
    """At most ``rate`` requests a second to one registry, and none while it said
    to wait (429 / Retry-After)."""

    def __init__(self, rate: float):
        self.spacing = 1.0 / rate if rate > 0 else 0.0
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, registry: str) -> None:
        with self._lock:
            now = time.monotonic()
            at = max(now, self._next.get(registry, now))
            self._next[registry] = at + self.spacing
        if at > now:
            time.sleep(at - now)

    def hold(self, registry: str, seconds: float) -> None:
        with self._lock:
            self._next[registry] = max(self._next.get(registry, 0.0),
                                       time.monotonic() + seconds)


class Freshness:
    """The registry's view of every image ref this node runs."""

    def __init__(self, client: RegistryClient | None = None,
                 google_registries: Sequence[str] = DEFAULT_GOOGLE_REGISTRIES,
                 google: GoogleTokens | None = None,
                 workers: int = constants.PULL_WORKERS,
                 rate: float = constants.REGISTRY_RATE):
        self.google_registries = tuple(google_registries)
        self.google = google or GoogleTokens()
        self.client = client or RegistryClient(self.credentials_for)
        self.workers = workers
        self.limit = RateLimit(rate)
        self.state: dict[str, Remote] = {}
        self._lock = threading.Lock()

    def is_google(self, domain: str) -> bool:
        return is_google_registry(domain, self.google_registries)

    def credentials_for(self, domain: str) -> Credentials | None:
        if self.is_google(domain):
            return self.google.credentials(domain)
        return lookup(domain)

    def remotes(self) -> dict[str, Remote]:
        with self._lock:
            return dict(self.state)

    def check(self, refs: Iterable[str], now: float | None = None,
              force: Iterable[str] = ()) -> dict[str, Remote]:
        """Ask the registry for each ref's digest, skipping refs in backoff
        (except those in ``force``); returns the state of every ref asked about."""
        now = time.time() if now is None else now
        force = set(force)
        refs = sorted(set(refs) | force)
        with self._lock:
            due = [ref for ref in refs
                   if ref in force or self.state.get(ref, Remote()).retry_at <= now]
        if due:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(due)),
                                    thread_name_prefix="puller-check") as pool:
                list(pool.map(lambda ref: self._check_one(ref, now), due))
        with self._lock:
            return {ref: self.state[ref] for ref in refs if ref in self.state}

    def _check_one(self, ref: str, now: float) -> None:
        try:
            reference = Reference.parse(ref)
        except ImageReferenceError as exc:
            self._record(ref, Remote(error=str(exc), checked_at=now))
            return
        domain = reference.domain
        self.limit.wait(domain)
        try:
            digest = self._head(reference)
        except Unsupported as exc:
            self._record(ref, Remote(fallback=True, error=str(exc), checked_at=now))
            return
        except AuthenticationError as exc:
            if self.is_google(domain):
                # refused even with a fresh token: the account may not read it
                self._fail(ref, f"registry {domain} refused a fresh Google access token for "
                           f"{reference.path} ({exc.status}): the service account of "
                           "GOOGLE_APPLICATION_CREDENTIALS (or of this machine) may not "
                           "read it", now)
            else:
                # docker may hold credentials puller cannot read: let a pull try
                self._record(ref, Remote(fallback=True, error=str(exc), checked_at=now))
            return
        except RegistryError as exc:
            if exc.retry_after:
                self.limit.hold(domain, exc.retry_after)
            self._fail(ref, str(exc), now, exc.retry_after)
            return
        except PullerError as exc:  # e.g. no Google credentials
            self._fail(ref, str(exc), now)
            return
        self._record(ref, Remote(digest=digest, checked_at=now))

    def head(self, ref: str) -> str:
        """The digest the registry serves for ``ref`` now, asked at once (a manifest
        HEAD); ``RegistryError`` (status 404: no such tag) or ``PullerError``."""
        reference = Reference.parse(ref)
        self.limit.wait(reference.domain)
        return self._head(reference)

    def _head(self, reference: Reference) -> str:
        return self._asking(reference, lambda: self.client.head_digest(reference))

    def list_tags(self, repo: str, page_size: int | None = None) -> list[str]:
        """Every tag of repository ``repo`` (no tag or digest), with the same
        credentials, rate limit and Google token refresh as the HEADs;
        ``RegistryError`` or ``PullerError`` when the registry cannot say."""
        reference = Reference.parse(repo)
        self.limit.wait(reference.domain)
        return self._asking(reference, lambda: self.client.list_tags(reference, page_size))

    def _asking(self, reference: Reference, ask: Callable[[], T]) -> T:
        google = self.is_google(reference.domain)
        token = self.google.current() if google else None
        try:
            return ask()
        except AuthenticationError:
            if not google:
                raise
            # a stale token: refresh once (unless a concurrent check just did), retry once
            self.client.forget_tokens(reference.domain)
            self.google.token(reference.domain, force_refresh=True, stale=token)
            return ask()

    def _fail(self, ref: str, error: str, now: float, retry_after: float | None = None) -> None:
        with self._lock:
            old = self.state.get(ref, Remote())
        attempts = old.attempts + 1
        retry_at = next_backoff(attempts, now, constants.CHECK_BACKOFF_MIN,
                                constants.CHECK_BACKOFF_MAX)
        if retry_after:
            retry_at = max(retry_at, now + retry_after)
        # Keep the last digest known: it is still the best guess of the tag.
        self._record(ref, Remote(digest=old.digest, error=error, checked_at=now,
                                 attempts=attempts, retry_at=retry_at))

    def _record(self, ref: str, remote: Remote) -> None:
        with self._lock:
            old = self.state.get(ref)
            self.state[ref] = remote
        if remote.digest and (old is None or old.digest != remote.digest):
            if old is not None and old.digest:
                log.info("%s is now %s in the registry (was %s)", ref, remote.digest[:19],
                         old.digest[:19])
            else:
                log.debug("%s is %s in the registry", ref, remote.digest[:19])

    def forget(self, keep: Iterable[str]) -> None:
        keep = set(keep)
        with self._lock:
            for ref in [ref for ref in self.state if ref not in keep]:
                del self.state[ref]
