"""Global knowledge the simulator has and nodes do not: true closest sets, ideal tables.

Used to score lookups (did they find the true closest nodes?), to measure how
full routing tables are against what the population allows, and to start a
large network with routing tables filled as if it had been running for a
while (a "warm start", as PeerSim-style simulators do), so a 10^5-node run
need not replay 10^5 joins before measuring anything.
"""

from __future__ import annotations

import heapq
import random
from bisect import bisect_left
from collections.abc import Iterable

from dht.ids import ID_BITS, to_int

from .overlay import SimNode


class IdSpace:
    """The sorted ids of a set of nodes, for XOR-closest queries by prefix ranges."""

    def __init__(self, nodes: Iterable[SimNode]) -> None:
        pairs = sorted((to_int(n.node_id), n.index) for n in nodes)
        self.ids = [p[0] for p in pairs]
        self.index = [p[1] for p in pairs]

    def __len__(self) -> int:
        return len(self.ids)

    def _range(self, low: int, high: int) -> tuple[int, int]:
        return bisect_left(self.ids, low), bisect_left(self.ids, high)

    def closest(self, target: int, count: int) -> list[int]:
        """Node indices of the `count` ids nearest `target` in XOR, nearest first.

        The ids sharing the longest prefix with `target` form a contiguous run of
        the sorted list, so find the longest prefix whose run still holds `count`
        ids (a binary search: runs only grow as the prefix shortens).
        """
        ids = self.ids
        lo, hi = 0, len(ids)
        low_bits, high_bits = 0, ID_BITS
        while low_bits < high_bits:
            bits = (low_bits + high_bits) // 2
            base = (target >> bits) << bits
            first, last = self._range(base, base + (1 << bits))
            if last - first >= count:
                high_bits = bits
                lo, hi = first, last
            else:
                low_bits = bits + 1
        if high_bits == ID_BITS:
            lo, hi = 0, len(ids)
        run = range(lo, hi)
        best = heapq.nsmallest(count, run, key=lambda i: ids[i] ^ target)
        return [self.index[i] for i in best]

    def nearest_bucket(self, own: int) -> int:
        """The lowest bucket of `own` holding any id; every bucket below it is empty.

        The id nearest `own` in XOR is a neighbour of `own` in sorted order (the
        ids sharing its longest prefix are a contiguous run around it).
        """
        ids = self.ids
        at = bisect_left(ids, own)
        lowest = ID_BITS
        for i in (at - 1, at, at + 1):
            if 0 <= i < len(ids) and ids[i] != own:
                lowest = min(lowest, (ids[i] ^ own).bit_length() - 1)
        return lowest

    def bucket_population(self, own: int, bucket: int) -> tuple[int, int]:
        """The slice of sorted ids at distance [2**bucket, 2**(bucket+1)) from `own`."""
        base = ((own >> (bucket + 1)) << (bucket + 1)) | ((own ^ (1 << bucket)) & (1 << bucket))
        return self._range(base, base + (1 << bucket))

    def ideal_table_size(self, own: int, k: int) -> int:
        """Contacts a perfect routing table of `own` holds: min(k, population) per bucket."""
        total = 0
        for bucket in range(ID_BITS):
            lo, hi = self.bucket_population(own, bucket)
            total += min(k, hi - lo)
        return total


def distinct_indices(rng: random.Random, lo: int, hi: int, count: int) -> list[int]:
    """`count` distinct integers drawn uniformly from [lo, hi), sorted (count < hi - lo).

    `random.sample` does the same through `_randbelow` per draw and a set, which
    was half the warm start's time (10^6 nodes draw some 1.6 * 10^7 samples). Here
    a draw is one `random()` call; a repeat is drawn again, which is rare in the
    many buckets far larger than `count`, and the result is still uniform.
    """
    span = hi - lo
    if span <= 2 * count:
        return sorted(rng.sample(range(lo, hi), count))
    chosen = {lo + int(rng.random() * span) for _ in range(count)}
    while len(chosen) < count:
        chosen.add(lo + int(rng.random() * span))
    return sorted(chosen)


def fill_routing_tables(
    nodes: list[SimNode],
    space: IdSpace,
    by_index: list[SimNode],
    k: int,
    rng: random.Random,
    refreshed_at: float | None = None,
) -> int:
    """Give each of `nodes` up to k random contacts per bucket among `space`; returns contacts.

    A contact goes into an empty bucket directly (exactly what `RoutingTable.add`
    does with at most k new contacts, without its per-contact bookkeeping: at
    10^6 nodes the warm start adds some 3 * 10^8 contacts); into a bucket that
    already holds some, through `add`, as a verified contact would.
    Buckets, the empty ones between the nearest and the farthest occupied one
    included, count as refreshed at `refreshed_at` (default: the node's clock
    at creation), as in a network that has been running, so the first
    maintenance round does not refresh every bucket of every node at once.
    Only buckets from the nearest populated one up are visited: below it the
    id space holds nobody (a prefix of 140 bits is empty in any population).
    """
    added = 0
    ordered = [by_index[i].contact for i in space.index]  # contacts in sorted id order
    for node in nodes:
        own = to_int(node.node_id)
        table = node.core.table
        for bucket in range(space.nearest_bucket(own), ID_BITS):
            lo, hi = space.bucket_population(own, bucket)
            if hi <= lo:
                continue
            if hi - lo <= k:
                contacts = ordered[lo:hi]
            else:
                contacts = [ordered[i] for i in distinct_indices(rng, lo, hi, k)]
            state = table.bucket_for(contacts[0].num)
            if not state.contacts and len(contacts) <= table.k:
                state.contacts = {c.node_id: c for c in contacts}
            else:
                for contact in contacts:
                    table.add(contact)
            added += len(contacts)
        when = refreshed_at if refreshed_at is not None else node.created_at
        # A running network has also looked into the empty buckets within its range
        # (`RoutingTable.stale_buckets` lists them); without this, every node would
        # refresh them in the first maintenance round, all at once.
        occupied = [i for i, b in table.buckets.items() if b.contacts]
        for bucket in range(min(occupied, default=0), max(occupied, default=-1) + 1):
            table.touch(own ^ (1 << bucket), when)
        for bucket_state in table.buckets.values():
            bucket_state.last_refresh = when
    return added


__all__ = ["IdSpace", "fill_routing_tables"]
