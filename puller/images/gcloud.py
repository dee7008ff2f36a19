"""Google registries ("gcloud support") without the gcloud binary.

For ``gcr.io``, ``*.gcr.io``, ``*-docker.pkg.dev`` (and any extra hosts
configured), an access token comes from google-auth's Application Default
Credentials (``GOOGLE_APPLICATION_CREDENTIALS`` or the metadata server). It
serves as the password of user ``oauth2accesstoken`` both for manifest HEADs
and for ``docker login`` into puller's own docker config directory, so the
user's ``~/.docker`` is never touched.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
from typing import Sequence

from ..errors import PullerError
from .credentials import Credentials
from .reference import Reference

log = logging.getLogger(__name__)

DEFAULT_GOOGLE_REGISTRIES = ("gcr.io", "*.gcr.io", "*-docker.pkg.dev")
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
USERNAME = "oauth2accesstoken"


class GoogleAuthError(PullerError):
    def __init__(self, registry: str, reason: str):
        self.registry = registry
        super().__init__(
            f"registry {registry} needs Google credentials, and none could be had ({reason}): "
            "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or run on a "
            "Google Cloud machine whose service account may read the registry")


def is_google_registry(domain: str, patterns: Sequence[str] = DEFAULT_GOOGLE_REGISTRIES) -> bool:
    return any(fnmatch.fnmatchcase(domain, pattern) for pattern in patterns)


class GoogleTokens:
    """Access tokens from Application Default Credentials, refreshed when no longer valid."""

    def __init__(self) -> None:
        self._credentials = None
        self._lock = threading.Lock()

    def token(self, registry: str, force_refresh: bool = False, stale: str | None = None) -> str:
        """A valid access token. ``force_refresh`` gets a new one (the registry
        refused it) — unless ``stale``, the token that was refused, is given and
        another caller has replaced it meanwhile."""
        import google.auth
        import google.auth.exceptions
        import google.auth.transport.requests

        with self._lock:
            try:
                if self._credentials is None:
                    self._credentials, _project = google.auth.default(scopes=list(SCOPES))
                if force_refresh and stale is not None and self._credentials.token != stale:
                    force_refresh = False  # already refreshed by another check
                if force_refresh or not self._credentials.valid:
                    self._credentials.refresh(google.auth.transport.requests.Request())
            except (google.auth.exceptions.GoogleAuthError, ValueError, OSError) as exc:
                if not force_refresh:  # read the environment again next time
                    self._credentials = None
                raise GoogleAuthError(registry, _first_line(exc)) from None
            return self._credentials.token

    def current(self) -> str | None:
        """The token in hand, valid or not, without asking anyone (None: none yet)."""
        with self._lock:
            return getattr(self._credentials, "token", None)

    def credentials(self, registry: str, force_refresh: bool = False) -> Credentials:
        return Credentials(USERNAME, self.token(registry, force_refresh))


def _first_line(exc: BaseException) -> str:
    """google-auth errors carry (message, cause) as args: the message's first line."""
    message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    return message.strip().splitlines()[0] if message.strip() else type(exc).__name__


class GoogleLogins:
    """``docker login`` to Google registries into puller's own docker config,
    again whenever the token changes."""

    def __init__(self, docker, tokens: GoogleTokens, config_dir: str,
                 patterns: Sequence[str] = DEFAULT_GOOGLE_REGISTRIES):
        self.docker = docker
        self.tokens = tokens
        self.config_dir = config_dir
        self.patterns = tuple(patterns)
        self._logged_in: dict[str, str] = {}
        self._lock = threading.Lock()

    def config_for(self, ref: str, refresh: bool = False) -> str | None:
        """The docker config dir to pull ``ref`` with: puller's own (logged in)
        for a Google registry, None (the host's) for any other. ``refresh``
        (after a pull was refused) gets a new token and logs in again."""
        domain = Reference.parse(ref).domain
        if not is_google_registry(domain, self.patterns):
            return None
        token = self.tokens.token(domain, force_refresh=refresh)
        with self._lock:
            if refresh or self._logged_in.get(domain) != token:
                os.makedirs(self.config_dir, mode=0o700, exist_ok=True)
                self.docker.login(domain, USERNAME, token, self.config_dir)
                self._logged_in[domain] = token
                log.info("logged in to %s with a Google access token", domain)
        return self.config_dir
