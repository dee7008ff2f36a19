"""``track:`` — which tag of a repository a semver range stands for now.

``Tracker.refresh`` lists the tags of the repositories that are due (the same
schedule and triggers as the digest checks of ``freshness``: new ranges at
once, every repository on a due pass, a trigger or a push at once), in a
bounded pool, through ``Freshness`` (its credentials, rate limit and Google
tokens). A registry that fails is retried with backoff; its error is kept.
``Tracker.resolve`` then names the highest tag that matches a range
(``versions.best_tag``). What each (repository, range) last resolved to is
remembered, in the state dir too, so a registry outage or a restart never
leaves a tracked service without its tag.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable

from .. import constants
from ..backoff import next_backoff
from ..errors import PullerError
from ..fsutil import read_json_object, write_atomically
from .freshness import Freshness
from .reference import is_tag
from .versions import best_tag

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Listing:
    """What the registry last said of one repository's tags."""

    tags: tuple[str, ...] | None = None  # the last listing that succeeded
    error: str | None = None  # why the last one failed
    checked_at: float = 0.0
    attempts: int = 0  # failed listings in a row
    retry_at: float = 0.0  # not asked again before (after a failure)


@dataclass(frozen=True)
class Resolution:
    """The tag a range of a repository stands for, as far as this node knows."""

    repo: str
    range: str
    tag: str | None  # None: nothing matched yet
    error: str | None = None  # the registry's error, when its last listing failed
    resolved_at: float | None = None

    def reason(self) -> str:
        """Why there is no tag to run (for a service that waits)."""
        if self.error:
            return f"cannot resolve track: {self.range} ({self.error})"
        return f"no tag of {self.repo} matches {self.range} yet"


def _key(repo: str, range_: str) -> str:
    return f"{repo} {range_}"


class Tracker:
    """The tags of tracked repositories, and what each range resolved to."""

    def __init__(self, freshness: Freshness, path: str | None = None,
                 page_size: int | None = None, workers: int = constants.PULL_WORKERS):
        self.freshness = freshness
        self.path = path
        self.page_size = page_size
        self.workers = workers
        self.listings: dict[str, Listing] = {}
        self._lock = threading.Lock()
        self._resolved: dict[str, dict] = self._load()  # "repo range" → {"tag", "at"}
        self._best: dict[str, tuple[tuple[str, ...], str | None]] = {}  # per listing, once

    def _load(self) -> dict[str, dict]:
        if self.path is None:
            return {}
        data = read_json_object(self.path, lambda why: log.warning(
            "%s %s; tracked services resolve again", self.path, why))
        return {key: entry for key, entry in data.items()
                if isinstance(entry, dict) and isinstance(entry.get("tag"), str)
                and isinstance(entry.get("at"), (int, float))}

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            write_atomically(self.path, json.dumps(self._resolved, indent=1, sort_keys=True),
                             mode=0o600)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.path, exc)

    def refresh(self, repos: Iterable[str], now: float | None = None,
                force: Iterable[str] = ()) -> None:
        """List the tags of ``repos`` (skipping those in backoff, except ``force``)."""
        now = time.time() if now is None else now
        force = set(force)
        with self._lock:
            due = sorted(repo for repo in set(repos) | force
                         if repo in force or self.listings.get(repo, Listing()).retry_at <= now)
        if due:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(due)),
                                    thread_name_prefix="puller-tags") as pool:
                list(pool.map(lambda repo: self._list(repo, now), due))

    def _list(self, repo: str, now: float) -> None:
        try:
            # a registry may list anything: only what docker can run as a tag counts
            tags = tuple(tag for tag in self.freshness.list_tags(repo, self.page_size)
                         if is_tag(tag))
        except PullerError as exc:
            retry_after = getattr(exc, "retry_after", None)
            with self._lock:
                old = self.listings.get(repo, Listing())
                attempts = old.attempts + 1
                retry_at = next_backoff(attempts, now, constants.CHECK_BACKOFF_MIN,
                                        constants.CHECK_BACKOFF_MAX)
                self.listings[repo] = Listing(old.tags, str(exc), now, attempts,
                                              max(retry_at, now + (retry_after or 0)))
            return
        with self._lock:
            self.listings[repo] = Listing(tags, None, now)

    def known(self, repo: str) -> bool:
        """Has ``repo`` been listed (or tried) since the start?"""
        with self._lock:
            return repo in self.listings

    def resolve(self, repo: str, range_: str, now: float | None = None) -> Resolution:
        """The tag ``range_`` stands for in ``repo``: from the latest listing, else
        the last one remembered (a registry that fails keeps it)."""
        now = time.time() if now is None else now
        key = _key(repo, range_)
        with self._lock:
            listing = self.listings.get(repo, Listing())
            remembered = self._resolved.get(key)
            tag = self._best_of(key, listing, range_)
            if tag is None:  # nothing listed, or nothing matches: keep what ran
                tag = remembered["tag"] if remembered else None
                return Resolution(repo, range_, tag, listing.error,
                                  remembered["at"] if remembered else None)
            if remembered is None or remembered["tag"] != tag:
                if remembered is not None:
                    log.info("%s %s now resolves to %s (was %s)", repo, range_, tag,
                             remembered["tag"])
                self._resolved[key] = remembered = {"tag": tag, "at": now}
                self._save()
        return Resolution(repo, range_, tag, listing.error, remembered["at"])

    def _best_of(self, key: str, listing: Listing, range_: str) -> str | None:
        """The best tag of a listing for a range, worked out once per listing
        (services sharing a range, and passes that list nothing, reuse it)."""
        if listing.tags is None:
            return None
        cached = self._best.get(key)
        if cached is not None and cached[0] is listing.tags:
            return cached[1]
        tag = best_tag(listing.tags, range_)
        self._best[key] = (listing.tags, tag)
        return tag

    def faults(self) -> dict[str, str]:
        """The repositories whose last listing failed, with why."""
        with self._lock:
            return {f"registry {repo} tags": f"{repo}: cannot list its tags: {listing.error}; "
                                             "tracked services keep their last tag"
                    for repo, listing in self.listings.items() if listing.error}

    def forget(self, repos: Iterable[str], keys: Iterable[tuple[str, str]]) -> None:
        """Forget the listings of repositories no longer tracked here, and the
        resolutions of (repository, range) pairs no longer in use."""
        repos, keep = set(repos), {_key(repo, range_) for repo, range_ in keys}
        with self._lock:
            for repo in [repo for repo in self.listings if repo not in repos]:
                del self.listings[repo]
            for key in [key for key in self._best if key not in keep]:
                del self._best[key]
            gone = [key for key in self._resolved if key not in keep]
            for key in gone:
                del self._resolved[key]
            if gone:
                self._save()
