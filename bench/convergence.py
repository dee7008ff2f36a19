"""Convergence of anti-entropy: the real Store and Gossip code, simulated in memory.

    python -m bench.convergence [--sizes 10,100,1000,10000] [--seeds 1,2,3,4,5] [--fanout 3]

N nodes know each other (full membership). Every round each node starts one
sync exchange with each of FANOUT random peers: its sync request, then each
side answers the other's last message until the initiator has nothing more
to say (the loop of ``Cluster._sync_with``). Messages are the real ``Gossip``
messages, passed through JSON as over a socket, with no sockets; bytes are
those of the real frames (``frames.encode``: length header, HMAC envelope)
that would carry them.

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
sent until then. Then the wire cost of single exchanges between two nodes: in
sync at 20 and 500 services, and one differing record among 500 (each of the
500 services in turn: edited at the initiator or at the other node, or an old
record held by only one of them). Prints a Markdown report and writes it to
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

from puller import constants
from puller.cluster.frames import encode
from puller.cluster.gossip import Gossip
from puller.cluster.versions import Clock, Record, Store, Version

FANOUT = 3
SIZES = (10, 100, 1000, 10000)
SEEDS = (1, 2, 3, 4, 5)
SERVICES = 20  # definitions every node holds before the scenario starts
CONCURRENT = 10  # edits in scenario b
MAX_ROUNDS = 100
T0 = 1_700_000_000_000  # simulated wall clock at the first edit, ms
TARGET_ROUNDS = 15  # at N=1000
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "convergence.md")
SERVICE = "svc-00"  # the service every scenario edits
MAX_STEPS = 32  # messages in one exchange, at most (a loop is a bug)
WIRE_SERVICES = (20, 500)  # store sizes of the wire cost measurements
ONE_DIFF_SERVICES = 500
IN_SYNC_FRAMES, IN_SYNC_BYTES = 2, 300  # targets: an exchange between nodes that agree
ONE_DIFF_BYTES = 2000  # target: one differing record among 500 services, all frames
# The envelope of every frame is that of a real node: the default cluster name,
# node names as below, an IPv4 address with the default port, a 24-hex-digit
# nonce (as Cluster._encode makes) and a current timestamp. The MAC's length
# does not depend on the secret.
SECRET = bytes(32)
NONCE = "0" * 24


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
    with_records: int  # messages carrying records
    records: int  # records carried by all messages
    kbytes: float  # frames of all messages


def node_name(index: int) -> str:
    return f"node-{index:04d}"


def frame_bytes(message: dict, sender: str, addr: str) -> int:
    """Bytes on the wire of the frame carrying ``message``, header included."""
    return len(encode(message, secret=SECRET, cluster=constants.DEFAULT_CLUSTER, sender=sender,
                      addr=addr, wall_ms=T0, nonce=NONCE))


class Node:
    """One simulated node: its live store and the snapshot the current round uses."""

    def __init__(self, index: int, baseline: list[Record]):
        self.name = node_name(index)
        self.addr = f"10.0.{index // 250}.{index % 250 + 1}:{constants.DEFAULT_PORT}"
        self.clock = Clock(self.name)
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
            request = self.snapshot.sync_request()
            self.request = json.loads(json.dumps(request))
            self.request_bytes = frame_bytes(request, self.name, self.addr)

    def view(self, message: dict) -> Gossip:
        """This round's view, to handle ``message``: a copy if the message carries
        records (whatever merges takes effect at the end of the round)."""
        assert self.snapshot is not None
        if "records" not in message["body"]:
            return self.snapshot  # nothing to merge: handling only reads
        return Gossip(Store(self.snapshot.store.records.values()))


class Counter:
    def __init__(self) -> None:
        self.messages = 0
        self.with_records = 0  # messages carrying records
        self.records = 0
        self.bytes = 0
        self._sizes: dict[tuple[str, str], int] = {}  # (sender, message JSON) → frame bytes

    def wire(self, message: dict, sender: Node) -> dict:
        """``sender`` sends ``message``: count its frame and pass it through JSON."""
        encoded = json.dumps(message, sort_keys=True)
        size = self._sizes.get((sender.name, encoded))
        if size is None:
            size = frame_bytes(message, sender.name, sender.addr)
            if len(self._sizes) < 100_000:
                self._sizes[(sender.name, encoded)] = size
        self.count(message, size)
        return json.loads(encoded)

    def count(self, message: dict, size: int) -> None:
        self.messages += 1
        if message["body"].get("records"):
            self.with_records += 1
            self.records += len(message["body"]["records"])
        self.bytes += size


def exchange(a: Node, b: Node, count: Counter) -> None:
    """``a`` starts one exchange with ``b``, both answering from their round snapshot."""
    assert a.request is not None
    count.count(a.request, a.request_bytes)
    message, receiver, other = a.request, b, a
    for _ in range(MAX_STEPS):
        reply, won = receiver.view(message).handle(message)
        receiver.store.merge_all(won)
        if reply is None:
            return
        message = count.wire(reply, receiver)
        receiver, other = other, receiver
    raise BenchError(f"an exchange between {a.name} and {b.name} did not end "
                     f"in {MAX_STEPS} messages")


def baseline(services: int = SERVICES) -> list[Record]:
    version = Version(T0 - 3_600_000, 0, "seed")
    return [Record(f"svc-{i:02d}", version, definition(f"svc-{i:02d}", "v1"))
            for i in range(services)]


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
    nodes = [Node(i, start) for i in range(n)]
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


# --- wire cost of single exchanges, live (no rounds) ------------------------------------


@dataclass(frozen=True)
class Wire:
    """One exchange between two nodes, in real frames."""

    frames: int
    largest: int  # bytes of the largest frame
    total: int  # bytes of every frame


def wire_exchange(a: Gossip, b: Gossip) -> Wire:
    """``a`` (node 0) starts one exchange with ``b`` (node 1); both merge at once."""
    gossips, names = (a, b), (node_name(0), node_name(1))
    addrs = tuple(f"10.0.0.{i + 1}:{constants.DEFAULT_PORT}" for i in range(2))
    sizes = []
    message, sender = a.sync_request(), 0
    for _ in range(MAX_STEPS):
        sizes.append(frame_bytes(message, names[sender], addrs[sender]))
        message, _ = gossips[1 - sender].handle(json.loads(json.dumps(message)))
        if message is None:
            return Wire(len(sizes), max(sizes), sum(sizes))
        sender = 1 - sender
    raise BenchError(f"an exchange did not end in {MAX_STEPS} messages")


def in_sync(services: int) -> Wire:
    return wire_exchange(Gossip(Store(baseline(services))), Gossip(Store(baseline(services))))


def one_diff(services: int, at: int, edit: bool) -> list[Wire]:
    """One exchange per service, with that service differing: edited at node ``at``
    (0: the initiator; the edit is newer than everything), or else missing at the
    other node (an old record: nothing about it is newer)."""
    start = baseline(services)
    wires = []
    for index, old in enumerate(start):
        stores = Store(start), Store(start)
        if edit:
            record = Record(old.name, Version(T0, 0, node_name(at)), definition(old.name, "v2"))
            stores[at].merge(record)
        else:
            record = old
            stores = tuple(Store(start[:index] + start[index + 1:]) if i != at else stores[i]
                           for i in range(2))
        wires.append(wire_exchange(Gossip(stores[0]), Gossip(stores[1])))
        if not stores[0].get(old.name) == stores[1].get(old.name) == record:
            raise BenchError(f"one exchange did not carry {old.name} from node {at} to the other")
    return wires


def wire_report() -> list[str]:
    lines = [
        "## Wire cost of one exchange (real frames)",
        "",
        f"Two nodes, one exchange started by node 0, frames as `frames.encode` makes them "
        f"(4-byte header, HMAC envelope: cluster {constants.DEFAULT_CLUSTER!r}, node names like "
        f"{node_name(0)!r}, addresses like '10.0.0.1:{constants.DEFAULT_PORT}'). One differing "
        f"record: each of the {ONE_DIFF_SERVICES} services in turn, edited at one node (a new "
        f"version, newer than any other), or held only by one node (an old record the other "
        f"lacks).",
        "",
        "| exchange | services | frames | largest frame, bytes (median / max) "
        "| total bytes (median / max) |",
        "|---|---|---|---|---|",
    ]
    synced = [in_sync(services) for services in WIRE_SERVICES]
    for services, wire in zip(WIRE_SERVICES, synced):
        lines.append(f"| in sync | {services} | {wire.frames} | {wire.largest} | {wire.total} |")
    worst_diff = 0
    for at, edit in ((0, True), (1, True), (0, False), (1, False)):
        wires = one_diff(ONE_DIFF_SERVICES, at, edit)
        where = ("the initiator", "the other node")[at]
        what = "one record edited at" if edit else "one old record held only at"
        frames = sorted({w.frames for w in wires})
        largest = [w.largest for w in wires]
        total = [w.total for w in wires]
        worst_diff = max(worst_diff, max(total))
        lines.append(
            f"| {what} {where} | {ONE_DIFF_SERVICES} "
            f"| {frames[0]}{'–' + str(frames[-1]) if len(frames) > 1 else ''} "
            f"| {number(median(largest))} / {max(largest)} "
            f"| {number(median(total))} / {max(total)} |")
    frames, largest = max(w.frames for w in synced), max(w.largest for w in synced)
    met = frames <= IN_SYNC_FRAMES and largest <= IN_SYNC_BYTES
    lines += [
        "",
        f"Targets: nodes that agree exchange at most {IN_SYNC_FRAMES} frames of at most "
        f"{IN_SYNC_BYTES} bytes ({'met' if met else 'NOT met'}: {frames} frames, "
        f"the largest {largest} bytes); one differing record among "
        f"{ONE_DIFF_SERVICES} services costs less than {ONE_DIFF_BYTES} bytes in all "
        f"({'met' if worst_diff < ONE_DIFF_BYTES else 'NOT met'}: at most {worst_diff}).",
        "",
    ]
    return lines


# --- report ----------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values)


def number(value: float) -> str:
    return f"{value:g}" if value == int(value) else f"{value:.1f}"


def render(runs: list[Run], sizes: list[int], seeds: list[int], fanout: int, elapsed: float,
           wire: list[str]) -> str:
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Convergence of anti-entropy (simulated)",
        "",
        f"Python {sys.version.split()[0]}, {date}; real `Store` and `Gossip` code, messages through "
        f"JSON, bytes of the real frames, no sockets; full membership, FANOUT={fanout} "
        f"exchanges started per node per round, "
        f"synchronous rounds (news moves at most one hop per round), no immediate push; "
        f"{SERVICES} services already agreed on; seeds {', '.join(map(str, seeds))}; "
        f"run time {elapsed:.0f} s.",
        "",
        "| N | scenario | rounds median | rounds max | rounds / log2 N | messages (median) "
        "| of which carry records | records sent | KiB sent (frames) |",
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
        f"An exchange between nodes that agree is 2 messages (sync, in-sync); one between nodes "
        f"that differ goes on until the initiator has nothing more to say (see "
        f"the gossip module). After convergence the steady cost is {steady} messages per node "
        f"per round; the bytes of single exchanges are below.",
        "",
        f"Target: rounds grow like log N, at most {TARGET_ROUNDS} at N=1000. Worst run at "
        f"N={max(sizes)}: {worst_at_largest} rounds "
        f"({'met' if worst_at_largest <= TARGET_ROUNDS else 'NOT met'}).",
        "",
        *wire,
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
                        help="cluster sizes, comma-separated (default 10,100,1000,10000)")
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
        wire = wire_report()
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    text = render(runs, args.sizes, args.seeds, args.fanout, time.monotonic() - started, wire)
    print(text)
    write_results(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
