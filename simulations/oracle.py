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
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import repeat

from dht.ids import ID_BITS, to_int
from dht.routing import PROXIMITY_FACTOR, Bucket, network_of

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
    draw = rng.random
    chosen = {lo + int(draw() * span) for _ in repeat(None, count)}
    while len(chosen) < count:
        chosen.add(lo + int(draw() * span))
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

    The id ranges of a node's buckets are found walking up from its own place in
    the sorted ids (`_bucket_ranges`: one bisection per bucket, within the range
    already known, instead of two over all ids).
    """
    added = 0
    ordered = [by_index[i].contact for i in space.index]  # contacts in sorted id order
    for node in nodes:
        own = to_int(node.node_id)
        table = node.core.table
        buckets = table.buckets
        fresh = not buckets and k <= table.k
        held: dict[int, Sequence[int]] = {}
        for bucket, lo, hi in _bucket_ranges(space, own):
            if hi <= lo:
                continue
            positions: Sequence[int] = (
                range(lo, hi) if hi - lo <= k else array("I", distinct_indices(rng, lo, hi, k))
            )
            added += len(positions)
            if fresh:
                held[bucket] = positions
                continue
            state = table.bucket_for(ordered[positions[0]].num)
            if not state.contacts and len(positions) <= table.k:
                state.contacts = {c.node_id: c for c in map(ordered.__getitem__, positions)}
            else:
                for position in positions:
                    table.add(ordered[position])
        if held:
            # Held by position until first used (`RoutingTable.hold`): the same table.
            table.hold(ordered, held)
        when = refreshed_at if refreshed_at is not None else node.created_at
        # A running network has also looked into the empty buckets within its range
        # (`RoutingTable.stale_buckets` lists them); without this, every node would
        # refresh them in the first maintenance round, all at once.
        # A fresh table's buckets are those just filled, ascending, all with contacts.
        occupied = list(held) if fresh else [i for i, b in buckets.items() if b.contacts or b.held]
        if occupied:
            for bucket in range(min(occupied), max(occupied) + 1):
                if bucket not in buckets:
                    buckets[bucket] = Bucket()
        for bucket_state in buckets.values():
            bucket_state.last_refresh = when
    return added


def _bucket_ranges(space: IdSpace, own: int) -> Iterator[tuple[int, int, int]]:
    """(bucket, lo, hi) for each bucket of `own` from its nearest populated one up:
    the slice of sorted ids at distance [2**bucket, 2**(bucket+1)), as
    `space.bucket_population` gives it.

    Walking up from `own`'s place in the sorted ids, own's subtree at level b
    (the ids within distance 2**b) is the slice [left, right); the bucket's ids
    are its sibling subtree, just right of it when bit b of `own` is 0, just
    left of it when 1, so one bisection within the known side finds it.
    """
    ids = space.ids
    at = bisect_left(ids, own)
    nearest = space.nearest_bucket(own)
    if at == len(ids) or ids[at] != own:  # not a member: the bisections from scratch
        for bucket in range(nearest, ID_BITS):
            yield (bucket, *space.bucket_population(own, bucket))
        return
    left, right = at, at + 1  # within distance 2**nearest: only own itself
    for bucket in range(nearest, ID_BITS):
        prefix = own >> (bucket + 1)
        if (own >> bucket) & 1:
            lo = bisect_left(ids, prefix << (bucket + 1), 0, left)
            yield bucket, lo, left
            left = lo
        else:
            hi = bisect_left(ids, (prefix + 1) << (bucket + 1), right)
            yield bucket, right, hi
            right = hi


def fill_near_contacts(
    nodes: list[SimNode],
    space: IdSpace,
    by_index: list[SimNode],
    k: int,
    rng: random.Random,
    rtt: Callable[[SimNode, SimNode], float],
    share: float,
    sample: int = 4,
) -> int:
    """After `fill_routing_tables`: the tables of a network whose nodes select neighbours
    by proximity (`DHTConfig.pns`, dht/routing.py), as it has been running a while.

    In every bucket whose id range holds more than k nodes, `sample` x k of them, drawn
    at random, stand for the nodes the owner has measured over time (each answered one
    of its lookups); the nearest of them take the places of the slowest residents, as
    the protocol's rule would: a newcomer only when its round trip times
    `PROXIMITY_FACTOR` is below the resident's, at most `share` of the places, one per
    network. Their round trips become the table's estimates. Returns the swaps made.
    """
    swaps = 0
    ordered = [by_index[i] for i in space.index]
    node_of = {n.node_id: n for n in by_index}
    places = int(share * k)
    for node in nodes:
        own = to_int(node.node_id)
        table = node.core.table
        for bucket in range(space.nearest_bucket(own), ID_BITS):
            lo, hi = space.bucket_population(own, bucket)
            state = table.bucket(bucket)
            if hi - lo <= k or places <= 0 or state is None or len(state.contacts) < k:
                continue
            count = min(sample * k, hi - lo - 1)
            drawn = [ordered[i] for i in distinct_indices(rng, lo, hi, count)]
            candidates = sorted(
                (rtt(node, other), other.index, other)
                for other in drawn
                if other.node_id not in state.contacts
            )
            residents = sorted(
                ((rtt(node, node_of[n]), n) for n in state.contacts), key=lambda r: -r[0]
            )
            networks: set[str] = set()
            taken = 0
            for near_rtt, _, other in candidates:
                if taken >= places or not residents:
                    break
                network = network_of(other.addr[0])
                if network in networks:
                    continue
                far_rtt, victim = residents[0]
                if near_rtt * PROXIMITY_FACTOR >= far_rtt:
                    break
                residents.pop(0)
                del state.contacts[victim]
                state.contacts[other.node_id] = other.contact
                table.mark_near(other.node_id, near_rtt)
                networks.add(network)
                taken += 1
                swaps += 1
    return swaps


__all__ = ["IdSpace", "fill_near_contacts", "fill_routing_tables"]
