"""The routing table: k-buckets keyed by XOR distance (Kademlia paper sections 2.2 and 4.1).

One bucket per distance bit, created on first use. A bucket keeps its
contacts least-recently-seen first; when full, a newcomer waits in a small
replacement cache until a resident fails (paper section 4.1), and a resident
is evicted only after `max_failures` consecutive unanswered RPCs. The cache
holds claims (an id heard from an address), not proven contacts: the core
proves the newest one when a slot opens (`take_replacement`), so a node that
is only passing by costs nothing.

Round trips and proximity (docs/protocol.md 1.10): the table keeps, per
contact it has measured, a smoothed round trip and its variation (RFC 6298
section 2, on that one path), which give the contact's own retransmission
deadline. Proximity neighbour selection (Castro et al., "Proximity neighbor
selection in tree-based structured peer-to-peer overlays", 2003): a full bucket
takes a proven node whose measured round trip is less than half of its
slowest measured resident's, which moves to the replacement cache. So that
nearness cannot buy a table (a host next to a node could otherwise displace
every resident), at most `share` of a bucket's places are held that way, and
never two of them from one network (IPv4 /24, IPv6 /48); the other places keep
Kademlia's rule that a live resident is never displaced.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from enum import Enum
from operator import attrgetter
from typing import Any, Generic, TypeVar

from .contact import Contact as Contact  # where it was first: everyone imports it from here
from .ids import ID_BITS, bucket_index, to_int

A = TypeVar("A")


class Admission(Enum):
    ADDED = "added"
    UPDATED = "updated"
    BUCKET_FULL = "bucket_full"
    SELF = "self"


_NONE_YET: dict[bytes, Any] = {}
"""Shared by every bucket without replacements or failures, never written to: most
buckets never get either, and a simulation holds 10^7 buckets (an empty dict is 64
bytes). `Bucket.park` and `Bucket.count_failure` give a bucket its own first."""


_NOTHING_HELD: Sequence[int] = ()


class Bucket(Generic[A]):
    __slots__ = ("contacts", "failures", "held", "last_refresh", "replacements")

    def __init__(self) -> None:
        # Plain dicts keep insertion order: the first entry is the least recently seen.
        self.contacts: dict[bytes, Contact[A]] = {}
        self.replacements: dict[bytes, Contact[A]] = _NONE_YET
        self.failures: dict[bytes, int] = _NONE_YET
        self.last_refresh = float("-inf")
        self.held: Sequence[int] = _NOTHING_HELD
        """Contacts not yet in `contacts`, as positions in the table's `source`
        (`RoutingTable.hold`); `RoutingTable._open` moves them there on first use."""

    def park(self, contact: Contact[A], limit: int) -> None:
        """Put `contact` last (most recent) in the replacement cache, keeping `limit`.

        One claim per address: a host sending requests under many made-up ids
        takes one place, not all of them.
        """
        if self.replacements is _NONE_YET:
            self.replacements = {}
        replacements = self.replacements
        replacements.pop(contact.node_id, None)
        for node_id in [n for n, c in replacements.items() if c.addr == contact.addr]:
            del replacements[node_id]
        replacements[contact.node_id] = contact
        while len(replacements) > limit:
            del replacements[next(iter(replacements))]

    def count_failure(self, node_id: bytes, count: int) -> None:
        if self.failures is _NONE_YET:
            self.failures = {}
        self.failures[node_id] = count

    def least_recently_seen(self) -> Contact[A]:
        """Of an open bucket (`RoutingTable.bucket` gives one)."""
        return next(iter(self.contacts.values()))


PROXIMITY_FACTOR = 2.0
"""A node enters a full bucket for proximity when its round trip times this is below the
slowest measured resident's: a clear gain, not jitter."""


