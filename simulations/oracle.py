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
        the sorted list, so widen the prefix until the run holds `count` ids.
        """
        ids = self.ids
        lo, hi = 0, len(ids)
        for bits in range(0, ID_BITS + 1):
            base = (target >> bits) << bits
            lo, hi = self._range(base, base + (1 << bits))
            if hi - lo >= count:
                break
        run = range(lo, hi)
        best = heapq.nsmallest(count, run, key=lambda i: ids[i] ^ target)
        return [self.index[i] for i in best]

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


def fill_routing_tables(
    nodes: list[SimNode],
    space: IdSpace,
    by_index: list[SimNode],
    k: int,
    rng: random.Random,
    refreshed_at: float | None = None,
) -> int:
    """Give each of `nodes` up to k random contacts per bucket among `space`; returns contacts.

    Contacts go in through `RoutingTable.add`, as a verified contact would.
    Buckets count as refreshed at `refreshed_at` (default: the node's clock
    at creation), as in a network that has been running, so the first
    maintenance round does not refresh every bucket of every node at once.
    """
    added = 0
    for node in nodes:
        own = to_int(node.node_id)
        table = node.core.table
        for bucket in range(ID_BITS):
            lo, hi = space.bucket_population(own, bucket)
            if hi <= lo:
                continue
            picks = range(lo, hi) if hi - lo <= k else sorted(rng.sample(range(lo, hi), k))
            for i in picks:
                table.add(by_index[space.index[i]].contact)
                added += 1
        when = refreshed_at if refreshed_at is not None else node.created_at
        for bucket_state in table.buckets.values():
            bucket_state.last_refresh = when
    return added


__all__ = ["IdSpace", "fill_routing_tables"]
