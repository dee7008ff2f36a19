"""Pass-cost benchmark: one idle pass over N services, metrics on vs off.

    python -m bench.pass_cost [--services N] [--passes N]

Two in-process daemons look after the same N services (default 30) of one
node, on one engine: one with ``-metrics`` (its ``/metrics`` served), one
without. Once every service runs, they take turns — on, off, off, on, ... —
for ``--passes`` idle passes each (``tick()``, no registry check due, nothing
to change), so the machine's drift hits both alike; each pass is timed from
outside with ``time.perf_counter``. Reported: the median, p90 and least pass
of each, the ratio of the medians and the median of the per-round ratios, the
docker calls per pass, what folding one report into the metrics costs alone,
and a scrape of ``/metrics``. Besides (off the pass, in its own thread in the
daemon): one image-retention run over this node.

Prints a Markdown report and writes it to bench/results/pass_cost.md. Exits
non-zero, printing no numbers, if anything does not converge. Every daemon,
registry, container and image it makes is stopped or removed at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.request

from puller.daemon import Config, Daemon
from bench.freshness import environment, environment_line, p90
from bench.runner import Bench, BenchError, run
from bench.single_node import check_converged, converge, median, ms
from tests.testenv import build_image, docker, free_port

OBSERVE_REPEATS = 200
SCRAPES = 20


def write_services(directory: str, repo: str, label: str, count: int) -> list[str]:
    names = []
    for i in range(count):
        name = f"s{i:02d}"
        bash = f"docker run --init --label {label} {repo} httpd -f -p 80 -h /www"
        path = os.path.join(directory, f"{name}.yml")
        with open(path, "w") as handle:
            handle.write(f"name: {name}\nbash: '{bash}'\nrepo: {repo}\ntag: v1\n"
                         "health_timeout: 0\n")
        names.append(name)
    return names


def timed_pass(daemon: Daemon, services: int, what: str) -> tuple[float, int]:
    started = time.perf_counter()
    report = daemon.tick()
    elapsed = time.perf_counter() - started
    check_converged(report, services, what)
    return elapsed, report.docker_calls


def alternate(on: Daemon, off: Daemon, services: int, passes: int) -> dict:
    """``passes`` idle passes of each, in turns (ABBA), timed one by one."""
    times = {"on": [], "off": []}
    calls = {"on": set(), "off": set()}
    ratios = []
    for i in range(passes):
        order = (("on", on), ("off", off)) if i % 2 == 0 else (("off", off), ("on", on))
        this = {}
        for key, daemon in order:
            this[key], count = timed_pass(daemon, services, f"metrics {key}, pass {i + 1}")
            times[key].append(this[key])
            calls[key].add(count)
        ratios.append(this["on"] / this["off"])
    return {"times": times, "calls": calls, "ratios": ratios}


def observe_cost(daemon: Daemon) -> float:
    """Seconds to fold one pass's report into the metrics, alone (median)."""
    report = daemon.last_report
    samples = []
    for _ in range(OBSERVE_REPEATS):
        started = time.perf_counter()
        daemon.metrics.observe(report, 0.01, 0)
        samples.append(time.perf_counter() - started)
    return median(samples)


def scrape(address: str) -> tuple[float, int]:
    """A GET of /metrics: (median seconds, bytes)."""
    samples, size = [], 0
    for _ in range(SCRAPES):
        started = time.perf_counter()
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as answer:
            size = len(answer.read())
        samples.append(time.perf_counter() - started)
    return median(samples), size


def retention_run(daemon: Daemon, refs: set[str]) -> tuple[float, int, int]:
    """One image-retention run over this node: (seconds, docker calls, images removed)."""
    calls = daemon.docker.calls
    started = time.perf_counter()
    removed = daemon.pruner.run(refs)
    return time.perf_counter() - started, daemon.docker.calls - calls, len(removed)


