"""Token buckets: one for a single flow, and one per source, bounded in how many it remembers.

These are the project's only rate rule: DHT requests per address, client
frames and errors per connection, connections and hellos per IP at a node,
and (re-exported through `signaling.protocol`) what a peer takes from each
room member. Time arrives as `now`, so all of them run on virtual time.
`source_of` names the unit a per-address limit applies to.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable


def source_of(host: str) -> str:
    """The unit a per-address limit applies to: an IPv4 address, or the /64 of an IPv6 one.

    One IPv6 host usually owns a whole /64, so counting its addresses one by
    one would give it 2**64 budgets. An IPv4-mapped address is its IPv4
    address; a host that is no IP literal (the simulator's names) is itself.
    The same grouping as the signaling node's admission (kept apart: the DHT
    imports nothing else of the project).
    """
    if ":" not in host:
        return host  # IPv4 as the socket reports it: already canonical, no parse
    try:
        ip = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return host[:64]
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))


class TokenBucket:
    """`rate` tokens per second up to `burst`; two floats, so cheap per connection."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend `cost` tokens if there are that many; False (nothing spent) if not."""
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def full(self, now: float) -> bool:
        """True when the bucket would be full at `now`: as good as no bucket at all."""
        return self.tokens + max(0.0, now - self.stamp) * self.rate >= self.burst


class SourceRateLimiter:
    """`rate` requests per second per source, bursts up to `burst`.

    At most `max_sources` buckets are kept; the least recently used is
    forgotten first (a forgotten source starts again with a full bucket,
    which only ever errs towards serving).
    """

    def __init__(self, rate: float, burst: float, max_sources: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: dict[Hashable, TokenBucket] = {}

    def allow(self, source: Hashable, now: float) -> bool:
        bucket = self._buckets.pop(source, None)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, now)
        allowed = bucket.take(now)
        self._buckets[source] = bucket  # most recently used last
        if len(self._buckets) > self.max_sources:
            del self._buckets[next(iter(self._buckets))]
        return allowed

    def prune(self, now: float) -> int:
        """Forget sources whose bucket has refilled: a full bucket is the same as none."""
        full = [source for source, bucket in self._buckets.items() if bucket.full(now)]
        for source in full:
            del self._buckets[source]
        return len(full)

    def __len__(self) -> int:
        return len(self._buckets)
