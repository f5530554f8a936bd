"""The DHT's parts on their own: record store, routing table, lookup, rate limiter, identity."""

from __future__ import annotations

import os
import random
import stat

from hypothesis import given, settings
from hypothesis import strategies as st

from dht.identity import Identity, verify_signature
from dht.ids import bucket_index, node_id_for, random_id_in_bucket, to_int
from dht.lookup import Lookup
from dht.ratelimit import SourceRateLimiter
from dht.records import Record, RecordLimits, RecordStore, Refusal, check_record
from dht.routing import Admission, Bucket, Contact, RoutingTable

NOW = 1_700_000_000.0
ALICE = Identity.from_seed(b"a" * 32)


def unsigned(key: bytes, publisher: int, seq: int, expires_at: int, size: int = 1) -> Record:
    return Record(key, bytes([publisher]) * 32, seq, expires_at, b"v" * size, b"s" * 64)


def always_valid(public_key: bytes, message: bytes, signature: bytes) -> bool:
    return True


# --- records ----------------------------------------------------------------


puts = st.lists(
    st.tuples(
        st.integers(0, 3),  # key
        st.integers(0, 5),  # publisher
        st.integers(0, 6),  # seq
        st.integers(1, 200),  # ttl
        st.floats(0, 50),  # time step before this put
    ),
    max_size=60,
)


@settings(max_examples=200)
@given(puts)
def test_the_store_keeps_newest_seq_per_publisher_within_bounds(ops: list) -> None:
    limits = RecordLimits(max_records_per_key=3, max_records_total=7)
    store = RecordStore(limits, verify=always_valid)
    now = NOW
    newest: dict[tuple[bytes, bytes], int] = {}
    for key_n, publisher, seq, ttl, step in ops:
        now += step
        record = unsigned(bytes([key_n]) * 20, publisher, seq, int(now + ttl))
        verdict = store.put(record, now)
        slot = (record.key, record.publisher)
        live = {(r.key, r.publisher): r for r in store}
        if verdict is Refusal.STORED:
            assert live[slot].seq == seq
            newest[slot] = seq
        elif verdict is Refusal.STALE_SEQ:
            assert live[slot].seq >= seq
        # What is held for a publisher is the newest seq it got accepted (until expiry).
        for held_slot, held in live.items():
            assert held.seq == newest[held_slot]
        assert len(store) == len(live) <= limits.max_records_total
        for key in {r.key for r in store}:
            assert len(store.get(key, now)) <= limits.max_records_per_key
        assert all(r.expires_at > now for key in store for r in store.get(key, now))


def test_expiry_is_exact_and_frees_the_slot() -> None:
    store = RecordStore(RecordLimits(max_records_total=1), verify=always_valid)
    first = unsigned(b"k" * 20, 1, 1, int(NOW) + 10)
    assert store.put(first, NOW) is Refusal.STORED
    assert store.put(unsigned(b"j" * 20, 2, 1, int(NOW) + 10), NOW) is Refusal.STORE_FULL
    assert store.get(b"k" * 20, NOW + 9.999) == [first]
    assert store.get(b"k" * 20, NOW + 10) == []
    assert len(store) == 0
    assert store.put(unsigned(b"j" * 20, 2, 1, int(NOW) + 20), NOW + 10) is Refusal.STORED


def test_a_replaced_record_does_not_expire_its_successor() -> None:
    store = RecordStore(RecordLimits(), verify=always_valid)
    store.put(unsigned(b"k" * 20, 1, 1, int(NOW) + 10), NOW)
    store.put(unsigned(b"k" * 20, 1, 2, int(NOW) + 100), NOW + 1)
    assert [r.seq for r in store.get(b"k" * 20, NOW + 50)] == [2]


def test_record_checks_name_each_defect() -> None:
    limits = RecordLimits(max_ttl=3600, max_value_bytes=10, clock_skew=60)
    good = Record.create(ALICE, b"k" * 20, b"hello", 1, int(NOW) + 100)

    def verdict(record: Record) -> Refusal:
        return check_record(record, NOW, limits, verify_signature)

    assert verdict(good) is Refusal.STORED
    assert verdict(Record.create(ALICE, b"k" * 20, b"x" * 11, 1, int(NOW) + 9)) is (
        Refusal.VALUE_TOO_LARGE
    )
    assert verdict(Record.create(ALICE, b"k" * 20, b"x", 1, int(NOW))) is Refusal.EXPIRED
    assert verdict(Record.create(ALICE, b"k" * 20, b"x", 1, int(NOW) + 3661)) is Refusal.FUTURE
    tampered = Record(good.key, good.publisher, good.seq, good.expires_at, b"HELLO", good.signature)
    assert verdict(tampered) is Refusal.BAD_SIGNATURE
    assert verdict(Record(b"k", good.publisher, 1, 1, b"", good.signature)) is Refusal.MALFORMED


