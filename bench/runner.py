"""What every benchmark's run shares: the engine, the registry, the cleanup of
containers and images, a scratch directory, the teardown in order, the failure
message and the report.

    def main(argv=None) -> int:
        args = parser.parse_args(argv)
        return run("NAME.md", lambda bench: measure_and_render(bench, args))

``run`` gives the body a started ``Bench``; the body returns the report's text,
or raises one of ``FAILURES`` (the run then prints "benchmark failed: ..." and
no numbers). Whatever the body started and registered with ``Bench.defer`` or
``Bench.tracked`` is undone last-first, before the cleanup, the registry, the
engine and the scratch directory, also after a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from typing import Callable

from tests.testenv import Cleanup, Engine, Registry

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


class BenchError(Exception):
    """The benchmark could not measure what it meant to: no numbers are printed."""


# a benchmark that raises one of these failed: said in one line, exit status 1
FAILURES = (BenchError, AssertionError, subprocess.CalledProcessError, RuntimeError, OSError)


def write_report(name: str, text: str) -> str:
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, name)
    with open(path + ".tmp", "w") as handle:
        handle.write(text)
    os.replace(path + ".tmp", path)
    return path


class Bench:
    """One benchmark run's engine, registry (None without one), cleanup and scratch
    ``root``; teardowns registered on ``stack`` run last-first on ``close``."""

    def __init__(self, registry: bool = True) -> None:
        self.stack = contextlib.ExitStack()
        self.root = tempfile.mkdtemp(prefix="puller-bench-")
        self.defer(shutil.rmtree, self.root, ignore_errors=True)
        self.engine = Engine()
        self.defer(self.engine.close)
        self.registry = Registry() if registry else None
        if self.registry is not None:
            self.defer(self.registry.close)
        self.cleanup = Cleanup()
        self.defer(self.cleanup.close)

    def start(self) -> None:
        """A reachable engine, then the registry started."""
        self.engine.ensure()
        if self.registry is not None:
            self.registry.start()

    def defer(self, callback: Callable, *args, **kwargs) -> None:
        """Call ``callback(*args, **kwargs)`` on ``close``, before what was registered earlier."""
        self.stack.callback(callback, *args, **kwargs)

    def tracked(self, method: str) -> list:
        """An empty list: on ``close``, ``method`` of each item it holds then is
        called, in the list's order."""
        items: list = []
        self.defer(lambda: [getattr(item, method)() for item in items])
        return items

    def close(self) -> None:
        self.stack.close()


def run(report_name: str, body: Callable[[Bench], str], registry: bool = True) -> int:
    """Run ``body`` on a started ``Bench``, always torn down; print its text and
    write it to results/``report_name``: 0. On one of ``FAILURES``: said, 1."""
    bench = Bench(registry)
    try:
        bench.start()
        text = body(bench)
    except FAILURES as exc:
        detail = getattr(exc, "stderr", "") or ""
        print(f"benchmark failed: {exc} {detail}".rstrip(), file=sys.stderr)
        return 1
    finally:
        bench.close()
    print(text)
    write_report(report_name, text)
    return 0


# --- cluster daemons, shared by bench.cluster and bench.rollout -----------------------


def start_nodes(root: str, cleanup: Cleanup, daemons: list, prefix: str, dirs: str,
                count: int, make: Callable) -> list:
    """Start ``count`` cluster daemons in turn, named ``{prefix}{i}-{run}`` (i from
    1), each with its own new directory ``root/{dirs}-{i}``. ``make(i, name,
    directory, started)`` builds the i-th (from 0; ``started``: those started so
    far, to join), added to ``daemons`` before it starts."""
    nodes: list = []
    for i in range(count):
        name = f"{prefix}{i + 1}-{cleanup.run_id[:6]}"
        cleanup.nodes.append(name)
        directory = os.path.join(root, f"{dirs}-{i + 1}")
        os.makedirs(directory)
        node = make(i, name, directory, nodes)
        daemons.append(node)
        nodes.append(node.start())
    return nodes


def write_secret(root: str) -> str:
    """A new cluster secret file ``root/secret`` (mode 0600); its path."""
    secret = os.path.join(root, "secret")
    with open(os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
        handle.write(f"bench-{uuid.uuid4().hex}\n")
    return secret
