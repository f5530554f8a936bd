"""The browser's messaging core and peer/messaging.py are twins: the same random
run of connections, frames, sends and timers gives the same deliveries, gaps
and frames out, step for step (hypothesis generates, Chromium runs the JS)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peer.messaging import Delivered, Discontinuity, Envelope, MessagingError, ReliableRoom

from .test_vectors import page  # noqa: F401  (fixture)

ROOM = bytes(20)
ME = bytes([1]) * 32
MEMBERS = [bytes([2]) * 32, bytes([3]) * 32]
SIG = bytes([0xAB]) * 64


def envelope(author: int, seq: int, lamport: int) -> dict[str, Any]:
    env = Envelope(ROOM, MEMBERS[author], seq, lamport, 1_000 * seq, "text", f"m{seq}", SIG)
    return env.to_json()


MEMBER = st.integers(0, 1)
STEP = st.one_of(
    st.tuples(st.just("connect"), MEMBER),
    st.tuples(st.just("disconnect"), MEMBER),
    st.tuples(st.just("send"), st.text(max_size=8)),
    st.tuples(st.just("timer"), st.floats(0, 40)),
    st.tuples(st.just("msg"), MEMBER, st.integers(0, 1), st.integers(1, 8), st.integers(0, 20)),
    st.tuples(st.just("ack"), MEMBER, st.integers(-1, 6)),
    st.tuples(st.just("hist-req"), MEMBER, st.integers(0, 4)),
)

RUN_JS = """async (steps) => {
    const m = window.m;
    const room = new m.ReliableRoom('00'.repeat(20), '01'.repeat(32), {resumeWindow: 5});
    const members = ['02'.repeat(32), '03'.repeat(32)];
    let now = 0;
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
        out.push([error, events, room.framesToSend(), room.timer()]);
    }
    return [out, room.transcript().map(e => [e.author, e.seq])];
}"""


def frame_for(step: tuple[Any, ...]) -> dict[str, Any]:
    kind = step[0]
    if kind == "msg":
        _, _, author, seq, lamport = step
        return {"t": "msg", "env": envelope(author, seq, lamport)}
    if kind == "ack":
        return {"t": "ack", "seq": step[2]}
    return {"t": "hist-req", "since": {MEMBERS[0].hex(): step[2]}}


def run_python(steps: list[tuple[Any, ...]]) -> tuple[list[Any], list[Any]]:
    from peer.messaging import RoomConfig

    room = ReliableRoom(ROOM, ME, lambda _: SIG, lambda *_: True, RoomConfig(resume_window=5.0))
    now = 0.0
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
                room.receive(MEMBERS[step[1]], frame_for(step), now)
        except MessagingError:
            error = True
        events = []
        while (event := room.next_event()) is not None:
            if isinstance(event, Delivered):
                events.append(["d", event.envelope.author.hex(), event.envelope.seq])
            elif isinstance(event, Discontinuity):
                events.append(["g", event.author.hex(), event.first, event.last])
        frames = [[member.hex(), frame] for member, frame in room.frames_to_send()]
        out.append([error, events, frames, room.get_timer()])
    return out, [[e.author.hex(), e.seq] for e in room.transcript()]


def js_steps(steps: list[tuple[Any, ...]]) -> list[list[Any]]:
    """The same steps for the page: frames built here, so both cores get equal input."""
    converted: list[list[Any]] = []
    for step in steps:
        if step[0] in ("msg", "ack", "hist-req"):
            converted.append(["frame", step[1], frame_for(step)])
        else:
            converted.append(list(step))
    return converted


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=st.lists(STEP, min_size=1, max_size=60))
async def test_same_steps_same_outputs(page: Any, steps: list[tuple[Any, ...]]) -> None:  # noqa: F811
    expected_steps, expected_transcript = run_python(steps)
    got_steps, got_transcript = await page.evaluate(RUN_JS, js_steps(steps))
    for i, (want, got) in enumerate(zip(expected_steps, got_steps, strict=True)):
        # Frames to different members may leave in any order (Python iterates a
        # set); to each member, the order is the protocol's and must match.
        for result in (want, got):
            result[2] = sorted(result[2], key=lambda pair: pair[0])
        assert got == want, (i, steps[: i + 1])
    assert got_transcript == expected_transcript
