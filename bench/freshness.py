"""Freshness benchmark: a tag moved in the registry → the new container serving.

    python -m bench.freshness [--rounds N] [--services N] [--passes N]

a. push → new container serving, measured from the end of the push:
   (i)   a registry push notification (Distribution's notifications endpoint →
         the daemon's /v1/hooks/registry, the daemon run with an API key);
   (ii)  the HTTP trigger POST /v1/services/NAME/pull, sent when the push ends;
   (iii) by hand: ``docker pull`` + ``docker rm -f`` + ``docker run -d``.
   The three alternate within each round. Every pull is real: the new image's
   layers are pushed beforehand under a staging tag and removed from the engine,
   and the push measured moves the watched tag to them with a manifest PUT (what
   ``docker push`` does last, once the registry holds the layers). A
   ``docker push`` of the image itself could not be used: its engine keeps the
   layers, so the pull that follows would download nothing.
b. an idle freshness check (pull_due=True) of N services with N distinct tags:
   registry requests, docker calls and pulls per pass, wall time per pass, and
   the share of it spent asking the registry (with and without the per-registry
   rate limit, constants.REGISTRY_RATE).

Prints a Markdown report and writes it to bench/results/freshness.md. Exits
non-zero, printing no numbers, if anything does not converge. Every daemon,
registry, container and image it makes is stopped or removed at the end.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

from puller.control.client import Client
from puller.daemon import Config, Daemon
from puller.node.definitions import parse_definition
from puller.images.freshness import RateLimit
from puller.images.registry import MANIFEST_TYPES
from bench.runner import Bench, run
from bench.single_node import (BenchError, DaemonProcess, check_converged, converge, median, ms, swap,
                               wait_serving, web_line, write_definition)
from tests.cluster.conftest import free_port_pair
from tests.testenv import Cleanup, Registry, build_image, docker, image_id

SETTLE = 0.5  # seconds for a daemon to finish the pass a staging push woke


# --- shared by bench.cluster and bench.control ----------------------------------------


def loadavg() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


def environment() -> dict:
    """What the numbers were measured on, and the load when the run began."""
    return {
        "docker": docker("version", "--format", "{{.Server.Version}}").stdout.strip(),
        "nproc": os.cpu_count(),
        "python": sys.version.split()[0],
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_start": loadavg(),
        "containers_start": len(docker("ps", "-q").stdout.split()),
    }


def environment_line(env: dict) -> str:
    return (f"Docker {env['docker']}, {env['nproc']} CPU(s), Python {env['python']}, "
            f"{env['date']}. Load average (1/5/15 min) {env['load_start']} at the start, "
            f"{loadavg()} at the end; {env['containers_start']} other container(s) running at "
            "the start (other sessions' tests may share the machine: compare the ratios, "
            "measured in the same run, rather than the absolute times).")


def isolated_flags(root: str, name: str, port: int) -> list[str]:
    """A daemon of this run alone: its own ports, state, cluster name and no mDNS,
    so it neither disturbs nor joins another session's daemons."""
    return [f"-port={port}", f"-state-dir={os.path.join(root, 'state-' + name)}",
            "-zeroconf=false", f"-cluster=bench-{uuid.uuid4().hex[:8]}"]


RESET_BLOCK = "Exception occurred during processing of request from"


def problems(log: str, expected: tuple[str, ...] = ("no explicit cluster secret",)
             ) -> tuple[list[str], int]:
    """Log lines a healthy run does not have, and how many requests to the API
    were reset by their client (socketserver prints each with a traceback).

    Expected, so not problems: the warning that the sync port has no secret
    (and is therefore loopback only), other ``expected`` warnings, and those
    resets."""
    bad, resets = [], 0
    for block in log.split("-" * 40):
        if RESET_BLOCK in block and block.rstrip().endswith(
                "ConnectionResetError: [Errno 104] Connection reset by peer"):
            resets += 1
            continue
        bad += [line for line in block.splitlines()
                if "Traceback" in line or " ERROR " in line or RESET_BLOCK in line
                or (" WARNING " in line and not any(text in line for text in expected))]
    return bad, resets


