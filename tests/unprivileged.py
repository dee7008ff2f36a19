"""Run puller (or any Python) as uid ``nobody``, as an unprivileged local user would.

The interpreter running the tests may live where ``nobody`` cannot read it
(a virtualenv or pyenv in root's home), so the user's side runs with the system
interpreter (/usr/bin/python3, the same 3.11 ABI) and a world-readable copy of
puller's runtime packages (``install_requires`` of setup.cfg and what they
need, compiled extensions included): ``copy_runtime``. ``Nobody`` (the
client's side) and ``cluster/unprivileged.py`` (a daemon's) both use it.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
from packaging.requirements import Requirement

NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def runtime_requirements() -> list[str]:
    """``install_requires`` of setup.cfg (found in whichever section holds it)."""
    parser = configparser.ConfigParser()
    parser.read(os.path.join(CHECKOUT, "setup.cfg"))
    for section in parser.sections():
        if parser.has_option(section, "install_requires"):
            return [line.strip() for line in parser.get(section, "install_requires").splitlines()
                    if line.strip()]
    raise RuntimeError("setup.cfg has no install_requires")


def distributions(requirements: list[str]) -> list[importlib.metadata.Distribution]:
    """The installed distributions of ``requirements`` and of everything they need."""
    extras: dict[str, set[str]] = {}
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = [Requirement(text) for text in requirements]
    while todo:
        requirement = todo.pop()
        key = requirement.name.lower().replace("_", "-")
        wanted = set(requirement.extras)
        if key in found and wanted <= extras[key]:
            continue
        extras[key] = extras.get(key, set()) | wanted
        found[key] = dist = importlib.metadata.distribution(requirement.name)
        for text in dist.requires or []:
            needed = Requirement(text)
            if needed.marker is None or any(needed.marker.evaluate({"extra": extra})
                                            for extra in extras[key] or {""}):
                todo.append(needed)
    return list(found.values())


def copy_runtime(site: str) -> None:
    """Copy puller's runtime packages (not puller itself) into ``site``."""
    for dist in distributions(runtime_requirements()):
        for file in dist.files or []:
            if str(file).startswith(".."):
                continue  # scripts and data outside site-packages
            source = str(file.locate())
            if os.path.isfile(source):
                target = os.path.join(site, str(file))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy2(source, target)


def readable_by_all(root: str) -> None:
    for directory, _, files in os.walk(root):
        os.chmod(directory, 0o755)
        for name in files:
            path = os.path.join(directory, name)
            os.chmod(path, os.stat(path).st_mode | 0o444)


class Nobody:
    """A world-readable directory holding puller and its packages; ``run`` runs as nobody there."""

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="puller-nobody-")
        self.site = os.path.join(self.root, "site")
        spec = importlib.util.find_spec("puller")
        assert spec is not None and spec.submodule_search_locations
        shutil.copytree(list(spec.submodule_search_locations)[0],
                        os.path.join(self.site, "puller"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        copy_runtime(self.site)
        readable_by_all(self.root)

    def path(self, name: str) -> str:
        """A path in the shared directory (readable by nobody)."""
        return os.path.join(self.root, name)

    def write(self, name: str, text: str) -> str:
        path = self.path(name)
        with open(path, "w") as handle:
            handle.write(text)
        os.chmod(path, 0o644)
        return path

    def run(self, *args: str, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
        """``/usr/bin/python3 ARGS`` as nobody, with only PATH and ``env`` set."""
        return subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
             SYSTEM_PYTHON, *args],
            capture_output=True, text=True, timeout=timeout, cwd=self.root,
            env={"PATH": "/usr/bin:/bin", "HOME": self.root, "PYTHONPATH": self.site,
                 "PYTHONDONTWRITEBYTECODE": "1", **(env or {})})

    def puller(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return self.run("-m", "puller", *args, env=env)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def nobody():
    if os.geteuid() != 0:
        pytest.skip("acting as nobody needs root")
    if not shutil.which("setpriv"):
        pytest.fail("setpriv is missing (util-linux)")
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.fail(f"{SYSTEM_PYTHON} is missing: apt-get install python3")
    version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info >= (3, 11))"],
                             capture_output=True, text=True, timeout=30).stdout.strip()
    if version != "True":
        pytest.fail(f"{SYSTEM_PYTHON} is older than 3.11 ({sys.version_info} runs the tests)")
    user = Nobody()
    yield user
    user.close()
