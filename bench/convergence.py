"""Convergence of anti-entropy: the real Store and Gossip code, simulated in memory.

    python -m bench.convergence [--sizes 10,100,1000] [--seeds 1,2,3,4,5] [--fanout 3]

N nodes know each other (full membership). Every round each node starts one
sync exchange (sync → in-sync, or sync → sync-reply → push → ack) with each of
FANOUT random peers. Messages are the real ``Gossip`` messages, passed through
JSON as over a socket, with no sockets.

Rounds are synchronous: every message of a round is built from the state the
nodes had when the round began, and what a node learns takes effect at the end
of the round. So news travels at most one hop (in either direction of an
exchange) per round: the count is not flattered by a lucky order of exchanges
within a round. The immediate push of a local change is left out, so these
are anti-entropy's numbers alone, the worst case for an edit.

Scenarios, each on top of SERVICES definitions every node already agrees on:

  a. one edit at one node;
  b. 10 concurrent edits of one service at 10 nodes: all must agree on the
     highest version;
  c. a tombstone racing an older edit of the same service (made at another node
     1 ms before the delete): all must agree on the tombstone.

Counts rounds until every node's digest is equal, and the messages and records
sent until then. Prints a Markdown report and writes it to
bench/results/convergence.md. Exits non-zero, printing no numbers, if a run
does not converge or converges on the wrong record.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

from puller.cluster.gossip import SYNC_REPLY, Gossip
from puller.cluster.versions import Clock, Record, Store, Version

FANOUT = 3
SIZES = (10, 100, 1000)
SEEDS = (1, 2, 3, 4, 5)
SERVICES = 20  # definitions every node holds before the scenario starts
CONCURRENT = 10  # edits in scenario b
MAX_ROUNDS = 100
T0 = 1_700_000_000_000  # simulated wall clock at the first edit, ms
TARGET_ROUNDS = 15  # at N=1000
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "convergence.md")
SERVICE = "svc-00"  # the service every scenario edits


class BenchError(Exception):
    """A run did not converge, or converged on the wrong record: no numbers are printed."""


def definition(name: str, tag: str) -> str:
    return f"name: {name}\nbash: docker run -d {name}\nrepo: example/{name}\ntag: {tag}\n"


@dataclass(frozen=True)
class Run:
    """One scenario at one N with one seed."""

    n: int
    scenario: str
    seed: int
    rounds: int
    messages: int
    with_records: int  # sync-replies and pushes
    records: int  # records carried by all messages
    kbytes: float  # JSON of all messages


class Node:
    """One simulated node: its live store and the snapshot the current round uses."""

    def __init__(self, name: str, baseline: list[Record]):
        self.name = name
        self.clock = Clock(name)
        self.store = Store(baseline)
        self._snapshot_digest: str | None = None
        self.snapshot: Gossip | None = None
        self.request: dict | None = None
        self.request_bytes = 0

    def begin_round(self) -> None:
        """Freeze this round's view; unchanged nodes keep last round's (a cache)."""
        digest = self.store.digest()
        if digest != self._snapshot_digest:
            self._snapshot_digest = digest
            self.snapshot = Gossip(Store(self.store.records.values()))
            encoded = json.dumps(self.snapshot.sync_request())
            self.request, self.request_bytes = json.loads(encoded), len(encoded)

    def fresh(self) -> Gossip:
        """A copy of this round's view, for handling a message that merges."""
        assert self.snapshot is not None
        return Gossip(Store(self.snapshot.store.records.values()))


class Counter:
    def __init__(self) -> None:
        self.messages = 0
        self.with_records = 0  # sync-replies and pushes
        self.records = 0
        self.bytes = 0

    def wire(self, message: dict) -> dict:
        """Send ``message``: count it and pass it through JSON."""
        encoded = json.dumps(message)
        self.messages += 1
        if "records" in message["body"]:
            self.with_records += 1
            self.records += len(message["body"]["records"])
        self.bytes += len(encoded)
        return json.loads(encoded)


def exchange(a: Node, b: Node, count: Counter) -> None:
    """``a`` starts one exchange with ``b``, both answering from their round snapshot."""
    assert a.snapshot is not None and b.snapshot is not None and a.request is not None
    count.messages += 1
    count.bytes += a.request_bytes
    reply, _ = b.snapshot.handle(a.request)  # a sync only reads
    reply = count.wire(reply)
    if reply["type"] != SYNC_REPLY:
        return
    push, won = a.fresh().handle(reply)
    a.store.merge_all(won)
    if push is None:
        return
    ack, won = b.fresh().handle(count.wire(push))
    b.store.merge_all(won)
    count.wire(ack)


def baseline() -> list[Record]:
    version = Version(T0 - 3_600_000, 0, "seed")
    return [Record(f"svc-{i:02d}", version, definition(f"svc-{i:02d}", "v1")) for i in range(SERVICES)]


# --- scenarios: each makes its changes and returns the record all must end with --------


def one_edit(nodes: list[Node], rng: random.Random) -> Record:
    node = rng.choice(nodes)
    record = Record(SERVICE, node.clock.now(T0), definition(SERVICE, "v2"))
    node.store.merge(record)
    return record


def concurrent_edits(nodes: list[Node], rng: random.Random) -> Record:
    edits = []
    for i, node in enumerate(rng.sample(nodes, min(CONCURRENT, len(nodes)))):
        # within a few ms of each other: nobody has seen anybody else's edit
        record = Record(SERVICE, node.clock.now(T0 + rng.randrange(3)), definition(SERVICE, f"v{i + 2}"))
        node.store.merge(record)
        edits.append(record)
    return max(edits, key=lambda r: r.version)


