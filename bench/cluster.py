"""Cluster benchmark: an edit on one node → the file everywhere → the container.

    python -m bench.cluster [--rounds N] [--no-netns]

Three ``puller -d`` daemons share this machine's Docker engine:

- loopback, the play setup: -zeroconf=false, node 2 and 3 -join node 1,
  -name-template={node}-{service}, distinct -port, -dir, -node;
- LAN: three hosts in network namespaces on a test bridge (tests/netns.py),
  peers found by zeroconf alone (a cluster secret, so the sync port listens
  beyond loopback). The registry on the root namespace's loopback is out of
  reach there: the daemons warn that they cannot ask it, and deploy the image,
  which is local.

Each round an atomic write on node 1 moves a web service's ``node:`` regexp
from nowhere to node 3. Measured from the write, polling every 2 ms: the file
identical on all three nodes, and the new container serving on node 3 (the
image is local). Then, in the same round, ``docker run -d`` of the same
container by hand → serving: the container's own start. Between rounds the
service is moved back to nowhere and its container is gone before the next.

Prints a Markdown report and writes it to bench/results/cluster.md. Exits
non-zero, printing no numbers, if anything does not converge. Every daemon,
namespace, container, image and registry it makes is stopped or removed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

from puller import constants
from puller.definitions import parse_definition
from bench.freshness import check_log, environment, environment_line, p90, write_report
from bench.single_node import BenchError, fetch_quietly, median, ms, wait_serving, web_line
from tests.cluster.conftest import Daemon, free_port_pair
from tests.netns import Lan
from tests.testenv import Cleanup, Engine, Registry, build_image, docker, free_port, wait_until

POLL = 0.002  # seconds between looks at the files and the port
TIMEOUT = 30.0  # seconds for a round to converge
NODES = 3
PEER_LINE = re.compile(r"INFO puller\.cluster: peer (\S+)")


def definition(name: str, line: str, repo: str, node: str) -> str:
    return (f"name: {name}\nbash: '{line}'\nrepo: {repo}\ntag: v1\nnode: '{node}'\n"
            "health_timeout: 0\n")


def service_containers(service: str) -> list[str]:
    """Names of the containers puller runs for ``service``, on any node."""
    out = docker("ps", "-a", "--format", "{{.Names}}",
                 "--filter", f"label={constants.LABEL_SERVICE}={service}").stdout
    return sorted(out.split())


def wait_peers(nodes: list[Daemon], timeout: float) -> None:
    """Every daemon knows the two others (its log named two peers)."""
    def known() -> bool:
        for node in nodes:
            if not node.alive():
                raise BenchError(f"{node.node} exited:\n{node.log()[-2000:]}")
        return all(len(set(PEER_LINE.findall(node.log()))) >= NODES - 1 for node in nodes)

    try:
        wait_until(known, timeout=timeout, interval=0.05, what="every node to know its peers")
    except AssertionError as exc:
        raise BenchError(f"{exc}:\n" + "\n".join(n.log()[-800:] for n in nodes)) from None


def edit_round(nodes: list[Daemon], service: str, text: str, port: int, content: str
               ) -> tuple[list[float], float]:
    """Write ``text`` on node 1; seconds until each node's file equals it, and
    until ``port`` serves ``content``."""
    started = time.perf_counter()
    nodes[0].write(service, text)
    files: list[float | None] = [None] * len(nodes)
    served = None
    deadline = started + TIMEOUT
    while None in files or served is None:
        now = time.perf_counter()
        for i, node in enumerate(nodes):
            if files[i] is None and node.read(service) == text:
                files[i] = now - started
        if served is None and fetch_quietly(port) == content:
            served = time.perf_counter() - started
        if now > deadline:
            raise BenchError(f"round not converged in {TIMEOUT:.0f} s: files {files}, "
                             f"served {served}")
        if not all(node.alive() for node in nodes):
            raise BenchError("a daemon exited during the round")
        time.sleep(POLL)
    return files, served  # type: ignore[return-value]


def withdraw(nodes: list[Daemon], service: str, text: str, port: int) -> None:
    """Move the service to no node; wait until every file says so and it runs nowhere."""
    nodes[0].write(service, text)
    wait_until(lambda: all(node.read(service) == text for node in nodes)
               and not service_containers(service) and fetch_quietly(port) is None,
               timeout=TIMEOUT, interval=0.02, what="the service to be withdrawn everywhere")


def bench_variant(nodes: list[Daemon], cleanup: Cleanup, repo: str, rounds: int) -> dict:
    label = cleanup.label
    service = f"bench-cl-{cleanup.run_id[:8]}"
    port = free_port()
    line = web_line(port, label, repo)
    off = definition(service, line, repo, "^nowhere$")
    on = definition(service, line, repo, f"^{nodes[2].node}$")
    expected = [f"{nodes[2].node}-{service}"]

    base_port = free_port()
    base_name = f"bench-cl-base-{cleanup.run_id}"
    base = parse_definition(definition(base_name, web_line(base_port, label, repo), repo, ""),
                            f"{base_name}.yml")
    base_argv = base.run.command(f"{repo}:v1", ["--name", base_name, "--detach"])

    samples: dict[str, list[float]] = {"file2": [], "file3": [], "all": [], "serve": [],
                                       "after_file": [], "docker": []}
    withdraw(nodes, service, off, port)
    for round_ in range(rounds + 1):  # round 0: a warm-up
        files, served = edit_round(nodes, service, on, port, "v1")
        if service_containers(service) != expected:
            raise BenchError(f"containers of {service}: {service_containers(service)}, "
                             f"expected {expected} only")
        withdraw(nodes, service, off, port)

        started = time.perf_counter()
        docker(*base_argv)
        by_hand = wait_serving(base_port, "v1", started)
        docker("rm", "-f", base_name)
        if round_:
            samples["file2"].append(files[1])
            samples["file3"].append(files[2])
            samples["all"].append(max(files))
            samples["serve"].append(served)
            samples["after_file"].append(served - files[2])
            samples["docker"].append(by_hand)
    for node in nodes:
        if not node.alive():
            raise BenchError(f"{node.node} exited:\n{node.log()[-2000:]}")
    result = {key: median(values) for key, values in samples.items()}
    result["all_p90"] = p90(samples["all"])
    result["serve_p90"] = p90(samples["serve"])
    result["extra"] = median(s - d for s, d in zip(samples["serve"], samples["docker"]))
    return result


def start_loopback(root: str, cleanup: Cleanup, daemons: list[Daemon]) -> list[Daemon]:
    cluster = f"-cluster=bench-{uuid.uuid4().hex[:8]}"
    nodes: list[Daemon] = []
    for i in range(NODES):
        name = f"bcl{i + 1}-{cleanup.run_id[:6]}"
        cleanup.nodes.append(name)
        directory = os.path.join(root, f"loop-{i + 1}")
        os.makedirs(directory)
        join = [f"-join=127.0.0.1:{nodes[0].port}"] if nodes else []
        node = Daemon(name, directory, free_port_pair(),
                      ["-zeroconf=false", "-interval=600", "-name-template={node}-{service}",
                       cluster, f"-state-dir={os.path.join(root, f'loop-state-{i + 1}')}",
                       *join],
                      os.path.join(root, f"loop-{i + 1}.log"))
        daemons.append(node)
        nodes.append(node.start())
    return nodes


def start_lan(root: str, cleanup: Cleanup, lan: Lan, daemons: list[Daemon]) -> list[Daemon]:
    secret = os.path.join(root, "secret")
    with open(secret, "w") as handle:
        handle.write(f"bench-{uuid.uuid4().hex}\n")
    cluster = f"-cluster=bench-{uuid.uuid4().hex[:8]}"
    nodes = []
    for i in range(NODES):
        name = f"bln{i + 1}-{cleanup.run_id[:6]}"
        cleanup.nodes.append(name)
        directory = os.path.join(root, f"lan-{i + 1}")
        os.makedirs(directory)
        node = Daemon(name, directory, constants.DEFAULT_PORT,
                      ["-interval=600", "-name-template={node}-{service}", cluster,
                       f"-secret-file={secret}",
                       f"-state-dir={os.path.join(root, f'lan-state-{i + 1}')}"],
                      os.path.join(root, f"lan-{i + 1}.log"), lan.prefix(i))
        daemons.append(node)
        nodes.append(node.start())
    return nodes


def stop(nodes: list[Daemon], expected: tuple[str, ...]) -> None:
    for node in nodes:
        node.stop()
    for node in nodes:
        check_log(node, expected)


# --- report --------------------------------------------------------------------------


def render(args, env: dict, results: dict) -> str:
    lines = [
        "# Cluster benchmark",
        "",
        environment_line(env),
        "",
        f"Three `puller -d` daemons, one Docker engine; {args.rounds} rounds per setup (after "
        "a warm-up), medians. Each round an atomic write on node 1 moves a web service's "
        "`node:` to node 3, which creates its container (the image is local); the files are "
        "polled every 2 ms, the port every 2 ms. The same round then runs `docker run -d` of "
        "the same container by hand (the container's own start).",
        "",
        "| Measure | " + " | ".join(results) + " | Target |",
        "|---|" + "---|" * len(results) + "---|",
    ]
    rows = [
        ("edit on node 1 → file identical on node 2", "file2", ""),
        ("edit on node 1 → file identical on node 3", "file3", ""),
        ("edit on node 1 → file identical on all 3 (median)", "all", ""),
        ("edit on node 1 → file identical on all 3 (p90)", "all_p90", ""),
        ("edit on node 1 → container serving on node 3 (median)", "serve", ""),
        ("edit on node 1 → container serving on node 3 (p90)", "serve_p90", ""),
        ("file on node 3 → container serving there", "after_file", ""),
        ("docker run -d → serving, by hand (the container's own start)", "docker", ""),
    ]
    for title, key, _ in rows:
        lines.append(f"| {title} | " + " | ".join(ms(r[key]) for r in results.values()) + " | |")
    lines.append("| puller beyond the container's own start (median of per-round differences) | "
                 + " | ".join(f"{ms(r['extra'])}: {'met' if r['extra'] < 1.0 else 'missed'}"
                              for r in results.values()) + " | < 1 s |")
    lines += [
        "",
        "Setups: *loopback* is the play setup (`-zeroconf=false`, nodes 2 and 3 `-join` node 1, "
        "`-name-template={node}-{service}`); *LAN* is three network namespaces on a bridge, "
        "peers found by zeroconf alone, with a cluster secret. In the LAN setup the registry "
        "(on the root namespace's loopback) cannot be reached: each daemon warns once and "
        "deploys the local image.",
        "",
    ]
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6, help="rounds per setup (default 6)")
    parser.add_argument("--no-netns", dest="netns", action="store_false",
                        help="skip the LAN setup (network namespaces; needs root and ip)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be positive")

    engine = Engine()
    registry = Registry()
    cleanup = Cleanup()
    root = tempfile.mkdtemp(prefix="puller-bench-")
    daemons: list[Daemon] = []
    lan: Lan | None = None
    try:
        engine.ensure()
        env = environment()
        registry.start()
        repo = f"{registry.host}/bench-cluster-{cleanup.run_id}"
        cleanup.images.append(f"{repo}:v1")
        build_image(f"{repo}:v1", "v1")
        results = {}

        print("loopback: 3 daemons, -join ...", file=sys.stderr, flush=True)
        nodes = start_loopback(root, cleanup, daemons)
        wait_peers(nodes, timeout=30)
        results["loopback (-join)"] = bench_variant(nodes, cleanup, repo, args.rounds)
        stop(nodes, expected=("no cluster secret",))

        if args.netns:
            print("LAN: 3 network namespaces, zeroconf ...", file=sys.stderr, flush=True)
            lan = Lan(NODES).setup()
            nodes = start_lan(root, cleanup, lan, daemons)
            wait_peers(nodes, timeout=30)
            results["LAN (netns, zeroconf)"] = bench_variant(nodes, cleanup, repo, args.rounds)
            # the registry on the root namespace's loopback is out of reach: warned, expected
            stop(nodes, expected=(registry.host,))
        text = render(args, env, results)
    except (BenchError, AssertionError, subprocess.CalledProcessError, RuntimeError,
            OSError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        print(f"benchmark failed: {exc} {detail}".rstrip(), file=sys.stderr)
        return 1
    finally:
        for daemon in daemons:
            daemon.stop()
        if lan is not None:
            lan.close()
        cleanup.close()
        registry.close()
        engine.close()
        shutil.rmtree(root, ignore_errors=True)
    print(text)
    write_report("cluster.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
