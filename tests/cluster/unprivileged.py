"""Running puller as uid ``nobody``: the system interpreter, its packages, a fake docker.

The test interpreter's packages may live where ``nobody`` cannot read (a
virtualenv under root's home), so the runtime dependencies are copied into a
directory ``nobody`` can read, put on ``PYTHONPATH`` of the system
``python3`` (the same 3.11 ABI). ``docker`` is a script that exits 0:
``nobody`` cannot reach the engine anyway, and the daemon gets past start-up.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import os
import shutil
import subprocess
import tempfile

from packaging.requirements import Requirement

NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"
CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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


class Unprivileged:
    """A scratch tree ``nobody`` can read: ``site`` (packages), ``bin/docker``; and
    ``home(name)``, directories ``nobody`` owns. ``close()`` removes it all."""

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="puller-nobody-")
        os.chmod(self.root, 0o755)
        self.site = os.path.join(self.root, "site")
        self.bin = os.path.join(self.root, "bin")

    def setup(self) -> "Unprivileged":
        os.makedirs(self.bin)
        docker = os.path.join(self.bin, "docker")
        with open(docker, "w") as handle:
            handle.write("#!/bin/sh\nexit 0\n")
        os.chmod(docker, 0o755)
        for dist in distributions(runtime_requirements()):
            for file in dist.files or []:
                if str(file).startswith(".."):
                    continue  # scripts and data outside site-packages
                source = str(file.locate())
                if os.path.isfile(source):
                    target = os.path.join(self.site, str(file))
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    shutil.copy2(source, target)
        for directory, dirs, files in os.walk(self.root):
            os.chmod(directory, 0o755)
            for name in files:
                path = os.path.join(directory, name)
                os.chmod(path, os.stat(path).st_mode | 0o444)
        return self

    def home(self, name: str) -> str:
        """A directory of ``nobody``'s (for its -dir, -state-dir and HOME)."""
        path = os.path.join(self.root, name)
        os.makedirs(path)
        os.chown(path, NOBODY, NOBODY)
        return path

    def prefix(self, home: str) -> list[str]:
        """Run a command as ``nobody``, with the fake docker and the packages."""
        return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                "env", "-i", f"HOME={home}", f"PATH={self.bin}:/usr/bin:/bin",
                f"PYTHONPATH={CHECKOUT}:{self.site}"]

    def check(self) -> None:
        """The system interpreter, as ``nobody``, imports puller and what it needs."""
        result = subprocess.run(
            [*self.prefix(self.root), SYSTEM_PYTHON, "-c",
             "import sys, puller.cli, puller.daemon, zeroconf, yaml, sh, watchdog, click; "
             "assert sys.version_info[:2] == (3, 11), sys.version; "
             "import os; assert os.geteuid() == 65534"],
            capture_output=True, text=True, timeout=60, cwd=self.root)
        if result.returncode != 0:
            raise RuntimeError(f"{SYSTEM_PYTHON} cannot run puller as nobody:\n{result.stderr}")

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
