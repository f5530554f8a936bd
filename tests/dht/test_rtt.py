"""The slow deadline's estimator: quantiles of a decaying log-binned histogram."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dht.rtt import EDGES, MIN_SAMPLES, RATIO, WINDOW, RoundTrips


def test_no_estimate_before_enough_samples() -> None:
    trips = RoundTrips()
    for _ in range(MIN_SAMPLES - 1):
        trips.add(0.02)
    assert trips.quantile(0.95) is None
    trips.add(0.02)
    assert trips.quantile(0.95) == pytest.approx(0.02, rel=RATIO - 1)


def rfc6298_deadline(samples: list[float]) -> float:
    srtt, rttvar = samples[0], samples[0] / 2
    for rtt in samples[1:]:
        rttvar = 0.75 * rttvar + 0.25 * abs(srtt - rtt)
        srtt = 0.875 * srtt + 0.125 * rtt
    return srtt + 4 * rttvar


def test_a_mixture_of_near_and_far_hosts_gets_the_far_deadline() -> None:
    """What RFC 6298 gets wrong for a DHT: after a run of near answers its deadline
    falls below every far round trip. The quantile stays above them."""
    rng = random.Random(7)
    samples = [rng.choice((0.016, 0.300)) for _ in range(40)] + [0.016] * 12
    trips = RoundTrips()
    for rtt in samples:
        trips.add(rtt)
    assert rfc6298_deadline(samples) < 0.300
    deadline = trips.quantile(0.95)
    assert deadline is not None and 0.300 <= deadline < 0.300 * RATIO
    assert trips.quantile(0.5) == pytest.approx(0.016, rel=RATIO - 1)


def test_old_samples_fade() -> None:
    trips = RoundTrips()
    for _ in range(WINDOW):
        trips.add(0.300)
    for _ in range(8 * WINDOW):
        trips.add(0.010)
    deadline = trips.quantile(0.99)
    assert deadline is not None and deadline < 0.02


@pytest.mark.parametrize("bad", [-0.001, float("nan"), float("inf")])
def test_a_round_trip_is_a_finite_non_negative_duration(bad: float) -> None:
    with pytest.raises(ValueError):
        RoundTrips().add(bad)


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5])
def test_a_quantile_is_in_the_unit_interval(bad: float) -> None:
    with pytest.raises(ValueError):
        RoundTrips().quantile(bad)


@given(
    st.lists(st.floats(min_value=0.0, max_value=30.0), min_size=MIN_SAMPLES, max_size=400),
    st.floats(min_value=0.01, max_value=1.0),
)
def test_the_quantile_bounds_that_share_of_recent_samples(samples: list[float], q: float) -> None:
    """At least q of the samples the histogram still weighs lie at or below the answer,
    and the answer is the edge of a bin a sample fell in (no more than one bin high)."""
    trips = RoundTrips()
    for rtt in samples:
        trips.add(rtt)
    answer = trips.quantile(q)
    if len(trips) < MIN_SAMPLES:
        assert answer is None
        return
    assert answer in EDGES
    if len(samples) < WINDOW:  # nothing halved yet: the bound is exact over all samples
        within = sum(1 for rtt in samples if rtt <= answer or answer == EDGES[-1])
        assert within >= q * len(samples) - 1e-9
        assert any(answer / RATIO < rtt <= answer for rtt in samples) or answer in (
            EDGES[0],
            EDGES[-1],
        )
    assert trips.quantile(q) == answer  # asked again, unchanged
