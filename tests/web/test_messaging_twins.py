"""The browser's messaging core and peer/messaging.py are twins: the same random
run of connections, frames, sends and timers gives the same deliveries, gaps,
frames out, clock and counters, step for step, and the same restored state gives
the same repair (hypothesis generates, Chromium runs the JS).

Half the runs use small bounds (a few authors, early envelopes, `since` entries,
history bytes per frame and per answer, a short hist-req interval and resend
interval), so that many authors, big and oddly escaped bodies and repeated
history requests reach every bound and both cores must cut at the same place."""

from __future__ import annotations

import json
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
AUTHORS = [*MEMBERS, *(bytes([n]) * 32 for n in range(0x10, 0x16))]
"""Who signs: the two members, and others whose envelopes they forward."""
BODIES = [
    "",
    "m",
    "x" * 300,
    "\u00e9" * 60,
    "\x01" * 40,
    "\U0001f600" * 30,
    'q"\\' * 40,
    "\x7f\n\t" * 20,
]
"""Bodies whose JSON sizes differ (escapes of 2, 6 and 12 characters), to split frames."""
SMALL = {
    "resume_window": 5.0,
    "max_early": 2,
    "max_early_total": 2,
    "max_authors": 5,
    "history_count": 6,
    "history_frame_bytes": 1_200,
    "history_answer_bytes": 3_000,
    "hist_req_interval": 3.0,
    "max_since": 2,
    "resend_interval": 1.5,
    "resend_burst": 3,
    "max_history": 12,
    "max_outbox": 8,
}
"""Small bounds, reached in a few steps; the other runs use the defaults."""
CONFIGS = st.sampled_from([{"resume_window": 5.0}, SMALL, SMALL])


def camel(config: dict[str, Any]) -> dict[str, Any]:
    """RoomConfig's names as the JS DEFAULTS spell them."""
    out = {}
    for name, value in config.items():
        head, *rest = name.split("_")
        out[head + "".join(w.capitalize() for w in rest)] = value
    return out


SIG = bytes([0xAB]) * 64
LEAD = 3_600_000
"""The default max_clock_lead (one hour) in milliseconds."""
TOP = 2**53 - 1
STARTS = st.sampled_from([0.0, 1_763_880_000.0])
"""Time 0 (a small clock, as the simulator runs it) or a wall clock in 2025."""


def envelope(author: int, seq: int, lamport: int, start: float, body: int = -1) -> dict[str, Any]:
    ts = int(start * 1000) + 1_000 * seq
    text = f"m{seq}" if body < 0 else BODIES[body]
    env = Envelope(ROOM, AUTHORS[author], seq, lamport, ts, "text", text, SIG)
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
AUTHOR = st.integers(0, len(AUTHORS) - 1)
BODY = st.integers(-1, len(BODIES) - 1)
SINCE = st.lists(st.tuples(st.integers(0, len(AUTHORS)), st.integers(0, 4)), max_size=5)
"""Entries of a hist-req's map (index len(AUTHORS): a key that is not lower-case hex)."""
LIKELY_LAMPORT = st.integers(0, 20) | st.integers(0, 20) | LAMPORT
"""Mostly lamports every member accepts, so that envelopes pile up and bounds are met."""
FREQUENT_AUTHOR = st.integers(0, 3) | AUTHOR
"""Mostly a few authors, so that their envelopes come early, late and twice."""
ENVELOPE = st.tuples(FREQUENT_AUTHOR, st.integers(1, 16), LIKELY_LAMPORT, BODY)
CONNECT = st.tuples(st.just("connect"), MEMBER)
SEND = st.tuples(st.just("send"), st.text(max_size=8) | st.sampled_from(BODIES))
MSG = st.tuples(st.just("msg"), MEMBER, FREQUENT_AUTHOR, st.integers(1, 16), LIKELY_LAMPORT, BODY)
HIST = st.tuples(st.just("hist"), MEMBER, st.lists(ENVELOPE, max_size=6))
HIST_REQ = st.tuples(st.just("hist-req"), MEMBER, SINCE)
STEP = st.one_of(
    CONNECT,
    CONNECT,
    st.tuples(st.just("disconnect"), MEMBER),
    SEND,
    SEND,
    st.tuples(st.just("timer"), st.floats(0, 40) | st.sampled_from([0.5, 1.5, 3.0])),
    MSG,
    MSG,
    HIST,
    HIST,
    st.tuples(st.just("ack"), MEMBER, st.integers(-1, 6)),
    HIST_REQ,
    HIST_REQ,
)
"""Weighted towards what fills the bounds: connections, envelopes, history requests."""