# --- ids and routing --------------------------------------------------------


@given(st.integers(0, 2**160 - 1), st.integers(0, 159), st.integers(0, 2**160 - 1))
def test_random_ids_fall_in_their_bucket(own: int, index: int, bits: int) -> None:
    assert bucket_index(own, random_id_in_bucket(own, index, bits)) == index


def make_contact(num: int) -> Contact[tuple[str, int]]:
    return Contact.make(num.to_bytes(20, "big"), ("192.0.2.1", num % 60000 + 1))


@settings(max_examples=200)
@given(
    st.integers(0, 2**160 - 1),
    st.lists(st.integers(0, 2**160 - 1), max_size=120, unique=True),
    st.integers(0, 2**160 - 1),
    st.integers(1, 30),
)
def test_closest_matches_a_brute_force_sort(own: int, nums: list, target: int, count: int) -> None:
    table: RoutingTable[tuple[str, int]] = RoutingTable(own.to_bytes(20, "big"), k=8)
    for num in nums:
        table.add(make_contact(num))
    kept = [c.num for c in table.contacts()]
    expected = sorted(kept, key=lambda n: n ^ target)[:count]
    assert [c.num for c in table.closest(target, count)] == expected


@settings(max_examples=300)
@given(
    st.integers(0, 2**160 - 1),
    st.lists(st.tuples(st.integers(0, 12), st.integers(0, 2**160 - 1)), max_size=80),
    st.integers(0, 13),
    st.integers(0, 2**160 - 1),
    st.integers(1, 40),
    st.integers(0, 79),
)
def test_closest_in_every_bucket_order_matches_a_brute_force_sort(
    own: int,
    placed: list[tuple[int, int]],
    target_bucket: int,
    bits: int,
    count: int,
    excluded: int,
) -> None:
    """Contacts and targets spread over many low buckets, so every order of the
    buckets below the target's is exercised, with and without an excluded id."""
    table: RoutingTable[tuple[str, int]] = RoutingTable(own.to_bytes(20, "big"), k=4)
    for index, low_bits in placed:
        table.add(make_contact(random_id_in_bucket(own, index, low_bits)))
    kept = [c.num for c in table.contacts()]
    target = random_id_in_bucket(own, target_bucket, bits) if target_bucket < 13 else own
    expected = sorted(kept, key=lambda n: n ^ target)[:count]
    assert [c.num for c in table.closest(target, count)] == expected
    if kept:
        gone = kept[excluded % len(kept)]
        expected = sorted((n for n in kept if n != gone), key=lambda n: n ^ target)[:count]
        got = table.closest(target, count, exclude=gone.to_bytes(20, "big"))
        assert [c.num for c in got] == expected


def test_a_full_bucket_parks_newcomers_and_promotes_them_on_eviction() -> None:
    own = 0
    table: RoutingTable[tuple[str, int]] = RoutingTable(own.to_bytes(20, "big"), k=2)
    a, b, c = (make_contact((1 << 159) + i) for i in (1, 2, 3))  # all in bucket 159
    assert table.add(a) is Admission.ADDED
    assert table.add(b) is Admission.ADDED
    assert table.add(c) is Admission.BUCKET_FULL
    assert table.bucket_for(a.num).least_recently_seen() == a
    assert table.failed(a.node_id) is False  # one failure is not enough
    table.seen(a.node_id)  # ... and an answer forgives it
    assert table.failed(a.node_id) is False
    assert table.failed(a.node_id) is True
    assert {x.node_id for x in table.contacts()} == {b.node_id}  # the slot waits for a proof
    assert table.take_replacement(a.num) == c
    assert table.take_replacement(a.num) is None


