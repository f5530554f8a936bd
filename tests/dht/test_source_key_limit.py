"""What one source may add to one key: the quota, its window and bounds, and honest replication."""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dht.config import ConfigError, config_from_mapping, load_config
from dht.core import DHTConfig, DHTCore, RecordsStored
from dht.identity import Identity
from dht.ratelimit import source_of
from dht.records import NewPublisherBudget, Record, RecordLimits, RecordStore, Refusal

from .memnet import MemoryNetwork

NOW = 1_700_000_000.0
ROOM_LAYER = 24  # publishers per key in a full room layer


def unsigned(key: int, publisher: int, seq: int, expires_at: int) -> Record:
    return Record(bytes([key]) * 20, bytes([publisher]) * 32, seq, expires_at, b"v", b"s" * 64)


def always_valid(public_key: bytes, message: bytes, signature: bytes) -> bool:
    return True


# --- the quota, on the store ------------------------------------------------


def test_records_of_publishers_the_key_holds_never_count() -> None:
    store = RecordStore(RecordLimits(max_new_publishers_per_source_key=4), always_valid)
    expires = int(NOW) + 600
    for publisher in range(4):
        assert store.put(unsigned(1, publisher, 1, expires), NOW, "a") is Refusal.STORED
    for _ in range(10):  # a republish every round: identical copies and newer seqs
        for publisher in range(4):
            assert store.put(unsigned(1, publisher, 1, expires), NOW, "a") is Refusal.STORED
    for publisher in range(4):
        assert store.put(unsigned(1, publisher, 2, expires), NOW, "a") is Refusal.STORED
    assert store.put(unsigned(1, 9, 1, expires), NOW, "a") is Refusal.SOURCE_KEY_LIMIT
    assert store.put(unsigned(2, 9, 1, expires), NOW, "a") is Refusal.STORED  # another key
    assert store.put(unsigned(1, 9, 1, expires), NOW, "b") is Refusal.STORED  # another source
    assert store.put(unsigned(1, 10, 1, expires), NOW) is Refusal.STORED  # our own: no quota


def test_the_quota_is_a_sliding_window() -> None:
    limits = RecordLimits(max_new_publishers_per_source_key=2, new_publisher_window=10.0)
    store = RecordStore(limits, always_valid)
    expires = int(NOW) + 600
    assert store.put(unsigned(1, 1, 1, expires), NOW, "a") is Refusal.STORED
    assert store.put(unsigned(1, 2, 1, expires), NOW + 6, "a") is Refusal.STORED
    assert store.put(unsigned(1, 3, 1, expires), NOW + 9.9, "a") is Refusal.SOURCE_KEY_LIMIT
    # An addition counts for `window` seconds from its time, no longer.
    assert store.put(unsigned(1, 3, 1, expires), NOW + 10, "a") is Refusal.STORED
    assert store.put(unsigned(1, 4, 1, expires), NOW + 15.9, "a") is Refusal.SOURCE_KEY_LIMIT
    assert store.put(unsigned(1, 4, 1, expires), NOW + 16, "a") is Refusal.STORED


def test_a_publisher_whose_record_expired_is_new_again() -> None:
    store = RecordStore(RecordLimits(max_new_publishers_per_source_key=1), always_valid)
    assert store.put(unsigned(1, 1, 1, int(NOW) + 5), NOW, "a") is Refusal.STORED
    assert store.put(unsigned(1, 1, 2, int(NOW) + 600), NOW + 5, "a") is Refusal.SOURCE_KEY_LIMIT


def test_the_table_is_bounded_and_forgets_the_least_recently_active_first() -> None:
    budget = NewPublisherBudget(limit=1, window=100.0, max_entries=3)
    for source in "abc":
        budget.charge(source, b"k", NOW)
    assert not budget.allows("a", b"k", NOW + 1)  # "a", refused, is active again
    budget.charge("d", b"k", NOW + 2)
    assert len(budget) == 3 and budget.forgotten == 1
    assert budget.allows("b", b"k", NOW + 3)  # forgotten: errs towards accepting
    assert not budget.allows("a", b"k", NOW + 3)
    assert not budget.allows("d", b"k", NOW + 3)


def test_entries_leave_with_their_last_addition() -> None:
    budget = NewPublisherBudget(limit=4, window=100.0, max_entries=100)
    budget.charge("a", b"k", NOW)
    budget.charge("a", b"k", NOW + 50)
    budget.charge("b", b"k", NOW + 10)
    assert budget.prune(NOW + 100) == 0
    assert budget.prune(NOW + 110) == 1 and len(budget) == 1
    assert budget.prune(NOW + 150) == 1 and len(budget) == 0


