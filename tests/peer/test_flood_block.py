"""Flood cut and block in the messaging core (docs/protocol.md 5.4), on virtual time.

The attacker's tests come first: a member that floods at 500 messages a second
while two honest members chat, and a blocked key whose envelopes reach us
through others. Then what honest members keep: a burst over the limit is
delayed, never lost or delivered twice, and third parties who did not block
keep one order with everyone."""

from __future__ import annotations

import json
import tracemalloc
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dht.identity import Identity, verify_signature
from peer.messaging import (
    Delivered,
    Discontinuity,
    Envelope,
    Flooding,
    MessagingError,
    ReliableRoom,
    RoomConfig,
    TokenBucket,
)

from .test_messaging import ROOM, T0, Mesh, check_converged, ms


class Net:
    """Honest cores linked in memory with no loss; `step(now)` moves every frame and
    fires every timer due by `now` (never later: the flood keeps time from settling)."""

    def __init__(self, count: int, config: RoomConfig | None = None) -> None:
        self.ids = [Identity.from_seed(bytes([i + 1]) * 32) for i in range(count)]
        self.keys = [i.public_key for i in self.ids]
        self.rooms = {
            i.public_key: ReliableRoom(ROOM, i.public_key, i.sign, verify_signature, config)
            for i in self.ids
        }
        self.events: dict[bytes, list[Any]] = {k: [] for k in self.keys}
        self.to_others: list[tuple[bytes, bytes, dict[str, Any]]] = []
        """Frames to keys that are not honest cores here (the rogue's side)."""

    def step(self, now: float) -> None:
        for _ in range(10_000):
            moved = False
            for key, room in self.rooms.items():
                if (t := room.get_timer()) is not None and t <= now:
                    room.handle_timer(now)
                for member, frame in room.frames_to_send():
                    moved = True
                    text = json.loads(json.dumps(frame))
                    if member in self.rooms:
                        self.rooms[member].receive(key, text, now)
                    else:
                        self.to_others.append((key, member, text))
                while (event := room.next_event()) is not None:
                    self.events[key].append(event)
            if not moved:
                return
        raise AssertionError("frames kept coming")

    def delivered(self, key: bytes, author: bytes) -> list[int]:
        return [
            e.envelope.seq
            for e in self.events[key]
            if isinstance(e, Delivered) and e.envelope.author == author
        ]


def signed(identity: Identity, seq: int, now: float, body: str = "") -> dict[str, Any]:
    env = Envelope(ROOM, identity.public_key, seq, ms(now), ms(now), "text", body or f"x{seq}")
    return replace(env, signature=identity.sign(env.signed_bytes())).to_json()