RUN_JS = """async ([start, steps, config]) => {
    const m = window.m;
    const room = new m.ReliableRoom('00'.repeat(20), '01'.repeat(32), config);
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
                room.commit({...room.reserve(step[1], now), sig: 'ab'.repeat(64)}, now);
            }
            else if (kind === 'timer') { now += step[1]; room.handleTimer(now); }
            else room.receive(members[step[1]], step[2], now);
        } catch (e) {
            if (!(e instanceof m.MessagingError)) throw e;
            error = true;
        }
        const events = room.takeEvents().map(e => e.type === 'delivered'
            ? ['d', e.env.author, e.env.seq] : ['g', e.author, e.first, e.last]);
        const sizes = room.transcript().map(m.wireSize);
        out.push([error, events, room.framesToSend(), room.timer(), room.lamport,
                  {...room.counters}, room.trackedAuthors, sizes]);
    }
    return [out, room.transcript().map(e => [e.author, e.seq])];
}"""


def frame_for(step: tuple[Any, ...], now: float, start: float) -> dict[str, Any]:
    """The frame a member sends in `step`, when the receiver's clock reads `now`."""
    kind = step[0]
    if kind == "msg":
        _, _, author, seq, lamport, body = step
        return {"t": "msg", "env": envelope(author, seq, lamport_at(lamport, now), start, body)}
    if kind == "hist":
        envs = [
            envelope(a, seq, lamport_at(lamport, now), start, body)
            for a, seq, lamport, body in step[2]
        ]
        return {"t": "hist", "envs": envs}
    if kind == "ack":
        return {"t": "ack", "seq": step[2]}
    keys = [a.hex() for a in AUTHORS] + ["AB" * 32]
    return {"t": "hist-req", "since": {keys[a]: seq for a, seq in step[2]}}


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


def run_python(
    steps: list[list[Any]], start: float, config: dict[str, Any]
) -> tuple[list[Any], list[Any]]:
    room = ReliableRoom(ROOM, ME, lambda _: SIG, lambda *_: True, RoomConfig(**config))
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
        sizes = [e.wire_size() for e in room.transcript()]
        out.append(
            [error, events, frames, room.get_timer(), room.lamport, dict(room.counters),
             room.tracked_authors, sizes]
        )  # fmt: skip
    return out, [[e.author.hex(), e.seq] for e in room.transcript()]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(start=STARTS, steps=st.lists(STEP, min_size=20, max_size=80), config=CONFIGS)
async def test_same_steps_same_outputs(
    page: Any,  # noqa: F811
    start: float,
    steps: list[tuple[Any, ...]],
    config: dict[str, Any],
) -> None:
    concrete = with_frames(steps, start)
    expected_steps, expected_transcript = run_python(concrete, start, config)
    got_steps, got_transcript = await page.evaluate(RUN_JS, [start, concrete, camel(config)])
    for i, (want, got) in enumerate(zip(expected_steps, got_steps, strict=True)):
        # Frames to different members may leave in any order (Python iterates a
        # set); to each member, the order is the protocol's and must match.
        for result in (want, got):
            result[2] = sorted(result[2], key=lambda pair: pair[0])
        assert got == want, (i, steps[: i + 1])
    assert got_transcript == expected_transcript


