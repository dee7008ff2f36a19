"""Control-surface benchmark: CLI latency against a live daemon, and rollback.

    python -m bench.control [--runs N] [--rounds N] [--services N]

1. ``puller ls`` and ``puller status`` against a live ``puller -d`` running N
   services (default 10): from the command's start to its exit (a subprocess,
   as a user runs it), median and p90, with floors measured alike:
   ``python -c pass`` and ``python -c "import click"``. Where the start-up goes:
   ``python -X importtime`` of ``puller ls`` (the heaviest imports).
2. rollback: POST /v1/services/NAME/rollback → the previous image serving (the
   history holds the digest each revision ran, so the rollback is pinned to
   it), against ``docker start`` of a stopped container of the same image in
   the same round. Both are timed alike, from the request or command to the
   first HTTP answer with the expected content (polled every 5 ms); the
   container's ``start`` event (``docker events``) and the daemon's
   ``-verbose`` log tell where the time goes.

Prints a Markdown report and writes it to bench/results/control.md. Exits
non-zero, printing no numbers, if anything does not converge. Every daemon,
registry, container and image it makes is stopped or removed at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time

from puller.control.client import Client
from puller.control.keys import read_key_file
from bench.freshness import (StartEvents, check_log, environment, environment_line,
                             isolated_flags, log_lines, p90)
from bench.runner import Bench, BenchError, run as run_bench
from bench.single_node import DaemonProcess, median, ms, swap, wait_serving, web_line, write_definition
from tests.cluster.conftest import free_port_pair
from tests.testenv import Cleanup, build_image, docker, free_port, wait_until

TARGET_CLI = 0.300
TARGET_ROLLBACK = 0.500
IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)")


def console_script() -> list[str]:
    """The ``puller`` command pip installed beside this interpreter, run by this
    interpreter (its argv after ``python``), else ``-m puller``."""
    script = os.path.join(os.path.dirname(sys.executable), "puller")
    if os.access(script, os.X_OK):
        return [script]
    return ["-m", "puller"]


def run_timed(argv: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr}")
    return elapsed, result.stdout


# --- 1. CLI latency ------------------------------------------------------------------


def bench_cli(target: list[str], services: list[str], runs: int) -> dict:
    """``target``: the flags that find the daemon and its key (-api, -state-dir)."""
    script = console_script()
    puller = script if script[0] != "-m" else [sys.executable, *script]
    commands = {
        "`python -c pass`": [sys.executable, "-c", "pass"],
        '`python -c "import click"`': [sys.executable, "-c", "import click"],
        '`python -c "import puller.cli"`': [sys.executable, "-c", "import puller.cli"],
        "`puller ls`": [*puller, *target, "ls"],
        "`puller status`": [*puller, *target, "status"],
        "`python -m puller ls`": [sys.executable, "-m", "puller", *target, "ls"],
    }
    on_path = shutil.which("puller")
    if script[0] != "-m" and on_path and os.path.realpath(on_path) != os.path.realpath(script[0]):
        commands["`puller ls` through the `puller` first on PATH (not the console script: "
                 "a wrapper here)"] = [on_path, *target, "ls"]
    times: dict[str, list[float]] = {name: [] for name in commands}
    for run in range(runs + 1):  # run 0 warms the page cache; commands interleaved
        for name, argv in commands.items():
            elapsed, out = run_timed(argv)
            if "puller ls" in name or "puller status" in name:
                missing = [s for s in services if s not in out]
                if missing:
                    raise BenchError(f"{name} did not list {missing}:\n{out}")
            if run:
                times[name].append(elapsed)
    return {name: {"median": median(values), "p90": p90(values)}
            for name, values in times.items()}


def import_costs(target: list[str], repeats: int = 3) -> dict:
    """``python -X importtime`` of ``puller ls``, the least of ``repeats`` runs per
    module: the top-level imports, and what each ``puller`` module imports itself.
    importtime prints a module after its imports, each nested 2 spaces deeper."""
    best: dict[str, tuple[float, float]] = {}  # name → (self, cumulative)
    top: set[str] = set()
    children: dict[str, list[str]] = {}
    totals = []
    for _ in range(repeats):
        result = subprocess.run([sys.executable, "-X", "importtime", *console_script(),
                                 *target, "ls"], capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise BenchError(f"python -X importtime puller ls failed: {result.stderr[-2000:]}")
        pending: dict[int, list[str]] = {}
        total = 0.0
        for line in result.stderr.splitlines():
            match = IMPORT_LINE.match(line)
            if not match:
                continue
            own, cumulative = int(match[1]) / 1e6, int(match[2]) / 1e6
            depth, name = len(match[3]) // 2, match[4]
            children[name] = pending.pop(depth + 1, [])
            pending.setdefault(depth, []).append(name)
            if depth == 0:
                top.add(name)
                total += cumulative
            if name not in best or cumulative < best[name][1]:
                best[name] = (own, cumulative)
        totals.append(total)
    return {"best": best, "top": sorted(top, key=lambda n: -best[n][1]),
            "children": children, "total": min(totals)}


# Candidates to import lazily or to avoid, each imported after what the CLI
# needs anyway: its marginal cost is what leaving it out would save.
CANDIDATES = (
    ("urllib.request", "import click, json", "puller.control.client's HTTP client"),
    ("http.client", "import click, json", "urllib.request's own HTTP stack (email, ssl)"),
    ("urllib.request", "import click, json, http.client", "urllib.request beyond http.client"),
    ("socket", "import click, json", "a bare socket, enough for http:// on loopback"),
    ("logging", "import click, json", "used by the daemon only"),
    ("dataclasses", "import click, json", "ClientSettings only"),
)


def marginal_imports(repeats: int = 5) -> list[tuple[str, str, str, float]]:
    """(module, imported after, why, seconds): the least of ``repeats`` runs."""
    result = []
    for module, before, why in CANDIDATES:
        times = []
        for _ in range(repeats):
            out = subprocess.run([sys.executable, "-X", "importtime", "-c",
                                  f"{before}; import {module}"],
                                 capture_output=True, text=True, timeout=60).stderr
            for line in out.splitlines():
                match = IMPORT_LINE.match(line)
                if match and match[4] == module:
                    times.append(int(match[2]) / 1e6)
        result.append((module, before, why, min(times) if times else 0.0))
    return result


def api_latency(client: Client, runs: int) -> dict[str, float]:
    """The daemon's answer alone, from this process (no interpreter start, no imports)."""
    result = {}
    for path in ("/v1/services", "/v1/cluster"):
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            client.call("GET", path)
            times.append(time.perf_counter() - started)
        result[path] = median(times)
    return result