def test_a_member_flooding_at_500_a_second_is_cut_while_two_honest_members_chat() -> None:
    net = Net(2)
    a, b = net.keys
    rogue = Identity.from_seed(bytes([66]) * 32)
    for x, y in ((a, b), (a, rogue.public_key), (b, rogue.public_key)):
        for one, other in ((x, y), (y, x)):
            if one in net.rooms:
                net.rooms[one].connected(other, T0)
    config = RoomConfig()
    seconds, rate = 30, 500
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    sent = 0
    for tick in range(seconds * 100):  # every 10 ms: 5 envelopes of the rogue's
        now = T0 + tick / 100
        for _ in range(rate // 100):
            sent += 1
            frame = {"t": "msg", "env": signed(rogue, sent, now, "spam " * 20)}
            for honest in (a, b):
                net.rooms[honest].receive(rogue.public_key, frame, now)
        if tick % 100 == 0:  # each honest member says something every second
            net.rooms[a].send(f"a{tick}", now)
        if tick % 100 == 50:
            net.rooms[b].send(f"b{tick}", now)
        net.step(now)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    net.step(T0 + seconds + 1)
    # The honest messages: all of them, each once, in order, at once (no rate held them).
    assert net.delivered(b, a) == list(range(1, seconds + 1))
    assert net.delivered(a, b) == list(range(1, seconds + 1))
    for honest in (a, b):
        room = net.rooms[honest]
        flooding = [e for e in net.events[honest] if isinstance(e, Flooding)]
        assert flooding and flooding[0] == Flooding(rogue.public_key, 1)
        # at most one report per interval, and every drop counted in them or pending
        assert len(flooding) <= seconds / config.flood_report_interval + 1
        got = net.delivered(honest, rogue.public_key)
        assert len(got) <= config.flood_messages + config.flood_rate * seconds + 1
        # In order, once; what it never sent again became a Discontinuity, not a stall.
        assert got == sorted(set(got)) and got[:200] == list(range(1, 201))
        dropped = room.counters["drop.flood"] + room.counters.get(
            "drop.too_many_early_envelopes", 0
        )
        assert sent == len(got) + room.early_envelopes + dropped
        assert room.early_envelopes <= config.max_early
        # The rogue is never acknowledged what was dropped: it cannot think it delivered.
        acks = [f["seq"] for k, m, f in net.to_others if k == honest and f["t"] == "ack"]
        assert max(acks) <= max(got) < sent
    print(f"flood: {sent} sent, {len(got)} delivered, {held / 2**20:.2f} MiB held")
    assert held < 8 * 2**20  # two cores, bounded whatever the rogue sends


def test_the_rate_is_per_author_and_the_same_through_history_frames() -> None:
    config = RoomConfig(flood_messages=5, flood_rate=1.0)
    net = Net(1, config)
    (victim,) = net.keys
    relay = Identity.from_seed(bytes([70]) * 32).public_key
    flooder, other = (Identity.from_seed(bytes([s]) * 32) for s in (71, 72))
    net.rooms[victim].connected(relay, T0)
    # A relay forwards 20 of the flooder's and 20 of another's in one history frame.
    envs = [signed(flooder, s, T0) for s in range(1, 21)] + [
        signed(other, s, T0) for s in range(1, 21)
    ]
    net.rooms[victim].receive(relay, {"t": "hist", "envs": envs}, T0)
    net.step(T0)
    assert net.delivered(victim, flooder.public_key) == [1, 2, 3, 4, 5]
    assert net.delivered(victim, other.public_key) == [1, 2, 3, 4, 5]
    assert net.rooms[victim].counters["drop.flood"] == 30


def test_a_burst_over_the_limit_is_delayed_never_lost_or_twice() -> None:
    # An honest author back online with 300 unsaid messages: over a bucket of 50 at
    # 10 a second, the rest are not acknowledged, sent again, delivered in order.
    config = RoomConfig(flood_messages=50, flood_rate=10.0, resume_window=600.0)
    mesh = Mesh(3, config, start=T0)
    a, b, c = mesh.keys
    mesh.connect(a, b)
    mesh.connect(b, c)
    mesh.connect(a, c)
    for i in range(300):
        mesh.rooms[a].send(f"m{i}", mesh.clock(a))
    mesh.rooms[c].send("hi", mesh.clock(c))
    mesh.pump()
    check_converged(mesh, {a: 300, b: 0, c: 1})
    assert mesh.rooms[b].counters["drop.flood"] > 0
    assert not [g for g in mesh.gaps if isinstance(g, Discontinuity)]


def test_a_blocked_key_gets_no_link_no_frame_and_is_not_shown() -> None:
    mesh = Mesh(3, start=T0)
    me, friend, blocked = mesh.keys
    room = mesh.rooms[me]
    room.block(blocked)
    mesh.connect(friend, blocked)
    room.connected(blocked, mesh.clock(me))  # as if the glue had let it: the core refuses
    assert room.counters["refused.blocked"] == 1
    mesh.rooms[blocked].send("you cannot see me", mesh.clock(blocked))
    mesh.rooms[friend].send("hello", mesh.clock(friend))
    mesh.pump()
    mesh.connect(me, friend)  # the friend's history answer carries both
    mesh.pump()
    # Directly (a frame on a link the glue had let through) and through the friend.
    env = mesh.rooms[blocked].transcript()[0]
    room.receive(blocked, {"t": "msg", "env": env.to_json()}, mesh.clock(me))
    assert room.counters["drop.blocked"] == 1
    assert [e.author for e in mesh.delivered[me]] == [friend]
    assert [e.author for e in room.transcript()] == [friend]
    assert room.name_of(blocked) is None and blocked not in room.names
    assert not [1 for sender, to, _ in mesh.sent if sender == me and to == blocked]
    # Kept, so a newcomer who did not block hears it through us: nothing lost for them.
    newcomer = mesh.add(9)
    mesh.drop(friend, blocked)
    mesh.drop(me, friend)
    mesh.connect(me, newcomer)
    mesh.pump()
    assert sorted(e.body for e in mesh.delivered[newcomer]) == ["hello", "you cannot see me"]
    # Unblocked: what was kept comes back in the transcript; nothing is delivered twice.
    room.unblock(blocked)
    assert {e.author for e in room.transcript()} == {friend, blocked}
    with pytest.raises(MessagingError):
        room.block(me)


def test_third_parties_keep_one_order_when_one_member_blocks() -> None:
    mesh = Mesh(4, start=T0)
    a, b, c, d = mesh.keys
    mesh.rooms[a].block(d)
    pairs = [(a, b), (a, c), (b, c), (b, d), (c, d)]
    for x, y in pairs:
        mesh.connect(x, y)
    for i in range(10):
        for key in (a, b, c, d):
            mesh.rooms[key].send(f"{i}", mesh.clock(key))
        mesh.now += 0.05
    mesh.pump()
    full = [(e.author, e.seq) for e in mesh.rooms[b].transcript()]
    assert full == [(e.author, e.seq) for e in mesh.rooms[c].transcript()]
    assert len(full) == 40
    assert [(e.author, e.seq) for e in mesh.rooms[a].transcript()] == [x for x in full if x[0] != d]


# --- properties -------------------------------------------------------------------

ARRIVALS = st.lists(st.tuples(st.floats(0, 3), st.integers(0, 20_000)), max_size=200)


@settings(max_examples=300, deadline=None)
@given(
    arrivals=ARRIVALS,
    burst=st.integers(1, 50),
    rate=st.floats(0.1, 100),
    byte_burst=st.integers(16_384, 200_000),
)
def test_property_a_bucket_passes_no_more_than_its_burst_and_rate(
    arrivals: list[tuple[float, int]], burst: int, rate: float, byte_burst: int
) -> None:
    config = RoomConfig(flood_messages=burst, flood_rate=rate, flood_bytes=byte_burst)
    bucket = TokenBucket(float(burst), float(byte_burst), 0.0)
    now, passed, octets = 0.0, 0, 0
    for gap, size in arrivals:
        now += gap
        if bucket.take(size, now, config):
            passed += 1
            octets += size
        assert 0 <= bucket.messages <= burst and 0 <= bucket.octets <= byte_burst
    assert passed <= burst + rate * now + 1e-6
    assert octets <= byte_burst + config.flood_byte_rate * now + 1e-3


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(0, 16_384), max_size=100), burst=st.integers(1, 20))
def test_property_an_author_within_the_rate_is_never_dropped(sizes: list[int], burst: int) -> None:
    config = RoomConfig(flood_messages=burst, flood_rate=2.0)
    bucket = TokenBucket(float(burst), float(config.flood_bytes), 0.0)
    for i, size in enumerate(sizes):  # one every half second: exactly the rate
        assert bucket.take(size, i * 0.5, config)