def tombstone_race(nodes: list[Node], rng: random.Random) -> Record:
    editor, deleter = rng.sample(nodes, 2)
    edit = Record(SERVICE, editor.clock.now(T0), definition(SERVICE, "v2"))
    tombstone = Record(SERVICE, deleter.clock.now(T0 + 1), None)
    editor.store.merge(edit)
    deleter.store.merge(tombstone)
    assert tombstone.version > edit.version
    return tombstone


SCENARIOS: dict[str, Callable[[list[Node], random.Random], Record]] = {
    "a. one edit": one_edit,
    f"b. {CONCURRENT} concurrent edits": concurrent_edits,
    "c. tombstone vs older edit": tombstone_race,
}


def simulate(n: int, scenario: str, seed: int, fanout: int = FANOUT) -> Run:
    """Run one scenario to convergence and check that everyone agrees on the right record."""
    rng = random.Random(f"{seed}-{n}-{scenario}")
    start = baseline()
    nodes = [Node(f"node-{i:04d}", start) for i in range(n)]
    expected = SCENARIOS[scenario](nodes, rng)
    count = Counter()
    others = list(range(n - 1))
    for rounds in range(1, MAX_ROUNDS + 1):
        for node in nodes:
            node.begin_round()
        for i, node in enumerate(nodes):
            for j in rng.sample(others, min(fanout, n - 1)):
                exchange(node, nodes[j + (j >= i)], count)
        if len({node.store.digest() for node in nodes}) == 1:
            break
    else:
        raise BenchError(f"N={n} {scenario} seed {seed}: no convergence in {MAX_ROUNDS} rounds")
    wrong = [node.name for node in nodes if node.store.get(SERVICE) != expected]
    if wrong:
        raise BenchError(f"N={n} {scenario} seed {seed}: {len(wrong)} nodes agree on another record "
                         f"than {expected.version}, e.g. {wrong[0]}")
    if len(nodes[0].store) != SERVICES:
        raise BenchError(f"N={n} {scenario} seed {seed}: {len(nodes[0].store)} records, not {SERVICES}")
    return Run(n, scenario, seed, rounds, count.messages, count.with_records, count.records,
               count.bytes / 1024)


# --- report ----------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values)


def number(value: float) -> str:
    return f"{value:g}" if value == int(value) else f"{value:.1f}"


def render(runs: list[Run], sizes: list[int], seeds: list[int], fanout: int, elapsed: float) -> str:
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Convergence of anti-entropy (simulated)",
        "",
        f"Python {sys.version.split()[0]}, {date}; real `Store` and `Gossip` code, messages through "
        f"JSON, no sockets; full membership, FANOUT={fanout} exchanges started per node per round, "
        f"synchronous rounds (news moves at most one hop per round), no immediate push; "
        f"{SERVICES} services already agreed on; seeds {', '.join(map(str, seeds))}; "
        f"run time {elapsed:.0f} s.",
        "",
        "| N | scenario | rounds median | rounds max | rounds / log2 N | messages (median) "
        "| of which sync-reply or push | records sent | KiB sent |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    worst_at_largest = 0
    for n in sizes:
        for scenario in SCENARIOS:
            group = [r for r in runs if r.n == n and r.scenario == scenario]
            rounds = [r.rounds for r in group]
            lines.append(
                f"| {n} | {scenario} | {number(median(rounds))} | {max(rounds)} "
                f"| {median(rounds) / math.log2(n):.2f} | {number(median([r.messages for r in group]))} "
                f"| {number(median([r.with_records for r in group]))} "
                f"| {number(median([r.records for r in group]))} "
                f"| {median([r.kbytes for r in group]):.0f} |")
            if n == max(sizes):
                worst_at_largest = max(worst_at_largest, max(rounds))
    steady = 2 * fanout
    lines += [
        "",
        f"Every exchange costs 2 messages (sync, in-sync), or up to 4 when the digests differ "
        f"(sync, sync-reply, push, ack). Each sync carries the full summary ({SERVICES} versions), "
        f"which is most of the bytes. After convergence the steady cost is {steady} messages per "
        f"node per round.",
        "",
        f"Target: rounds grow like log N, at most {TARGET_ROUNDS} at N=1000. Worst run at "
        f"N={max(sizes)}: {worst_at_largest} rounds "
        f"({'met' if worst_at_largest <= TARGET_ROUNDS else 'NOT met'}).",
        "",
    ]
    return "\n".join(lines)


def write_results(text: str) -> None:
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS + ".tmp", "w") as handle:
        handle.write(text)
    os.replace(RESULTS + ".tmp", RESULTS)


def integers(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, not {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.convergence", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=integers, default=list(SIZES),
                        help="cluster sizes, comma-separated (default 10,100,1000)")
    parser.add_argument("--seeds", type=integers, default=list(SEEDS),
                        help="RNG seeds, comma-separated (default 1,2,3,4,5)")
    parser.add_argument("--fanout", type=int, default=FANOUT,
                        help=f"exchanges each node starts per round (default {FANOUT})")
    args = parser.parse_args(argv)
    if min(args.sizes) < 10 or args.fanout < 1:
        parser.error("sizes must be at least 10 and --fanout at least 1")
    started = time.monotonic()
    runs = []
    try:
        for n in args.sizes:
            for scenario in SCENARIOS:
                for seed in args.seeds:
                    run = simulate(n, scenario, seed, args.fanout)
                    print(f"N={n} {scenario} seed {seed}: {run.rounds} rounds", file=sys.stderr,
                          flush=True)
                    runs.append(run)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    text = render(runs, args.sizes, args.seeds, args.fanout, time.monotonic() - started)
    print(text)
    write_results(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