def render(args, env: dict, result: dict, observe: float, scraped: tuple[float, int],
           retention: tuple[float, int, int]) -> str:
    on, off = result["times"]["on"], result["times"]["off"]
    row = lambda key, values: (  # noqa: E731
        f"| {key} | {ms(median(values))} | {ms(p90(values))} | {ms(min(values))} | "
        f"{', '.join(str(c) for c in sorted(result['calls'][key]))} |")
    return "\n".join([
        "# Pass-cost benchmark", "",
        environment_line(env), "",
        f"## One idle pass, {args.services} services, metrics on vs off "
        f"({args.passes} passes each, in turns)", "",
        "An in-process `tick()`, timed from outside: the definitions read, one `docker ps`, one "
        "batched `docker image inspect`, the plan, the history, notifications and (on) the "
        "metrics folded in.", "",
        "| metrics | median | p90 | least | docker calls per pass |",
        "|---|---|---|---|---|",
        row("on", on), row("off", off), "",
        f"Ratio on/off: {median(on) / median(off):.3f} (medians), "
        f"{median(result['ratios']):.3f} (median of the per-round ratios).", "",
        f"Folding one report into the metrics alone: {observe * 1e6:.0f} µs "
        f"(median of {OBSERVE_REPEATS}). A scrape of `/metrics`: {ms(scraped[0])}, "
        f"{scraped[1]} bytes (median of {SCRAPES}).", "",
        "## Image retention (off the pass: the daemon runs it in a thread of its own)", "",
        f"One run over this node after a deploy proved itself: {ms(retention[0])}, "
        f"{retention[1]} docker calls, {retention[2]} image(s) removed (the release that runs "
        "is kept). It runs only after a proven deploy, never on an idle pass.", "",
    ])


def measure(bench: Bench, args) -> str:
    registry, cleanup, root = bench.registry, bench.cleanup, bench.root
    daemons: list[Daemon] = bench.tracked("close")
    env = environment()
    repo = f"{registry.host}/bench-pass-{cleanup.run_id}"
    publisher = repo.replace("127.0.0.1", "localhost")
    build_image(f"{publisher}:v1", "v1")
    docker("image", "rm", f"{publisher}:v1")  # so puller pulls it (and records it)
    directory = os.path.join(root, "defs")
    os.makedirs(directory)
    names = write_services(directory, repo, cleanup.label, args.services)
    node = cleanup.node("bench-pass")
    address = f"127.0.0.1:{free_port()}"
    for key, metrics in (("on", address), ("off", None)):
        daemons.append(Daemon(Config(
            node=node, directory=directory, state_dir=os.path.join(root, f"state-{key}"),
            name_template="{node}-{service}", zeroconf=False, metrics=metrics)))
    on, off = daemons
    on.metrics.serve(address)
    print(f"deploying {args.services} services ...", file=sys.stderr, flush=True)
    converge(on, args.services)
    for daemon in (on, off, on, off):  # warm: the off daemon's registry check, caches
        timed_pass(daemon, args.services, "warm-up")
    print(f"{args.passes} idle passes each, in turns ...", file=sys.stderr, flush=True)
    result = alternate(on, off, args.services, args.passes)
    observe = observe_cost(on)
    scraped = scrape(address)
    refs = {f"{repo}:v1"}
    retention = retention_run(on, refs)
    if retention[2]:
        raise BenchError(f"retention removed {retention[2]} image(s) a service runs")
    if len(names) != args.services:
        raise BenchError("not every service was written")
    return render(args, env, result, observe, scraped, retention)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pass_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=30, help="services (default 30)")
    parser.add_argument("--passes", type=int, default=40,
                        help="idle passes of each daemon (default 40)")
    args = parser.parse_args(argv)
    if min(args.services, args.passes) < 1:
        parser.error("--services and --passes must be positive")

    return run("pass_cost.md", lambda bench: measure(bench, args))


if __name__ == "__main__":
    sys.exit(main())