def check_log(process, expected: tuple[str, ...] = ("no explicit cluster secret",)) -> int:
    """Raise on problems in a daemon's log (a DaemonProcess, or tests.cluster's
    Daemon); returns the count of API requests reset by their client."""
    log = process.log()
    bad, resets = problems(log, expected)
    if bad:
        raise BenchError(f"the daemon reported problems:\n{log[-4000:]}")
    return resets


def p90(values) -> float:
    values = sorted(values)
    if not values:
        raise BenchError("no samples")
    return values[min(len(values) - 1, round(0.9 * (len(values) - 1)))]


LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+) (\S+): (.*)$")


def log_lines(text: str, since: float) -> list[tuple[float, str, str]]:
    """(wall time, logger, message) of a daemon's log lines at or after ``since``."""
    lines = []
    for line in text.splitlines():
        match = LOG_LINE.match(line)
        if match:
            stamp = datetime.datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if stamp >= since - 0.002:  # the log's stamps are truncated to the ms
                lines.append((stamp, match[3], match[4]))
    return lines


class StartEvents:
    """Container starts of this run (by label), from ``docker events``: the
    engine's own time of each start, with nothing probing the container."""

    def __init__(self, label: str):
        self.starts: list[tuple[float, str]] = []  # (wall time, container name)
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            ["docker", "events", "--since", f"{time.time():.3f}", "--filter", "type=container",
             "--filter", "event=start", "--filter", f"label={label}",
             "--format", "{{.TimeNano}} {{.Actor.Attributes.name}}"],
            stdout=subprocess.PIPE, text=True)
        self._thread = threading.Thread(target=self._read, name="bench-events", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            nanos, _, name = line.strip().partition(" ")
            if nanos.isdigit():
                with self._lock:
                    self.starts.append((int(nanos) / 1e9, name))

    def wait(self, name: str, since: float, timeout: float = 30.0,
             alive=lambda: True) -> float:
        """Wall time of ``name``'s first start at or after ``since``."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = [at for at, who in self.starts if who == name and at >= since]
            if found:
                return found[0]
            if time.monotonic() > deadline or not alive():
                raise BenchError(f"{name} did not start within {timeout:.0f} s")
            time.sleep(0.002)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self._thread.join(timeout=10)


def deploy_phases(log: str, since: float, service: str) -> dict[str, float]:
    """Seconds from ``since`` (a push's end) to the deploy's ``docker pull``, the
    pull's end (logged), and ``docker run`` (the daemon's -verbose log, ms stamps)."""
    lines = log_lines(log, since)

    def first(predicate, after: float) -> float:
        for stamp, logger, message in lines:
            if stamp >= after and predicate(logger, message):
                return stamp - since
        raise BenchError(f"the daemon's log lacks a step of {service}'s deploy:\n{log[-3000:]}")

    pull = first(lambda lg, m: lg == "puller.node.docker" and " pull " in f" {m} ", since)
    pulled = first(lambda lg, m: lg == "puller.node.executor" and m.startswith("pulled "), since + pull)
    run = first(lambda lg, m: lg == "puller.node.docker" and m.startswith("docker run ")
                and f"--name {service} " in m, since + pulled)
    return {"pull": pull, "pulled": pulled, "run": run}


# --- moving a tag to layers the engine does not have -----------------------------------


class Staged:
    """An image whose layers are in the registry (under tag ``stage``) and not in
    the engine; ``move(tag)`` points ``tag`` at it with one manifest PUT."""

    def __init__(self, host: str, path: str, content: str, images: list[str]):
        ref = f"{host}/{path}:stage"
        digest = build_image(ref, content)
        ident = image_id(ref)
        images.append(ident)  # removed at the end whoever pulled it meanwhile
        docker("image", "rm", "--force", ident)
        if docker("image", "inspect", ident, check=False).returncode == 0:
            raise BenchError(f"{ref} is still in the engine after docker image rm")
        request = urllib.request.Request(f"http://{host}/v2/{path}/manifests/stage",
                                         headers={"Accept": ", ".join(MANIFEST_TYPES)})
        with urllib.request.urlopen(request, timeout=10) as response:
            self.manifest = response.read()
            self.media_type = response.headers["Content-Type"]
            if response.headers["Docker-Content-Digest"] != digest:
                raise BenchError(f"{ref}: the manifest read back is not the one pushed")
        self.host, self.path, self.content, self.digest = host, path, content, digest

    def move(self, tag: str) -> float:
        """PUT the manifest under ``tag``; returns when the registry answered."""
        request = urllib.request.Request(
            f"http://{self.host}/v2/{self.path}/manifests/{tag}", data=self.manifest,
            method="PUT", headers={"Content-Type": self.media_type})
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.headers["Docker-Content-Digest"] != self.digest:
                raise BenchError(f"{self.path}:{tag}: the registry stored another digest")
        self.moved_at = time.time()  # wall time, for the containers' start events
        return time.perf_counter()


def hook_config(api: str, key: str) -> str:
    return ("notifications:\n  endpoints:\n    - name: puller\n"
            f"      url: {api}/v1/hooks/registry\n"
            f"      headers: {{Authorization: [Bearer {key}]}}\n"
            "      timeout: 2s\n      threshold: 5\n      backoff: 1s\n"
            "      ignoredmediatypes: [application/octet-stream]\n"
            "      ignore: {actions: [pull]}\n")


# --- a. push → serving ---------------------------------------------------------------


def bench_push(root: str, cleanup: Cleanup, plain: Registry, rounds: int,
               registries: list[Registry], processes: list[DaemonProcess],
               images: list[str]) -> dict:
    label, run = cleanup.label, cleanup.run_id
    port = free_port_pair()
    api = f"http://127.0.0.1:{port + 1}"
    key = f"bench-key-{run}"
    notifying = Registry(extra_config=hook_config(api, key))
    registries.append(notifying)
    notifying.start()

    directory = os.path.join(root, "defs")
    os.makedirs(directory)
    node = cleanup.node("bench-fresh")
    key_file = os.path.join(root, "api.key")
    with open(os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
        handle.write(key + "\n")
    daemon = DaemonProcess(node, directory, os.path.join(root, "fresh.log"), "-interval=600",
                           "-verbose", f"-apikey-file={key_file}", "-api-addr=127.0.0.1",
                           *isolated_flags(root, "fresh", port))
    processes.append(daemon)
    daemon.wait_started()
    alive = lambda: daemon.process.poll() is None  # noqa: E731
    client = Client(api, key)

    cases = {
        "hook": {"registry": notifying, "path": f"bench-hook-{run}", "name": f"bench-hooked-{run}"},
        "trigger": {"registry": plain, "path": f"bench-trig-{run}", "name": f"bench-trig-{run}"},
        "docker": {"registry": plain, "path": f"bench-hand-{run}", "name": f"bench-hand-{run}"},
    }
    for case in cases.values():
        case["repo"] = f"{case['registry'].host}/{case['path']}"
        case["port"] = port_ = free_port_pair()
        case["line"] = web_line(port_, label, case["repo"])

    # the first deploy of each, through the path measured later (a warm-up)
    for what, case in cases.items():
        staged = Staged(case["registry"].host, case["path"], f"{what}-0", images)
        staged.move("live")
        if what == "docker":
            service = parse_definition(f"name: {case['name']}\nbash: '{case['line']}'\n"
                                       f"repo: {case['repo']}\n", f"{case['name']}.yml")
            case["argv"] = service.run.command(f"{case['repo']}:live",
                                               ["--name", case["name"], "--detach"])
            docker("pull", "--quiet", f"{case['repo']}:live")
            docker(*case["argv"])
        else:
            write_definition(directory, case["name"], case["line"], case["repo"], "live")
        wait_serving(case["port"], f"{what}-0", time.perf_counter(), give_up=lambda: not alive())

    keys = ("hook", "trigger", "docker", "hook_start", "trigger_start", "docker_start", "push",
            "pull", "rm", "run", "serve", "answer", "docker_run_start")
    keys += tuple(f"{case}_{step}" for case in ("hook", "trigger")
                  for step in ("to_pull", "pull", "to_run", "run"))
    samples: dict[str, list[float]] = {key: [] for key in keys}
    events = StartEvents(label)
    try:
        for round_ in range(1, rounds + 2):  # round 1 is a warm-up of the moved-tag path
            push_round(round_, round_ > 1, cases, client, daemon, events, images, samples)
            daemon.check_alive()
    finally:
        events.close()
    daemon.stop()
    resets = check_log(daemon)
    result = {key: median(values) for key, values in samples.items()}
    result["resets"] = resets
    # tag pushes to the hooked repository: a staging push and a move per round (and the first)
    result["notifications"] = 2 * (rounds + 2)
    return result


def push_round(round_: int, keep: bool, cases: dict, client: Client, daemon: DaemonProcess,
               events: StartEvents, images: list[str], samples: dict[str, list[float]]) -> None:
    """One round of a: the three cases in turn; their times added to ``samples``
    when ``keep``."""
    alive = lambda: daemon.process.poll() is None  # noqa: E731

    def where(case: str, since: float, running: float) -> None:
        steps = deploy_phases(daemon.log(), since, cases[case]["name"])
        for key, value in (("to_pull", steps["pull"]), ("pull", steps["pulled"] - steps["pull"]),
                           ("to_run", steps["run"] - steps["pulled"]),
                           ("run", running - steps["run"])):
            samples[f"{case}_{key}"].append(value)

    # (i) the registry notifies the daemon
    case = cases["hook"]
    staged = Staged(case["registry"].host, case["path"], f"hook-{round_}", images)
    time.sleep(SETTLE)  # the pass woken by the staging push (another tag) is over
    pushed: dict = {}

    def push_only() -> float:
        started = time.perf_counter()
        ended = staged.move("live")
        pushed["took"] = ended - started
        return ended

    elapsed, started, ended = swap(case["port"], staged.content, push_only, alive=alive)
    running = events.wait(case["name"], staged.moved_at, alive=alive) - staged.moved_at
    if keep:
        samples["hook"].append(started + elapsed - ended)
        samples["hook_start"].append(running)
        samples["push"].append(pushed["took"])
        where("hook", staged.moved_at, running)

    # (ii) the HTTP trigger, sent as soon as the push ends
    case = cases["trigger"]
    staged = Staged(case["registry"].host, case["path"], f"trigger-{round_}", images)

    def push_and_trigger() -> tuple[float, float, dict]:
        ended = staged.move("live")
        answer = client.call("POST", f"/v1/services/{cases['trigger']['name']}/pull")
        return ended, time.perf_counter(), answer

    elapsed, started, (ended, answered, answer) = swap(case["port"], staged.content,
                                                       push_and_trigger, alive=alive)
    if not (answer["pulled"] and answer["changed"]) or answer["errors"]:
        raise BenchError(f"the trigger did not pull and redeploy: {answer}")
    running = events.wait(case["name"], staged.moved_at, alive=alive) - staged.moved_at
    if keep:
        samples["trigger"].append(started + elapsed - ended)
        samples["trigger_start"].append(running)
        samples["answer"].append(answered - ended)
        where("trigger", staged.moved_at, running)

    # (iii) by hand: docker pull + docker rm -f + docker run -d
    case = cases["docker"]
    staged = Staged(case["registry"].host, case["path"], f"docker-{round_}", images)

    def by_hand() -> tuple[float, float, float, float]:
        ended = staged.move("live")
        docker("pull", "--quiet", f"{case['repo']}:live")
        pulled = time.perf_counter()
        docker("rm", "-f", case["name"])
        removed = time.perf_counter()
        docker(*case["argv"])
        return ended, pulled, removed, time.perf_counter()

    elapsed, started, (ended, pulled, removed, ran) = swap(case["port"], staged.content,
                                                           by_hand)
    running = events.wait(case["name"], staged.moved_at) - staged.moved_at
    if keep:
        samples["docker"].append(started + elapsed - ended)
        samples["docker_start"].append(running)
        samples["docker_run_start"].append(running - (removed - ended))
        samples["pull"].append(pulled - ended)
        samples["rm"].append(removed - pulled)
        samples["run"].append(ran - removed)
        samples["serve"].append(started + elapsed - ran)


# --- b. idle freshness check ---------------------------------------------------------


def bench_idle(root: str, cleanup: Cleanup, plain: Registry, services: int, passes: int,
               daemons: list[Daemon]) -> dict:
    label, run = cleanup.label, cleanup.run_id
    repo = f"{plain.host}/bench-idle-{run}"
    tags = [f"t{i:02d}" for i in range(services)]
    build_image(f"{repo}:{tags[0]}", "idle", push=False)
    for tag in tags[1:]:
        docker("tag", f"{repo}:{tags[0]}", f"{repo}:{tag}")
    docker("push", "--all-tags", repo)
    cleanup.images.extend(f"{repo}:{tag}" for tag in tags)

    directory = os.path.join(root, "idle")
    os.makedirs(directory)
    for i, tag in enumerate(tags):
        write_definition(directory, f"bench-idle-{run}-{i:02d}",
                         f"docker run --init --label {label} {repo} sleep 100000", repo, tag)
    daemon = Daemon(Config(node=cleanup.node("bench-idle"), directory=directory,
                           state_dir=os.path.join(root, "state-idle")))
    daemons.append(daemon)
    converge(daemon, services)

    checking: list[float] = []
    check = daemon.freshness.check

    def timed_check(*args, **kwargs):
        started = time.perf_counter()
        try:
            return check(*args, **kwargs)
        finally:
            checking.append(time.perf_counter() - started)

    daemon.freshness.check = timed_check  # type: ignore[method-assign]
    result = {}
    for limited in (True, False):
        if not limited:
            daemon.freshness.limit = RateLimit(0)  # no spacing between HEADs
        requests, calls, pulls, walls, counts = [], [], [], [], {}
        checking.clear()
        for _ in range(passes):
            before_requests = daemon.freshness.client.requests
            before_counts = daemon.docker.counts.copy()
            started = time.perf_counter()
            report = daemon.tick(pull_due=True)
            walls.append(time.perf_counter() - started)
            check_converged(report, services, "an idle pass")
            requests.append(daemon.freshness.client.requests - before_requests)
            calls.append(report.docker_calls)
            pulls.append(len(report.pulls))
            for verb, count in (daemon.docker.counts - before_counts).items():
                counts.setdefault(verb, []).append(count)
            if len(report.remotes) != services or any(r.error for r in report.remotes.values()):
                raise BenchError(f"an idle pass did not learn every tag's digest: {report.faults}")
        result[limited] = {
            "requests": (min(requests), max(requests)), "calls": (min(calls), max(calls)),
            "pulls": sum(pulls), "wall": median(walls), "check": median(checking),
            "counts": {verb: median(values) for verb, values in sorted(counts.items())},
        }
    return result


# --- report --------------------------------------------------------------------------


def span(pair: tuple[int, int]) -> str:
    low, high = pair
    return str(low) if low == high else f"{low}–{high}"


def render(args, env: dict, push: dict, idle: dict) -> str:
    target = push["pull"] + 1.0
    n = args.services
    limited, free = idle[True], idle[False]
    verdict = lambda value: "met" if value <= target else "missed"  # noqa: E731
    lines = [
        "# Freshness benchmark",
        "",
        environment_line(env),
        "",
        f"## a. push → new container serving ({args.rounds} rounds, medians)",
        "",
        "Measured from the end of the push (the registry's answer to the manifest PUT that "
        "moves the tag) to the first HTTP answer with the new content (polled every 5 ms). "
        "The three cases alternate within each round; every pull downloads the image's layer "
        "(removed from the engine after being pushed under a staging tag).",
        "",
        "| Path | Push → serving | Push → container running (start event) | "
        "Target: ≤ docker pull + 1 s |",
        "|---|---|---|---|",
        f"| (i) registry notification → puller -d | {ms(push['hook'])} | "
        f"{ms(push['hook_start'])} | {ms(target)}: {verdict(push['hook'])} |",
        f"| (ii) POST /v1/services/NAME/pull → puller -d | {ms(push['trigger'])} | "
        f"{ms(push['trigger_start'])} | {ms(target)}: {verdict(push['trigger'])} |",
        f"| (iii) docker pull + docker rm -f + docker run -d | {ms(push['docker'])} | "
        f"{ms(push['docker_start'])} | |",
        "",
        "| Step (medians) | Time |",
        "|---|---|",
        f"| the push measured (one manifest PUT) | {ms(push['push'])} |",
        f"| by hand: docker pull (new layer) | {ms(push['pull'])} |",
        f"| by hand: docker rm -f | {ms(push['rm'])} |",
        f"| by hand: docker run -d | {ms(push['run'])} |",
        f"| by hand: end of docker run → serving | {ms(push['serve'])} |",
        f"| (ii) end of push → the trigger's answer (pass done) | {ms(push['answer'])} |",
        "",
        "Where puller's time goes (medians; the daemon's `-verbose` log, ms stamps, and the "
        "containers' `start` events):",
        "",
        "| Step | (i) notification | (ii) trigger | by hand |",
        "|---|---|---|---|",
        f"| end of push → `docker pull` invoked (notification or request, facts, "
        f"registry HEAD for (ii)) | {ms(push['hook_to_pull'])} | {ms(push['trigger_to_pull'])} "
        "| 0 ms |",
        f"| `docker pull` (the new layer) | {ms(push['hook_pull'])} | {ms(push['trigger_pull'])} "
        f"| {ms(push['pull'])} |",
        f"| pulled → `docker run` invoked (image inspect, plan, stop + rename the old one; by "
        f"hand: docker rm -f) | {ms(push['hook_to_run'])} | {ms(push['trigger_to_run'])} | "
        f"{ms(push['rm'])} |",
        f"| `docker run` invoked → container running | {ms(push['hook_run'])} | "
        f"{ms(push['trigger_run'])} | {ms(push['docker_run_start'])} |",
        "",
        f"The daemon's log holds {push['resets']} traceback(s) `ConnectionResetError` from the "
        f"HTTP API's socketserver for {push['notifications']} tag pushes notified (a client of "
        "the API reset its connection: the registry's notifier, the only client besides the "
        "trigger's, which reads its answers). Harmless, but the API server should log a "
        "client's reset quietly instead of a traceback.",
        "",
        f"## b. idle freshness check, {n} services, {n} distinct tags, pull_due=True "
        f"({args.passes} passes)",
        "",
        f"The {n} tags name one image (pushed once with `docker push --all-tags`); each "
        "service runs one container. Counts are per pass (min–max over the passes).",
        "",
        "| Measure | Rate limit on (REGISTRY_RATE, as shipped) | Rate limit off | Target |",
        "|---|---|---|---|",
        f"| registry requests (manifest HEADs) | {span(limited['requests'])} | "
        f"{span(free['requests'])} | {n} |",
        f"| pulls | {limited['pulls']} in {args.passes} passes | {free['pulls']} in "
        f"{args.passes} passes | 0 |",
        f"| docker calls (report.docker_calls) | {span(limited['calls'])} | "
        f"{span(free['calls'])} | ≤ 3 |",
        f"| docker calls by subcommand (daemon.docker.counts) | {_counts(limited['counts'])} | "
        f"{_counts(free['counts'])} | |",
        f"| wall time per pass (median) | {ms(limited['wall'])} | {ms(free['wall'])} | |",
        f"| of which asking the registry (Freshness.check) | {ms(limited['check'])} | "
        f"{ms(free['check'])} | |",
        "",
    ]
    return "\n".join(lines)


def _counts(counts: dict) -> str:
    return ", ".join(f"{verb} {value:g}" for verb, value in counts.items()) or "none"


# --- main ----------------------------------------------------------------------------


def measure(bench: Bench, args) -> str:
    root, cleanup, plain = bench.root, bench.cleanup, bench.registry
    # torn down in this order: processes, registries, daemons; then the cleanup, which
    # also removes the images (staged ones by id) after the containers
    daemons: list[Daemon] = bench.tracked("close")
    registries: list[Registry] = bench.tracked("close")
    processes: list[DaemonProcess] = bench.tracked("stop")
    env = environment()
    print("a. push → serving ...", file=sys.stderr, flush=True)
    push = bench_push(root, cleanup, plain, args.rounds, registries, processes, cleanup.images)
    print(f"b. idle freshness check, {args.services} services ...", file=sys.stderr,
          flush=True)
    idle = bench_idle(root, cleanup, plain, args.services, args.passes, daemons)
    return render(args, env, push, idle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.freshness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="push rounds (default 5)")
    parser.add_argument("--services", type=int, default=30,
                        help="services (and tags) for b (default 30)")
    parser.add_argument("--passes", type=int, default=8, help="idle passes measured (default 8)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.services < 1 or args.passes < 1:
        parser.error("--rounds, --services and --passes must be positive")

    return run("freshness.md", lambda bench: measure(bench, args))


if __name__ == "__main__":
    sys.exit(main())
