"""The messaging core through an in-memory mesh with drops, on virtual time."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dht.identity import Identity, verify_signature
from peer.messaging import (
    Delivered,
    Discontinuity,
    Envelope,
    MessagingError,
    ReliableRoom,
    RoomConfig,
)

ROOM = bytes(range(20))


class Mesh:
    """Members fully connected by ordered channels that can drop (losing what is in flight)."""

    def __init__(
        self,
        count: int,
        config: RoomConfig | None = None,
        seed: int = 0,
        start: float = 0.0,
        skews: list[float] | None = None,
    ) -> None:
        self.config = config
        self.ids: list[Identity] = []
        self.rooms: dict[bytes, ReliableRoom] = {}
        self.skew: dict[bytes, float] = {}
        """Each member's wall clock minus the mesh's `now` (seconds)."""
        self.now = start
        self.up: set[tuple[bytes, bytes]] = set()
        self.wire: list[tuple[bytes, bytes, str]] = []
        self.delivered: dict[bytes, list[Envelope]] = {}
        self.gaps: list[Discontinuity] = []
        self.rng = random.Random(seed)
        for i in range(count):
            self.add(i + 1, (skews or [])[i] if i < len(skews or []) else 0.0)

    def add(self, seed: int, skew: float = 0.0) -> bytes:
        """A member (a newcomer when the mesh already runs), not yet connected."""
        identity = Identity.from_seed(bytes([seed]) * 32)
        key = identity.public_key
        self.ids.append(identity)
        self.rooms[key] = ReliableRoom(ROOM, key, identity.sign, verify_signature, self.config)
        self.skew[key] = skew
        self.delivered[key] = []
        return key

    @property
    def keys(self) -> list[bytes]:
        return list(self.rooms)

    def clock(self, key: bytes) -> float:
        """What `key`'s own wall clock reads now."""
        return self.now + self.skew[key]

    def connect(self, a: bytes, b: bytes) -> None:
        if (a, b) in self.up:
            return
        self.up |= {(a, b), (b, a)}
        self.rooms[a].connected(b, self.clock(a))
        self.rooms[b].connected(a, self.clock(b))

    def drop(self, a: bytes, b: bytes) -> None:
        self.up -= {(a, b), (b, a)}
        self.wire = [w for w in self.wire if {w[0], w[1]} != {a, b}]
        self.rooms[a].disconnected(b)
        self.rooms[b].disconnected(a)

    def pump(self, rounds: int = 10_000, settle: bool = True) -> None:
        """Move frames and time until nothing is left (or only `rounds` steps when not settling)."""
        for _ in range(rounds):
            for key, room in self.rooms.items():
                for member, frame in room.frames_to_send():
                    if (key, member) in self.up:
                        self.wire.append((key, member, json.dumps(frame)))
                while (event := room.next_event()) is not None:
                    if isinstance(event, Delivered):
                        self.delivered[key].append(event.envelope)
                    else:
                        self.gaps.append(event)
            if self.wire:
                sender, receiver, text = self.wire.pop(0)
                self.rooms[receiver].receive(sender, json.loads(text), self.clock(receiver))
                continue
            timers = [
                t - self.skew[k] for k, r in self.rooms.items() if (t := r.get_timer()) is not None
            ]
            if not timers:
                return
            self.now = max(self.now, min(timers))
            for key, room in self.rooms.items():
                if (t := room.get_timer()) is not None and t <= self.clock(key):
                    room.handle_timer(self.clock(key))
        if settle:
            raise AssertionError("mesh did not settle")


def check_converged(mesh: Mesh, sent: dict[bytes, int]) -> None:
    total = sum(sent.values())
    for got in mesh.delivered.values():
        ids = [(e.author, e.seq) for e in got]
        assert len(ids) == len(set(ids)) == total, "each message exactly once"
        for author in mesh.keys:
            seqs = [e.seq for e in got if e.author == author]
            assert seqs == list(range(1, sent[author] + 1)), "each author's in order"
    transcripts = {tuple((e.author, e.seq) for e in r.transcript()) for r in mesh.rooms.values()}
    assert len(transcripts) == 1, "one total order"