sources = st.sampled_from(["198.51.100.1", "198.51.100.2", "2001:db8::/64"])
operations = st.lists(
    st.tuples(
        sources,
        st.integers(0, 2),  # key
        st.integers(0, 9),  # publisher
        st.integers(0, 3),  # seq
        st.integers(1, 120),  # ttl
        st.floats(0, 15),  # time step before this store
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(operations, st.integers(1, 4), st.sampled_from([5.0, 30.0, 60.0]))
def test_no_source_brings_a_key_more_new_publishers_per_window_than_the_quota(
    ops: list[tuple[str, int, int, int, int, float]], cap: int, window: float
) -> None:
    limits = RecordLimits(max_new_publishers_per_source_key=cap, new_publisher_window=window)
    store = RecordStore(limits, always_valid)
    introduced: dict[tuple[str, bytes], list[tuple[float, bytes]]] = defaultdict(list)
    now = NOW
    for source, key_n, publisher, seq, ttl, step in ops:
        now += step
        record = unsigned(key_n, publisher, seq, int(now + ttl))
        held = record.publisher in {r.publisher for r in store.get(record.key, now)}
        verdict = store.put(record, now, source)
        slot = (source, record.key)
        recent = [(t, p) for t, p in introduced[slot] if t > now - window]
        if held:
            assert verdict is not Refusal.SOURCE_KEY_LIMIT
        if verdict is Refusal.SOURCE_KEY_LIMIT:
            assert len(recent) == cap  # refused only when the quota is spent
        if verdict is Refusal.STORED and not held:
            introduced[slot].append((now, record.publisher))
        # In any window (one starting at each addition), at most `cap` new publishers.
        for times in introduced.values():
            for start, _ in times:
                inside = {p for t, p in times if start <= t < start + window}
                additions = [t for t, _ in times if start <= t < start + window]
                assert len(inside) <= len(additions) <= cap


def test_sources_are_ipv4_addresses_and_ipv6_64s() -> None:
    assert source_of("203.0.113.7") == "203.0.113.7"
    assert source_of("2001:db8:1:2::7") == source_of("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert source_of("2001:db8:1:3::7") == "2001:db8:1:3::/64"
    assert source_of("fe80::1%eth0") == "fe80::/64"
    assert source_of("::ffff:203.0.113.7") == "203.0.113.7"
    assert source_of("sim-node") == "sim-node"


# --- configuration ------------------------------------------------------------


def test_the_quota_is_set_in_the_dht_records_table(tmp_path: Path) -> None:
    defaults = DHTConfig().records
    assert defaults.max_new_publishers_per_source_key == 32
    assert defaults.new_publisher_window == 600.0
    path = tmp_path / "node.toml"
    path.write_text(
        "[dht.records]\nmax_new_publishers_per_source_key = 48\nnew_publisher_window = 300\n"
    )
    limits = load_config(path).records
    assert limits.max_new_publishers_per_source_key == 48
    assert limits.new_publisher_window == 300.0
    core = DHTCore(Identity.from_seed(b"c" * 32), random.Random(1), NOW, load_config(path))
    assert core.records.new_publishers.limit == 48
    for bad in (
        {"max_new_publishers_per_source_key": 0},
        {"max_new_publishers_per_source_key": 1.5},
        {"new_publisher_window": 0},
        {"max_source_keys": 0},
    ):
        with pytest.raises(ConfigError):
            config_from_mapping({"records": bad})


# --- honest replication -------------------------------------------------------


def publish_room_layer(net: MemoryNetwork, via: DHTCore, key: bytes) -> set[bytes]:
    """A home node stores the presence of a full room layer: 24 publishers, one source."""
    publishers = set()
    for n in range(ROOM_LAYER):
        identity = Identity.from_seed(bytes([n + 1]) * 32)
        record = Record.create(identity, key, b"here", 1, int(net.now + 3000))
        event = net.wait(via, via.put_record(record, net.now))
        assert isinstance(event, RecordsStored) and event.stored >= 20
        publishers.add(identity.public_key)
    return publishers


def refused_for_quota(nodes: list[DHTCore]) -> int:
    return sum(n.counters["record.refused.source_key_limit"] for n in nodes)


def test_a_welcome_hands_a_newcomer_every_publisher_of_a_full_layer() -> None:
    config = DHTConfig(republish_interval=3000.0, bucket_refresh_interval=3000.0)
    net = MemoryNetwork(seed=51)
    nodes = net.build_mesh(30, config)
    newcomer = net.add_node(config)
    key = newcomer.node_id  # the newcomer will be the closest node there is to this key
    publishers = publish_room_layer(net, nodes[4], key)
    net.wait(newcomer, newcomer.bootstrap([net.addr_of(nodes[0])], net.now))
    net.run_for(1.0)
    assert {r.publisher for r in newcomer.local_records(key, net.now)} == publishers
    assert sum(n.counters["welcome"] for n in nodes) >= 1
    assert sum(n.counters["republish"] for n in nodes) == 0
    assert refused_for_quota([*nodes, newcomer]) == 0


def test_republishing_a_full_layer_round_after_round_costs_no_quota() -> None:
    # A quota of exactly one layer: any re-sent record that counted would be refused.
    limits = RecordLimits(max_new_publishers_per_source_key=ROOM_LAYER)
    config = DHTConfig(
        republish_interval=20.0,
        bucket_refresh_interval=3000.0,
        welcome_max_keys=0,  # no hand-over on join: the records come by republish
        records=limits,
    )
    net = MemoryNetwork(seed=53)
    nodes = net.build_mesh(30, config)
    newcomer = net.add_node(config)
    key = newcomer.node_id
    publishers = publish_room_layer(net, nodes[4], key)
    net.wait(newcomer, newcomer.bootstrap([net.addr_of(nodes[0])], net.now))
    assert newcomer.local_records(key, net.now) == []
    net.run_for(5 * config.republish_interval)  # within one quota window
    assert {r.publisher for r in newcomer.local_records(key, net.now)} == publishers
    assert sum(n.counters["republish"] for n in [*nodes, newcomer]) >= 4
    assert refused_for_quota([*nodes, newcomer]) == 0
