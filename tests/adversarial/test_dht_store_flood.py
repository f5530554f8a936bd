"""A store flood's view: one source may bring a key only so many new publishers.

The probe stored 1,536 records signed by throwaway publisher keys under one
DHT key from one UDP client, within the per-source request rate, and they
stayed until their TTL. Now a source (an IPv4 address, or an IPv6 /64) may add
at most `max_new_publishers_per_source_key` publishers to a key per
`new_publisher_window`; the rest is refused with SOURCE_KEY_LIMIT and counted.
The core is driven directly with datagrams, on a clock moved by hand.
"""

from __future__ import annotations

from collections.abc import Iterator

from dht.core import DHTConfig, DHTCore
from dht.identity import Identity
from dht.ids import key_for
from dht.records import Record, Refusal
from dht.wire import (
    Address,
    StoreRecords,
    StoreRecordsReply,
    parse_frame,
    parse_reply,
    serialize_request,
)
from tests.dht.memnet import MemoryNetwork

FLOOD = 1_536
BATCH = 32  # records per datagram, well inside the datagram size limit
LIMITS = DHTConfig().records
CAP = LIMITS.max_new_publishers_per_source_key
WINDOW = LIMITS.new_publisher_window
KEY = key_for("flooded")
ATTACKER: Address = ("203.0.113.66", 6666)


def throwaway(n: int) -> Identity:
    return Identity.from_seed(n.to_bytes(32, "big"))


def throwaway_records(first: int, count: int, expires_at: int, key: bytes = KEY) -> list[Record]:
    """Records under `key`, each signed by a publisher key of its own."""
    return [
        Record.create(throwaway(n), key, b"junk", 1, expires_at)
        for n in range(first, first + count)
    ]


def batches(records: list[Record]) -> Iterator[tuple[Record, ...]]:
    for start in range(0, len(records), BATCH):
        yield tuple(records[start : start + BATCH])


class Sender:
    """Sends pm_store datagrams to one core from a chosen address and reads the answers."""

    def __init__(self, core: DHTCore) -> None:
        self.core = core
        self.sent = 0

    def store(self, records: list[Record], addr: Address, now: float) -> list[Refusal]:
        statuses: list[Refusal] = []
        for batch in batches(records):
            self.sent += 1
            msg_id = self.sent.to_bytes(20, "big")
            request = StoreRecords(b"\x01" * 20, batch)
            self.core.receive(serialize_request(msg_id, request), addr, now)
            statuses.extend(self._answer(request, msg_id, addr, now))
        return statuses

    def _answer(
        self, request: StoreRecords, msg_id: bytes, addr: Address, now: float
    ) -> list[Refusal]:
        for data, dst in self.core.datagrams_to_send(now):
            frame = parse_frame(data)
            if dst == addr and not frame.is_request and frame.msg_id == msg_id:
                reply = parse_reply(request, frame.body)
                assert isinstance(reply, StoreRecordsReply)
                return [Refusal(s) for s in reply.statuses]
        raise AssertionError("no answer to the store")


def test_one_source_stores_at_most_its_quota_under_a_key_and_others_still_store() -> None:
    net = MemoryNetwork(seed=41)
    (node,) = net.build_mesh(1)
    sender = Sender(node)
    expires = int(net.now + 3600)
    honest = Record.create(Identity.from_seed(b"h" * 32), KEY, b"honest", 1, expires)
    assert sender.store([honest], ("198.51.100.20", 4000), net.now) == [Refusal.STORED]

    statuses = sender.store(throwaway_records(0, FLOOD, expires), ATTACKER, net.now)

    assert statuses.count(Refusal.STORED) == CAP
    assert statuses.count(Refusal.SOURCE_KEY_LIMIT) == FLOOD - CAP
    assert node.counters["record.refused.source_key_limit"] == FLOOD - CAP
    assert node.counters["drop.rate_limited"] == 0  # the probe's pace: under the rate limit
    held = node.local_records(KEY, net.now)
    assert len(held) == CAP + 1 and honest in held  # nothing else lost
    # Another port of the same address is the same source.
    late = throwaway_records(FLOOD, 1, expires)
    assert sender.store(late, (ATTACKER[0], 7777), net.now) == [Refusal.SOURCE_KEY_LIMIT]
    # A newer seq of a publisher the key holds is a replacement, not a newcomer.
    assert throwaway(0).public_key in {r.publisher for r in held}  # the first of the flood
    newer = Record.create(throwaway(0), KEY, b"v2", 2, expires)
    assert sender.store([newer], ATTACKER, net.now) == [Refusal.STORED]
    # Another source, and the same source under another key, still store.
    other = throwaway_records(FLOOD + 1, 1, expires)
    assert sender.store(other, ("198.51.100.7", 5000), net.now) == [Refusal.STORED]
    elsewhere = throwaway_records(FLOOD + 2, 1, expires, key=key_for("elsewhere"))
    assert sender.store(elsewhere, ATTACKER, net.now) == [Refusal.STORED]
    assert len(node.local_records(KEY, net.now)) == CAP + 2

    # Once the window has passed, the source has a fresh quota.
    net.run_for(WINDOW)
    again = sender.store(throwaway_records(FLOOD + 3, CAP + 5, expires), ATTACKER, net.now)
    assert again == [Refusal.STORED] * CAP + [Refusal.SOURCE_KEY_LIMIT] * 5
    assert len(node.local_records(KEY, net.now)) == 2 * CAP + 2


def test_addresses_of_one_ipv6_64_share_one_quota() -> None:
    net = MemoryNetwork(seed=43)
    (node,) = net.build_mesh(1)
    sender = Sender(node)
    expires = int(net.now + 3600)
    records = throwaway_records(0, 3 * CAP, expires)
    # A new address of the same /64 for every record: still one source.
    statuses = [
        status
        for n, record in enumerate(records[: 2 * CAP])
        for status in sender.store([record], (f"2001:db8:1:2::{n + 1:x}", 4000), net.now)
    ]
    assert statuses.count(Refusal.STORED) == CAP
    # The next /64 is another source.
    rest = sender.store(records[2 * CAP :], ("2001:db8:1:3::1", 4000), net.now)
    assert rest == [Refusal.STORED] * CAP
    assert node.counters["record.refused.source_key_limit"] == CAP