def test_three_members_talk() -> None:
    mesh = Mesh(3)
    a, b, c = mesh.keys
    for x, y in ((a, b), (b, c), (a, c)):
        mesh.connect(x, y)
    mesh.rooms[a].send("hello", mesh.now)
    mesh.rooms[b].send("hi", mesh.now)
    mesh.pump()
    check_converged(mesh, {a: 1, b: 1, c: 0})
    assert [e.body for e in mesh.rooms[c].transcript()] in (["hello", "hi"], ["hi", "hello"])


def test_resend_after_reconnection_from_the_last_ack() -> None:
    mesh = Mesh(2)
    a, b = mesh.keys
    mesh.connect(a, b)
    mesh.rooms[a].send("one", mesh.now)
    mesh.pump()
    for text in ("two", "three"):
        mesh.rooms[a].send(text, mesh.now)
    mesh.drop(a, b)  # "two" and "three" were in flight
    mesh.pump()
    mesh.connect(a, b)
    mesh.pump()
    check_converged(mesh, {a: 3, b: 0})
    assert mesh.rooms[b].counters.get("duplicate", 0) <= 2  # frames queued before the drop


def test_history_reaches_a_newcomer_through_others() -> None:
    mesh = Mesh(3)
    a, b, c = mesh.keys
    mesh.connect(a, b)
    for i in range(5):
        mesh.rooms[a].send(f"m{i}", mesh.now)
    mesh.pump()
    mesh.drop(a, b)
    mesh.connect(b, c)  # c never meets a: it learns a's words from b's history
    mesh.pump()
    assert [e.body for e in mesh.delivered[c]] == [f"m{i}" for i in range(5)]


def test_a_gap_nobody_fills_becomes_a_discontinuity() -> None:
    config = RoomConfig(resume_window=5.0, max_outbox=2, history_count=1)
    mesh = Mesh(2, config)
    a, b = mesh.keys
    mesh.connect(a, b)
    mesh.rooms[a].send("m1", mesh.now)
    mesh.pump()
    mesh.drop(a, b)
    for i in range(2, 7):
        mesh.rooms[a].send(f"m{i}", mesh.now)  # only m5, m6 stay in the outbox
    mesh.connect(a, b)
    mesh.pump()
    assert mesh.gaps == [Discontinuity(a, 2, 4)]
    assert [e.body for e in mesh.delivered[b]] == ["m1", "m5", "m6"]
    assert mesh.now >= 5.0


def test_forged_and_foreign_envelopes_are_dropped() -> None:
    mesh = Mesh(2)
    a, b = mesh.keys
    env = mesh.rooms[a].send("real", 0.0)
    data = env.to_json()
    room_b = mesh.rooms[b]
    room_b.receive(a, {"t": "msg", "env": {**data, "body": "forged"}}, 0.0)
    room_b.receive(a, {"t": "msg", "env": {**data, "room": "00" * 20}}, 0.0)
    room_b.receive(a, {"t": "msg", "env": {**data, "seq": 0}}, 0.0)
    room_b.receive(a, {"t": "nonsense"}, 0.0)
    room_b.receive(a, [1, 2], 0.0)
    assert room_b.next_event() is None
    assert sum(room_b.counters.values()) == 5
    room_b.receive(a, {"t": "msg", "env": data}, 0.0)
    assert isinstance(room_b.next_event(), Delivered)


