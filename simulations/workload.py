"""Workload and churn models: session lengths, arrivals, page popularity.

Session lengths follow a Weibull distribution, the fit that measurement
studies of deployed DHTs found (Stutzbach and Rejaie, "Understanding Churn
in Peer-to-Peer Networks", IMC 2006: Kad sessions Weibull with shape about
0.59; Steiner et al., IMC 2007, similar heavy tails). Arrivals are Poisson,
with the rate that keeps the population steady (Little's law). Page
popularity is Zipf(s) over a fixed number of URLs (Breslau et al., INFOCOM
1999, s between 0.64 and 0.83 for web requests).

Every draw takes the simulation's `random.Random`.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left
from dataclasses import dataclass
from itertools import accumulate

WEIBULL_SHAPE_KAD = 0.59
"""Stutzbach and Rejaie 2006, Kad session lengths."""


@dataclass(frozen=True)
class Weibull:
    """Session length in seconds: Weibull(shape, scale)."""

    shape: float = WEIBULL_SHAPE_KAD
    scale: float = 3600.0

    def __post_init__(self) -> None:
        if self.shape <= 0 or self.scale <= 0:
            raise ValueError("Weibull shape and scale are positive")

    @property
    def mean(self) -> float:
        return self.scale * math.gamma(1.0 + 1.0 / self.shape)

    def sample(self, rng: random.Random) -> float:
        return rng.weibullvariate(self.scale, self.shape)

    def residual(self, rng: random.Random) -> float:
        """Remaining session of a node found online at a random instant (length-biased).

        A node online at time t is more likely in a long session (the inspection
        paradox); its remaining time is drawn from the equilibrium distribution,
        sampled here as a uniform fraction of a length-biased session.
        """
        # Length-biased Weibull: accept a draw with probability proportional to its length.
        bound = self.scale * 20.0
        while True:
            length = self.sample(rng)
            if rng.random() * bound < min(length, bound):
                return rng.random() * length


@dataclass(frozen=True)
class Poisson:
    """Arrivals at `rate` per second."""

    rate: float

    def next_gap(self, rng: random.Random) -> float:
        return rng.expovariate(self.rate) if self.rate > 0 else math.inf


def steady_arrival_rate(population: int, sessions: Weibull) -> float:
    """Arrivals per second that keep `population` online on average (Little's law)."""
    return population / sessions.mean


class Zipf:
    """Rank r in [0, n) with probability proportional to 1 / (r + 1) ** s."""

    def __init__(self, n: int, s: float) -> None:
        if n < 1 or s < 0:
            raise ValueError("Zipf needs n >= 1 and s >= 0")
        self.n = n
        self.s = s
        self._cumulative = list(accumulate(1.0 / (r + 1) ** s for r in range(n)))

    def probability(self, rank: int) -> float:
        previous = self._cumulative[rank - 1] if rank else 0.0
        return (self._cumulative[rank] - previous) / self._cumulative[-1]

    def sample(self, rng: random.Random) -> int:
        index = bisect_left(self._cumulative, rng.random() * self._cumulative[-1])
        return min(index, self.n - 1)


__all__ = ["WEIBULL_SHAPE_KAD", "Poisson", "Weibull", "Zipf", "steady_arrival_rate"]
