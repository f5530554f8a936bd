"""The event engine: ordering, ties, cancellation, the clock, determinism."""

from __future__ import annotations

import heapq
import random
from typing import Any

from simulations.engine import WINDOW, Engine


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


class OneHeap:
    """The reference: every pending event in one heap of (time, sequence)."""

    def __init__(self, start: float) -> None:
        self.now = start
        self.queue: list[list[Any]] = []
        self.seq = 0

    def schedule(self, when: float, fn: Any, arg: Any) -> list[Any]:
        self.seq += 1
        entry = [max(when, self.now), self.seq, fn, arg]
        heapq.heappush(self.queue, entry)
        return entry

    def run(self, until: float) -> None:
        while self.queue and self.queue[0][0] <= until:
            entry = heapq.heappop(self.queue)
            if entry[2] is not None:
                self.now = entry[0]
                entry[2](entry[3])
        self.now = max(self.now, until)


def random_program(engine: Any, schedule: Any, cancel: Any, run: Any) -> list[tuple[float, int]]:
    """Events that schedule 0-2 more at delays within, at the edge of and across
    calendar windows (and in the past), cancel some, and run in short slices."""
    rng = random.Random(5)
    seen: list[tuple[float, int]] = []
    handles: list[Any] = []
    delays = [0.0, 1e-4, 0.003, WINDOW - 1e-9, WINDOW, 0.25, 3.0, -1.0]

    def fire(name: int) -> None:
        seen.append((engine.now, name))
        for offset in range(rng.randrange(1, 3) if len(seen) < 3000 else 0):
            delay = rng.choice(delays) if rng.random() < 0.7 else rng.random()
            handles.append(schedule(engine.now + delay, fire, name * 3 + offset + 1))
        if handles and rng.random() < 0.1:
            cancel(handles[rng.randrange(len(handles))])

    handles.append(schedule(engine.now, fire, 0))
    for _ in range(3000):
        run(engine.now + rng.random() * 0.05)
    return seen


def test_the_calendar_runs_events_in_the_order_of_one_heap() -> None:
    calendar = Engine(start=100.0)
    got = random_program(
        calendar,
        calendar.schedule,
        lambda timer: timer.cancel(),
        lambda until: calendar.run(until=until),
    )
    heap = OneHeap(start=100.0)
    want = random_program(heap, heap.schedule, lambda entry: entry.__setitem__(2, None), heap.run)
    assert len(want) > 1000
    assert got == want
