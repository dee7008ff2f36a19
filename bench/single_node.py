"""Single-node benchmark: puller against plain ``docker`` on this machine.

    python -m bench.single_node [--rounds N] [--services N]

1. edit -> new container serving: a tag edit picked up by ``puller -d`` (a
   subprocess, as users run it) vs ``docker rm -f`` + ``docker run -d`` of the
   same container by hand; plus where puller's time goes (an in-process
   daemon whose docker calls are timed).
2. an idle pass over N services: docker calls and wall time per pass, with and
   without the periodic pull; CPU share of ``puller -d -interval=1``.
3. deploying N services in one pass: default concurrency vs one worker.

Prints a Markdown report and writes it to bench/results/single_node.md. Exits
non-zero, printing no numbers, if anything does not converge. Every container,
image, registry and daemon it starts is removed or stopped at the end.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from puller import constants
from puller.daemon import Config, Daemon, PassReport
from puller.node.definitions import parse_definition
from puller.node.docker import Docker
from puller.node.planner import Action
from bench.runner import Bench, BenchError, run
from tests.testenv import Cleanup, build_image, docker, fetch, free_port, wait_until

POLL = 0.005  # seconds between HTTP polls
# A connection made while `docker run` sets up the new container's port can
# stall for the 1 s TCP SYN retransmit; a short timeout makes the next poll try
# again, so the time measured is when the new container first serves.
FETCH_TIMEOUT = 0.05
SERVE_TIMEOUT = 30.0


# --- helpers -------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def median(values) -> float:
    values = list(values)
    if not values:
        raise BenchError("no samples")
    return statistics.median(values)


def write_definition(directory: str, name: str, bash: str, repo: str, tag: str) -> None:
    """Atomically (tmp + rename), as an editor or a deploy tool would. The
    rounds follow each other faster than a health timeout: with 0 the
    predecessor is removed right after its successor runs (off the timed path)."""
    path = os.path.join(directory, f"{name}.yml")
    with open(path + ".tmp", "w") as handle:
        handle.write(f"name: {name}\nbash: '{bash}'\nrepo: {repo}\ntag: {tag}\n"
                     "health_timeout: 0\n")
    os.replace(path + ".tmp", path)


def fetch_quietly(port: int) -> str | None:
    """``fetch``, also when the server dies mid-response (testenv's fetch lets
    http.client.IncompleteRead through)."""
    try:
        return fetch(port, timeout=FETCH_TIMEOUT)
    except http.client.HTTPException:
        return None


def wait_serving(port: int, content: str, started: float, timeout: float = SERVE_TIMEOUT,
                 give_up=lambda: False) -> float:
    """Poll ``port`` every 5 ms until it serves ``content``; seconds since ``started``."""
    deadline = started + timeout
    while True:
        if fetch_quietly(port) == content:
            return time.perf_counter() - started
        if give_up():
            raise BenchError(f"port {port}: gave up waiting for {content!r}: the daemon exited "
                             "or the measured action failed")
        if time.perf_counter() > deadline:
            raise BenchError(f"port {port} did not serve {content!r} within {timeout:.0f} s")
        time.sleep(POLL)


def swap(port: int, content: str, action, alive=lambda: True):
    """Start ``action`` in a thread and poll ``port`` meanwhile, every 5 ms, from
    the moment ``action`` starts until ``content`` is served (puller and the
    baseline are measured alike). Returns (seconds, start time, action's value)."""
    result: dict = {}

    def body() -> None:
        try:
            result["value"] = action()
        except BaseException as exc:  # re-raised below, in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    started = time.perf_counter()
    thread.start()
    try:
        elapsed = wait_serving(port, content, started,
                               give_up=lambda: "error" in result or not alive())
    finally:
        thread.join(timeout=SERVE_TIMEOUT)
    if "error" in result:
        raise result["error"]
    if thread.is_alive():
        raise BenchError("the measured action did not finish")
    return elapsed, started, result.get("value")


def web_line(port: int, label: str, repo: str) -> str:
    return f"docker run -p 127.0.0.1:{port}:80 --init --label {label} {repo} httpd -f -p 80 -h /www"


def other(tag: str) -> str:
    return "v2" if tag == "v1" else "v1"


def node_container_ids(node: str) -> set[str]:
    out = docker("ps", "-aq", "--no-trunc", "--filter", f"label={constants.LABEL_NODE}={node}").stdout
    return set(out.split())


def remove_node_containers(node: str) -> None:
    ids = node_container_ids(node)
    if ids:
        docker("rm", "-f", *sorted(ids))
    if node_container_ids(node):
        raise BenchError(f"containers of node {node} are still there after docker rm -f")


def check_converged(report: PassReport, services: int, what: str) -> None:
    """Every wanted service kept as it is, nothing else, nothing wrong."""
    actions = [step.action for step in report.plan.steps]
    if report.faults or any(not o.ok for o in (*report.pulls, *report.outcomes)):
        raise BenchError(f"{what}: faults {report.faults}, outcomes "
                         f"{[o.error for o in (*report.pulls, *report.outcomes) if not o.ok]}")
    if len(actions) != services or any(action is not Action.KEEP for action in actions):
        raise BenchError(f"{what}: not converged: {[str(step) for step in report.plan.steps]}")


def problems(log: str) -> str:
    """WARNING and ERROR lines, but the expected start-up one of a node without a secret."""
    return "\n".join(line for line in log.splitlines()
                     if ("WARNING" in line or "ERROR" in line) and "no explicit cluster secret" not in line)


def converge(daemon, services: int) -> None:
    """Passes until nothing changes (5 at most), then every service kept."""
    for _ in range(5):
        report = daemon.tick()
        if not report.plan.changes and not report.pulls:
            break
    else:
        raise BenchError(f"{services} services did not converge in 5 passes: {report.faults}")
    check_converged(report, services, "after the deploy")


class DaemonProcess:
    """``python -m puller -d ...`` in its own process, logging to a file."""

    def __init__(self, node: str, directory: str, log_path: str, *extra: str):
        self.log_path = log_path
        # its own ports, state and cluster: never clash with, or join, another puller
        isolated = (f"-port={free_port() - 1}", f"-state-dir={directory}.state",
                    "-zeroconf=false", f"-cluster=bench-{node}")
        with open(log_path, "a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "puller", "-d", f"-node={node}", f"-dir={directory}",
                 *isolated, *extra], stdout=log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        with open(self.log_path) as handle:
            return handle.read()

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(f"the daemon exited ({self.process.returncode}):\n{self.log()[-2000:]}")

    def wait_started(self) -> None:
        wait_until(lambda: "watching" in self.log() or self.process.poll() is not None,
                   timeout=30, what="the daemon to start")
        self.check_alive()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class TimedDocker(Docker):
    """The real docker CLI, with every call's start and end recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.timeline: list[tuple[str, float, float]] = []

    def _run(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return super()._run(*args, **kwargs)
        finally:
            verb = " ".join(args[:2]) if args[0] in ("container", "image") else args[0]
            self.timeline.append((verb, started, time.perf_counter()))


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(utime+stime, cutime+cstime) of ``pid`` in clock ticks."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime is field 14, so fields[11].
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return utime + stime, cutime + cstime


@dataclass
class Context:
    repo: str
    cleanup: Cleanup
    root: str
    processes: list[DaemonProcess] = field(default_factory=list)
    daemons: list[Daemon] = field(default_factory=list)

    def directory(self, name: str) -> str:
        path = os.path.join(self.root, name)
        os.makedirs(path)
        return path

    def daemon_process(self, node: str, directory: str, *extra: str) -> DaemonProcess:
        process = DaemonProcess(node, directory, os.path.join(self.root, f"{node}.log"), *extra)
        self.processes.append(process)
        return process

    def daemon(self, node: str, directory: str, docker_: Docker | None = None) -> Daemon:
        daemon = Daemon(Config(node=node, directory=directory, state_dir=directory + ".state"),
                        docker=docker_)
        self.daemons.append(daemon)
        return daemon


# --- 1. edit -> new container serving ------------------------------------------------


def bench_edit(ctx: Context, rounds: int) -> dict:
    repo, label = ctx.repo, ctx.cleanup.label

    # puller, as users run it
    directory = ctx.directory("edit")
    node = ctx.cleanup.node("bench-edit")
    port = free_port()
    line = web_line(port, label, repo)
    name = f"bench-edit-{ctx.cleanup.run_id}"  # container names are global: unique ones
    daemon = ctx.daemon_process(node, directory, "-interval=600")
    daemon.wait_started()
    alive = lambda: daemon.process.poll() is None  # noqa: E731
    for tag in ("v1", "v2", "v1"):  # create, then warm up: both tags pulled by this daemon
        write_definition(directory, name, line, repo, tag)
        wait_serving(port, tag, time.perf_counter(), give_up=lambda: not alive())

    # docker by hand: the argv puller runs for the same line, minus puller's labels
    base_port = free_port()
    base_name = f"bench-base-{ctx.cleanup.run_id}"
    service = parse_definition(
        f"name: {base_name}\nbash: '{web_line(base_port, label, repo)}'\nrepo: {repo}\n", f"{base_name}.yml")

    def base_argv(tag_: str) -> list[str]:
        return service.run.command(f"{repo}:{tag_}", ["--name", base_name, "--detach"])

    base_tag = tag
    docker(*base_argv(base_tag))
    wait_serving(base_port, base_tag, time.perf_counter())

    puller_times, base_times, base_rm, base_run, base_serve = [], [], [], [], []
    for _ in range(rounds):
        tag = other(tag)
        elapsed, _, _ = swap(port, tag, lambda: write_definition(directory, name, line, repo, tag),
                             alive=alive)
        puller_times.append(elapsed)
        daemon.check_alive()

        base_tag = other(base_tag)

        def by_hand() -> tuple[float, float]:
            docker("rm", "-f", base_name)
            removed = time.perf_counter()
            docker(*base_argv(base_tag))
            return removed, time.perf_counter()

        elapsed, started, (removed, ran) = swap(base_port, base_tag, by_hand)
        base_times.append(elapsed)
        base_rm.append(removed - started)
        base_run.append(ran - removed)
        base_serve.append(elapsed - (ran - started))
    daemon.stop()
    if problems(daemon.log()):
        raise BenchError(f"the daemon reported problems:\n{problems(daemon.log())}")

    # where puller's time goes: the same edit, one in-process pass, calls timed
    directory = ctx.directory("edit-timed")
    timed = TimedDocker()
    inproc = ctx.daemon(ctx.cleanup.node("bench-timed"), directory, timed)
    name = f"bench-timed-{ctx.cleanup.run_id}"
    port = free_port()
    line = web_line(port, label, repo)
    for tag in ("v1", "v2", "v1"):  # create, then both tags pulled
        write_definition(directory, name, line, repo, tag)
        inproc.tick()
        wait_serving(port, tag, time.perf_counter())
    phases: dict[str, list[float]] = {}
    tick_calls, serve_after_run, python_time, totals = [], [], [], []
    critical_calls, critical_time = [], []
    for _ in range(rounds):
        tag = other(tag)
        write_definition(directory, name, line, repo, tag)
        timed.timeline.clear()
        elapsed, started, (report, ended) = swap(
            port, tag, lambda: (inproc.tick(), time.perf_counter()))
        totals.append(elapsed)
        if [s.action for s in report.plan.changes] != [Action.RECREATE] or \
                not all(o.ok for o in report.outcomes):
            raise BenchError(f"the timed pass did not recreate the service: {report}")
        tick_calls.append(report.docker_calls)
        seen: dict[str, int] = {}
        for verb, start, end in timed.timeline:
            seen[verb] = seen.get(verb, 0) + 1
            key = verb if seen[verb] == 1 else f"{verb} #{seen[verb]}"
            phases.setdefault(key, []).append(end - start)
        served = started + elapsed
        before = [(start, end) for _v, start, end in timed.timeline if start < served]
        critical_calls.append(len(before))
        critical_time.append(sum(min(end, served) - start for start, end in before))
        run_end = next(end for verb, _s, end in timed.timeline if verb == "run")
        serve_after_run.append(started + totals[-1] - run_end)
        python_time.append((ended - started) - sum(end - start for _v, start, end in timed.timeline))

    # the cost of one docker CLI call, through puller's Docker class and directly
    via_puller, via_subprocess = [], []
    plain = Docker()
    for _ in range(10):
        started = time.perf_counter()
        plain._run("ps", "--all", "--quiet", "--filter", f"label={label}")
        via_puller.append(time.perf_counter() - started)
        started = time.perf_counter()
        docker("ps", "--all", "--quiet", "--filter", f"label={label}")
        via_subprocess.append(time.perf_counter() - started)

    return {
        "cli_puller": median(via_puller),
        "cli_subprocess": median(via_subprocess),
        "puller": median(puller_times),
        "baseline": median(base_times),
        "base_rm": median(base_rm),
        "base_run": median(base_run),
        "base_serve": median(base_serve),
        "timed_total": median(totals),
        "phases": {key: median(values) for key, values in phases.items()},
        "serve_after_run": median(serve_after_run),
        "python": median(python_time),
        "tick_calls": median(tick_calls),
        "critical_calls": median(critical_calls),
        "critical_time": median(critical_time),
    }


# --- 2. idle passes, CPU share -------------------------------------------------------


def bench_idle(ctx: Context, services: int, passes: int, cpu_seconds: float) -> tuple[dict, Daemon, str]:
    repo, label = ctx.repo, ctx.cleanup.label
    directory = ctx.directory("many")
    node = ctx.cleanup.node("bench-many")
    for i in range(services):
        write_definition(directory, f"bench-{ctx.cleanup.run_id}-{i:02d}",
                         f"docker run --init --label {label} {repo} sleep 100000", repo, "v1")
    daemon = ctx.daemon(node, directory)
    converge(daemon, services)
    ids = node_container_ids(node)
    if len(ids) != services:
        raise BenchError(f"{len(ids)} containers for {services} services")

    result: dict = {}
    for pull_due in (False, True):
        calls, walls, pulls = [], [], []
        for _ in range(passes):
            started = time.perf_counter()
            report = daemon.tick(pull_due=pull_due)
            walls.append(time.perf_counter() - started)
            check_converged(report, services, f"idle pass (pull_due={pull_due})")
            if len(report.pulls) > 1 or (report.pulls and not pull_due):
                raise BenchError(f"an idle pass (pull_due={pull_due}) pulled "
                                 f"{len(report.pulls)} images")
            calls.append(report.docker_calls)
            pulls.append(len(report.pulls))
        result[pull_due] = {"calls_min": min(calls), "calls_max": max(calls),
                            "wall": median(walls), "pulls": sum(pulls)}

    # CPU share of the daemon as users run it, over the same directory and node
    process = ctx.daemon_process(node, directory, "-interval=1", "-pull-every=1000000")
    process.wait_started()
    time.sleep(3)  # its first pass (with the initial pull) is over
    process.check_alive()
    hz = os.sysconf("SC_CLK_TCK")
    own0, children0 = cpu_ticks(process.pid)
    wall0 = time.monotonic()
    time.sleep(cpu_seconds)
    own1, children1 = cpu_ticks(process.pid)
    wall = time.monotonic() - wall0
    process.check_alive()
    process.stop()
    if node_container_ids(node) != ids:
        raise BenchError("the daemon changed containers during the idle CPU measurement")
    if problems(process.log()):
        raise BenchError(f"the daemon reported problems:\n{problems(process.log())}")
    result["cpu_own"] = (own1 - own0) / hz / wall
    result["cpu_all"] = (own1 - own0 + children1 - children0) / hz / wall
    result["cpu_wall"] = wall
    return result, daemon, node


# --- 3. deploying N services in one pass ---------------------------------------------


def bench_deploy(daemon: Daemon, node: str, services: int) -> dict:
    result = {}
    for key, workers in (("default", daemon.executor.workers), ("serial", 1)):
        remove_node_containers(node)
        daemon.executor.workers = workers
        started = time.perf_counter()
        report = daemon.tick()
        wall = time.perf_counter() - started
        creates = [o for o in report.outcomes if o.step.action is Action.CREATE]
        if report.pulls or len(creates) != services or not all(o.ok for o in report.outcomes):
            raise BenchError(f"deploy with {workers} worker(s): {len(creates)} creates, "
                             f"errors {[o.error for o in report.outcomes if not o.ok]}")
        check_converged(daemon.tick(), services, f"after the deploy with {workers} worker(s)")
        result[key] = {"workers": workers, "wall": wall, "calls": report.docker_calls}
    return result


# --- report --------------------------------------------------------------------------


def render(args, header: dict, edit: dict, idle: dict, deploy: dict) -> str:
    n = args.services
    overhead = (edit["puller"] - edit["baseline"]) / edit["baseline"]
    default, serial = deploy["default"], deploy["serial"]
    lines = [
        "# Single-node benchmark",
        "",
        f"Docker {header['docker']}, {header['nproc']} CPU(s), Python {header['python']}, "
        f"{header['date']}; {args.rounds} rounds, {n} services, {args.passes} idle passes.",
        "",
        "| Measure | Result | Target |",
        "|---|---|---|",
        f"| edit → new container serving, puller -d (median) | {ms(edit['puller'])} | |",
        f"| docker rm -f + docker run -d → serving (median) | {ms(edit['baseline'])} | |",
        f"| puller overhead vs docker | {overhead * 100:+.0f} % | ≤ 20 % |",
        f"| idle pass, {n} services: docker calls | {_calls(idle[False])} | ≤ 3 |",
        f"| idle pass, {n} services: wall time (median) | {ms(idle[False]['wall'])} | |",
        f"| pass with periodic pull (pull_due), {n} services, 1 image: docker calls | "
        f"{_calls(idle[True])} ({idle[True]['pulls']} docker pulls in {args.passes} passes) | |",
        f"| pass with periodic pull, {n} services: wall time (median) | {ms(idle[True]['wall'])} | |",
        f"| CPU, puller -d -interval=1, {n} services idle: daemon alone | "
        f"{idle['cpu_own'] * 100:.1f} % of a core | |",
        f"| CPU, same, including its docker CLI children | {idle['cpu_all'] * 100:.1f} % of a core | |",
        f"| deploy {n} services in one pass, {default['workers']} workers (DEPLOY_WORKERS) | "
        f"{default['wall']:.2f} s ({default['calls']} docker calls) | |",
        f"| deploy {n} services in one pass, 1 worker | {serial['wall']:.2f} s | |",
        f"| deploy speed-up, {default['workers']} workers vs 1 | "
        f"{serial['wall'] / default['wall']:.2f}× | |",
        "",
        f"Where an edit's time goes (medians; puller: one in-process pass, "
        f"{edit['tick_calls']:.0f} docker calls, each call timed):",
        "",
        "| Step | puller | docker by hand |",
        "|---|---|---|",
    ]
    phases = dict(edit["phases"])
    lines.append(f"| docker rm -f (the container to replace) | | {ms(edit['base_rm'])} |")
    for key, value in phases.items():
        hand = ms(edit["base_run"]) if key == "run" else ""
        lines.append(f"| docker {key} | {ms(value)} | {hand} |")
    lines += [
        f"| docker calls started before the new content is served: count, time in them | "
        f"{edit['critical_calls']:.0f}, {ms(edit['critical_time'])} | "
        f"2, {ms(edit['base_rm'] + edit['base_run'])} |",
        f"| Python in the pass (scan, plan, sh; pass time − docker calls) | {ms(edit['python'])} | |",
        f"| end of docker run → new content served | {ms(edit['serve_after_run'])} | "
        f"{ms(edit['base_serve'])} |",
        f"| total, edit → serving | {ms(edit['timed_total'])} (in-process pass, without "
        f"the file event and the {ms(constants.WATCH_DEBOUNCE)} debounce) | {ms(edit['baseline'])} |",
        f"| one `docker ps` call: puller's Docker._run (sh) vs subprocess.run | "
        f"{ms(edit['cli_puller'])} | {ms(edit['cli_subprocess'])} |",
        "",
        "puller's calls are listed in the order it makes them; those after `run` "
        "(the old container's removal, ...) mostly happen after the new content is served.",
        "",
    ]
    return "\n".join(lines)


def _calls(stats: dict) -> str:
    if stats["calls_min"] == stats["calls_max"]:
        return str(stats["calls_min"])
    return f"{stats['calls_min']}–{stats['calls_max']}"


# --- main ----------------------------------------------------------------------------


def measure(bench: Bench, args) -> str:
    cleanup = bench.cleanup
    daemons: list[Daemon] = bench.tracked("close")
    processes: list[DaemonProcess] = bench.tracked("stop")  # stopped before the daemons close
    header = {
        "docker": docker("version", "--format", "{{.Server.Version}}").stdout.strip(),
        "nproc": subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip(),
        "python": sys.version.split()[0],
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    repo = f"{bench.registry.host}/web"
    for tag in ("v1", "v2"):
        cleanup.images.append(f"{repo}:{tag}")
        build_image(f"{repo}:{tag}", tag)
    ctx = Context(repo, cleanup, bench.root, processes, daemons)
    print("1/3 edit → serving ...", file=sys.stderr, flush=True)
    edit = bench_edit(ctx, args.rounds)
    print(f"2/3 idle passes, {args.services} services ...", file=sys.stderr, flush=True)
    idle, daemon, node = bench_idle(ctx, args.services, args.passes, args.cpu_seconds)
    print(f"3/3 deploying {args.services} services ...", file=sys.stderr, flush=True)
    deploy = bench_deploy(daemon, node, args.services)
    return render(args, header, edit, idle, deploy)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.single_node", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="edit rounds (default 7)")
    parser.add_argument("--services", type=int, default=30, help="services for 2 and 3 (default 30)")
    parser.add_argument("--passes", type=int, default=10, help="idle passes measured (default 10)")
    parser.add_argument("--cpu-seconds", type=float, default=20.0,
                        help="length of the CPU measurement (default 20)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.services < 1 or args.passes < 1 or args.cpu_seconds <= 0:
        parser.error("--rounds, --services, --passes and --cpu-seconds must be positive")

    return run("single_node.md", lambda bench: measure(bench, args))


if __name__ == "__main__":
    sys.exit(main())