RESTORE_JS = """([now, state, config]) => {
    const room = new window.m.ReliableRoom('00'.repeat(20), '01'.repeat(32), config, state, now);
    room.connected('02'.repeat(32), now);
    const frames = room.framesToSend();
    const resent = frames.filter(([, f]) => f.t === 'msg').map(([, f]) => f.env.seq);
    const since = frames.filter(([, f]) => f.t === 'hist-req').map(([, f]) => f.since);
    const env = room.reserve('next', now);
    return [
        room.refusedOnRestore.map(e => [e.author, e.seq]),
        room.transcript().map(e => [e.author, e.seq]),
        resent,
        since,
        room.trackedAuthors,
        {...room.counters},
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
    delivered=st.lists(st.tuples(AUTHOR, st.integers(0, 6)), max_size=8),
    config=CONFIGS,
)
async def test_same_repair_on_restore(
    page: Any,  # noqa: F811
    start: float,
    seq: int,
    clock: int | tuple[str, int],
    saved: list[tuple[int, int, int | tuple[str, int]]],
    delivered: list[tuple[int, int]],
    config: dict[str, Any],
) -> None:
    """A saved state, poisoned or not (2^53 is what the old code signed after 2^53-1),
    restores to the same clock, history, re-sends, authors and `since` in both cores
    (with more authors saved than the small bounds keep)."""
    authors = [ME, *MEMBERS]
    saved_delivered = {AUTHORS[a]: n for a, n in delivered}
    history = [
        Envelope(ROOM, authors[a], s, lamport_at(lam, start), int(start * 1000), "text", "", SIG)
        for a, s, lam in saved
    ]
    state = {
        "seq": seq,
        "lamport": lamport_at(clock, start),
        "delivered": {a.hex(): n for a, n in saved_delivered.items()},
        "history": [e.to_json() for e in history],
    }
    room = ReliableRoom(
        ROOM,
        ME,
        lambda _: SIG,
        lambda *_: True,
        RoomConfig(**config),
        seq=seq,
        lamport=lamport_at(clock, start),
        delivered=saved_delivered,
        history=history,
        now=start,
    )
    room.connected(MEMBERS[0], start)
    frames = room.frames_to_send()
    expected: list[Any] = [
        [[e.author.hex(), e.seq] for e in room.refused_on_restore],
        [[e.author.hex(), e.seq] for e in room.transcript()],
        [f["env"]["seq"] for _, f in frames if f["t"] == "msg"],
        [f["since"] for _, f in frames if f["t"] == "hist-req"],
        room.tracked_authors,
        dict(room.counters),
    ]
    lamport = room.send("next", start).lamport
    expected.append(lamport)
    got = await page.evaluate(RESTORE_JS, [start, state, camel(config)])
    assert got == expected
    assert lamport <= int(start * 1000) + LEAD // 2 + 1  # the repaired clock can send


SPLIT_JS = """([budgets, history, since, now]) => {
    const out = [];
    for (const [frameBytes, answerBytes] of budgets) {
        const config = {historyFrameBytes: frameBytes, historyAnswerBytes: answerBytes};
        const room = new window.m.ReliableRoom('00'.repeat(20), '01'.repeat(32), config,
                                               {history});
        room.receive('02'.repeat(32), {t: 'hist-req', since}, now);
        out.push(room.framesToSend().map(([, f]) => f.envs.map(e => [e.author, e.seq])));
    }
    return [out, history.map(window.m.wireSize)];
}"""


async def test_history_answers_split_at_the_same_byte(page: Any) -> None:  # noqa: F811
    """Frame and answer budgets swept byte by byte over envelopes of every escape: both
    cores cut the answer at the same envelope and the frames at the same place (a
    random run seldom lands on a boundary)."""
    start = 1_763_880_000.0
    history = [
        Envelope(ROOM, AUTHORS[2 + i % 6], 1 + i // 6, int(start * 1000) + i, int(start * 1000),
                 "text" if i % 3 else "\u00e9", BODIES[i % len(BODIES)], SIG)
        for i in range(24)
    ]  # fmt: skip
    base = 2 * history[0].wire_size()
    # the newest first, as an answer takes them: every prefix sum is a place to cut
    newest = [e.wire_size() for e in reversed(history) if e.author != AUTHORS[3] or e.seq > 2]
    cuts = [sum(newest[:n]) + d for n in range(1, len(newest)) for d in (-1, 0, 1)]
    budgets = [(frame, 10**6) for frame in range(base - 40, base + 700, 7)]
    budgets += [(1_000, answer) for answer in cuts] + [(4_000, answer) for answer in cuts]
    since = {AUTHORS[3].hex(): 2}
    expected = []
    for frame_bytes, answer_bytes in budgets:
        config = RoomConfig(history_frame_bytes=frame_bytes, history_answer_bytes=answer_bytes)
        room = ReliableRoom(ROOM, ME, lambda _: SIG, lambda *_: True, config, history=history)
        room.receive(MEMBERS[0], {"t": "hist-req", "since": since}, start)
        frames = [f for _, f in room.frames_to_send()]
        for f in frames:  # the budget holds for what Python sends, byte for byte
            size = len(json.dumps(f, separators=(",", ":")))
            assert size <= frame_bytes or len(f["envs"]) == 1
        sent = sum(e.wire_size() for e in history if [e.author.hex(), e.seq] in [
            [x["author"], x["seq"]] for f in frames for x in f["envs"]])  # fmt: skip
        assert sent <= answer_bytes or sum(len(f["envs"]) for f in frames) == 1
        expected.append([[[e["author"], e["seq"]] for e in f["envs"]] for f in frames])
    state = [e.to_json() for e in history]
    got, js_sizes = await page.evaluate(SPLIT_JS, [budgets, state, since, start])
    assert js_sizes == [e.wire_size() for e in history]
    assert got == expected
    assert len({len(frames) for frames in expected}) > 3  # the sweep did move the cuts
