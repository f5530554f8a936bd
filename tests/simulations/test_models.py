"""The network, NAT, churn and popularity models."""

from __future__ import annotations

import math
import random

import pytest

from simulations.network import NatMix, NatType, NetworkModel, Relay, connects_directly
from simulations.workload import Poisson, Weibull, Zipf, steady_arrival_rate


def test_delay_is_the_matrix_latency_plus_bounded_jitter() -> None:
    model = NetworkModel(jitter_ms=10.0)
    rng = random.Random(1)
    for src in range(len(model.regions)):
        for dst in range(len(model.regions)):
            base = model.latency_ms[src][dst] / 1000
            delays = [model.delay(rng, src, dst) for _ in range(200)]
            assert all(base <= d < base + 0.010 for d in delays)


def test_the_latency_matrix_is_symmetric_and_validated() -> None:
    model = NetworkModel()
    table = model.latency_table()
    assert all(table[a][b] == table[b][a] for a in range(5) for b in range(5))
    with pytest.raises(ValueError):
        NetworkModel(latency_ms=((1.0,),))
    with pytest.raises(ValueError):
        NetworkModel(loss=1.0)


def test_loss_crosses_two_access_links() -> None:
    assert NetworkModel(loss=0.1).keep == pytest.approx(0.81)


def test_regions_are_drawn_by_weight() -> None:
    model = NetworkModel(region_weights=(1.0, 0.0, 0.0, 0.0, 3.0))
    rng = random.Random(2)
    picks = [model.pick_region(rng) for _ in range(4000)]
    assert set(picks) == {0, 4}
    assert picks.count(4) / len(picks) == pytest.approx(0.75, abs=0.03)


def test_nat_pairs_follow_the_table() -> None:
    open_, cone, sym = NatType.OPEN, NatType.CONE, NatType.SYMMETRIC
    assert connects_directly(open_, sym) and connects_directly(sym, open_)
    assert connects_directly(cone, cone)
    assert not connects_directly(cone, sym) and not connects_directly(sym, cone)
    assert not connects_directly(sym, sym)


def test_nat_mix_shares() -> None:
    mix = NatMix(open=0.2, cone=0.5, symmetric=0.3)
    rng = random.Random(3)
    picks = [mix.pick(rng) for _ in range(10_000)]
    assert picks.count(NatType.SYMMETRIC) / len(picks) == pytest.approx(0.3, abs=0.02)
    with pytest.raises(ValueError):
        NatMix(open=0, cone=0, symmetric=0)


def test_relay_capacity_refuses_beyond_its_allocations() -> None:
    relay = Relay("r", capacity=2)
    assert relay.allocate() and relay.allocate()
    assert not relay.allocate()
    relay.release()
    assert relay.allocate()
    assert relay.peak == 2 and relay.refused == 1


def test_weibull_sessions_match_their_mean() -> None:
    sessions = Weibull(shape=0.59, scale=100.0)
    rng = random.Random(4)
    draws = [sessions.sample(rng) for _ in range(40_000)]
    assert sum(draws) / len(draws) == pytest.approx(sessions.mean, rel=0.05)
    assert sessions.mean == pytest.approx(100.0 * math.gamma(1 + 1 / 0.59))


def test_residual_sessions_are_positive_and_longer_than_a_fresh_median() -> None:
    sessions = Weibull(shape=0.59, scale=100.0)
    rng = random.Random(5)
    residual = sorted(sessions.residual(rng) for _ in range(4000))
    fresh = sorted(sessions.sample(rng) for _ in range(4000))
    assert residual[0] >= 0
    # Inspection paradox: a node seen online has more left than a new session's median.
    assert residual[2000] > fresh[2000]


def test_steady_arrivals_and_poisson_gaps() -> None:
    sessions = Weibull(shape=1.0, scale=50.0)
    assert steady_arrival_rate(1000, sessions) == pytest.approx(20.0)
    rng = random.Random(6)
    gaps = [Poisson(20.0).next_gap(rng) for _ in range(20_000)]
    assert sum(gaps) / len(gaps) == pytest.approx(0.05, rel=0.03)
    assert Poisson(0.0).next_gap(rng) == math.inf


def test_zipf_ranks_follow_their_probabilities() -> None:
    zipf = Zipf(100, 1.0)
    rng = random.Random(7)
    draws = [zipf.sample(rng) for _ in range(50_000)]
    assert draws.count(0) / len(draws) == pytest.approx(zipf.probability(0), abs=0.01)
    assert zipf.probability(0) == pytest.approx(2 * zipf.probability(1))
    assert sum(zipf.probability(r) for r in range(100)) == pytest.approx(1.0)
    assert Zipf(5, 0.0).probability(4) == pytest.approx(0.2)