def test_limits_are_clear_errors() -> None:
    mesh = Mesh(2, RoomConfig(max_body_bytes=10, max_unacked=2))
    a, b = mesh.keys
    with pytest.raises(MessagingError, match="at most 10 bytes"):
        mesh.rooms[a].send("x" * 11, 0.0)
    mesh.connect(a, b)
    mesh.rooms[a].send("1", 0.0)
    mesh.rooms[a].send("2", 0.0)
    with pytest.raises(MessagingError, match="not yet acknowledged"):
        mesh.rooms[a].send("3", 0.0)
    mesh.pump()  # acks arrive
    mesh.rooms[a].send("3", mesh.now)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(2, 5), st.integers(0, 2**32), st.lists(st.integers(0, 99), min_size=5, max_size=80)
)
def test_property_every_message_once_in_order_one_total_order(
    count: int, seed: int, script: list[int]
) -> None:
    mesh = Mesh(count, seed=seed)
    keys = mesh.keys
    for x in keys:
        for y in keys:
            if x < y:
                mesh.connect(x, y)
    sent = dict.fromkeys(keys, 0)
    for step in script:
        who = keys[step % count]
        if step < 60:
            mesh.pump(rounds=0, settle=False)  # collect what `who` has seen so far
            env = mesh.rooms[who].send(f"{step}", mesh.now)
            seen = [e for e in mesh.delivered[who] if e.author != who]
            assert all(e.order < env.order for e in seen), "a reply sorts after what it saw"
            sent[who] += 1
        elif step < 80:
            other = keys[(step // count) % count]
            if other != who:
                mesh.drop(who, other)
        else:
            other = keys[(step // count) % count]
            if other != who:
                mesh.connect(who, other)
        mesh.pump(
            rounds=mesh.rng.randint(0, 6), settle=False
        )  # partial delivery: reordering across links
        mesh.now += 0.001
    for x in keys:
        for y in keys:
            if x < y:
                mesh.connect(x, y)
    mesh.pump()
    check_converged(mesh, sent)
    assert not mesh.gaps


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=15,
)


@settings(max_examples=300)
@given(JSON, st.sampled_from(["msg", "hist", "ack", "hist-req", "x"]))
def test_any_frame_is_delivered_or_counted_never_raised(value: object, kind: str) -> None:
    mesh = Mesh(2)
    a, b = mesh.keys
    room = mesh.rooms[b]
    env = mesh.rooms[a].send("real", 0.0).to_json()
    for frame in (
        value,
        {"t": kind, "env": value, "envs": value, "seq": value, "since": value},
        {"t": "msg", "env": {**env, **value}} if isinstance(value, dict) else value,
    ):
        before = sum(room.counters.values())
        room.receive(a, frame, 0.0)
        delivered = room.next_event() is not None
        no_op = kind in ("ack", "hist-req") or (kind == "hist" and value == [])
        assert delivered or sum(room.counters.values()) > before or no_op


# --- the clock: a member may not move anyone's clock far ahead of real time ----------

T0 = 1_763_880_000.0
"""A wall-clock `now` (seconds), so the clock's millisecond anchor is exercised."""
LEAD = 3_600_000
"""RoomConfig().max_clock_lead in milliseconds."""
TOP = 2**53 - 1
"""The largest lamport the wire admits: the probe's poison."""


def ms(now: float) -> int:
    return int(now * 1000)


class Rogue:
    """A room member with a valid key who signs whatever lamport it likes."""

    def __init__(self, seed: int = 99) -> None:
        self.identity = Identity.from_seed(bytes([seed]) * 32)
        self.key = self.identity.public_key
        self.seq = 0

    def envelope(self, lamport: int, now: float, seq: int | None = None) -> Envelope:
        if seq is None:
            self.seq += 1
            seq = self.seq
        env = Envelope(ROOM, self.key, seq, lamport, ms(now), "text", f"rogue {seq}")
        return Envelope(
            env.room, env.author, env.seq, env.lamport, env.sent_at, env.kind, env.body,
            self.identity.sign(env.signed_bytes()),
        )  # fmt: skip

    def send(self, mesh: Mesh, to: list[bytes], lamport: int, seq: int | None = None) -> None:
        """One signed envelope, the same one to each of `to` (members it is seated with)."""
        env = self.envelope(lamport, mesh.now, seq)
        for member in to:
            mesh.rooms[member].receive(
                self.key, {"t": "msg", "env": env.to_json()}, mesh.clock(member)
            )


def honest_view(mesh: Mesh, key: bytes, honest: list[bytes]) -> list[tuple[bytes, int]]:
    """`key`'s transcript restricted to honest authors."""
    return [(e.author, e.seq) for e in mesh.rooms[key].transcript() if e.author in honest]


def check_honest_converged(mesh: Mesh, honest: list[bytes], sent: dict[bytes, int]) -> None:
    """Every honest message reached every honest member once, in seq order, in one order."""
    for key in honest:
        got = [(e.author, e.seq) for e in mesh.delivered[key] if e.author in honest]
        assert len(got) == len(set(got)) == sum(sent.values()), "each honest message once"
        for author in honest:
            seqs = [s for a, s in got if a == author]
            assert seqs == list(range(1, sent[author] + 1)), "each honest author's in order"
    assert len({tuple(honest_view(mesh, k, honest)) for k in honest}) == 1, "one total order"
    assert not [g for g in mesh.gaps if g.author in honest], "no honest message lost"


def check_clock_anchored(mesh: Mesh, key: bytes, slack: int = 1_000) -> None:
    """Nobody pushed `key`'s clock past half the lead ahead of its own wall clock."""
    assert mesh.rooms[key].lamport <= ms(mesh.clock(key)) + LEAD // 2 + slack


def test_the_clock_follows_wall_time() -> None:
    """A hybrid logical clock: one past everything seen, and never behind wall time."""
    mesh = Mesh(2, start=T0)
    a, b = mesh.keys
    room = mesh.rooms[a]
    assert room.send("first", T0).lamport == ms(T0)
    assert room.send("same millisecond", T0).lamport == ms(T0) + 1
    assert room.send("a second later", T0 + 1).lamport == ms(T0 + 1)
    # b has heard nothing, yet its later message sorts after a's: wall time orders it
    assert mesh.rooms[b].send("later", T0 + 2).order > room.transcript()[-1].order
    # a message from a clock 10 minutes ahead is delivered and adopted: a reply sorts after
    ahead = Rogue().envelope(ms(T0) + 600_000, T0 + 600)
    room.receive(ahead.author, {"t": "msg", "env": ahead.to_json()}, T0 + 3)
    assert room.send("reply", T0 + 3).lamport == ahead.lamport + 1


def test_one_poisoned_clock_does_not_silence_the_room() -> None:
    # The outside probe: one ordinary member signs lamport 2^53-1; before the fix every
    # honest clock jumped there, and every honest message after it (2^53) was refused.
    mesh = Mesh(4, start=T0)
    honest = mesh.keys
    for x in honest:
        for y in honest:
            if x < y:
                mesh.connect(x, y)
    mesh.pump()
    rogue = Rogue()
    rogue.send(mesh, honest, TOP)
    for key in honest:
        mesh.now += 0.01
        mesh.rooms[key].send(f"from {key.hex()[:4]}", mesh.clock(key))
    mesh.pump()
    check_honest_converged(mesh, honest, dict.fromkeys(honest, 1))
    for key in honest:
        check_clock_anchored(mesh, key)
        assert mesh.rooms[key].counters["drop.clock_too_far_ahead"] == 1
        assert rogue.key not in {e.author for e in mesh.rooms[key].transcript()}

    # A newcomer learns the room through history from one member: not poisoned either,
    # not even by an envelope the rogue placed right at the lead's edge.
    rogue.send(mesh, honest, ms(mesh.now) + LEAD)  # within the lead: delivered
    mesh.pump()
    newcomer = mesh.add(50)
    mesh.now += 1.0
    mesh.connect(newcomer, honest[0])
    mesh.pump()
    newcomer_room = mesh.rooms[newcomer]
    assert {e.author for e in newcomer_room.transcript()} == {*honest, rogue.key}
    check_clock_anchored(mesh, newcomer)
    assert "drop.clock_too_far_ahead" not in newcomer_room.counters  # never forwarded
    for key in honest[1:]:
        mesh.connect(newcomer, key)
    mesh.pump()
    newcomer_room.send("hello from the newcomer", mesh.clock(newcomer))
    for key in honest:
        mesh.rooms[key].send("and back", mesh.clock(key))
    mesh.pump()
    everyone = [*honest, newcomer]
    sent = {**dict.fromkeys(honest, 2), newcomer: 1}
    for key in honest:
        got = [(e.author, e.seq) for e in mesh.delivered[key] if e.author in everyone]
        assert len(got) == len(set(got)) == sum(sent.values())
    assert len({tuple(honest_view(mesh, k, everyone)) for k in everyone}) == 1
    assert [e.seq for e in mesh.delivered[newcomer] if e.author == newcomer] == [1]
    assert sum(1 for e in mesh.delivered[newcomer] if e.author in honest) == sum(sent.values()) - 1


def test_the_lead_edge_cannot_ratchet_a_clock() -> None:
    # The attack on a purely relative bound: push A up by as much as is accepted, again
    # and again; C never sees the rogue, and its clock is behind A's by just under half
    # the lead. A's messages must still reach C.
    skew = LEAD / 2 / 1000 - 2.0
    mesh = Mesh(3, start=T0, skews=[0.0, 0.0, -skew])
    a, b, c = mesh.keys
    for x, y in ((a, b), (b, c), (a, c)):
        mesh.connect(x, y)
    rogue = Rogue()
    sent = dict.fromkeys(mesh.keys, 0)
    for round_ in range(6):
        edge = ms(mesh.clock(a)) + LEAD
        rogue.send(mesh, [a], edge + 1)  # one past the edge: refused
        rogue.send(mesh, [a], edge)  # at the edge: delivered, adopted only up to half
        check_clock_anchored(mesh, a, slack=0)
        env = mesh.rooms[a].send(f"a{round_}", mesh.clock(a))
        sent[a] += 1
        assert env.lamport <= ms(mesh.clock(c)) + LEAD, "C accepts A's message"
        mesh.pump()
        mesh.rooms[c].send(f"c{round_}", mesh.clock(c))
        sent[c] += 1
        mesh.pump()
        mesh.now += 7.0
    check_honest_converged(mesh, mesh.keys, sent)
    assert mesh.rooms[a].counters["drop.clock_too_far_ahead"] == 6
    for key in mesh.keys:
        check_clock_anchored(mesh, key)


def test_a_refused_envelope_leaves_a_gap_then_a_discontinuity() -> None:
    mesh = Mesh(2, RoomConfig(resume_window=5.0), start=T0)
    a, b = mesh.keys
    mesh.connect(a, b)
    rogue = Rogue()
    rogue.send(mesh, [a, b], ms(mesh.now))  # 1: fine
    rogue.send(mesh, [a, b], TOP)  # 2: refused
    rogue.send(mesh, [a, b], ms(mesh.now) + 1)  # 3: waits for 2
    mesh.rooms[a].send("still here", mesh.clock(a))
    mesh.pump()  # settles: the resume window passes, no deadlock
    assert mesh.gaps == [Discontinuity(rogue.key, 2, 2)] * 2
    for key in (a, b):
        assert [e.seq for e in mesh.delivered[key] if e.author == rogue.key] == [1, 3]
    rogue.send(mesh, [a, b], ms(mesh.now))  # 4: delivery goes on after the gap
    mesh.pump()
    assert [e.seq for e in mesh.delivered[b] if e.author == rogue.key] == [1, 3, 4]
    check_honest_converged(mesh, [a, b], {a: 1, b: 0})


def restored(identity: Identity, lamport: int, history: list[Envelope], now: float) -> ReliableRoom:
    return ReliableRoom(
        ROOM,
        identity.public_key,
        identity.sign,
        verify_signature,
        seq=3,
        lamport=lamport,
        delivered={Rogue().key: 2},
        history=history,
        now=now,
    )


def signed(identity: Identity, seq: int, lamport: int, now: float) -> Envelope:
    env = Envelope(ROOM, identity.public_key, seq, lamport, ms(now), "text", f"m{seq}")
    return Envelope(
        env.room, env.author, env.seq, env.lamport, env.sent_at, env.kind, env.body,
        identity.sign(env.signed_bytes()),
    )  # fmt: skip


def test_restore_repairs_a_poisoned_clock() -> None:
    # State saved by a member poisoned before the fix: its clock at 2^53-1, the rogue's
    # envelope in its history, and one of its own messages signed at 2^53.
    me, other = Identity.from_seed(b"\x01" * 32), Identity.from_seed(b"\x02" * 32)
    rogue = Rogue()
    now = T0
    history = [
        signed(me, 1, ms(now) - 5_000, now - 5),
        rogue.envelope(ms(now) - 4_000, now - 4),
        rogue.envelope(TOP, now - 3),
        signed(me, 2, ms(now) - 2_000, now - 2),
        signed(me, 3, TOP + 1, now - 1),
        rogue.envelope(ms(now) + LEAD, now),  # at the lead's edge: kept
        rogue.envelope(ms(now) + LEAD + 1, now),  # one past it: refused
    ]
    room = restored(me, TOP + 1, history, now)
    assert room.lamport == ms(now) + LEAD // 2
    assert [(e.author, e.seq) for e in room.transcript()] == [
        (me.public_key, 1),
        (rogue.key, 1),
        (me.public_key, 2),
        (rogue.key, 3),
    ]
    assert room.refused_on_restore == [history[2], history[4], history[6]]
    # Own messages go out again, except the poisoned one nobody would ever accept.
    room.connected(other.public_key, now)
    resent = [f["env"]["seq"] for _, f in room.frames_to_send() if f["t"] == "msg"]
    assert resent == [1, 2]
    env = room.send("after the repair", now)
    assert env.lamport == ms(now) + LEAD // 2 + 1
    listener = ReliableRoom(ROOM, other.public_key, other.sign, verify_signature)
    listener.receive(me.public_key, {"t": "msg", "env": env.to_json()}, now - 60.0)
    events = []
    while (event := listener.next_event()) is not None:
        events.append(event)
    assert events == [Delivered(env)]  # seq 4 after a first word: delivered

    # A clock that was never poisoned is left as it is.
    fine = restored(me, ms(now) - 2_000, history[:2], now)
    assert fine.lamport == ms(now) - 2_000 and fine.refused_on_restore == []


ATTACK_LAMPORT = st.one_of(
    st.integers(0, TOP),
    st.just(TOP),
    st.tuples(st.sampled_from(["lead", "half", "now"]), st.integers(-3, 3)),
)
QUARTER = LEAD / 4 / 1000 - 2.0
"""Honest wall clocks within +-QUARTER seconds of the truth: pairwise under half the lead."""
CLOCK_STEP = st.one_of(
    st.tuples(st.just("send"), st.integers(0, 3)),
    st.tuples(st.just("attack"), st.integers(1, 15), ATTACK_LAMPORT, st.integers(1, 12)),
    st.tuples(st.just("wait"), st.floats(0, 900)),
    st.tuples(st.just("drop"), st.integers(0, 3), st.integers(0, 3)),
    st.tuples(st.just("connect"), st.integers(0, 3), st.integers(0, 3)),
)


def attack_lamport(choice: int | tuple[str, int], now: float) -> int:
    """A lamport the rogue aims at a member whose wall clock reads `now`."""
    if isinstance(choice, int):
        return choice
    base = {"lead": LEAD, "half": LEAD // 2, "now": 0}[choice[0]]
    return max(0, min(TOP, ms(now) + base + choice[1]))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from([-QUARTER, QUARTER]) | st.floats(-QUARTER, QUARTER), min_size=2, max_size=4
    ),
    st.integers(0, 2**32),
    st.lists(CLOCK_STEP, min_size=1, max_size=40),
)
def test_property_no_attacker_stops_an_honest_member(
    skews: list[float], seed: int, script: list[tuple[Any, ...]]
) -> None:
    """Whatever a rogue member signs, and to whomever, an honest member's next message is
    accepted by every honest member whose clock is within the documented skew."""
    mesh = Mesh(len(skews), RoomConfig(resume_window=5.0), seed=seed, start=T0, skews=skews)
    honest = mesh.keys
    for x in honest:
        for y in honest:
            if x < y:
                mesh.connect(x, y)
    rogue = Rogue()
    sent = dict.fromkeys(honest, 0)
    for step in script:
        kind = step[0]
        if kind == "send":
            who = honest[step[1] % len(honest)]
            env = mesh.rooms[who].send(f"{sum(sent.values())}", mesh.clock(who))
            sent[who] += 1
            for other in honest:
                assert env.lamport <= ms(mesh.clock(other)) + LEAD, "accepted by every member"
        elif kind == "attack":
            _, mask, choice, seq = step
            targets = [k for i, k in enumerate(honest) if mask >> i & 1] or honest[:1]
            rogue.send(mesh, targets, attack_lamport(choice, mesh.clock(targets[0])), seq)
        elif kind == "wait":
            mesh.now += step[1]
        else:
            x, y = (honest[i % len(honest)] for i in step[1:])
            if x != y:
                (mesh.drop if kind == "drop" else mesh.connect)(x, y)
        mesh.pump(rounds=mesh.rng.randint(0, 6), settle=False)
        for key in honest:
            check_clock_anchored(mesh, key)
            # the message `key` would send next is accepted by every honest member
            next_lamport = max(mesh.rooms[key].lamport + 1, ms(mesh.clock(key)))
            for other in honest:
                assert next_lamport <= ms(mesh.clock(other)) + LEAD, "an honest member can send"
    for x in honest:
        for y in honest:
            if x < y:
                mesh.connect(x, y)
    mesh.pump()
    check_honest_converged(mesh, honest, sent)
    # and one more word from each, after everything the rogue did, reaches everyone
    for key in honest:
        mesh.rooms[key].send("last", mesh.clock(key))
        sent[key] += 1
    mesh.pump()
    check_honest_converged(mesh, honest, sent)
