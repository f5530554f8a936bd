"""What a record read has heard, and when it may answer (docs/protocol.md 1.10).

A read (`DHTCore.get_records`) walks towards its key like any lookup and merges
the newest valid record per publisher from every answer. Two rules here make
it answer sooner than "once the k closest have answered":

**Quorum.** Records are signed, so a node can withhold or serve an old seq,
never forge. The read answers once `quorum` answers from distinct hosts, each
from a node among the k nearest to the key known at that moment, *agree* with
what has been merged: every record an answer carried is the newest known for
its publisher, and every newest record inside the part of the key space the
answer covered (all of it, or up to its last publisher when it said `more`) is
in it. A newer record seen anywhere makes every answer without it disagree, so
the read waits for holders of the newest. The whole key must have been seen
too: one agreeing answer that holds all of it, or every segment paged to its
end. An empty answer never ends a read early (nodes that swallow stores answer
empty, and "nothing here" from three of them would hide every record), except
for a caller that asks `QUICK`: then an empty result needs the quorum from the
k nearest after the lookup has converged (its final sweep began; before that,
the nearest known may not be near the key at all). Holders that answer first
and agree can hide a record from one such read (never alter one); a caller for
whom that matters reads with quorum 0, the full lookup (the room core's checks
and periodic re-reads do).

A caller may ask for `MAJORITY` instead: more than half of the k nearest must
agree, each with a whole answer (a key that needs pages never ends a majority
read early: a first page vouches only for the publishers it reached). A put that
ends once a majority of its holders accepted (`store_quorum`) is then seen by
such a read whenever both count in the same k: two majorities of one set share
a node, and the newest record that node shows makes every answer without it
disagree.

**Pages in parallel.** A key larger than one answer was paged from one holder,
one page per round trip, `after` the last publisher. Publisher keys are
uniform (Ed25519 public keys), so a first page with `more` that ended at
publisher P tells how dense the key is: the rest of the key space above P is
cut into up to `parallel_pages` segments, each read from its own start
(`after` = the segment's first key minus one) at the same time, page by page
until the next segment's start. A page request is still an ordinary
`pm_find_records`; holders see no difference.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

from .records import Record

PUBLISHER_BYTES = 32
KEY_SPACE = 1 << (8 * PUBLISHER_BYTES)
FULL = 0
"""Quorum of a read that answers only once its lookup ended (the k closest answered)."""
MAJORITY = -1
"""Quorum of a read that needs more than half of the k nearest to agree."""
QUICK = -2
"""Quorum of a read at the configured quorum that may also end early with nothing."""


@dataclass(slots=True)
class Answer:
    """One node's first page: what it showed and how far that reached."""

    source: str
    """Its host (an IPv4 address or IPv6 /64): one vote per host, whatever its ids."""
    shown: dict[bytes, int]
    """Publisher -> seq of each valid record it returned."""
    covered: bytes | None
    """Its answer reached publishers up to this one (`more` was set); None: all of them."""
    lied: bool = False
    """It returned a record that failed the checks: it never counts."""


@dataclass(slots=True)
class RecordRead:
    quorum: int
    """Agreeing answers needed (`FULL`: never answer early; `MAJORITY`: over half)."""
    segments: int
    """Most segments a paged key is read in at once (1: one page after the other)."""
    answers: dict[bytes, Answer] = field(default_factory=dict)
    starts: list[int] = field(default_factory=list)
    """First publisher (as an integer) of each segment, once a paged key is planned."""
    open_segments: dict[bytes, set[int]] = field(default_factory=dict)
    """Paging source -> segments it still has pages of."""
    complete: bool = False
    """Every segment of a paged key has been read to its end from some holder."""
    empty_early: bool = False
    """An empty result may end the read early too (`QUICK`)."""
    answered_at: float | None = None
    """When the read answered (it may walk on for its closest set)."""

    def first_page(
        self, node_id: bytes, source: str, shown: dict[bytes, int], lied: bool, more: bool
    ) -> None:
        covered = max(shown, default=None) if more else None
        if more and covered is None:
            lied = True  # `more` with no record: paging it could never progress
        self.answers[node_id] = Answer(source, shown, covered, lied)

    def agreed(self, found: dict[bytes, Record], nearest: set[bytes], converged: bool) -> bool:
        """Whether the read may answer now with `found` (module docstring)."""
        if self.quorum == FULL:
            return False
        if not found and not (self.empty_early and converged):
            return False
        majority = self.quorum == MAJORITY
        needed = self.quorum if not majority else len(nearest) // 2 + 1
        hosts: set[str] = set()
        whole = self.complete or not found
        for node_id, answer in self.answers.items():
            if majority and answer.covered is not None:
                continue  # part of a paged key: says nothing of the rest
            if node_id in nearest and answer.source not in hosts and _agrees(answer, found):
                hosts.add(answer.source)
                whole = whole or answer.covered is None
                if len(hosts) >= needed and whole:
                    return True
        return False

    # --- pages -------------------------------------------------------------------

    def plan(self, node_id: bytes, last: bytes) -> list[bytes]:
        """Segments for a key whose first page from `node_id` ended at `last` with more
        to come; returns the `after` of each page request to send to that node now."""
        end = int.from_bytes(last, "big")
        if not self.starts:
            rest = KEY_SPACE - 1 - end
            # A page covered [0, end]: about rest / (end + 1) pages remain above it.
            wanted = -(-rest // (end + 1))
            count = max(1, min(self.segments, wanted, rest))
            step = rest // count
            self.starts = [0] + [end + 1 + i * step for i in range(1, count)]
        first = self._segment(end)
        afters = [last] + [_key(self.starts[i] - 1) for i in range(first + 1, len(self.starts))]
        self.open_segments[node_id] = set(range(first, len(self.starts)))
        return afters

    def _segment(self, after: int) -> int:
        """The segment a page starting after publisher `after` reads."""
        return max(bisect_right(self.starts, after + 1) - 1, 0)

    def page_done(self, node_id: bytes, after: bytes, last: bytes | None, more: bool) -> bool:
        """A page from `node_id` that started after `after` ended at `last`; True when
        that segment wants the next page (returned as `last`, the next `after`)."""
        index = self._segment(int.from_bytes(after, "big"))
        end = self.starts[index + 1] if index + 1 < len(self.starts) else KEY_SPACE
        if more and last is not None and int.from_bytes(last, "big") < end - 1:
            return True
        open_ = self.open_segments.get(node_id)
        if open_ is not None:
            open_.discard(index)
            if not open_:
                self.complete = True
        return False

    def abandon(self, node_id: bytes) -> None:
        """A paging source stopped answering: its segments are read by nobody."""
        self.open_segments.pop(node_id, None)


def _agrees(answer: Answer, found: dict[bytes, Record]) -> bool:
    if answer.lied:
        return False
    shown = answer.shown
    if bool(shown) != bool(found):
        return False
    for publisher, seq in shown.items():
        newest = found.get(publisher)
        if newest is None or newest.seq != seq:
            return False
    covered = answer.covered
    for publisher in found:
        if (covered is None or publisher <= covered) and publisher not in shown:
            return False
    return True


def _key(value: int) -> bytes:
    return value.to_bytes(PUBLISHER_BYTES, "big")


__all__ = ["FULL", "MAJORITY", "QUICK", "Answer", "RecordRead"]
