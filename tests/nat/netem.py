"""The emulated-link lab: real signaling nodes on the simulator's five-region internet.

Every node runs in a network namespace of its own (`pmnet<6 hex>-n<i>`), the clients
in one more (`-cli`), and each namespace has one TUN device, `wan`, with its address
(198.18.<region + 1>.<i + 1>/32; the clients 198.18.10.1) and a route to 198.18.0.0/16
through it. The other ends of all the devices are held by one process in the `-core`
namespace, tests/nat/netem_router.py, which delays each packet by the one-way latency
of `simulations.network.DEFAULT_LATENCY_MS` between the sender's region and the
receiver's (plus the jitter of `NetworkModel`), the way `tc netem` would; this
machine's kernel has no netem qdisc (docs/simulation.md "Emulated links").

A `Plan` is one run: N node seeds and regions (the regions' weights of
`DEFAULT_REGION_WEIGHTS`, apportioned), the order the nodes join in (the first alone,
then waves that join through it at once), lookups (origin, target) spaced `lookup_gap`
apart, then joins (home node, client key, page) spaced `join_gap` apart. `run_lab`
carries it out with real processes (tests/nat/netem_host.py: `SignalingNode` and
`peer.signaling.SignalingClient`), `simulate` with the simulator's cores on the same
matrix, ids, k/alpha, DHT and room settings and schedule. Both return the lookup
latencies (the origin's `find_node` call to its result) and the join latencies (the
client's `join` frame sent to `joined` received), compared by total variation
distance over the fixed latency bins `EDGES_S`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulations.network import DEFAULT_LATENCY_MS, DEFAULT_REGION_WEIGHTS, DEFAULT_REGIONS

from .lab import REPO, LabProcess, LineReader, _ip, _run, is_event

NAMESPACE_PREFIX = "pmnet"
CLIENTS = "198.18.10.1"
ACCESS_MS = 15.0
"""A client's last mile, one way (`RoomNet`'s default `client_access_ms`)."""
JITTER_MS = 5.0
"""`NetworkModel.jitter_ms`."""
EDGES_S = (
    *(round(0.1 * i, 1) for i in range(1, 11)),
    1.25,
    1.5,
    1.75,
    2.0,
    2.5,
    3.0,
    4.0,
    6.0,
)
"""Latency bins (upper edges, seconds; one more bin above the last) for the total
variation distance: 100 ms wide up to 1 s (a lookup's round trips are 16..320 ms),
wider above. Fixed before any measurement."""


def missing_requirements() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the emulated-link lab needs root (network namespaces, TUN devices)"
    if shutil.which("ip") is None:
        return "the emulated-link lab needs `ip` (iproute2; `make test` installs it)"
    if not os.path.exists("/dev/net/tun"):
        return "the emulated-link lab needs /dev/net/tun"
    return None


def address(index: int, region: int) -> str:
    return f"198.18.{region + 1}.{index + 1}"


def apportion(count: int, weights: tuple[float, ...] = DEFAULT_REGION_WEIGHTS) -> list[int]:
    """Nodes per region, by the largest remainder (16 nodes: 6, 5, 1, 3, 1)."""
    total = sum(weights)
    quotas = [count * w / total for w in weights]
    seats = [int(q) for q in quotas]
    order = sorted(range(len(weights)), key=lambda r: seats[r] - quotas[r])
    for r in order[: count - sum(seats)]:
        seats[r] += 1
    return seats


@dataclass(frozen=True)
class Plan:
    nodes: int
    lookups: int
    joins: int
    fast: bool
    seed: int = 1
    rooms: int = 4
    wave: int = 8
    settle: float = 5.0
    lookup_gap: float = 0.25
    join_gap: float = 0.5
    seeds: list[bytes] = field(default_factory=list)
    regions: list[int] = field(default_factory=list)
    lookup_work: list[tuple[int, bytes]] = field(default_factory=list)
    join_work: list[tuple[int, bytes, str]] = field(default_factory=list)

    @classmethod
    def make(
        cls, nodes: int, lookups: int, joins: int, fast: bool, seed: int = 1, rooms: int = 4
    ) -> Plan:
        rng = random.Random(seed)
        regions = [r for r, n in enumerate(apportion(nodes)) for _ in range(n)]
        rng.shuffle(regions)
        plan = cls(nodes, lookups, joins, fast, seed, rooms)
        plan.seeds.extend(rng.randbytes(32) for _ in range(nodes))
        plan.regions.extend(regions)
        plan.lookup_work.extend((rng.randrange(nodes), rng.randbytes(20)) for _ in range(lookups))
        plan.join_work.extend(
            (
                rng.randrange(nodes),
                rng.randbytes(32),
                f"https://example.org/netem/{rng.randrange(plan.rooms)}",
            )
            for _ in range(joins)
        )
        return plan

    def waves(self) -> list[list[int]]:
        rest = list(range(1, self.nodes))
        return [[0], *(rest[i : i + self.wave] for i in range(0, len(rest), self.wave))]


@dataclass
class Samples:
    lookup_s: list[float] = field(default_factory=list)
    join_s: list[float] = field(default_factory=list)
    lookup_found: int = 0
    """Lookups whose closest result is the true closest node."""
    errors: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def true_closest(plan: Plan, ids: list[bytes], origin: int, target: bytes) -> bytes:
    goal = int.from_bytes(target)
    return min(
        (i for n, i in enumerate(ids) if n != origin), key=lambda i: int.from_bytes(i) ^ goal
    )


def node_ids(plan: Plan) -> list[bytes]:
    from dht.identity import Identity

    return [Identity.from_seed(s).node_id for s in plan.seeds]


# --- the simulator ---------------------------------------------------------------------


def simulate(plan: Plan, network_seed: int = 0) -> Samples:
    """The plan on the simulator: real joins in the same waves, then the same lookups and
    joins at the same offsets. `network_seed` varies only the simulator's own draws."""
    from dht.identity import Identity
    from signaling.config import NodeConfig
    from simulations.engine import Engine
    from simulations.network import NetworkModel
    from simulations.overlay import EPOCH, Overlay, SimNode, make_identity
    from simulations.roomnet import RoomNet

    from .netem_host import dht_config, room_settings

    engine = Engine(EPOCH)
    rng = random.Random(1_000_003 * plan.seed + network_seed)
    network = NetworkModel(jitter_ms=JITTER_MS)
    overlay = Overlay(engine, rng, network, dht_config(plan.fast), identities="ed25519")
    sims: list[SimNode] = [
        overlay.add_node(identity=Identity.from_seed(seed), region=region)
        for seed, region in zip(plan.seeds, plan.regions, strict=True)
    ]
    for wave in plan.waves():
        pending = set(wave)
        for i in wave:
            seeds = [sims[0]] if i else []
            overlay.join(sims[i], seeds, lambda _n, _e, i=i, p=pending: p.discard(i))  # type: ignore[misc]
        while pending and engine.now < EPOCH + 3600:
            engine.run(until=engine.now + 0.5)
    engine.run(until=engine.now + plan.settle)
    samples = Samples()
    ids = [s.node_id for s in sims]
    start = engine.now

    for n, (origin, target) in enumerate(plan.lookup_work):

        def launch(_: Any, origin: int = origin, target: bytes = target) -> None:
            began = engine.now

            def done(_node: SimNode, event: Any) -> None:
                samples.lookup_s.append(engine.now - began)
                contacts = getattr(event, "contacts", ())
                if contacts and contacts[0].node_id == true_closest(plan, ids, origin, target):
                    samples.lookup_found += 1

            overlay.find_node(sims[origin], target, done)

        engine.post(start + n * plan.lookup_gap, launch, None)
    engine.run(until=start + len(plan.lookup_work) * plan.lookup_gap + 30.0)

    config = NodeConfig(**room_settings(plan.fast))
    net = RoomNet(
        overlay,
        random.Random(rng.getrandbits(64)),
        config.room_config(overlay.config.records.max_value_bytes),
        client_access_ms=ACCESS_MS,
    )
    homes = [net.add_node(sim) for sim in sims]
    start = engine.now
    records = []
    for n, (home, seed, page) in enumerate(plan.join_work):

        def arrive(_: Any, home: int = home, seed: bytes = seed, page: str = page) -> None:
            from signaling.rooms import room_key

            client = net.add_client(homes[home], identity=make_identity("ed25519", seed))
            net.connect(client)
            records.append(net.join(client, room_key(page)))

        engine.post(start + n * plan.join_gap, arrive, None)
    engine.run(until=start + len(plan.join_work) * plan.join_gap + 30.0)
    samples.join_s.extend(r.latency for r in records if r.latency is not None)
    samples.errors.extend(f"join {r.id} unanswered" for r in records if r.latency is None)
    return samples


# --- the lab ---------------------------------------------------------------------------


@dataclass
class NetemLab:
    workdir: Path
    suffix: str = field(default_factory=lambda: os.urandom(3).hex())
    namespaces: list[str] = field(default_factory=list)
    processes: list[LabProcess] = field(default_factory=list)
    nodes: dict[int, LabProcess] = field(default_factory=dict)
    router: LabProcess | None = None
    clients: LabProcess | None = None

    def ns(self, role: str) -> str:
        return f"{NAMESPACE_PREFIX}{self.suffix}-{role}"

    def _namespace(self, role: str) -> str:
        name = self.ns(role)
        _run("ip", "netns", "add", name)
        self.namespaces.append(name)
        _run("ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        _ip(name, "link", "set", "lo", "up")
        return name

    def spawn(self, ns: str, name: str, args: list[str]) -> LabProcess:
        """`python -m ...args` in `ns`, commands on its stdin, JSON lines from its stdout."""
        log = self.workdir / f"{name}.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-m", *args],
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        assert process.stdout is not None
        started = LabProcess(name, process, LineReader(process.stdout), log)
        self.processes.append(started)
        return started

    @staticmethod
    def tell(process: LabProcess, **command: Any) -> None:
        stdin = process.process.stdin
        assert stdin is not None
        stdin.write((json.dumps(command) + "\n").encode())
        stdin.flush()

    def build(self, plan: Plan) -> None:
        """Namespaces, the router's TUN devices moved into them, addresses and routes."""
        core = self._namespace("core")
        devices = [[f"pmt{i}", address(i, region), region] for i, region in enumerate(plan.regions)]
        devices.append(["pmtc", CLIENTS, -1])
        spec = {
            "devices": devices,
            "latency_ms": DEFAULT_LATENCY_MS,
            "jitter_ms": JITTER_MS,
            "access_ms": ACCESS_MS,
            "clients": CLIENTS,
            "seed": plan.seed,
        }
        self.router = self.spawn(core, "router", ["tests.nat.netem_router", json.dumps(spec)])
        self.router.until(is_event("ready"), 30)
        for tun, ip, region in devices:
            ns = self._namespace("cli" if region < 0 else f"n{tun[3:]}")
            _ip(core, "link", "set", tun, "netns", ns)
            _ip(ns, "link", "set", tun, "name", "wan")
            _ip(ns, "addr", "add", f"{ip}/32", "dev", "wan")
            _ip(ns, "link", "set", "wan", "up")
            _ip(ns, "route", "add", "198.18.0.0/16", "dev", "wan", "src", ip)

    def start_nodes(self, plan: Plan) -> None:
        from .netem_host import DHT_PORT

        first = f"{address(0, plan.regions[0])}:{DHT_PORT}"
        for wave in plan.waves():
            for i in wave:
                spec = {
                    "ip": address(i, plan.regions[i]),
                    "seed": plan.seeds[i].hex(),
                    "bootstrap": [first] if i else [],
                    "fast": plan.fast,
                    "data_dir": str(self.workdir / f"node{i}"),
                }
                args = ["tests.nat.netem_host", "node", json.dumps(spec)]
                self.nodes[i] = self.spawn(self.ns(f"n{i}"), f"node{i}", args)
            for i in wave:
                self.nodes[i].until(is_event("started"), 60)
        self.clients = self.spawn(self.ns("cli"), "clients", ["tests.nat.netem_host", "clients"])

    def run(self, plan: Plan, progress: Callable[[str], None] | None = None) -> Samples:
        say = progress or (lambda _: None)
        began = time.monotonic()
        self.build(plan)
        say(f"namespaces up in {time.monotonic() - began:.1f} s")
        self.start_nodes(plan)
        say(f"{plan.nodes} nodes joined in {time.monotonic() - began:.1f} s")
        time.sleep(plan.settle)
        samples = Samples()
        ids = node_ids(plan)
        t0 = time.monotonic()
        for n, (origin, target) in enumerate(plan.lookup_work):
            time.sleep(max(0.0, t0 + n * plan.lookup_gap - time.monotonic()))
            self.tell(self.nodes[origin], op="lookup", target=target.hex(), id=n)
        for n, (origin, target) in enumerate(plan.lookup_work):
            line = self.nodes[origin].until(lambda x, n=n: x.get("id") == n, 60)
            if "error" in line:
                samples.errors.append(f"lookup {n}: {line['error']}")
                continue
            samples.lookup_s.append(line["s"])
            if line["closest"] == true_closest(plan, ids, origin, target).hex():
                samples.lookup_found += 1
        say(f"{plan.lookups} lookups done at {time.monotonic() - began:.1f} s")
        assert self.clients is not None
        t0 = time.monotonic()
        from .netem_host import HTTP_PORT

        for n, (home, seed, page) in enumerate(plan.join_work):
            time.sleep(max(0.0, t0 + n * plan.join_gap - time.monotonic()))
            url = f"ws://{address(home, plan.regions[home])}:{HTTP_PORT}"
            self.tell(self.clients, op="join", id=n, url=url, seed=seed.hex(), room=page)
        for n in range(len(plan.join_work)):
            line = self.clients.until(lambda x, n=n: x.get("id") == n, 60)
            if "error" in line:
                samples.errors.append(f"join {n}: {line['error']}")
            else:
                samples.join_s.append(line["s"])
        say(f"{plan.joins} joins done at {time.monotonic() - began:.1f} s")
        samples.extra["wall_seconds"] = round(time.monotonic() - began, 1)
        samples.extra["cpu_seconds"] = {
            "router": cpu_seconds(self.router),
            "clients": cpu_seconds(self.clients),
            "nodes": round(sum(cpu_seconds(p) for p in self.nodes.values()), 1),
        }
        samples.extra["load_average"] = round(os.getloadavg()[0], 1)
        if self.router is not None:  # its counts: packets delayed, dropped, failed writes
            self.router.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                stats = self.router.until(is_event("stats"), 5)
                samples.extra["router"] = {k: v for k, v in stats.items() if k != "event"}
        return samples

    def close(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
                if process.process.stdin is not None:
                    process.process.stdin.close()
                process.stop(2.0)
        for ns in self.namespaces:
            pids = subprocess.run(
                ["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10
            ).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        self.namespaces.clear()


def cpu_seconds(process: LabProcess | None) -> float:
    """User + system CPU seconds of a lab process so far (`ip netns exec` execs python)."""
    if process is None:
        return 0.0
    try:
        fields = Path(f"/proc/{process.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 1)


def run_lab(plan: Plan, workdir: Path, progress: Callable[[str], None] | None = None) -> Samples:
    lab = NetemLab(workdir)
    try:
        return lab.run(plan, progress)
    finally:
        lab.close()


# --- comparing -------------------------------------------------------------------------


def binned(values: list[float], edges: tuple[float, ...] = EDGES_S) -> list[float]:
    """Shares of `values` in each bin (the last bin: above the last edge)."""
    counts = [0] * (len(edges) + 1)
    for v in values:
        counts[next((i for i, e in enumerate(edges) if v <= e), len(edges))] += 1
    return [c / max(1, len(values)) for c in counts]


def tvd(a: list[float], b: list[float], edges: tuple[float, ...] = EDGES_S) -> float:
    """Total variation distance between the binned distributions of `a` and `b`."""
    return sum(abs(x - y) for x, y in zip(binned(a, edges), binned(b, edges), strict=True)) / 2


def paired_median(lab: list[float], sim: list[float]) -> float:
    """The median over the plan's lookups (or joins) of lab minus simulator: the same
    lookup from the same origin to the same target, in both worlds."""
    import statistics

    return statistics.median(a - b for a, b in zip(lab, sim, strict=True))


def percentiles(values: list[float]) -> dict[str, Any]:
    from simulations.metrics import describe

    block = describe(values, 3)
    return {k: block[k] for k in ("count", "p50", "p90", "p99", "mean")}


__all__ = ["DEFAULT_REGIONS", "EDGES_S", "NetemLab", "Plan", "Samples", "run_lab", "simulate"]
