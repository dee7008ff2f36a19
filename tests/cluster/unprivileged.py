"""Running puller as uid ``nobody``: the system interpreter, its packages, a fake docker.

The test interpreter's packages may live where ``nobody`` cannot read (a
virtualenv under root's home), so the runtime dependencies are copied into a
directory ``nobody`` can read (``tests/unprivileged.copy_runtime``), put on
``PYTHONPATH`` of the system ``python3`` (the same 3.11 ABI). ``docker`` is a script that exits 0:
``nobody`` cannot reach the engine anyway, and the daemon gets past start-up.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from ..unprivileged import (CHECKOUT, NOBODY, SYSTEM_PYTHON, copy_runtime,  # noqa: F401
                            readable_by_all)


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
        copy_runtime(self.site)
        readable_by_all(self.root)
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
