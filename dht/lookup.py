"""One iterative lookup (Kademlia paper section 2.3) as a plain state machine.

The lookup keeps up to `alpha` requests *waiting*. A request that has not
answered after the short "slow" deadline stops counting against alpha (it
may still answer and is then used), so a dead contact never stalls a round;
only the hard RPC timeout marks it failed. This is the change that made
Mainline DHT lookups sub-second. A request that stays silent for a second
slow deadline is abandoned: the lookup no longer waits for it, but an answer
that still comes is used (a far host is not a dead one). The lookup ends
when the `k` closest contacts that answered are nearer than every contact
not yet asked, or when nothing is left to ask; once k have answered, slow
contacts no longer hold it open.

Final sweep (paper section 2.3: "if a round of FIND_NODEs fails to return a node
any closer than the closest already seen, the initiator resends the FIND_NODE to
all of the k closest nodes it has not already queried"): after `sweep_after`
answers in a row brought no contact nearer than the nearest already known, the
lookup has converged, and it asks every one of the k closest not yet asked at
once instead of `alpha` at a time. A lookup must hear from its k closest anyway;
asking them alpha by alpha cost about k/alpha round trips to far hosts (the
largest part of a lookup's latency, docs/simulation.md "Fast paths").
"""

from __future__ import annotations

from bisect import bisect, insort
from collections.abc import Iterable
from enum import IntEnum
from typing import Generic, TypeVar

from .ids import ID_BITS
from .routing import Contact

A = TypeVar("A")


class State(IntEnum):
    NEW = 0
    WAITING = 1
    SLOW = 2
    ANSWERED = 3
    FAILED = 4
    ABANDONED = 5


_BEYOND = 1 << ID_BITS
"""Farther than any distance (all are below 2**ID_BITS): no horizon yet. An int, not
`math.inf`, so that compiled code compares ints with ints (dht/compiled.py)."""

_OPEN = (State.WAITING, State.SLOW, State.ABANDONED)
"""States in which an answer is still taken."""
_HOLDING = (State.ANSWERED, *_OPEN)
"""States of a contact asked that has not failed."""


class Candidate(Generic[A]):
    __slots__ = ("contact", "distance", "state")

    def __init__(self, contact: Contact[A], distance: int) -> None:
        self.contact = contact
        self.distance = distance
        self.state = State.NEW

    def __lt__(self, other: Candidate[A]) -> bool:
        return self.distance < other.distance