def network_of(host: object) -> str:
    """The network a host sits in, for diversity: its IPv4 /24 or IPv6 /48."""
    try:
        ip = ipaddress.ip_address(str(host))
    except ValueError:
        return str(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    bits = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


_contacts_of = attrgetter("contacts")


class RoutingTable(Generic[A]):
    def __init__(self, own_id: bytes, k: int, replacements: int = 8, max_failures: int = 2):
        self.own_id = own_id
        self.own_num = to_int(own_id)
        self.k = k
        self.max_replacements = replacements
        self.max_failures = max_failures
        self.buckets: dict[int, Bucket[A]] = {}
        self.rtts: dict[bytes, tuple[float, float]] = _NONE_YET
        """Contact -> (smoothed round trip, its variation), for measured contacts only."""
        self.near: dict[bytes, bool] = _NONE_YET
        """Contacts that entered a full bucket for proximity."""
        self.source: Sequence[Contact[A]] = ()
        """Where held buckets' positions point (`hold`)."""
        self._held = 0
        """Contacts held by position, in all buckets."""

    def __len__(self) -> int:
        # Summed in C: every maintenance round of every node asks (10^6 in a simulation).
        return sum(map(len, map(_contacts_of, self.buckets.values()))) + self._held

    def __contains__(self, node_id: bytes) -> bool:
        return self.get(node_id) is not None

    def get(self, node_id: bytes) -> Contact[A] | None:
        num = to_int(node_id)
        bucket = self.buckets.get(bucket_index(self.own_num, num))
        if bucket is None:
            return None
        if bucket.held:  # read in place: most questions are about ids a bucket lacks
            found = self._held_contact(bucket.held, num)
            return found if found is not None and found.node_id == node_id else None
        return bucket.contacts.get(node_id)

    def contacts(self) -> list[Contact[A]]:
        if self._held:
            self.open_all()
        return [c for b in self.buckets.values() for c in b.contacts.values()]

    # --- contacts held by position (the simulator's warm start) ------------------------

    def hold(self, source: Sequence[Contact[A]], held: dict[int, Sequence[int]]) -> None:
        """Fill empty buckets with contacts given as positions in `source`, which is sorted
        by id: bucket index -> positions, ascending, at most k each (the contacts' order
        in the bucket).

        A bucket so filled behaves exactly as if its contacts had been added in that
        order. `get` and `closest` read it in place; it becomes a dict when something
        first changes it (or `contacts()` lists the whole table). A
        simulation warm-starts some 3 * 10^8 contacts at 10^6 nodes and a run looks
        into a fraction of the buckets (docs/simulation.md, "Scale and cost"); a few
        ints per contact instead of a dict entry is most of a table's memory.
        """
        if self._held and source is not self.source:
            self.open_all()
        self.source = source
        buckets = self.buckets
        for index, positions in held.items():
            bucket = buckets.get(index)
            if bucket is None:
                bucket = buckets[index] = Bucket()
            if bucket.contacts or bucket.held or len(positions) > self.k:
                raise ValueError(f"bucket {index} is not empty or {len(positions)} > k")
            bucket.held = positions
            self._held += len(positions)

    def _held_contact(self, held: Sequence[int], num: int) -> Contact[A] | None:
        """The contact with id `num` among positions `held`, by bisection: positions
        ascend and `source` is sorted by id, so their ids ascend too."""
        source = self.source
        lo, hi = 0, len(held)
        while lo < hi:
            mid = (lo + hi) // 2
            if source[held[mid]].num < num:
                lo = mid + 1
            else:
                hi = mid
        if lo < len(held):
            found = source[held[lo]]
            if found.num == num:
                return found
        return None

    def open_all(self) -> None:
        """Every held bucket's contacts into its dict (what `contacts()` needs)."""
        for bucket in self.buckets.values():
            if bucket.held:
                self._open(bucket)

    def _open(self, bucket: Bucket[A]) -> None:
        source = self.source
        bucket.contacts = {c.node_id: c for c in map(source.__getitem__, bucket.held)}
        self._held -= len(bucket.held)
        bucket.held = _NOTHING_HELD

    def bucket(self, index: int) -> Bucket[A] | None:
        """Bucket `index` with its contacts in `contacts`, if it exists."""
        bucket = self.buckets.get(index)
        if bucket is not None and bucket.held:
            self._open(bucket)
        return bucket

    def bucket_for(self, num: int) -> Bucket[A]:
        """The bucket of `num`, created if missing, with its contacts in `contacts`."""
        bucket = self._slot(num)
        if bucket.held:
            self._open(bucket)
        return bucket

    def _slot(self, num: int) -> Bucket[A]:
        index = bucket_index(self.own_num, num)
        bucket = self.buckets.get(index)
        if bucket is None:
            bucket = self.buckets[index] = Bucket()
        return bucket

    # --- admission and failures --------------------------------------------------------

    def is_full_for(self, num: int) -> bool:
        bucket = self.buckets.get(bucket_index(self.own_num, num))
        return bucket is not None and len(bucket.contacts) + len(bucket.held) >= self.k

    def add(self, contact: Contact[A]) -> Admission:
        """Insert a proven contact, or mark it seen; a full bucket parks it as a replacement."""
        if contact.num == self.own_num:
            return Admission.SELF
        bucket = self.bucket_for(contact.num)
        if contact.node_id in bucket.contacts:
            del bucket.contacts[contact.node_id]
            bucket.contacts[contact.node_id] = contact  # to the tail, with its current address
            bucket.failures.pop(contact.node_id, None)
            return Admission.UPDATED
        if len(bucket.contacts) < self.k:
            bucket.contacts[contact.node_id] = contact
            bucket.replacements.pop(contact.node_id, None)
            return Admission.ADDED
        bucket.park(contact, self.max_replacements)
        return Admission.BUCKET_FULL

    def park(self, contact: Contact[A]) -> None:
        """Remember a claim for when the bucket of `contact` has room."""
        if contact.num != self.own_num:
            self._slot(contact.num).park(contact, self.max_replacements)

    def take_replacement(self, num: int) -> Contact[A] | None:
        """The newest parked claim of the bucket of `num`, removed, if that bucket has room."""
        bucket = self.bucket(bucket_index(self.own_num, num))
        if bucket is None or not bucket.replacements or len(bucket.contacts) >= self.k:
            return None
        return bucket.replacements.pop(next(reversed(bucket.replacements)))

    def seen(self, node_id: bytes) -> None:
        """A contact answered: it becomes the most recently seen and its failures reset."""
        bucket = self.bucket(bucket_index(self.own_num, to_int(node_id)))
        if bucket is not None and node_id in bucket.contacts:
            bucket.contacts[node_id] = bucket.contacts.pop(node_id)
            bucket.failures.pop(node_id, None)

    def failed(self, node_id: bytes) -> bool:
        """Count an unanswered RPC; evict after `max_failures` in a row. True if evicted."""
        bucket = self.bucket(bucket_index(self.own_num, to_int(node_id)))
        if bucket is None or node_id not in bucket.contacts:
            if bucket is not None:
                bucket.replacements.pop(node_id, None)
            return False
        count = bucket.failures.get(node_id, 0) + 1
        if count < self.max_failures:
            bucket.count_failure(node_id, count)
            return False
        self.remove(node_id)
        return True

    def remove(self, node_id: bytes) -> None:
        """Drop a contact (its place is for `take_replacement` to fill)."""
        bucket = self.bucket(bucket_index(self.own_num, to_int(node_id)))
        if bucket is None:
            return
        bucket.replacements.pop(node_id, None)
        bucket.failures.pop(node_id, None)
        bucket.contacts.pop(node_id, None)
        self.rtts.pop(node_id, None)
        self.near.pop(node_id, None)

    # --- round trips and proximity (module docstring) ---------------------------------

    def observe_rtt(self, node_id: bytes, rtt: float) -> None:
        """A round trip to `node_id` measured (RFC 6298 section 2); kept for contacts only."""
        if node_id not in self:
            return
        if self.rtts is _NONE_YET:
            self.rtts = {}
        known = self.rtts.get(node_id)
        if known is None:
            self.rtts[node_id] = (rtt, rtt / 2)
        else:
            srtt, rttvar = known
            rttvar = 0.75 * rttvar + 0.25 * abs(srtt - rtt)
            self.rtts[node_id] = (0.875 * srtt + 0.125 * rtt, rttvar)

    def deadline(self, node_id: bytes) -> float | None:
        """srtt + 4 rttvar of a measured contact (RFC 6298's RTO before its bounds)."""
        known = self.rtts.get(node_id)
        return None if known is None else known[0] + 4 * known[1]

    def proximity_victim(self, contact: Contact[A], rtt: float, share: float) -> Contact[A] | None:
        """The resident `contact` (measured at `rtt`) would replace for proximity, if any."""
        bucket = self.bucket(bucket_index(self.own_num, contact.num))
        if bucket is None or len(bucket.contacts) < self.k or contact.node_id in bucket.contacts:
            return None
        near = self.near
        held = [c for n, c in bucket.contacts.items() if n in near]
        if len(held) >= int(share * self.k):
            return None
        network = network_of(_host(contact.addr))
        if any(network_of(_host(c.addr)) == network for c in held):
            return None  # one network holds one such place, whatever its ids
        rtts = self.rtts
        slowest: Contact[A] | None = None
        worst = rtt * PROXIMITY_FACTOR
        for resident in bucket.contacts.values():
            known = rtts.get(resident.node_id)
            if known is not None and known[0] > worst:
                slowest, worst = resident, known[0]
        return slowest

    def proximity_swap(self, contact: Contact[A], rtt: float, share: float) -> Contact[A] | None:
        """Put proven `contact` in place of `proximity_victim`, which becomes the newest
        claim of the replacement cache; returns it (None: no swap)."""
        victim = self.proximity_victim(contact, rtt, share)
        if victim is None:
            return None
        bucket = self.bucket_for(contact.num)
        self.remove(victim.node_id)
        bucket.contacts[contact.node_id] = contact
        bucket.replacements.pop(contact.node_id, None)
        bucket.park(victim, self.max_replacements)
        self.mark_near(contact.node_id, rtt)
        return victim

    def mark_near(self, node_id: bytes, rtt: float) -> None:
        """`node_id` holds its place for proximity, measured at `rtt`."""
        if self.near is _NONE_YET:
            self.near = {}
        self.near[node_id] = True
        if self.rtts is _NONE_YET:
            self.rtts = {}
        self.rtts[node_id] = (rtt, rtt / 2)

    def closest(self, target: int, count: int, exclude: bytes | None = None) -> list[Contact[A]]:
        """The `count` known contacts closest to `target`, nearest first.

        With j the bucket of `target`: contacts of bucket j are nearer than 2**j,
        those of every bucket below j lie in [2**j, 2**(j+1)), and bucket i > j
        lies in [2**i, 2**(i+1)). Within the buckets below j the order is known
        too (`_nearest_buckets`), so buckets are visited nearest first and only
        the ones needed are sorted, not the whole table. No two buckets' distances
        overlap, so the contacts of the buckets needed are sorted once, together
        (near the target a node's buckets are small and several are needed: a
        sort each cost more than their contacts).
        """
        buckets = self.buckets
        source = self.source
        found: list[Contact[A]] = []
        for index in self._nearest_buckets(target):
            bucket = buckets.get(index)
            if bucket is None:
                continue
            held = bucket.held
            if held:  # in position order, the order the bucket's dict would have
                if exclude is not None:
                    found += [c for c in map(source.__getitem__, held) if c.node_id != exclude]
                else:
                    found += map(source.__getitem__, held)
            elif not bucket.contacts:
                continue
            elif exclude is not None and exclude in bucket.contacts:
                found += [c for c in bucket.contacts.values() if c.node_id != exclude]
            else:
                found += bucket.contacts.values()
            if len(found) >= count:
                break
        found.sort(key=lambda c: c.num ^ target)
        del found[count:]
        return found

    def _nearest_buckets(self, target: int) -> list[int]:
        """Bucket indices in order of their contacts' distance to `target` (see `closest`).

        With d = own ^ target and j its top bit: bucket j first. A bucket i < j
        comes before every lower bucket when bit i of d is set (its contacts
        clear that bit of the distance) and after them when it is not. Buckets
        above j follow in increasing order. No two buckets' distances overlap,
        so sorting within each bucket gives the global order.
        """
        d = self.own_num ^ target
        j = d.bit_length() - 1
        occupied = self.buckets.keys()
        below = [i for i in occupied if i < j]
        below.sort(key=lambda i: -i if (d >> i) & 1 else ID_BITS + i)
        above = sorted(i for i in occupied if i > j)
        return ([j] if j >= 0 else []) + below + above

    def stale_buckets(self, now: float, interval: float) -> list[int]:
        """Bucket indices to refresh: from the nearest non-empty bucket outwards,
        each one not refreshed (looked up into) for `interval` seconds (paper 2.3)."""
        occupied = [i for i, b in self.buckets.items() if b.contacts or b.held]
        if not occupied:
            return []
        stale = []
        for index in range(min(occupied), max(occupied) + 1):
            bucket = self.buckets.get(index)
            if bucket is None or now - bucket.last_refresh >= interval:
                stale.append(index)
        return stale

    def touch(self, target: int, now: float) -> None:
        """A lookup went into the bucket of `target`: it counts as refreshed."""
        if target != self.own_num:
            self._slot(target).last_refresh = now


def _host(addr: object) -> object:
    return addr[0] if isinstance(addr, tuple) and addr else addr
