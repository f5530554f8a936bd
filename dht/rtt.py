"""When a request is late: a high quantile of the node's recent round trips.

RFC 6298's srtt + 4·rttvar is built for one path, whose round trips vary
around one mean. A DHT node's requests go to hosts on every continent, so its
round trips are a mixture of a few modes (16 ms within a region, 300 ms
across the Pacific) and the order of the samples is random. The smoothed
mean follows the last few samples: after a run of near answers the deadline
falls below every far host's round trip, and each request to a far host is
sent twice and frees its lookup slot early. In the simulator, with no loss at
all, a quarter of all requests were retransmitted that way (docs/simulation.md,
"Round trips").

`RoundTrips` keeps a histogram of recent samples in logarithmic bins (ratio
2^(1/4), 2 ms .. 4 s) and answers quantiles from it: the deadline is the
upper edge of the bin holding the `quantile` of the samples, so about one
request in twenty (at 0.95) to a live host is sent twice, whatever the
mixture. Counts are halved every `WINDOW` samples, so old samples fade. It
costs one small array per node, which matters at 10^6 simulated nodes; a
per-contact estimate would be sharper, at a few hundred entries per node.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left

LOWEST = 0.002
RATIO = 2**0.25
BINS = 48
EDGES: tuple[float, ...] = tuple(LOWEST * RATIO**i for i in range(BINS))
"""Upper edge of each bin in seconds; the last bin also takes everything above it."""

WINDOW = 64
"""Samples between halvings of every count: the memory of the estimate."""
MIN_SAMPLES = 8
"""Below this many samples there is no estimate (`deadline` returns None)."""


class RoundTrips:
    """A decaying histogram of round-trip samples, in seconds."""

    __slots__ = ("_answer", "_asked", "_counts", "_since_halving", "_total")

    def __init__(self) -> None:
        self._counts = array("H", bytes(2 * BINS))
        self._total = 0
        self._since_halving = 0
        # The last quantile asked and its answer: every request asks, samples come
        # one per answered request, so most asks find the histogram unchanged.
        self._asked = -1.0
        self._answer: float | None = None

    def __len__(self) -> int:
        """Samples the estimate currently weighs (after halvings)."""
        return self._total

    def add(self, rtt: float) -> None:
        if not rtt >= 0.0 or math.isinf(rtt):
            raise ValueError(f"a round trip is a finite duration >= 0, got {rtt!r}")
        index = min(bisect_left(EDGES, rtt), BINS - 1)
        self._counts[index] += 1
        self._total += 1
        self._asked = -1.0
        self._since_halving += 1
        if self._since_halving >= WINDOW:
            self._halve()

    def _halve(self) -> None:
        counts = self._counts
        total = 0
        for index in range(BINS):
            if counts[index]:
                counts[index] >>= 1
                total += counts[index]
        self._total = total
        self._since_halving = 0

    def quantile(self, q: float) -> float | None:
        """Upper edge of the bin holding quantile `q` of the samples; None with too few."""
        if not 0.0 < q <= 1.0:
            raise ValueError(f"a quantile is in (0, 1], got {q!r}")
        if q == self._asked:
            return self._answer
        self._asked, self._answer = q, self._find(q)
        return self._answer

    def _find(self, q: float) -> float | None:
        if self._total < MIN_SAMPLES:
            return None
        wanted = q * self._total
        seen = 0
        counts = self._counts
        for index in range(BINS):
            seen += counts[index]
            if seen >= wanted:
                return EDGES[index]
        return EDGES[-1]  # pragma: no cover - seen reaches the total in the loop
