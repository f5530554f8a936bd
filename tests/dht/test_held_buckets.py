"""Buckets held by position (`RoutingTable.hold`, the simulator's warm start) behave
exactly as buckets filled contact by contact: one random sequence of operations drives
a held table and an added one, and every answer and the final state must agree."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dht.ids import ID_BITS, bucket_index
from dht.routing import Contact, RoutingTable

K = 4
Table = RoutingTable[tuple[str, int]]


def contact(num: int) -> Contact[tuple[str, int]]:
    return Contact.make(num.to_bytes(20, "big"), (f"192.0.2.{num % 7}", num % 60000 + 1))


def population(rng: random.Random, own: int) -> list[Contact[tuple[str, int]]]:
    """Contacts in a few buckets of `own` (some of them more than k), sorted by id."""
    nums: set[int] = set()
    for index in rng.sample(range(ID_BITS - 8, ID_BITS), 5):
        for _ in range(rng.randrange(1, 2 * K + 1)):
            nums.add(own ^ ((1 << index) | rng.getrandbits(index)))
    return [contact(n) for n in sorted(nums)]


def tables(rng: random.Random) -> tuple[Table, Table, list[Contact[tuple[str, int]]]]:
    own = rng.getrandbits(ID_BITS)
    source = population(rng, own)
    by_bucket: dict[int, list[int]] = {}
    for position, c in enumerate(source):
        by_bucket.setdefault(bucket_index(own, c.num), []).append(position)
    held = {
        index: sorted(rng.sample(positions, min(K, len(positions))))
        for index, positions in sorted(by_bucket.items())
    }
    added: Table = RoutingTable(own.to_bytes(20, "big"), k=K, replacements=2)
    for positions in held.values():
        for position in positions:
            added.add(source[position])
    holding: Table = RoutingTable(own.to_bytes(20, "big"), k=K, replacements=2)
    holding.hold(source, held)
    return added, holding, source


def state(table: Table) -> list[Any]:
    table.open_all()
    return [len(table)] + [
        (
            index,
            list(b.contacts),
            list(b.replacements),
            sorted(b.failures.items()),
            b.last_refresh,
        )
        for index, b in table.buckets.items()
    ]


def step(table: Table, op: int, c: Contact[tuple[str, int]], other: int, now: float) -> Any:
    """One operation of the table's API and what it answered."""
    if op == 0:
        return table.add(c)
    if op == 1:
        return table.park(c)
    if op == 2:
        return table.seen(c.node_id)
    if op == 3:
        return table.failed(c.node_id)
    if op == 4:
        return table.remove(c.node_id)
    if op == 5:
        found = table.closest(other, 1 + other % 7, exclude=c.node_id if other & 1 else None)
        return [x.node_id for x in found]
    if op == 6:
        return (c.node_id in table, table.get(c.node_id), len(table))
    if op == 7:
        return table.stale_buckets(now, 10.0)
    if op == 8:
        return table.touch(c.num, now)
    if op == 9:
        taken = table.take_replacement(c.num)
        return taken.node_id if taken else None
    if op == 10:
        return table.is_full_for(c.num)
    if op == 11:
        table.observe_rtt(c.node_id, 0.01 + (other % 100) / 100)
        return table.deadline(c.node_id)
    if op == 12:
        victim = table.proximity_swap(c, 0.001, 0.5)
        return victim.node_id if victim else None
    return [x.node_id for x in table.contacts()]


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32), st.lists(st.tuples(st.integers(0, 13), st.integers(0, 2**40))))
def test_a_held_table_answers_as_an_added_one(seed: int, ops: list[tuple[int, int]]) -> None:
    rng = random.Random(seed)
    added, holding, source = tables(rng)
    strangers = [contact(rng.getrandbits(ID_BITS)) for _ in range(3)]
    pool = source + strangers
    assert len(holding) == len(added)
    for now, (op, draw) in enumerate(ops):
        c = pool[draw % len(pool)]
        other = draw if op != 5 else (added.own_num ^ draw)
        assert step(holding, op, c, other, float(now)) == step(added, op, c, other, float(now))
        assert len(holding) == len(added)
    assert state(holding) == state(added)


def test_an_id_of_another_length_with_the_same_value_is_not_a_held_contact() -> None:
    added, holding, source = tables(random.Random(2))
    some = source[0]
    for table in (added, holding):
        assert table.get(some.node_id) is not None
        assert table.get(b"\0" + some.node_id) is None  # 21 bytes, the same int
        assert (b"\0" + some.node_id) not in table


def test_hold_refuses_a_bucket_that_is_not_empty_or_too_full() -> None:
    rng = random.Random(1)
    added, _, source = tables(rng)
    index, bucket = next(iter(added.buckets.items()))
    position = source.index(next(iter(bucket.contacts.values())))
    with pytest.raises(ValueError):
        added.hold(source, {index: [position]})
    empty: Table = RoutingTable(added.own_id, k=1)
    with pytest.raises(ValueError):
        empty.hold(source, {index: [0, 1]})