# --- 2. rollback ---------------------------------------------------------------------


def history_digest(client: Client, name: str) -> str | None:
    revisions = client.call("GET", f"/v1/services/{name}/history")["revisions"]
    return revisions[-1].get("digest") if revisions else None


def deployed(client: Client, name: str, digest: str) -> None:
    """Wait until the history's latest revision ran ``digest``."""
    wait_until(lambda: history_digest(client, name) == digest, timeout=20, interval=0.05,
               what=f"the history of {name} to record {digest[:19]}")


def bench_rollback(client: Client, daemon: DaemonProcess, events: StartEvents, cleanup: Cleanup,
                   name: str, container: str, port: int, repo: str, digests: dict, rounds: int
                   ) -> dict:
    alive = lambda: daemon.process.poll() is None  # noqa: E731
    deployed(client, name, digests["v1"])
    client.call("POST", f"/v1/services/{name}/tag", {"tag": "v2"})
    wait_serving(port, "v2", time.perf_counter(), give_up=lambda: not alive())
    deployed(client, name, digests["v2"])

    base_port = free_port()
    base_name = f"bench-rb-base-{cleanup.run_id}"
    line = web_line(base_port, cleanup.label, f"{repo}:v1").split()  # docker run ...
    docker("run", "--detach", "--name", base_name, *line[2:])
    wait_serving(base_port, "v1", time.perf_counter())

    keys = ("rollback", "answer", "to_facts", "to_stop", "aside", "run_to_start", "start_to_serve",
            "docker", "docker_cli", "docker_start_event", "docker_start_to_serve", "extra")
    samples: dict[str, list[float]] = {key: [] for key in keys}
    for round_ in range(rounds + 1):  # round 0: a warm-up
        # puller: the request, then the previous revision (v1, pinned) serving
        wall = time.time()

        def request() -> tuple[float, dict]:
            answer = client.call("POST", f"/v1/services/{name}/rollback")
            return time.perf_counter(), answer

        elapsed, started, (answered, answer) = swap(port, "v1", request, alive=alive)
        if answer["service"].get("digest") != digests["v1"]:
            raise BenchError(f"the rollback did not pin v1's digest: {answer}")
        started_at = events.wait(container, wall, alive=alive) - wall
        steps = phases(daemon.log(), wall)
        deployed(client, name, digests["v1"])
        # back to v2, untimed
        client.call("POST", f"/v1/services/{name}/tag", {"tag": "v2"})
        wait_serving(port, "v2", time.perf_counter(), give_up=lambda: not alive())
        deployed(client, name, digests["v2"])

        # by hand: docker start of the stopped container
        docker("stop", base_name)
        base_wall = time.time()
        own, base_started, ran = swap(base_port, "v1", lambda: (docker("start", base_name),
                                                                 time.perf_counter())[1])
        start_event = events.wait(base_name, base_wall) - base_wall
        if round_:
            for key, value in (
                    ("rollback", elapsed), ("answer", answered - started),
                    ("to_facts", steps["facts"] - (answered - started)),
                    ("to_stop", steps["stop"] - steps["facts"]),
                    ("aside", steps["run"] - steps["stop"]),
                    ("run_to_start", started_at - steps["run"]),
                    ("start_to_serve", elapsed - started_at),
                    ("docker", own), ("docker_cli", ran - base_started),
                    ("docker_start_event", start_event),
                    ("docker_start_to_serve", own - start_event),
                    ("extra", elapsed - own)):
                samples[key].append(value)
    daemon.check_alive()
    result = {key: median(values) for key, values in samples.items()}
    result["rollback_p90"] = p90(samples["rollback"])
    return result


