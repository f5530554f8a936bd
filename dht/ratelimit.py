"""Token buckets: one for a single flow, and one per source, bounded in how many it remembers.

These are the project's only rate rule: DHT requests per address, client
frames and errors per connection, connections and hellos per IP at a node,
and (re-exported through `signaling.protocol`) what a peer takes from each
room member. Time arrives as `now`, so all of them run on virtual time.
"""

from __future__ import annotations

from collections.abc import Hashable


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
