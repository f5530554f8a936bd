"""The browser's messaging core and peer/messaging.py are twins: the same random
run of connections, frames, sends and timers gives the same deliveries, gaps,
frames out and clock, step for step, and the same restored state gives the same
repair (hypothesis generates, Chromium runs the JS)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peer.messaging import (
    Delivered,
    Discontinuity,
    Envelope,
    MessagingError,
    ReliableRoom,
    RoomConfig,
)

from .test_vectors import page  # noqa: F401  (fixture)

ROOM = bytes(20)
ME = bytes([1]) * 32
MEMBERS = [bytes([2]) * 32, bytes([3]) * 32]
SIG = bytes([0xAB]) * 64
LEAD = 3_600_000
"""The default max_clock_lead (one hour) in milliseconds."""
TOP = 2**53 - 1
STARTS = st.sampled_from([0.0, 1_763_880_000.0])
"""Time 0 (a small clock, as the simulator runs it) or a wall clock in 2025."""


def envelope(author: int, seq: int, lamport: int, start: float) -> dict[str, Any]:
    ts = int(start * 1000) + 1_000 * seq
    env = Envelope(ROOM, MEMBERS[author], seq, lamport, ts, "text", f"m{seq}", SIG)
    return env.to_json()


def lamport_at(spec: int | tuple[str, int], now: float) -> int:
    """A lamport given outright, or relative to the receiver's clock: around the lead's
    edge, around half of it (where adoption stops), or around now."""
    if isinstance(spec, int):
        return spec
    base = {"lead": LEAD, "half": LEAD // 2, "now": 0}[spec[0]]
    return max(0, min(TOP, int(now * 1000) + base + spec[1]))


LAMPORT = st.one_of(
    st.integers(0, 20),
    st.just(TOP),
    st.tuples(st.sampled_from(["lead", "half", "now"]), st.integers(-3, 3)),
)
MEMBER = st.integers(0, 1)
STEP = st.one_of(
    st.tuples(st.just("connect"), MEMBER),
    st.tuples(st.just("disconnect"), MEMBER),
    st.tuples(st.just("send"), st.text(max_size=8)),
    st.tuples(st.just("timer"), st.floats(0, 40)),
    st.tuples(st.just("msg"), MEMBER, st.integers(0, 1), st.integers(1, 8), LAMPORT),
    st.tuples(
        st.just("hist"),
        MEMBER,
        st.lists(st.tuples(st.integers(0, 1), st.integers(1, 8), LAMPORT), max_size=4),
    ),
    st.tuples(st.just("ack"), MEMBER, st.integers(-1, 6)),
    st.tuples(st.just("hist-req"), MEMBER, st.integers(0, 4)),
)

RUN_JS = """async ([start, steps]) => {
    const m = window.m;
    const room = new m.ReliableRoom('00'.repeat(20), '01'.repeat(32), {resumeWindow: 5});
    const members = ['02'.repeat(32), '03'.repeat(32)];
    let now = start;
    const out = [];
    for (const step of steps) {
        let error = false;
        const [kind] = step;
        try {
            if (kind === 'connect') room.connected(members[step[1]], now);
            else if (kind === 'disconnect') room.disconnected(members[step[1]]);
            else if (kind === 'send') {
                room.commit({...room.reserve(step[1], now), sig: 'ab'.repeat(64)});
            }
            else if (kind === 'timer') { now += step[1]; room.handleTimer(now); }
            else room.receive(members[step[1]], step[2], now);
        } catch (e) {
            if (!(e instanceof m.MessagingError)) throw e;
            error = true;
        }
        const events = room.takeEvents().map(e => e.type === 'delivered'
            ? ['d', e.env.author, e.env.seq] : ['g', e.author, e.first, e.last]);
        const refused = room.counters['drop.clock_too_far_ahead'] ?? 0;
        out.push([error, events, room.framesToSend(), room.timer(), room.lamport, refused]);
    }
    return [out, room.transcript().map(e => [e.author, e.seq])];
}"""


def frame_for(step: tuple[Any, ...], now: float, start: float) -> dict[str, Any]:
    """The frame a member sends in `step`, when the receiver's clock reads `now`."""
    kind = step[0]
    if kind == "msg":
        _, _, author, seq, lamport = step
        return {"t": "msg", "env": envelope(author, seq, lamport_at(lamport, now), start)}
    if kind == "hist":
        envs = [envelope(a, seq, lamport_at(lamport, now), start) for a, seq, lamport in step[2]]
        return {"t": "hist", "envs": envs}
    if kind == "ack":
        return {"t": "ack", "seq": step[2]}
    return {"t": "hist-req", "since": {MEMBERS[0].hex(): step[2]}}