def test_the_replacement_cache_keeps_one_claim_per_address_and_the_newest() -> None:
    table: RoutingTable[tuple[str, int]] = RoutingTable(bytes(20), k=1, replacements=3)
    table.add(Contact.make(((1 << 159) + 1).to_bytes(20, "big"), ("192.0.2.1", 1)))
    claims = [
        Contact.make(((1 << 159) + n).to_bytes(20, "big"), ("192.0.2.9", port))
        for n, port in ((2, 7), (3, 7), (4, 8), (5, 9), (6, 10))
    ]
    for claim in claims:
        table.park(claim)
    bucket = table.bucket_for(claims[0].num)
    # (2, 7) gave way to (3, 7), the same address; then the oldest went past 3.
    assert list(bucket.replacements.values()) == claims[2:]
    assert table.take_replacement(claims[0].num) is None  # no room yet


def test_buckets_get_their_own_replacements_and_failures_when_first_needed() -> None:
    table: RoutingTable[tuple[str, int]] = RoutingTable(bytes(20), k=1, max_failures=3)
    far, far_too, near = (make_contact(n) for n in ((1 << 159) + 1, (1 << 159) + 2, 5))
    table.add(far)
    table.add(near)
    assert table.add(far_too) is Admission.BUCKET_FULL
    table.failed(far.node_id)
    parked, quiet = table.bucket_for(far.num), table.bucket_for(near.num)
    assert list(parked.replacements) == [far_too.node_id] and parked.failures == {far.node_id: 1}
    assert quiet.replacements == {} and quiet.failures == {}  # not another bucket's
    assert Bucket().replacements == {} and Bucket().failures == {}


# --- lookup -------------------------------------------------------------------


def test_a_slow_contact_frees_its_slot_and_does_not_hold_a_full_lookup() -> None:
    contacts = [make_contact(n) for n in range(1, 40)]
    lookup: Lookup[tuple[str, int]] = Lookup(0, k=4, alpha=2, own_id=b"\xff" * 20)
    lookup.add(contacts[:6])
    first = lookup.next_queries()
    assert [c.num for c in first] == [1, 2]
    assert lookup.next_queries() == []  # alpha requests are waiting
    lookup.slow(first[0].node_id)  # contact 1 is dead, but only 'slow' so far
    (third,) = lookup.next_queries()
    assert third.num == 3
    for contact in [first[1], third]:
        lookup.answered(contact.node_id, [])
    for contact in lookup.next_queries():
        lookup.answered(contact.node_id, [])
    assert [c.num for c in lookup.closest()] == [2, 3, 4, 5]
    assert lookup.finished  # contact 1 is still slow: it does not hold a lookup with k answers


def test_with_fewer_than_k_answers_a_slow_contact_holds_the_lookup_open() -> None:
    lookup: Lookup[tuple[str, int]] = Lookup(0, k=4, alpha=2, own_id=b"\xff" * 20)
    lookup.add([make_contact(1), make_contact(2)])
    one, two = lookup.next_queries()
    lookup.answered(two.node_id, [])
    lookup.slow(one.node_id)
    assert not lookup.finished
    lookup.failed(one.node_id)
    assert lookup.finished and [c.num for c in lookup.closest()] == [2]


# --- rate limiting and identity ---------------------------------------------


def test_token_buckets_refill_on_virtual_time_and_forget_old_sources() -> None:
    limiter = SourceRateLimiter(rate=10, burst=5, max_sources=2)
    assert [limiter.allow("a", 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert limiter.allow("a", 0.05) is False  # half a token
    assert limiter.allow("a", 0.1) is True
    limiter.allow("b", 0.1)
    limiter.allow("c", 0.1)
    assert len(limiter) == 2


def test_the_node_key_is_created_once_with_mode_0600(tmp_path: os.PathLike[str]) -> None:
    path = tmp_path / "node.key"  # type: ignore[operator]
    first = Identity.load_or_create(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = Identity.load_or_create(path)
    assert again.node_id == first.node_id == node_id_for(first.public_key)
    assert path.read_bytes().hex() not in repr(first)
    assert to_int(first.node_id) < 2**160


def test_seeded_identities_are_reproducible() -> None:
    rng = random.Random(3)
    seed = rng.randbytes(32)
    assert Identity.from_seed(seed).node_id == Identity.from_seed(seed).node_id


def test_pruning_forgets_only_refilled_buckets() -> None:
    limiter = SourceRateLimiter(rate=10, burst=5)
    for _ in range(5):
        limiter.allow("busy", 1.0)
    limiter.allow("idle", 0.0)
    assert limiter.prune(1.05) == 1  # "idle" refilled long ago; "busy" is still empty
    assert len(limiter) == 1 and limiter.allow("busy", 1.05) is False
