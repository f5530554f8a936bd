"""The messaging core through an in-memory mesh with drops, on virtual time."""

from __future__ import annotations

import json
import random

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

    def __init__(self, count: int, config: RoomConfig | None = None, seed: int = 0) -> None:
        self.ids = [Identity.from_seed(bytes([i + 1]) * 32) for i in range(count)]
        self.rooms = {
            i.public_key: ReliableRoom(ROOM, i.public_key, i.sign, verify_signature, config)
            for i in self.ids
        }
        self.now = 0.0
        self.up: set[tuple[bytes, bytes]] = set()
        self.wire: list[tuple[bytes, bytes, str]] = []
        self.delivered: dict[bytes, list[Envelope]] = {k: [] for k in self.rooms}
        self.gaps: list[Discontinuity] = []
        self.rng = random.Random(seed)

    @property
    def keys(self) -> list[bytes]:
        return list(self.rooms)

    def connect(self, a: bytes, b: bytes) -> None:
        if (a, b) in self.up:
            return
        self.up |= {(a, b), (b, a)}
        self.rooms[a].connected(b, self.now)
        self.rooms[b].connected(a, self.now)

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
                self.rooms[receiver].receive(sender, json.loads(text), self.now)
                continue
            timers = [t for r in self.rooms.values() if (t := r.get_timer()) is not None]
            if not timers:
                return
            self.now = max(self.now, min(timers))
            for room in self.rooms.values():
                if (t := room.get_timer()) is not None and t <= self.now:
                    room.handle_timer(self.now)
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