def with_frames(steps: list[tuple[Any, ...]], start: float) -> list[list[Any]]:
    """The steps with each member's frame built here, so both cores get equal input."""
    now = start
    concrete: list[list[Any]] = []
    for step in steps:
        if step[0] == "timer":
            now += step[1]
        if step[0] in ("msg", "hist", "ack", "hist-req"):
            concrete.append(["frame", step[1], frame_for(step, now, start)])
        else:
            concrete.append(list(step))
    return concrete


def run_python(steps: list[list[Any]], start: float) -> tuple[list[Any], list[Any]]:
    room = ReliableRoom(ROOM, ME, lambda _: SIG, lambda *_: True, RoomConfig(resume_window=5.0))
    now = start
    out = []
    for step in steps:
        error = False
        kind = step[0]
        try:
            if kind == "connect":
                room.connected(MEMBERS[step[1]], now)
            elif kind == "disconnect":
                room.disconnected(MEMBERS[step[1]])
            elif kind == "send":
                room.send(step[1], now)
            elif kind == "timer":
                now += step[1]
                room.handle_timer(now)
            else:
                room.receive(MEMBERS[step[1]], step[2], now)
        except MessagingError:
            error = True
        events = []
        while (event := room.next_event()) is not None:
            if isinstance(event, Delivered):
                events.append(["d", event.envelope.author.hex(), event.envelope.seq])
            elif isinstance(event, Discontinuity):
                events.append(["g", event.author.hex(), event.first, event.last])
        frames = [[member.hex(), frame] for member, frame in room.frames_to_send()]
        refused = room.counters.get("drop.clock_too_far_ahead", 0)
        out.append([error, events, frames, room.get_timer(), room.lamport, refused])
    return out, [[e.author.hex(), e.seq] for e in room.transcript()]


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(start=STARTS, steps=st.lists(STEP, min_size=1, max_size=60))
async def test_same_steps_same_outputs(
    page: Any,  # noqa: F811
    start: float,
    steps: list[tuple[Any, ...]],
) -> None:
    concrete = with_frames(steps, start)
    expected_steps, expected_transcript = run_python(concrete, start)
    got_steps, got_transcript = await page.evaluate(RUN_JS, [start, concrete])
    for i, (want, got) in enumerate(zip(expected_steps, got_steps, strict=True)):
        # Frames to different members may leave in any order (Python iterates a
        # set); to each member, the order is the protocol's and must match.
        for result in (want, got):
            result[2] = sorted(result[2], key=lambda pair: pair[0])
        assert got == want, (i, steps[: i + 1])
    assert got_transcript == expected_transcript


RESTORE_JS = """([now, state]) => {
    const room = new window.m.ReliableRoom('00'.repeat(20), '01'.repeat(32), {}, state, now);
    room.connected('02'.repeat(32), now);
    const resent = room.framesToSend().filter(([, f]) => f.t === 'msg').map(([, f]) => f.env.seq);
    const env = room.reserve('next', now);
    return [
        room.refusedOnRestore.map(e => [e.author, e.seq]),
        room.transcript().map(e => [e.author, e.seq]),
        resent,
        env.lamport,
    ];
}"""

RESTORED_ENVELOPE = st.tuples(st.integers(0, 2), st.integers(1, 6), LAMPORT | st.just(2**53))


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    start=STARTS,
    seq=st.integers(0, 6),
    clock=LAMPORT | st.just(2**53),
    saved=st.lists(RESTORED_ENVELOPE, max_size=8, unique_by=lambda e: (e[0], e[1])),
)
async def test_same_repair_on_restore(
    page: Any,  # noqa: F811
    start: float,
    seq: int,
    clock: int | tuple[str, int],
    saved: list[tuple[int, int, int | tuple[str, int]]],
) -> None:
    """A saved state, poisoned or not (2^53 is what the old code signed after 2^53-1),
    restores to the same clock, history and re-sends in both cores."""
    authors = [ME, *MEMBERS]
    history = [
        Envelope(ROOM, authors[a], s, lamport_at(lam, start), int(start * 1000), "text", "", SIG)
        for a, s, lam in saved
    ]
    state = {
        "seq": seq,
        "lamport": lamport_at(clock, start),
        "delivered": {},
        "history": [e.to_json() for e in history],
    }
    room = ReliableRoom(
        ROOM,
        ME,
        lambda _: SIG,
        lambda *_: True,
        seq=seq,
        lamport=lamport_at(clock, start),
        history=history,
        now=start,
    )
    room.connected(MEMBERS[0], start)
    expected: list[Any] = [
        [[e.author.hex(), e.seq] for e in room.refused_on_restore],
        [[e.author.hex(), e.seq] for e in room.transcript()],
        [f["env"]["seq"] for _, f in room.frames_to_send() if f["t"] == "msg"],
    ]
    lamport = room.send("next", start).lamport
    expected.append(lamport)
    got = await page.evaluate(RESTORE_JS, [start, state])
    assert got == expected
    assert lamport <= int(start * 1000) + LEAD // 2 + 1  # the repaired clock can send