@settings(max_examples=40, deadline=None)
@given(
    bursts=st.lists(st.integers(1, 25), min_size=1, max_size=5),
    limit=st.integers(1, 15),
    blocked=st.booleans(),
)
def test_property_limits_and_blocks_never_cost_honest_members_a_message(
    bursts: list[int], limit: int, blocked: bool
) -> None:
    """Whatever bursts an author sends and whoever blocks it, every member that did not
    block it gets each of its messages once, in order, and all keep one total order of
    what they show."""
    config = RoomConfig(flood_messages=limit, flood_rate=3.0, resume_window=3600.0)
    mesh = Mesh(3, config, start=T0)
    a, b, c = mesh.keys
    if blocked:
        mesh.rooms[c].block(a)
    for x, y in ((a, b), (b, c), *([] if blocked else [(a, c)])):
        mesh.connect(x, y)  # the glue makes no link between c and a key it blocked
    sent = 0
    for burst in bursts:
        for _ in range(burst):
            mesh.rooms[a].send(f"{sent}", mesh.clock(a))
            sent += 1
        mesh.rooms[b].send("reply", mesh.clock(b))
        mesh.pump()
    seqs = [e.seq for e in mesh.delivered[b] if e.author == a]
    assert seqs == list(range(1, sent + 1))
    at_c = [e.seq for e in mesh.delivered[c] if e.author == a]
    assert at_c == ([] if blocked else seqs)
    assert [e.seq for e in mesh.delivered[c] if e.author == b] == list(range(1, len(bursts) + 1))
    shown_b = [(e.author, e.seq) for e in mesh.rooms[b].transcript()]
    shown_c = [(e.author, e.seq) for e in mesh.rooms[c].transcript()]
    assert shown_c == [x for x in shown_b if not (blocked and x[0] == a)]
    assert not [g for g in mesh.gaps if isinstance(g, Discontinuity)]
