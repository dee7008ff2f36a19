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
from dataclasses import dataclass

log = logging.getLogger(__name__)

DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
DOCKER_HUB_HOSTS = ("docker.io", "index.docker.io", "registry-1.docker.io")


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


def from_auths(config: dict, registry: str) -> Credentials | None:
    """Credentials stored inline by ``docker login`` (pure)."""
    auths = config.get("auths") or {}
    for key in _keys_for(registry):
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        if entry.get("username") and entry.get("password"):
            return Credentials(entry["username"], entry["password"])
        encoded = entry.get("auth")
        if not encoded:
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
    helpers = config.get("credHelpers") or {}
    for key in _keys_for(registry):
        if key in helpers:
            return helpers[key]
    return config.get("credsStore") or None


def from_helper(helper: str, registry: str) -> Credentials | None:
    """Ask ``docker-credential-<helper> get`` (the docker credential helper protocol)."""
    server = DOCKER_HUB_AUTH_KEY if registry in DOCKER_HUB_HOSTS else registry
    try:
        result = subprocess.run([f"docker-credential-{helper}", "get"], input=server,
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("credential helper docker-credential-%s failed: %s", helper, exc)
        return None
    if result.returncode != 0:
        return None  # "credentials not found in native keychain"
    try:
        data = json.loads(result.stdout)
    except ValueError:
        return None
    if data.get("Username") and data.get("Secret"):
        return Credentials(data["Username"], data["Secret"])
    return None


def lookup(registry: str, directory: str | None = None) -> Credentials | None:
    """The credentials docker would use for ``registry``, or None (anonymous)."""
    config = load_config(directory)
    helper = helper_for(config, registry)
    if helper:
        found = from_helper(helper, registry)
        if found:
            return found
    return from_auths(config, registry)
