"""Rollout benchmark: a 3-node rollout's wall time against its waves' proof windows.

    python -m bench.rollout [--rounds N] [--health SECONDS]

Three ``puller -d`` daemons on loopback share this machine's Docker engine
(``-join``, ``-name-template={node}-{service}``, an explicit cluster secret,
``-interval=600``: nothing but the rollout's own wakes drives the passes). A
service with ``rollout: {canary: 1, parallel: 1}`` and ``health_timeout: H``
runs on the three; each round an atomic write on node 1 moves its tag (v1 ↔ v2,
both local), and the rollout takes it node by node: each wave starts once the
one before proved itself for H seconds. Measured from the write to the last
node's "proved itself" (its log, ms stamps), against 3 × H, the sum of the
proof windows that no rollout can avoid. The difference is split, from the
daemons' logs and the containers' start times, into

- coordination: write → the canary takes it, and each node proven → the next
  node takes it (the peers' states are gathered every 0.5 s);
- docker: a node takes it → its new container started (stop the old, run the new);
- proof beyond H: the new container started → its node says it proved itself,
  less H (the probation is judged by passes a second apart).

Prints a Markdown report and writes it to bench/results/rollout.md. Exits
non-zero, printing no numbers, if a round does not converge. Every daemon,
container, image and registry it makes is stopped or removed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

from bench.freshness import check_log, environment, environment_line, log_lines, p90
from bench.runner import Bench, BenchError, run, start_nodes, write_secret
from bench.single_node import median, ms
from puller.node.container import Container
from tests.cluster.conftest import Daemon, free_port_pair
from tests.testenv import Cleanup, build_image, inspect, wait_until

NODES = 3
TIMEOUT = 90.0  # seconds for one rollout to end


def definition(repo: str, tag: str, health: float, cleanup: Cleanup) -> str:
    return (f"name: web\nbash: docker run --init --label {cleanup.label} {repo} sleep 100000\n"
            f"repo: {repo}\ntag: {tag}\nnode: '-{cleanup.run_id[:6]}$'\n"
            f"health_timeout: {health:g}\nrollout: {{canary: 1, parallel: 1}}\n")


def start(root: str, cleanup: Cleanup, daemons: list[Daemon]) -> list[Daemon]:
    secret = write_secret(root)
    cluster = f"-cluster=bench-{uuid.uuid4().hex[:8]}"

    def make(i: int, name: str, directory: str, nodes: list[Daemon]) -> Daemon:
        join = [f"-join=127.0.0.1:{nodes[0].port}"] if nodes else []
        return Daemon(name, directory, free_port_pair(),
                      ["-zeroconf=false", "-interval=600", "-name-template={node}-{service}",
                       "-bind=127.0.0.1", f"-secret-file={secret}", cluster,
                       f"-state-dir={os.path.join(root, f'state-{i + 1}')}", *join],
                      os.path.join(root, f"node-{i + 1}.log"))

    return start_nodes(root, cleanup, daemons, "brl", "dir", NODES, make)


def status(node: Daemon) -> dict:
    import json
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{node.port + 1}/v1/cluster",
                                     headers={"Authorization": f"Bearer {node.api_key()}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wait_peers(nodes: list[Daemon]) -> None:
    def known() -> bool:
        try:
            return all(len([n for n in status(d)["nodes"] if not n.get("error")]) == NODES
                       for d in nodes)
        except OSError:
            return False

    wait_until(known, timeout=30, what="every node to know the others")


def ended(nodes: list[Daemon], digest_of: str) -> bool:
    """Every node's view: the rollout of ``digest_of``'s release ended, all done."""
    try:
        views = [(status(d)["nodes"][0].get("rollouts") or {}).get("web", {}).get("view")
                 for d in nodes]
    except OSError:
        return False
    return all(v and v.get("ended") and (v.get("release") or {}).get("digest") == digest_of
               and all(n["state"] == "done" for n in v["nodes"].values()) for v in views)


def one_round(nodes: list[Daemon], repo: str, tag: str, digest: str, health: float,
              cleanup: Cleanup) -> dict:
    since = time.time()
    nodes[0].write("web", definition(repo, tag, health, cleanup))
    try:
        wait_until(lambda: ended(nodes, digest), timeout=TIMEOUT, interval=0.1,
                   what=f"the rollout of {tag}")
    except AssertionError as exc:
        raise BenchError(f"{exc}:\n" + "\n".join(n.log()[-1500:] for n in nodes)) from None
    takes, dones, starts = [], [], []
    for node in nodes:
        lines = log_lines(node.log(), since)
        takes.append(_first(lines, ": taking ", node))
        dones.append(_first(lines, "proved itself", node))
        started = Container.from_inspect(inspect(f"{node.node}-web") or {"Id": ""}).started
        if started is None or started < since:
            raise BenchError(f"{node.node}: no new container in this round")
        starts.append(started)
    coordination = (takes[0] - since) + sum(takes[i + 1] - dones[i] for i in range(NODES - 1))
    return {"wall": dones[-1] - since, "proofs": NODES * health, "coordination": coordination,
            "docker": sum(s - t for s, t in zip(starts, takes)),
            "proof_beyond": sum(d - s for d, s in zip(dones, starts)) - NODES * health,
            "in_order": takes == sorted(takes) and all(
                takes[i + 1] >= dones[i] for i in range(NODES - 1))}


def _first(lines, text: str, node: Daemon) -> float:
    for stamp, _logger, message in lines:
        if text in message:
            return stamp
    raise BenchError(f"{node.node}'s log lacks {text!r} in this round:\n{node.log()[-2000:]}")


def render(args, env: dict, rounds: list[dict]) -> str:
    def row(what: str, key: str, note: str = "") -> str:
        values = [r[key] for r in rounds]
        return f"| {what} | {ms(median(values))} | {ms(p90(values))} | {note} |"

    overhead = [r["wall"] - r["proofs"] for r in rounds]
    lines = [
        "# Rollout benchmark", "", environment_line(env), "",
        f"Three `puller -d` daemons on loopback, one Docker engine; `rollout: {{canary: 1, "
        f"parallel: 1}}`, `health_timeout: {args.health:g}`; {len(rounds)} rounds (after a "
        "warm-up), each an edit of the tag on node 1 (v1 ↔ v2, both images local) rolled "
        "through the three nodes one at a time. Every round's nodes took the release in name "
        f"order, each after the one before proved itself: "
        f"{'yes' if all(r['in_order'] for r in rounds) else 'NO'}.", "",
        "| Measure | median | p90 | |", "|---|---|---|---|",
        row("edit → the last node proved itself (wall time)", "wall"),
        row(f"sum of the waves' proof windows ({NODES} × {args.health:g} s)", "proofs",
            "no rollout is faster"),
        f"| wall time − proof windows | {ms(median(overhead))} | {ms(p90(overhead))} | "
        f"{median(overhead) / NODES * 1000:.0f} ms per wave |",
        row("… coordination: edit → canary takes it, each node proven → the next takes it",
            "coordination", "the peers' states are read every 0.5 s"),
        row("… docker: a node takes it → its new container started (stop old, run new)",
            "docker"),
        row(f"… proof beyond {args.health:g} s: started → its node says it proved itself",
            "proof_beyond", "probation judged by passes 1 s apart"),
        "",
        "Times come from the daemons' logs (ms stamps: \"taking\", \"proved itself\") and the "
        "containers' `State.StartedAt`; the three daemons and the engine share one clock.", "",
    ]
    return "\n".join(lines)


def measure(bench: Bench, args) -> str:
    cleanup = bench.cleanup
    daemons: list[Daemon] = bench.tracked("stop")
    env = environment()
    repo = f"{bench.registry.host}/bench-rollout-{cleanup.run_id}"
    digests = {tag: build_image(f"{repo}:{tag}", tag) for tag in ("v1", "v2")}
    cleanup.images += [f"{repo}:v1", f"{repo}:v2"]
    nodes = start(bench.root, cleanup, daemons)
    wait_peers(nodes)
    rounds = []
    for number in range(args.rounds + 1):  # the first deploys everywhere: a warm-up
        tag = ("v1", "v2")[number % 2]
        print(f"round {number}: {tag}", file=sys.stderr, flush=True)
        result = one_round(nodes, repo, tag, digests[tag], args.health, cleanup)
        if number:
            rounds.append(result)
    for node in nodes:
        node.stop()
        check_log(node, expected=())
    return render(args, env, rounds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rollout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4, help="rounds (default 4)")
    parser.add_argument("--health", type=float, default=3.0,
                        help="each node's health_timeout, seconds (default 3)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.health <= 0:
        parser.error("--rounds and --health must be positive")
    return run("rollout.md", lambda bench: measure(bench, args))


if __name__ == "__main__":
    sys.exit(main())
