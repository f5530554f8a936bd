"""DHT cores wired together in memory, on a clock that moves only when the test says.

Datagrams get a latency (plus optional jitter, which reorders them), may be
lost or duplicated by pattern, and never touch a socket. Every run has a
round limit, so a runaway protocol fails the test instead of hanging it.

A node may sit behind a `Nat`: others see it at the NAT's public address, and
with `filtering` (a home router) only datagrams from addresses it sent to
within `timeout` get in. Helpers' reachability probes (`DHTCore.dial_backs`)
leave from another port of the helper's host; their HTTP probes reach a core
that `serve_http` registered, unless its NAT filters them or its certificate is
one the helpers refuse (`serve_http(..., tls=...)`), and each helper is told what
its probe met (`DHTCore.url_dialed`), as the glue tells it.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from dht.core import DHTConfig, DHTCore, Event
from dht.identity import Identity
from dht.reach import TlsFailure, UrlOutcome, UrlProbeResult

EPOCH = 1_700_000_000.0
Address = tuple[str, int]


class RoundLimitExceeded(AssertionError):
    pass


@dataclass
class LinkModel:
    latency: float = 0.010
    jitter: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0


PROBE_PORT = 49152
"""The port helpers' UDP probes leave from (not the DHT's, as the protocol requires)."""
DIAL_TIMEOUT = 5.0
"""How long a helper's HTTP probe waits for a connection (signaling.reachability's)."""
UNREACHED = UrlProbeResult(UrlOutcome.UNREACHABLE)


@dataclass
class Nat:
    """A NAT in front of one node: `public` is where others reach it."""

    public: Address
    filtering: bool = True
    """Let in only what comes from an address the node sent to (port-restricted cone)."""
    timeout: float = 120.0
    flows: dict[Address, float] = field(default_factory=dict)

    def admits(self, src: Address, now: float) -> bool:
        sent = self.flows.get(src)
        return not self.filtering or (sent is not None and now - sent < self.timeout)


@dataclass
class MemoryNetwork:
    seed: int = 1
    link: LinkModel = field(default_factory=LinkModel)
    now: float = EPOCH
    max_rounds: int = 2_000_000

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.cores: dict[Address, DHTCore] = {}
        self.dead: set[Address] = set()
        self.events: dict[Address, list[Event]] = {}
        self.delivered = 0
        self.dropped = 0
        self._queue: list[tuple[float, int, Address, Address, bytes]] = []
        self._seq = 0
        self._dirty: set[Address] = set()
        self._timers: list[tuple[float, Address]] = []
        self._timer_of: dict[Address, float | None] = {}
        self.nats: dict[Address, Nat] = {}  # a node's own address -> its NAT
        self._behind: dict[Address, Address] = {}  # a NAT's public address -> the node's
        self.http: dict[Address, Address] = {}  # (public host, port) -> the node serving it
        self._probes: list[tuple[float, int, Address, bytes, Address]] = []
        """HTTP probes in flight: (when, seq, the node served, nonce, the helper)."""
        self._dialled: list[tuple[float, int, Address, bytes, UrlProbeResult]] = []
        """What HTTP probes met, due at their helpers: (when, seq, helper, nonce, result)."""
        self.untrusted: dict[Address, TlsFailure] = {}
        """(public host, port) -> why helpers refuse the certificate served there."""
        self.nat_dropped = 0
        self.far: dict[Address, float] = {}
        """A node's own extra one-way delay, both ways (a host on another continent)."""

    # --- building ------------------------------------------------------------

    def add_node(
        self, config: DHTConfig | None = None, read_only: bool = False, nat: Nat | None = None
    ) -> DHTCore:
        index = len(self.cores)
        addr = (f"198.18.{index // 250}.{index % 250 + 1}", 4000)
        identity = Identity.from_seed(self.rng.randbytes(32))
        core = DHTCore(identity, random.Random(self.rng.getrandbits(64)), self.now, config)
        self.cores[addr] = core
        self.events[addr] = []
        self._dirty.add(addr)
        if nat is not None:
            self.nats[addr] = nat
            self._behind[nat.public] = addr
        return core

    def public_addr(self, core: DHTCore) -> Address:
        """Where the other nodes reach `core` (its NAT's address, if it has one)."""
        addr = self.addr_of(core)
        nat = self.nats.get(addr)
        return nat.public if nat is not None else addr

    def renumber(self, core: DHTCore, public: Address) -> None:
        """The node's NAT gets another public address (a new lease); its flows are lost."""
        nat = self.nats[self.addr_of(core)]
        del self._behind[nat.public]
        nat.public = public
        nat.flows.clear()
        self._behind[public] = self.addr_of(core)

    def serve_http(self, core: DHTCore, port: int, tls: TlsFailure | None = None) -> str:
        """`core` answers HTTP probes on `port` of its public address; returns its URL.
        With `tls`, helpers refuse its certificate for that reason (and send nothing)."""
        host, _ = self.public_addr(core)
        self.http[(host, port)] = self.addr_of(core)
        self.untrusted.pop((host, port), None)
        if tls is not None:
            self.untrusted[(host, port)] = tls
        core.dials_urls = True
        return f"{'ws' if tls is None else 'wss'}://{host}:{port}"

    def addr_of(self, core: DHTCore) -> Address:
        for addr, candidate in self.cores.items():
            if candidate is core:
                return addr
        raise KeyError("core not on this network")

    def addr_of_id(self, node_id: bytes) -> Address:
        for addr, candidate in self.cores.items():
            if candidate.node_id == node_id:
                return addr
        raise KeyError("no core with that id")

    def kill(self, core: DHTCore) -> None:
        """The node goes silent: what it would send and what is sent to it vanish."""
        self.dead.add(self.addr_of(core))

    def live(self) -> list[DHTCore]:
        return [c for a, c in self.cores.items() if a not in self.dead]

    # --- running -------------------------------------------------------------

    def inject(self, data: bytes, src: Address, dst: Address) -> None:
        """Put a datagram on the wire as if `src` had sent it (an attacker, a fuzzer)."""
        self._push(self.now + self.link.latency, src, dst, data)

    def _push(self, when: float, src: Address, dst: Address, data: bytes) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (when, self._seq, src, dst, data))

    def _flush(self) -> None:
        """Drain what touched cores want sent and learned; note their next timers."""
        link = self.link
        dirty, self._dirty = self._dirty, set()
        for addr in dirty:
            core = self.cores[addr]
            nat = self.nats.get(addr)
            for data, dst in core.datagrams_to_send(self.now):
                if addr in self.dead or self.rng.random() < link.loss:
                    self.dropped += 1
                    continue
                src = addr
                if nat is not None:
                    nat.flows[dst] = self.now
                    src = nat.public
                copies = 2 if self.rng.random() < link.duplicate else 1
                extra = self.far.get(addr, 0.0) + self.far.get(dst, 0.0) if self.far else 0.0
                for _ in range(copies):
                    delay = link.latency + extra + self.rng.random() * link.jitter
                    self._push(self.now + delay, src, dst, data)
            for dial in core.dial_backs():
                if addr in self.dead:
                    continue
                host = nat.public[0] if nat is not None else addr[0]
                self._push(self.now + link.latency, (host, PROBE_PORT), dial.to, dial.datagram)
                if dial.http is not None:
                    self._dial_http(addr, dial.http.address, dial.http.port, dial.nonce)
            while (event := core.next_event()) is not None:
                self.events[addr].append(event)
            timer = core.get_timer()
            if timer != self._timer_of.get(addr):
                self._timer_of[addr] = timer
                if timer is not None:
                    heapq.heappush(self._timers, (timer, addr))

    def _dial_http(self, helper: Address, host: str, port: int, nonce: bytes) -> None:
        """A helper's HTTP probe: a TCP handshake first, then (with TLS) the certificate."""
        latency = self.link.latency
        target = self.http.get((host, port))
        if target is None:
            self._tell(helper, nonce, UNREACHED, 2 * latency)  # refused
        elif (tls := self.untrusted.get((host, port))) is not None:
            self._tell(helper, nonce, UrlProbeResult(UrlOutcome.TLS_UNTRUSTED, tls), 4 * latency)
        else:
            self._seq += 1
            heapq.heappush(self._probes, (self.now + 2 * latency, self._seq, target, nonce, helper))

    def _tell(self, helper: Address, nonce: bytes, result: UrlProbeResult, after: float) -> None:
        """The helper learns what its probe met `after` seconds from now."""
        self._seq += 1
        heapq.heappush(self._dialled, (self.now + after, self._seq, helper, nonce, result))

    def _next_timer(self) -> float | None:
        timers = self._timers
        while timers and (
            timers[0][1] in self.dead or self._timer_of.get(timers[0][1]) != timers[0][0]
        ):
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def _next_time(self) -> float | None:
        times = [self._queue[0][0]] if self._queue else []
        if self._probes:
            times.append(self._probes[0][0])
        if self._dialled:
            times.append(self._dialled[0][0])
        timer = self._next_timer()
        if timer is not None:
            times.append(timer)
        return min(times) if times else None

    def step(self) -> bool:
        """Advance to the next delivery or timer and process everything due then."""
        self._flush()
        when = self._next_time()
        if when is None:
            return False
        self.now = max(self.now, when)
        while self._queue and self._queue[0][0] <= self.now:
            _, _, src, dst, data = heapq.heappop(self._queue)
            dst = self._inbound(src, dst)
            core = self.cores.get(dst)
            if core is None or dst in self.dead:
                self.dropped += 1
                continue
            self.delivered += 1
            core.receive(data, src, self.now)
            self._dirty.add(dst)
        while self._probes and self._probes[0][0] <= self.now:
            _, _, dst, nonce, helper = heapq.heappop(self._probes)
            nat = self.nats.get(dst)
            if dst in self.dead or (nat is not None and nat.filtering):
                self.nat_dropped += 1  # a new TCP connection from outside: a home router drops it
                self._tell(helper, nonce, UNREACHED, DIAL_TIMEOUT)  # it gives up, says so
                continue
            self.cores[dst].url_probe_received(nonce, self.now)
            self._dirty.add(dst)
            self._tell(helper, nonce, UrlProbeResult(UrlOutcome.REACHED), self.link.latency)
        while self._dialled and self._dialled[0][0] <= self.now:
            _, _, helper, nonce, result = heapq.heappop(self._dialled)
            if helper not in self.dead:
                self.cores[helper].url_dialed(nonce, result, self.now)
                self._dirty.add(helper)
        while (timer := self._next_timer()) is not None and timer <= self.now:
            _, addr = heapq.heappop(self._timers)
            self._timer_of[addr] = None
            self.cores[addr].handle_timer(self.now)
            self._dirty.add(addr)
        self._flush()
        return True

    def _inbound(self, src: Address, dst: Address) -> Address:
        """The node a datagram to `dst` reaches: through a NAT, if it lets it in."""
        behind = self._behind.get(dst)
        if behind is None:
            return dst
        if self.nats[behind].admits(src, self.now):
            return behind
        self.nat_dropped += 1
        return ("nat-dropped", 0)

    def touch_all(self) -> None:
        """The test called into cores directly: look at all of them on the next flush."""
        self._dirty.update(a for a in self.cores if a not in self.dead)

    def run_until(self, done: Callable[[], bool], timeout: float = 60.0) -> float:
        """Step until `done()`; returns the virtual seconds it took. Fails past `timeout`."""
        start = self.now
        self.touch_all()
        for _ in range(self.max_rounds):
            if done():
                return self.now - start
            if self.now - start > timeout:
                raise AssertionError(f"not done after {timeout} virtual seconds")
            if not self.step():
                if done():
                    return self.now - start
                raise AssertionError("network went idle before the condition held")
        raise RoundLimitExceeded(f"more than {self.max_rounds} rounds")

    def run_for(self, seconds: float) -> None:
        end = self.now + seconds
        self.touch_all()
        for _ in range(self.max_rounds):
            self._flush()
            when = self._next_time()
            if when is None or when > end:
                self.now = end
                return
            self.step()
        raise RoundLimitExceeded(f"more than {self.max_rounds} rounds")

    def wait(self, core: DHTCore, op: int, timeout: float = 60.0) -> Event:
        """Run until `core` emits the event of operation `op`, and return it."""
        addr = self.addr_of(core)

        def find() -> Event | None:
            return next((e for e in self.events[addr] if e.op == op), None)

        self.run_until(lambda: find() is not None, timeout)
        event = find()
        assert event is not None
        return event

    # --- whole meshes --------------------------------------------------------

    def build_mesh(self, count: int, config: DHTConfig | None = None) -> list[DHTCore]:
        """`count` nodes, each bootstrapping from the first once the previous one joined."""
        first = self.add_node(config)
        nodes = [first]
        for _ in range(count - 1):
            core = self.add_node(config)
            op = core.bootstrap([self.addr_of(first)], self.now)
            self.wait(core, op)
            nodes.append(core)
        return nodes


def true_closest(nodes: list[DHTCore], target: bytes, k: int, exclude: DHTCore) -> list[bytes]:
    num = int.from_bytes(target, "big")
    ids = [n.node_id for n in nodes if n is not exclude]
    return sorted(ids, key=lambda i: int.from_bytes(i, "big") ^ num)[:k]
