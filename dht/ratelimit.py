"""Per-source token buckets, bounded in how many sources they remember."""

from __future__ import annotations

from collections.abc import Hashable


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
        self._buckets: dict[Hashable, tuple[float, float]] = {}

    def allow(self, source: Hashable, now: float) -> bool:
        tokens, stamp = self._buckets.pop(source, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - stamp) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[source] = (tokens, now)
        if len(self._buckets) > self.max_sources:
            del self._buckets[next(iter(self._buckets))]
        return allowed

    def prune(self, now: float) -> int:
        """Forget sources whose bucket has refilled: a full bucket is the same as none."""
        full = [
            source
            for source, (tokens, stamp) in self._buckets.items()
            if tokens + (now - stamp) * self.rate >= self.burst
        ]
        for source in full:
            del self._buckets[source]
        return len(full)

    def __len__(self) -> int:
        return len(self._buckets)
