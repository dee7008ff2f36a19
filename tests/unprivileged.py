"""Run puller (or any Python) as uid ``nobody``, as an unprivileged local user would.

The interpreter running the tests may live where ``nobody`` cannot read it
(a virtualenv or pyenv in root's home), so the user's side runs with the system
interpreter (/usr/bin/python3) and a world-readable copy of the packages the
client needs: puller itself, click, PyYAML (without its C extension, which
PyYAML then does without) and google-re2 (with its extension, built for this
same Python 3.11 ABI: the client checks a file's node pattern before sending).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"
PACKAGES = ("puller", "click", "yaml", "re2")
NATIVE = ("re2",)  # packages whose compiled extension is needed


class Nobody:
    """A world-readable directory holding the packages; ``run`` runs as nobody there."""

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="puller-nobody-")
        os.chmod(self.root, 0o755)
        self.site = os.path.join(self.root, "site")
        for name in PACKAGES:
            spec = importlib.util.find_spec(name)
            assert spec is not None and spec.submodule_search_locations, name
            source = list(spec.submodule_search_locations)[0]
            skip = ("__pycache__",) if name in NATIVE else ("*.so", "__pycache__")
            shutil.copytree(source, os.path.join(self.site, name),
                            ignore=shutil.ignore_patterns(*skip))
        for directory, dirs, files in os.walk(self.root):
            for entry in dirs:
                os.chmod(os.path.join(directory, entry), 0o755)
            for entry in files:
                os.chmod(os.path.join(directory, entry), 0o644)

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