def phases(log: str, since: float) -> dict[str, float]:
    """Seconds from ``since`` to the rollback pass's first docker call, its
    ``docker stop`` and its ``docker run`` (the daemon's -verbose log, ms stamps)."""
    lines = [(stamp - since, message) for stamp, logger, message in log_lines(log, since)
             if logger == "puller.node.docker"]
    found = {}
    for key, prefix in (("facts", "docker "), ("stop", "docker stop "), ("run", "docker run ")):
        after = found.get("facts", 0.0)
        match = next((at for at, message in lines if at >= after and message.startswith(prefix)),
                     None)
        if match is None:
            raise BenchError(f"the daemon's log lacks `{prefix.strip()}` after the rollback:\n"
                             f"{log[-3000:]}")
        found[key] = match
    return found


# --- report --------------------------------------------------------------------------


def render(args, env: dict, cli: dict, api: dict, imports: dict, rollback: dict) -> str:
    floor = cli["`python -c pass`"]["median"]
    lines = [
        "# Control-surface benchmark",
        "",
        environment_line(env),
        "",
        f"## 1. CLI latency, a live `puller -d` with {args.services} services "
        f"({args.runs} runs each, interleaved)",
        "",
        "From the command's start to its exit (a subprocess). `puller` is the console "
        "script pip installed (`puller.cli:main`).",
        "",
        "| Command | Median | p90 | Median − `python -c pass` | Target |",
        "|---|---|---|---|---|",
    ]
    for name, stats in cli.items():
        target = ""
        if name in ("`puller ls`", "`puller status`"):
            target = f"< {ms(TARGET_CLI)}: {'met' if stats['median'] < TARGET_CLI else 'missed'}"
        lines.append(f"| {name} | {ms(stats['median'])} | {ms(stats['p90'])} | "
                     f"{ms(stats['median'] - floor)} | {target} |")
    best, children = imports["best"], imports["children"]
    lines += [
        "",
        f"The daemon's answer alone (an in-process `Client.call`, median of {args.runs}): "
        f"GET /v1/services (`puller ls`) {ms(api['/v1/services'])}, GET /v1/cluster "
        f"(`puller status`) {ms(api['/v1/cluster'])}.",
        "",
        f"`python -X importtime` of `puller ls` (least of 3 runs per module; "
        f"{ms(imports['total'])} of imports in all). Imported at top level (by the "
        "interpreter's start-up, `site`, and by the script), heaviest first:",
        "",
        "| Module | Cumulative | Self |",
        "|---|---|---|",
    ]
    for name in imports["top"][:args.imports]:
        lines.append(f"| `{name}` | {ms(best[name][1])} | {ms(best[name][0])} |")
    for module in [n for n in imports["top"] if n == "site" or n.startswith("puller")]:
        kids = sorted(children.get(module, []), key=lambda n: -best[n][1])
        if not kids:
            continue
        lines += ["", f"What `{module}` imports itself ({ms(best[module][1])} in all, "
                      f"{ms(best[module][0])} its own body):", "",
                  "| Module | Cumulative |", "|---|---|"]
        lines += [f"| `{kid}` | {ms(best[kid][1])} |" for kid in kids if best[kid][1] >= 0.0005]
    lines += ["", "Marginal cost of candidates to import lazily or to avoid, each imported "
                  "after what the CLI needs anyway (`python -X importtime`, least of 5):", "",
              "| Module | Imported after | Cumulative | Note |", "|---|---|---|---|"]
    lines += [f"| `{module}` | `{before}` | {ms(seconds)} | {why} |"
              for module, before, why, seconds in imports["marginal"]]
    r = rollback
    lines += [
        "",
        f"## 2. Rollback ({args.rounds} rounds after a warm-up, medians)",
        "",
        "POST /v1/services/NAME/rollback makes the previous revision (tag v1, pinned to the "
        "digest it ran) current again, while v2 runs; measured from the request to the first "
        "HTTP answer from v1. In the same round: `docker stop` (untimed), then `docker start` "
        "of a container of v1 → serving, timed alike.",
        "",
        "| Measure | Result | Target |",
        "|---|---|---|",
        f"| rollback request → v1 serving (median) | {ms(r['rollback'])} | |",
        f"| rollback request → v1 serving (p90) | {ms(r['rollback_p90'])} | |",
        f"| docker start → serving (median) | {ms(r['docker'])} | |",
        f"| rollback beyond docker start (median of the rounds' differences) | {ms(r['extra'])} "
        f"| ≤ {ms(TARGET_ROLLBACK)}: {'met' if r['extra'] <= TARGET_ROLLBACK else 'missed'} |",
        "",
        "Where the time goes (medians; the daemon's `-verbose` log, ms stamps, and the "
        "containers' `start` events):",
        "",
        "| Step | Rollback | docker start |",
        "|---|---|---|",
        f"| request → the API's answer (definition pinned and written) | {ms(r['answer'])} | |",
        f"| answer → the pass's first docker call (watcher/wake, "
        f"debounce, scan) | {ms(r['to_facts'])} | |",
        f"| first docker call → `docker stop` of v2 (image inspect, ps, inspect, plan) | "
        f"{ms(r['to_stop'])} | |",
        f"| `docker stop` + `docker rename` of v2 (concurrent) → `docker run` of v1 | "
        f"{ms(r['aside'])} | |",
        f"| `docker run` invoked → container running (start event) | {ms(r['run_to_start'])} | |",
        f"| command invoked → container running (start event) | | "
        f"{ms(r['docker_start_event'])} |",
        f"| container running → serving | {ms(r['start_to_serve'])} | "
        f"{ms(r['docker_start_to_serve'])} |",
        f"| the `docker start` command's own duration | | {ms(r['docker_cli'])} |",
        "",
    ]
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------


