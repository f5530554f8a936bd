"""The modelled transport: where hosts sit, how long a datagram takes, what NATs allow.

Hosts live in regions; a datagram between two regions takes the one-way
latency of the matrix plus a uniform jitter, and is lost with the combined
loss rate of the two hosts' access links. Each peer has a NAT type; the
classic pairwise table (RFC 4787 behaviours, as measured for WebRTC by
e.g. Ford, Srisuresh and Kegel, "Peer-to-Peer Communication Across NATs",
USENIX ATC 2005) decides whether two peers connect directly or through a
TURN relay. Relays have a capacity in concurrent allocations.

All draws come from the `random.Random` handed in; nothing here keeps time.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from dataclasses import dataclass, field
from enum import IntEnum
from itertools import accumulate


class NatType(IntEnum):
    OPEN = 0
    """Public address, or a full-cone NAT: anyone may send to it."""
    CONE = 1
    """Endpoint-independent mapping, address(-and-port)-dependent filtering: hole punching works."""
    SYMMETRIC = 2
    """Endpoint-dependent mapping: the port a peer sees is not the one the STUN server saw."""


# Whether two NAT types connect directly (ICE host/srflx candidates) or need a relay.
# Symmetric against a port-restricted cone fails to punch, as does symmetric against symmetric.
DIRECT: dict[tuple[NatType, NatType], bool] = {
    (a, b): a is NatType.OPEN or b is NatType.OPEN or (a is NatType.CONE and b is NatType.CONE)
    for a in NatType
    for b in NatType
}

# One-way latencies in milliseconds between five continental regions, rounded from
# public inter-region RTT tables (half the median RTT; WonderNetwork ping data, 2023).
DEFAULT_REGIONS = ("eu", "na", "sa", "as", "oc")
DEFAULT_LATENCY_MS = (
    (8, 45, 100, 120, 140),
    (45, 10, 65, 90, 80),
    (100, 65, 12, 150, 160),
    (120, 90, 150, 15, 60),
    (140, 80, 160, 60, 8),
)
DEFAULT_REGION_WEIGHTS = (0.35, 0.30, 0.08, 0.20, 0.07)


def weighted_choice(rng: random.Random, cumulative: list[float]) -> int:
    """Index drawn with the weights whose running sums are `cumulative`."""
    return bisect_right(cumulative, rng.random() * cumulative[-1])


@dataclass
class NetworkModel:
    """Regions, latency, jitter and loss of the modelled internet."""

    regions: tuple[str, ...] = DEFAULT_REGIONS
    latency_ms: tuple[tuple[float, ...], ...] = DEFAULT_LATENCY_MS
    region_weights: tuple[float, ...] = DEFAULT_REGION_WEIGHTS
    jitter_ms: float = 5.0
    """Each datagram adds a uniform [0, jitter) delay, so datagrams may reorder."""
    loss: float = 0.0
    """Loss rate of a host's access link; a datagram crosses two (sender's and receiver's)."""
    _cumulative: list[float] = field(init=False, repr=False)
    _latency: list[list[float]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        size = len(self.regions)
        if len(self.latency_ms) != size or any(len(row) != size for row in self.latency_ms):
            raise ValueError(f"the latency matrix must be {size}x{size}")
        if len(self.region_weights) != size:
            raise ValueError(f"{size} region weights expected")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError("loss is a probability in [0, 1)")
        self._cumulative = list(accumulate(self.region_weights))
        self._latency = [[ms / 1000.0 for ms in row] for row in self.latency_ms]

    @property
    def keep(self) -> float:
        """Probability that a datagram survives both access links."""
        return (1.0 - self.loss) ** 2

    def pick_region(self, rng: random.Random) -> int:
        return weighted_choice(rng, self._cumulative)

    def base_delay(self, src_region: int, dst_region: int) -> float:
        return self._latency[src_region][dst_region]

    def delay(self, rng: random.Random, src_region: int, dst_region: int) -> float:
        """One-way delay of one datagram, in seconds."""
        return self._latency[src_region][dst_region] + rng.random() * self.jitter_ms / 1000.0

    def latency_table(self) -> list[list[float]]:
        """One-way base latencies in seconds, [src][dst]."""
        return [list(row) for row in self._latency]


@dataclass
class NatMix:
    """Shares of peers behind each NAT type (defaults: WebRTC field data put about
    one connection in five behind a relay; see docs/simulation.md)."""

    open: float = 0.25
    cone: float = 0.55
    symmetric: float = 0.20

    def __post_init__(self) -> None:
        shares = (self.open, self.cone, self.symmetric)
        if any(s < 0 for s in shares) or sum(shares) <= 0:
            raise ValueError("NAT shares are non-negative and not all zero")
        self._cumulative = list(accumulate(shares))

    def pick(self, rng: random.Random) -> NatType:
        return NatType(weighted_choice(rng, self._cumulative))


def connects_directly(a: NatType, b: NatType) -> bool:
    """True when two peers behind these NATs reach each other without a relay."""
    return DIRECT[(a, b)]


class Relay:
    """A TURN relay with a bounded number of concurrent allocations (one per relayed link)."""

    __slots__ = ("allocations", "bytes_relayed", "capacity", "name", "peak", "refused")

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self.allocations = 0
        self.peak = 0
        self.refused = 0
        self.bytes_relayed = 0.0

    def allocate(self) -> bool:
        if self.allocations >= self.capacity:
            self.refused += 1
            return False
        self.allocations += 1
        self.peak = max(self.peak, self.allocations)
        return True

    def release(self) -> None:
        self.allocations -= 1


__all__ = [
    "DIRECT",
    "NatMix",
    "NatType",
    "NetworkModel",
    "Relay",
    "connects_directly",
    "weighted_choice",
]
