"""A heap-based discrete-event engine on virtual time.

Everything that happens in a simulation is a callback scheduled at a virtual
instant. Ties are broken by scheduling order (a sequence number), so a run is
a pure function of its inputs and its one seed: the same seed replays the same
events in the same order, bit for bit. Nothing here reads a clock or a global
random generator.

Cancellation is lazy: a cancelled entry stays in the heap with its callback
cleared and is skipped when it comes up, which keeps `cancel` O(1).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

Callback = Callable[[Any], None]


class Timer:
    """A handle on a scheduled callback; `cancel()` stops it if it has not run yet."""

    __slots__ = ("_entry",)

    def __init__(self, entry: list[Any]) -> None:
        self._entry = entry

    @property
    def when(self) -> float:
        return float(self._entry[0])

    @property
    def active(self) -> bool:
        return self._entry[2] is not None

    def cancel(self) -> None:
        self._entry[2] = None


class Engine:
    """The event queue and the virtual clock.

    `schedule(when, fn, arg)` runs `fn(arg)` at virtual time `when` (never in
    the past: earlier times run at `now`). `run(until)` processes events in
    (time, scheduling order) until the queue is empty, `until` is reached or
    `stop()` is called. `events` counts callbacks run.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.events = 0
        self._queue: list[list[Any]] = []
        self._seq = 0
        self._stopped = False

    def schedule(self, when: float, fn: Callback, arg: Any = None) -> Timer:
        self._seq += 1
        entry = [when if when > self.now else self.now, self._seq, fn, arg]
        heapq.heappush(self._queue, entry)
        return Timer(entry)

    def call_later(self, delay: float, fn: Callback, arg: Any = None) -> Timer:
        return self.schedule(self.now + delay, fn, arg)

    def post(self, when: float, fn: Callback, arg: Any = None) -> None:
        """`schedule` without a handle: the hot path for deliveries that are never cancelled."""
        self._seq += 1
        heapq.heappush(self._queue, [when if when > self.now else self.now, self._seq, fn, arg])

    def stop(self) -> None:
        """Make `run` return after the current callback."""
        self._stopped = True

    def __len__(self) -> int:
        return len(self._queue)

    def peek(self) -> float | None:
        """Time of the next live event, if any."""
        queue = self._queue
        while queue and queue[0][2] is None:
            heapq.heappop(queue)
        return queue[0][0] if queue else None

    def run(self, until: float | None = None, max_events: int | None = None) -> int:
        """Process events; returns how many ran. The clock ends at `until` when given."""
        queue = self._queue
        pop = heapq.heappop
        ran = 0
        limit = max_events if max_events is not None else -1
        self._stopped = False
        while queue and ran != limit and not self._stopped:
            entry = queue[0]
            if until is not None and entry[0] > until:
                break
            pop(queue)
            fn = entry[2]
            if fn is None:
                continue
            entry[2] = None  # a Timer handle now reports inactive
            self.now = entry[0]
            fn(entry[3])
            ran += 1
        self.events += ran
        if until is not None and not self._stopped and ran != limit and self.now < until:
            self.now = until
        return ran


__all__ = ["Engine", "Timer"]