class Lookup(Generic[A]):
    def __init__(
        self,
        target: int,
        k: int,
        alpha: int,
        own_id: bytes,
        max_candidates: int = 0,
        sweep_after: int = 0,
        sweep: bool = True,
    ) -> None:
        self.target = target
        self.k = k
        self.alpha = alpha
        self.width = alpha
        """Requests kept waiting: `alpha`, then k once the lookup has converged."""
        self.sweep_after = sweep_after
        """Answers in a row that bring nothing nearer before the final sweep; 0: never."""
        self.sweep = sweep
        """Whether convergence widens the lookup to k (a record read walks on alpha by
        alpha: near nodes that answer with each other would fill a sweep's k places)."""
        self.converged = False
        """`sweep_after` answers in a row brought nothing nearer (or it started from a
        recent lookup's k closest)."""
        self._idle = 0
        self.max_candidates = max_candidates or 8 * k
        self._own_id = own_id
        self._sorted: list[Candidate[A]] = []
        self._distances: list[int] = []  # of `_sorted`, for bisecting on ints, not __lt__
        self._by_id: dict[bytes, Candidate[A]] = {}
        self._answered: list[int] = []  # distances of the contacts that answered, sorted
        self._seen: set[bytes] = {own_id}
        self.waiting = 0
        self.queries = 0

    def add(self, contacts: Iterable[Contact[A]]) -> None:
        """Learn contacts. Those beyond the horizon are dropped: the horizon only moves
        in, so they would never be asked nor returned."""
        seen = self._seen
        distances = self._distances
        ordered = self._sorted
        by_id = self._by_id
        target = self.target
        horizon = _BEYOND
        answered = self._horizon()
        if answered is not None:
            horizon = answered
        elif len(distances) >= self.max_candidates:
            horizon = distances[-1]  # beyond the farthest kept, it would be trimmed at once
        for contact in contacts:
            node_id = contact.node_id
            if node_id in seen:
                continue
            distance = contact.num ^ target
            if distance > horizon:
                continue
            seen.add(node_id)
            candidate = Candidate(contact, distance)
            at = bisect(distances, distance)
            distances.insert(at, distance)
            ordered.insert(at, candidate)
            by_id[node_id] = candidate
        if len(ordered) > self.max_candidates:
            self._trim()

    def _trim(self) -> None:
        """Forget the farthest never-asked candidates beyond `max_candidates`."""
        index = len(self._sorted) - 1
        while len(self._sorted) > self.max_candidates and index >= 0:
            candidate = self._sorted[index]
            if candidate.state is State.NEW:
                del self._sorted[index]
                del self._distances[index]
                del self._by_id[candidate.contact.node_id]
            index -= 1

    def _horizon(self) -> int | None:
        """Distance of the k-th closest answered contact, once k have answered."""
        answered = self._answered
        return answered[self.k - 1] if len(answered) >= self.k else None

    def next_queries(self) -> list[Contact[A]]:
        """Contacts to ask now, nearest first, keeping at most `width` waiting."""
        width = self.width
        if self.waiting >= width:
            return []
        horizon = self._horizon()
        chosen = []
        # In the final sweep only the k nearest that may still answer are asked (paper 2.3).
        sweep = self.k if self.sweep_after and width >= self.k else 0
        for candidate in self._sorted:
            if self.waiting >= width:
                break
            if horizon is not None and candidate.distance > horizon:
                break
            if sweep:
                if candidate.state is State.FAILED or candidate.state is State.ABANDONED:
                    continue
                sweep -= 1
                if not sweep:
                    width = 0  # the last of the k nearest: nothing beyond it this time
            if candidate.state is State.NEW:
                candidate.state = State.WAITING
                self.waiting += 1
                self.queries += 1
                chosen.append(candidate.contact)
        return chosen

    def _settle(self, node_id: bytes, state: State) -> Candidate[A] | None:
        candidate = self._by_id.get(node_id)
        if candidate is None or candidate.state not in _OPEN:
            return None
        if candidate.state is State.WAITING:
            self.waiting -= 1
        candidate.state = state
        return candidate

    def answered(self, node_id: bytes, contacts: Iterable[Contact[A]]) -> None:
        candidate = self._settle(node_id, State.ANSWERED)
        if candidate is not None:
            insort(self._answered, candidate.distance)
            distances = self._distances
            nearest = distances[0] if distances else None
            self.add(contacts)
            if self.sweep_after and not self.converged:
                if distances and (nearest is None or distances[0] < nearest):
                    self._idle = 0
                else:
                    self._idle += 1
                    if self._idle >= self.sweep_after:
                        self.converged = True
                        if self.sweep:
                            self.width = self.k  # the final sweep

    def failed(self, node_id: bytes) -> None:
        self._settle(node_id, State.FAILED)

    def abandoned(self, node_id: bytes) -> None:
        """Stop waiting for a slow contact; it is still used if it answers."""
        candidate = self._by_id.get(node_id)
        if candidate is not None and candidate.state is State.SLOW:
            candidate.state = State.ABANDONED

    def slow(self, node_id: bytes) -> None:
        candidate = self._by_id.get(node_id)
        if candidate is not None and candidate.state is State.WAITING:
            candidate.state = State.SLOW
            self.waiting -= 1

    @property
    def finished(self) -> bool:
        """Done when nothing waits and nothing nearer than the k-th answer is left to ask.

        Until k contacts have answered, slow ones still hold the lookup open (up
        to their hard timeout): with fewer than k answers, a slow contact may be
        all there is. Once k have answered, a slow contact no longer matters,
        except, with the final sweep, one nearer than the k-th answer until it
        is abandoned: a sweep gets k answers within one round trip, and one lost
        datagram to a near contact would otherwise drop it from the result.
        """
        if self.waiting:
            return False
        horizon = self._horizon()
        sweeps = self.sweep_after > 0 and self.width >= self.k
        for candidate in self._sorted:
            if horizon is not None and candidate.distance > horizon:
                return True
            if candidate.state is State.NEW:
                return False
            if candidate.state is State.SLOW and (horizon is None or sweeps):
                return False
        return True

    def nearest_ids(self) -> set[bytes]:
        """Ids of the k candidates nearest the target, whatever their state."""
        return {c.contact.node_id for c in self._sorted[: self.k]}

    def holders(self) -> list[Contact[A]]:
        """The k nearest contacts asked that did not fail: those that answered and those
        still silent (slow, abandoned) but not timed out. Where a record goes: a far host
        abandoned for being slow is still one of the k closest, and a store that skipped
        it would land on a set other readers do not look at."""
        asked = [c.contact for c in self._sorted if c.state in _HOLDING]
        return asked[: self.k]

    def closest(self) -> list[Contact[A]]:
        """The k closest contacts that answered, nearest first."""
        answered = [c.contact for c in self._sorted if c.state is State.ANSWERED]
        return answered[: self.k]
