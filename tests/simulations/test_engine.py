"""The event engine: ordering, ties, cancellation, the clock, determinism."""

from __future__ import annotations

import random

from simulations.engine import Engine


def test_events_run_in_time_order_and_ties_in_scheduling_order() -> None:
    engine = Engine()
    seen: list[str] = []
    for when, name in [(3.0, "c"), (1.0, "a1"), (2.0, "b"), (1.0, "a2"), (1.0, "a3")]:
        engine.schedule(when, seen.append, name)
    assert engine.run() == 5
    assert seen == ["a1", "a2", "a3", "b", "c"]
    assert engine.now == 3.0


def test_a_cancelled_event_never_runs_and_is_not_counted() -> None:
    engine = Engine()
    seen: list[int] = []
    timer = engine.schedule(1.0, seen.append, 1)
    engine.schedule(2.0, seen.append, 2)
    assert timer.active
    timer.cancel()
    assert not timer.active
    assert engine.run() == 1
    assert seen == [2]
    assert engine.events == 1


def test_an_event_can_cancel_a_later_one_and_schedule_new_ones() -> None:
    engine = Engine()
    seen: list[str] = []
    later = engine.schedule(5.0, seen.append, "later")

    def first(_: object) -> None:
        seen.append("first")
        later.cancel()
        engine.call_later(1.0, seen.append, "chained")

    engine.schedule(1.0, first)
    engine.run()
    assert seen == ["first", "chained"]
    assert engine.now == 2.0


def test_run_until_stops_at_the_horizon_and_moves_the_clock_there() -> None:
    engine = Engine()
    seen: list[int] = []
    for t in range(10):
        engine.schedule(float(t), seen.append, t)
    engine.run(until=4.5)
    assert seen == [0, 1, 2, 3, 4]
    assert engine.now == 4.5
    assert engine.peek() == 5.0
    engine.run()
    assert seen == list(range(10))


def test_the_past_is_scheduled_at_now_and_the_clock_never_goes_back() -> None:
    engine = Engine(start=10.0)
    times: list[float] = []
    engine.schedule(3.0, lambda _: times.append(engine.now))
    engine.run()
    assert times == [10.0]


def test_stop_and_max_events() -> None:
    engine = Engine()
    for t in range(5):
        engine.schedule(float(t), lambda _: None)
    assert engine.run(max_events=2) == 2
    engine.schedule(2.5, lambda _: engine.stop())
    assert engine.run() == 2  # t=2 and the stop at 2.5
    assert engine.run() == 2


def test_same_seed_same_trace() -> None:
    def trace(seed: int) -> list[tuple[float, int]]:
        rng = random.Random(seed)
        engine = Engine()
        out: list[tuple[float, int]] = []

        def hop(n: int) -> None:
            out.append((engine.now, n))
            if n < 300:
                for _ in range(2 if rng.random() < 0.5 else 1):
                    engine.call_later(rng.expovariate(10.0), hop, n + 1)

        engine.schedule(0.0, hop, 0)
        engine.run(max_events=2000)
        return out

    assert trace(7) == trace(7)
    assert trace(7) != trace(8)
