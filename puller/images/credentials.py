"""The registry credentials docker itself would use.

Read from the docker config (``$DOCKER_CONFIG/config.json``, else
``~/.docker/config.json``): ``auths`` entries (base64 ``user:password``),
``credHelpers`` per registry and the default ``credsStore``, the latter two
through the ``docker-credential-<helper> get`` protocol.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import subprocess
import threading
from dataclasses import dataclass

log = logging.getLogger(__name__)

DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
DOCKER_HUB_HOSTS = ("docker.io", "index.docker.io", "registry-1.docker.io")
IDENTITY_TOKEN_USER = "<token>"  # a helper's Username when Secret is an identity token


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never print a secret
        return f"Credentials(username={self.username!r}, password=***)"


def config_dir() -> str:
    return os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")


def load_config(directory: str | None = None) -> dict:
    path = os.path.join(directory or config_dir(), "config.json")
    try:
        with open(path) as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("cannot read the docker config %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _keys_for(registry: str) -> list[str]:
    """The keys under which docker may have stored a registry's credentials."""
    if registry in DOCKER_HUB_HOSTS:
        return [DOCKER_HUB_AUTH_KEY, "index.docker.io", "docker.io", "registry-1.docker.io"]
    return [registry, f"https://{registry}", f"http://{registry}",
            f"https://{registry}/v1/", f"https://{registry}/v2/"]


def convert_to_hostname(key: str) -> str:
    """``https://host:port/v1/`` → ``host:port``, as docker matches legacy keys."""
    for prefix in ("http://", "https://"):
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    return key.split("/", 1)[0]


def _candidates(mapping: dict, registry: str) -> list[str]:
    """The keys of ``mapping`` naming ``registry``: the usual spellings first,
    then any other whose host part is the registry (docker's fallback)."""
    keys = [key for key in _keys_for(registry) if key in mapping]
    hosts = {convert_to_hostname(key) for key in _keys_for(registry)}
    keys += sorted(key for key in mapping if isinstance(key, str) and key not in keys
                   and convert_to_hostname(key) in hosts)
    return keys


def _section(config: dict, name: str) -> dict:
    section = config.get(name) if isinstance(config, dict) else None
    return section if isinstance(section, dict) else {}


def from_auths(config: dict, registry: str) -> Credentials | None:
    """Credentials stored inline by ``docker login`` (pure)."""
    auths = _section(config, "auths")
    for key in _candidates(auths, registry):
        entry = auths[key]
        if not isinstance(entry, dict):
            continue
        username, password = entry.get("username"), entry.get("password")
        if isinstance(username, str) and isinstance(password, str) and username and password:
            return Credentials(username, password)
        encoded = entry.get("auth")
        if not encoded or not isinstance(encoded, str):
            continue
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            log.warning("docker config: the auth entry for %s is not valid base64", key)
            continue
        if user:
            return Credentials(user, password)
    return None


def helper_for(config: dict, registry: str) -> str | None:
    """The credential helper docker would ask for ``registry``: its
    ``credHelpers`` entry, else the default ``credsStore`` (pure)."""
    helpers = _section(config, "credHelpers")
    for key in _candidates(helpers, registry):
        if isinstance(helpers[key], str) and helpers[key]:
            return helpers[key]
    store = config.get("credsStore") if isinstance(config, dict) else None
    return store if isinstance(store, str) and store else None


_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def _warn_once(helper: str, message: str) -> None:
    """A broken helper is asked on every check: say so once, then at DEBUG."""
    with _warned_lock:
        first = (helper, message) not in _warned
        _warned.add((helper, message))
    log.log(logging.WARNING if first else logging.DEBUG, "%s", message)


def from_helper(helper: str, registry: str) -> Credentials | None:
    """Ask ``docker-credential-<helper> get`` (the docker credential helper protocol)."""
    server = DOCKER_HUB_AUTH_KEY if registry in DOCKER_HUB_HOSTS else registry
    if not helper or "/" in helper:  # a name, never a path to run
        _warn_once(helper, f"docker config: ignoring the credential helper {helper!r}")
        return None
    try:
        result = subprocess.run([f"docker-credential-{helper}", "get"], input=server,
                                capture_output=True, text=True, timeout=30)
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:  # ValueError: not UTF-8
        _warn_once(helper, f"credential helper docker-credential-{helper} failed: {exc}")
        return None
    if result.returncode != 0:
        return None  # "credentials not found in native keychain"
    try:
        data = json.loads(result.stdout)
    except ValueError:
        _warn_once(helper, f"credential helper docker-credential-{helper} answered no JSON")
        return None
    if not isinstance(data, dict):
        return None
    username, secret = data.get("Username"), data.get("Secret")
    if not (isinstance(username, str) and isinstance(secret, str) and username and secret):
        return None
    if username == IDENTITY_TOKEN_USER:
        # an OAuth refresh token, not a password: Basic auth cannot use it
        log.debug("docker-credential-%s holds an identity token for %s; not usable for a HEAD",
                  helper, registry)
        return None
    return Credentials(username, secret)


def lookup(registry: str, directory: str | None = None) -> Credentials | None:
    """The credentials docker would use for ``registry``, or None (anonymous)."""
    config = load_config(directory)
    helper = helper_for(config, registry)
    if helper:
        found = from_helper(helper, registry)
        if found:
            return found
    return from_auths(config, registry)
