"""A heap-based discrete-event engine on virtual time.

Everything that happens in a simulation is a callback scheduled at a virtual
instant. Ties are broken by scheduling order (a sequence number), so a run is
a pure function of its inputs and its one seed: the same seed replays the same
events in the same order, bit for bit. Nothing here reads a clock or a global
random generator.

Cancellation is lazy: a cancelled entry stays in the queue with its callback
cleared and is skipped when it comes up, which keeps `cancel` O(1).

The queue is a calendar of short windows of virtual time (`WINDOW` seconds):
only the current window is a heap; an event for a later window is appended to
that window's list, which becomes the heap when its turn comes (one heapify).
A 10^5-node run keeps 10^5..10^6 events pending (every node's next timer,
every datagram in flight); popping them from one heap of that size cost more
than anything else in the simulator, cache misses mostly. The order is exactly
the one heap's: windows partition time in order, and within the current one
the heap orders by (time, sequence).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any

Callback = Callable[[Any], None]

WINDOW = 0.01
"""Seconds of virtual time per calendar window: about one window per shortest hop."""


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
        self._per_window = 1.0 / WINDOW
        self._current = int(start * self._per_window)
        self._heap: list[list[Any]] = []  # the events of windows up to `_current`
        self._later: dict[int, list[list[Any]]] = {}  # window -> its events, unordered
        self._windows: list[int] = []  # heap of the keys of `_later`
        self._seq = 0
        self._stopped = False

    def _push(self, entry: list[Any]) -> None:
        window = int(entry[0] * self._per_window)
        if window <= self._current:
            heapq.heappush(self._heap, entry)
            return
        bucket = self._later.get(window)
        if bucket is None:
            self._later[window] = [entry]
            heapq.heappush(self._windows, window)
        else:
            bucket.append(entry)

    def schedule(self, when: float, fn: Callback, arg: Any = None) -> Timer:
        self._seq += 1
        entry = [when if when > self.now else self.now, self._seq, fn, arg]
        self._push(entry)
        return Timer(entry)

    def call_later(self, delay: float, fn: Callback, arg: Any = None) -> Timer:
        return self.schedule(self.now + delay, fn, arg)

    def post(self, when: float, fn: Callback, arg: Any = None) -> None:
        """`schedule` without a handle: the hot path for deliveries that are never cancelled
        (`_push` written out: one call less for every datagram and timer)."""
        self._seq += 1
        now = self.now
        if not when > now:
            when = now
        entry = [when, self._seq, fn, arg]
        window = int(when * self._per_window)
        if window <= self._current:
            heapq.heappush(self._heap, entry)
            return
        bucket = self._later.get(window)
        if bucket is None:
            self._later[window] = [entry]
            heapq.heappush(self._windows, window)
        else:
            bucket.append(entry)

    def stop(self) -> None:
        """Make `run` return after the current callback."""
        self._stopped = True

    def __len__(self) -> int:
        return len(self._heap) + sum(len(bucket) for bucket in self._later.values())

    def _next_window(self) -> bool:
        """Make the earliest pending window the current heap; False when none is left."""
        if not self._windows:
            return False
        window = heapq.heappop(self._windows)
        heap = self._later.pop(window)
        heapq.heapify(heap)
        self._heap = heap
        self._current = window
        return True

    def peek(self) -> float | None:
        """Time of the next live event, if any."""
        while True:
            heap = self._heap
            while heap and heap[0][2] is None:
                heapq.heappop(heap)
            if heap:
                return float(heap[0][0])
            if not self._next_window():
                return None

    def run(self, until: float | None = None, max_events: int | None = None) -> int:
        """Process events; returns how many ran. The clock ends at `until` when given."""
        pop = heapq.heappop
        ran = 0
        limit = max_events if max_events is not None else -1
        horizon = until if until is not None else math.inf
        self._stopped = False
        while ran != limit and not self._stopped:
            heap = self._heap  # read again: a callback's `peek` may move to the next window
            if not heap:
                if self._next_window():
                    continue
                break
            entry = heap[0]
            if entry[0] > horizon:
                break
            pop(heap)
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