def measure(bench: Bench, args) -> str:
    root, cleanup = bench.root, bench.cleanup
    env = environment()
    repo = f"{bench.registry.host}/bench-control-{cleanup.run_id}"
    digests = {}
    for tag in ("v1", "v2"):
        cleanup.images.append(f"{repo}:{tag}")
        digests[tag] = build_image(f"{repo}:{tag}", tag)

    directory = os.path.join(root, "defs")
    os.makedirs(directory)
    node = cleanup.node("bench-control")
    port = free_port_pair()
    api = f"http://127.0.0.1:{port + 1}"
    name = f"bench-rb-{cleanup.run_id}"
    web = free_port()
    write_definition(directory, name, web_line(web, cleanup.label, repo), repo, "v1")
    services = [name]
    for i in range(1, args.services):
        services.append(f"bench-idle-{cleanup.run_id}-{i:02d}")
        write_definition(directory, services[-1],
                         f"docker run --init --label {cleanup.label} {repo} sleep 100000",
                         repo, "v1")
    events = StartEvents(cleanup.label)
    bench.defer(events.close)
    daemon = DaemonProcess(node, directory, os.path.join(root, "control.log"),
                           "-interval=600", "-verbose", *isolated_flags(root, "control", port))
    bench.defer(daemon.stop)
    daemon.wait_started()
    state = os.path.join(root, "state-control")  # isolated_flags' -state-dir
    client = Client(api, read_key_file(os.path.join(state, "api.key")))
    wait_serving(web, "v1", time.perf_counter(),
                 give_up=lambda: daemon.process.poll() is not None)

    def all_running() -> bool:
        daemon.check_alive()
        status = client.call("GET", "/v1/status")["services"]
        return all(status.get(s, {}).get("state") == "running" for s in services)

    wait_until(all_running, timeout=60, interval=0.2, what=f"{args.services} services to run")

    print(f"1/2 CLI latency, {args.runs} runs ...", file=sys.stderr, flush=True)
    target = [f"-api={api}", f"-state-dir={state}"]  # root's CLI finds the key there
    cli = bench_cli(target, services, args.runs)
    imports = import_costs(target)
    imports["marginal"] = marginal_imports()
    answers = api_latency(client, args.runs)
    print(f"2/2 rollback, {args.rounds} rounds ...", file=sys.stderr, flush=True)
    rollback = bench_rollback(client, daemon, events, cleanup, name, name, web, repo,
                              digests, args.rounds)
    daemon.stop()
    check_log(daemon)
    return render(args, env, cli, answers, imports, rollback)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.control", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=12, help="runs of each command (default 12)")
    parser.add_argument("--rounds", type=int, default=6, help="rollback rounds (default 6)")
    parser.add_argument("--services", type=int, default=10,
                        help="services the daemon runs (default 10)")
    parser.add_argument("--imports", type=int, default=8,
                        help="top-level imports listed (default 8)")
    args = parser.parse_args(argv)
    if min(args.runs, args.rounds, args.services, args.imports) < 1:
        parser.error("--runs, --rounds, --services and --imports must be positive")

    return run_bench("control.md", lambda bench: measure(bench, args))


if __name__ == "__main__":
    sys.exit(main())
