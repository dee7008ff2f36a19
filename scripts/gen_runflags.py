#!/usr/bin/env python3
"""Regenerate the ``docker run`` flag table in ``puller/node/runflags.py``.

Usage::

    python scripts/gen_runflags.py [DOCKER ...]            # print the module
    python scripts/gen_runflags.py --write [DOCKER ...]    # rewrite it in place

Each DOCKER (default: the ``docker`` on PATH) is asked for ``docker run
--help`` twice: with the caller's environment, and with an unreachable
daemon, because a client hides the flags that the daemon it talks to does
not support (by API version or OS). The flags found are merged with the
entries already in the table, which keeps the hidden aliases no help lists
(``--net``, ``--net-alias``, ``--dns-opt``). The output is sorted, so the
same inputs always give the same file. Two sources that disagree on a flag's
shorthand or arity are reported and nothing is written.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from puller.node import runflags  # noqa: E402  (needs the path set above)
from puller.node.runflags import Flag, parse_help  # noqa: E402

BEGIN = "# BEGIN GENERATED"
END = "# END GENERATED"
UNREACHABLE_DAEMON = "tcp://127.0.0.1:1"


def run_help(docker: str, *, reach_daemon: bool) -> str:
    """Return the output of ``DOCKER run --help``."""
    env = dict(os.environ)
    if not reach_daemon:
        env.pop("DOCKER_CONTEXT", None)
        env["DOCKER_HOST"] = UNREACHABLE_DAEMON
    done = subprocess.run(
        [docker, "run", "--help"], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


def merge(sources: dict[str, dict[str, Flag]]) -> tuple[dict[str, Flag], list[str]]:
    """Union of the flags of every source; conflicts are returned as messages."""
    merged: dict[str, Flag] = {}
    origin: dict[str, str] = {}
    conflicts: list[str] = []
    for source, flags in sources.items():
        for name, flag in sorted(flags.items()):
            known = merged.get(name)
            if known is None:
                merged[name] = flag
                origin[name] = source
            elif known != flag:
                conflicts.append(f"{source} has {flag!r} but {origin[name]} has {known!r}")
    return merged, conflicts


def render_table(flags: dict[str, Flag]) -> str:
    """The generated block of ``puller/node/runflags.py``, markers included."""
    lines = [f"{BEGIN} by scripts/gen_runflags.py -- edit by regenerating"]
    lines.append("_TABLE: tuple[Flag, ...] = (")
    for name in sorted(flags):
        flag = flags[name]
        short = f'"{flag.short}"' if flag.short else "None"
        lines.append(f'    Flag("{flag.long}", {short}, {flag.takes_value}),')
    lines.append(")")
    lines.append(END)
    return "\n".join(lines)


def render_module(current: str, flags: dict[str, Flag]) -> str:
    """The module source with its generated block replaced."""
    start = current.index(BEGIN)
    stop = current.index(END, start) + len(END)
    return current[:start] + render_table(flags) + current[stop:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "dockers", nargs="*", help="docker clients to ask (default: the docker on PATH)"
    )
    parser.add_argument("--write", action="store_true", help="rewrite puller/node/runflags.py in place")
    options = parser.parse_args(argv)

    dockers = options.dockers or [shutil.which("docker") or "docker"]
    sources: dict[str, dict[str, Flag]] = {"existing table": dict(runflags.FLAGS)}
    for docker in dockers:
        for reach in (True, False):
            label = f"{docker} ({'daemon' if reach else 'no daemon'})"
            try:
                sources[label] = parse_help(run_help(docker, reach_daemon=reach))
            except (OSError, subprocess.SubprocessError) as error:
                print(f"cannot run `{docker} run --help`: {error}", file=sys.stderr)
                return 1
            if not sources[label]:
                print(f"no flags found in the help of {label}", file=sys.stderr)
                return 1
    flags, conflicts = merge(sources)
    if conflicts:
        print("\n".join(conflicts), file=sys.stderr)
        return 1

    module_path = Path(runflags.__file__)
    source = render_module(module_path.read_text(), flags)
    if options.write:
        module_path.write_text(source)
    else:
        sys.stdout.write(source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
