"""The browser's messaging core and peer/messaging.py are twins: the same random
run of connections, frames, sends and timers gives the same deliveries, gaps,
frames out, clock and counters, step for step, and the same restored state gives
the same repair (hypothesis generates, Chromium runs the JS).

Half the runs use small bounds (a few authors, early envelopes, `since` entries,
history bytes per frame and per answer, a short hist-req interval and resend
interval, a few names), so that many authors, big and oddly escaped bodies and
repeated history requests reach every bound and both cores must cut at the same
place.

Envelopes of every kind go through both: chats with names and replies,
reactions on and off, bodies good and bad (numbers as doubles, deep nesting,
lone surrogate escapes, names that change in NFC), sent by the cores
themselves or signed by others; both must read the same content, count the
same defects, keep the same names and fold the same reactions.

The rate limit and blocks (docs/protocol.md 5.4) go through both too: small
buckets of envelopes and bytes that the steps empty and time refills, and
members and forwarded authors blocked and unblocked between steps; both must
drop, report, hide and refuse the same."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from peer.messaging import (
    Chat,
    Content,
    Delivered,
    Discontinuity,
    Envelope,
    Flooding,
    MessageRef,
    MessagingError,
    Reissue,
    ReliableRoom,
    RoomConfig,
    key_colour,
    parse_content,
    reactions_for,
    short_tag,
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
    "max_names": 3,
    "flood_messages": 4,
    "flood_rate": 0.7,
    "flood_bytes": 2_000,
    "flood_byte_rate": 300.5,
    "flood_report_interval": 4.0,
}
"""Small bounds, reached in a few steps; the other runs use the defaults."""
TIGHT = {**SMALL, "flood_messages": 2, "flood_rate": 0.05, "flood_bytes": 700}
"""A rate limit that most runs reach (docs/protocol.md 5.4)."""
CONFIGS = st.sampled_from([{"resume_window": 5.0}, SMALL, SMALL, TIGHT])


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


def envelope(
    author: int, seq: int, lamport: int, start: float, body: int | tuple[str, str] = -1
) -> dict[str, Any]:
    """An envelope of `author` (-1: ours, said on another device): kind text with one of
    BODIES (-1: "m<seq>"), or a (kind, body) of any content."""
    ts = int(start * 1000) + 1_000 * seq
    if isinstance(body, tuple):
        kind, text = body
    else:
        kind, text = "text", f"m{seq}" if body < 0 else BODIES[body]
    env = Envelope(ROOM, ME if author < 0 else AUTHORS[author], seq, lamport, ts, kind, text, SIG)
    return env.to_json()


# What envelopes say: names, references, emoji and bodies, good and bad. Characters
# unassigned in Python's Unicode database are left out of names: a browser with a later
# Unicode may compose them differently in NFC (docs/protocol.md 5.0.1 lets it).
CHARS = st.characters(exclude_categories=("Cs", "Cn"))
NAME = st.one_of(
    st.sampled_from(["Ana", "A\u0301na", "\u00c1na", "\u00e9" * 32, "e\u0301" * 32, "\u0958" * 21]),
    st.sampled_from(["", "\u00e9" * 33, "Ana\u202e", "a\x00", "a\x9f", "\u2066", "\u200d"]),
    st.text(CHARS, max_size=24),
    st.text(st.sampled_from("ae\u0301\u0958\u1100\u1161\u11a8\u0344\u212b\U0001f600"), max_size=40),
)
"""Names: valid, at the 64-byte edge before and after NFC, forbidden characters,
Hangul jamo and singletons that NFC composes or replaces."""
EMOJI = st.one_of(
    st.sampled_from(["\U0001f44d", "\u2764\ufe0f", "+1", "\U0001f3f4" * 16]),
    st.sampled_from(["", "\U0001f3f4" * 17, "a\n", "\u202e"]),
    st.text(CHARS, max_size=18),
)
REF_AUTHOR = st.sampled_from([*(a.hex() for a in AUTHORS), ME.hex(), "AB" * 32, "ab" * 31])
REF = st.fixed_dictionaries(
    {
        "author": REF_AUTHOR,
        "seq": st.integers(1, 4)
        | st.sampled_from([0, -1, 2**53 - 1, 2**53, 2**64, 2.0, 2.5, True, "2", None]),
    }
)
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(CHARS, max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(CHARS, max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
CHAT = st.fixed_dictionaries(
    {"text": st.text(CHARS, max_size=12) | st.sampled_from(BODIES) | JSON_VALUE},
    optional={"name": NAME | JSON_VALUE, "re": REF | JSON_VALUE, "later": JSON_VALUE},
)
REACTION = st.fixed_dictionaries(
    {"re": REF, "emoji": EMOJI, "on": st.booleans()},
    optional={"name": NAME, "x": JSON_VALUE},
) | st.fixed_dictionaries({"re": REF | JSON_VALUE, "emoji": EMOJI | JSON_VALUE, "on": JSON_VALUE})


def reply_body(seq: str) -> str:
    """A chat replying to AUTHORS[0]'s message `seq`, written as given."""
    return '{"text":"a","re":{"author":"' + AUTHORS[0].hex() + '","seq":' + seq + "}}"


ODD_BODIES = st.sampled_from(
    [
        reply_body("1.0"),
        reply_body("1e0"),
        reply_body("9007199254740991.2"),
        reply_body("9007199254740993"),
        reply_body("-0"),
        '{"text":"a","x":' + "1" * 5000 + "}",
        '{"text":"a","x":1e999}',
        '{"text":NaN}',
        '{"text":"a","x":-Infinity}',
        '{"text":"\\ud800"}',
        '{"text":"\\ud83d\\ude00","name":"\\ud83d\\ude00"}',
        '{"text":"a","name":"\\udc00"}',
        '{"text":"a","name":"x","name":"Ana"}',
        '{"__proto__":{"text":"a"},"text":"b"}',
        '{"text":"a","x":' + "[" * 7 + "]" * 7 + "}",
        '{"text":"a","x":' + "[" * 8 + "]" * 8 + "}",
        '{"text":"a","x":"' + "[" * 20 + '"}',
        '{"text":"a","x":"\\"' + "[" * 20 + '"}',
        "[" * 3000 + "]" * 3000,
        '{"text":"a"} ',
        '\ufeff{"text":"a"}',
        '{"text":"a"}x',
        '{"emoji":"+1","on":true,"re":{"author":"' + AUTHORS[1].hex() + '","seq":1}}',
    ]
)
"""Bodies where a JSON parser could read what JSON.parse reads differently."""


def dumps(value: Any, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


CONTENT = st.one_of(
    st.tuples(st.just("chat"), st.builds(dumps, CHAT, st.booleans())),
    st.tuples(st.just("reaction"), st.builds(dumps, REACTION, st.booleans())),
    st.tuples(st.sampled_from(["chat", "reaction"]), ODD_BODIES),
    st.tuples(st.sampled_from(["chat", "reaction", "text", "poll"]), st.text(CHARS, max_size=20)),
)
"""(kind, body) of an envelope someone else signed."""


def content_json(content: Content | None) -> Any:
    """Content as the JS run reports it."""
    if content is None:
        return None
    if isinstance(content, Chat):
        reply = content.reply_to
        return ["chat", content.text, content.name, reply and [reply.author.hex(), reply.seq]]
    target = [content.target.author.hex(), content.target.seq]
    return ["reaction", target, content.emoji, content.on, content.name]


def reactions_json(history: list[Envelope]) -> list[Any]:
    return [
        [
            f"{ref.author.hex()}:{ref.seq}",
            [[e, sorted(k.hex() for k in who)] for e, who in by.items()],
        ]
        for ref, by in reactions_for(history).items()
    ]


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
BODY = st.integers(-1, len(BODIES) - 1) | CONTENT | CONTENT
SINCE = st.lists(st.tuples(st.integers(0, len(AUTHORS)), st.integers(0, 4)), max_size=5)
"""Entries of a hist-req's map (index len(AUTHORS): a key that is not lower-case hex)."""
LIKELY_LAMPORT = st.integers(0, 20) | st.integers(0, 20) | LAMPORT
"""Mostly lamports every member accepts, so that envelopes pile up and bounds are met."""
FREQUENT_AUTHOR = st.integers(0, 3) | AUTHOR
"""Mostly a few authors, so that their envelopes come early, late and twice."""
ENVELOPE = st.tuples(FREQUENT_AUTHOR, st.integers(1, 16), LIKELY_LAMPORT, BODY)
CONNECT = st.tuples(st.just("connect"), MEMBER)
SEND = st.tuples(st.just("send"), st.text(max_size=8) | st.sampled_from(BODIES))
OWN_AUTHOR = st.sampled_from([*(a.hex() for a in AUTHORS), ME.hex(), "ab" * 31])
"""What a UI names a message by (a key too short: refused by both)."""
OWN_REF = st.none() | st.tuples(OWN_AUTHOR, st.integers(0, 4)).map(list)
SAY = st.tuples(st.just("say"), st.text(CHARS, max_size=8), st.none() | NAME, OWN_REF)
REACT = st.tuples(
    st.just("react"), st.tuples(OWN_AUTHOR, st.integers(0, 4)).map(list), EMOJI,
    st.booleans(), st.none() | NAME,
)  # fmt: skip
MSG = st.tuples(st.just("msg"), MEMBER, FREQUENT_AUTHOR, st.integers(1, 16), LIKELY_LAMPORT, BODY)
OWN = st.tuples(st.just("msg"), MEMBER, st.just(-1), st.integers(1, 12), LIKELY_LAMPORT, BODY)
"""Our own envelope, said on another device holding our key: a proof we are behind."""
HIST = st.tuples(st.just("hist"), MEMBER, st.lists(ENVELOPE, max_size=6))
HIST_REQ = st.tuples(st.just("hist-req"), MEMBER, SINCE)


def burst(member: int, author: int, start: int, n: int) -> tuple[Any, ...]:
    return ("hist", member, [(author, s, 5, -1) for s in range(start, start + n)])


BURST = st.builds(burst, MEMBER, st.integers(0, 3), st.integers(1, 10), st.integers(3, 8))
"""One author's run of new envelopes at once: what empties a rate limit."""
BLOCK = st.tuples(st.sampled_from(["block", "unblock"]), st.integers(0, 3))
"""Block or unblock one of the members or the first two forwarded authors."""
STEP = st.one_of(
    BLOCK,
    BURST,
    CONNECT,
    CONNECT,
    st.tuples(st.just("disconnect"), MEMBER),
    SEND,
    SAY,
    REACT,
    st.tuples(st.just("timer"), st.floats(0, 40) | st.sampled_from([0.5, 1.5, 3.0])),
    MSG,
    MSG,
    OWN,
    HIST,
    HIST,
    st.tuples(st.just("ack"), MEMBER, st.integers(-1, 6)),
    HIST_REQ,
    HIST_REQ,
)
"""Weighted towards what fills the bounds: connections, envelopes, history requests."""

CONTENT_JS = """
    const contentJson = (c) => c === null ? null : c.type === 'chat'
        ? ['chat', c.text, c.name, c.replyTo && [c.replyTo.author, c.replyTo.seq]]
        : ['reaction', [c.target.author, c.target.seq], c.emoji, c.on, c.name];
    const reactionsJson = (history) => [...m.reactionsFor(history)].map(([target, by]) =>
        [target, [...by].map(([emoji, who]) => [emoji, [...who].sort()])]);
"""

RUN_JS = (
    """async ([start, steps, config]) => {
    const m = window.m;"""
    + CONTENT_JS
    + """
    const room = new m.ReliableRoom('00'.repeat(20), '01'.repeat(32), config);
    const members = ['02'.repeat(32), '03'.repeat(32)];
    const authors = [...members, '10'.repeat(32), '11'.repeat(32)];
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
            else if (kind === 'say') {
                const replyTo = step[3] && {author: step[3][0], seq: step[3][1]};
                const env = room.reserveChat(step[1], now, {name: step[2], replyTo});
                room.commit({...env, sig: 'ab'.repeat(64)}, now);
            }
            else if (kind === 'react') {
                const target = {author: step[1][0], seq: step[1][1]};
                const options = {on: step[3], name: step[4]};
                const env = room.reserveReaction(target, step[2], now, options);
                room.commit({...env, sig: 'ab'.repeat(64)}, now);
            }
            else if (kind === 'timer') { now += step[1]; room.handleTimer(now); }
            else if (kind === 'block') room.block(authors[step[1]]);
            else if (kind === 'unblock') room.unblock(authors[step[1]]);
            else room.receive(members[step[1]], step[2], now);
        } catch (e) {
            if (!(e instanceof m.MessagingError)) throw e;
            error = true;
        }
        const events = [];
        for (let batch = room.takeEvents(); batch.length; batch = room.takeEvents()) {
            for (const e of batch) {
                if (e.type === 'delivered') {
                    events.push(['d', e.env.author, e.env.seq, contentJson(e.content), e.replaces]);
                } else if (e.type === 'reissue') {
                    // as the glue does: each said again under a new seq
                    events.push(['r', e.envs.map(env => env.seq)]);
                    for (const old of e.envs) {
                        const env = room.reserve(old.body, now, old.kind, old.seq);
                        room.commit({...env, sig: 'ab'.repeat(64)}, now, old.seq);
                    }
                } else if (e.type === 'flooding') events.push(['f', e.author, e.dropped]);
                else events.push(['g', e.author, e.first, e.last]);
            }
        }
        const sizes = room.transcript().map(m.wireSize);
        out.push([error, events, room.framesToSend(), room.timer(), room.lamport,
                  {...room.counters}, room.trackedAuthors, sizes, [...room.names()],
                  [...room.blocked].sort()]);
    }
    const transcript = room.transcript();
    const keys = [...new Set(transcript.map(e => e.author))];
    return [out, transcript.map(e => [e.author, e.seq]), reactionsJson(transcript),
            keys.map(k => [m.shortTag(k), m.keyColour(k)])];
}"""
)


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
    """Each step's outputs, then the transcript, the reactions folded over it and the
    tags and colours of its authors."""
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
            elif kind == "say":
                reply = step[3] and MessageRef(bytes.fromhex(step[3][0]), step[3][1])
                room.say(step[1], now, name=step[2], reply_to=reply)
            elif kind == "react":
                target = MessageRef(bytes.fromhex(step[1][0]), step[1][1])
                room.react(target, step[2], now, on=step[3], name=step[4])
            elif kind == "timer":
                now += step[1]
                room.handle_timer(now)
            elif kind == "block":
                room.block(AUTHORS[step[1]])
            elif kind == "unblock":
                room.unblock(AUTHORS[step[1]])
            else:
                room.receive(MEMBERS[step[1]], step[2], now)
        except MessagingError:
            error = True
        events: list[list[Any]] = []
        while (event := room.next_event()) is not None:
            if isinstance(event, Delivered):
                env, content = event.envelope, content_json(event.content)
                events.append(["d", env.author.hex(), env.seq, content, event.replaces])
            elif isinstance(event, Reissue):
                events.append(["r", [old.seq for old in event.envelopes]])
                for old in event.envelopes:
                    room.send(old.body, now, old.kind, replaces=old.seq)
            elif isinstance(event, Discontinuity):
                events.append(["g", event.author.hex(), event.first, event.last])
            elif isinstance(event, Flooding):
                events.append(["f", event.author.hex(), event.dropped])
        frames = [[member.hex(), frame] for member, frame in room.frames_to_send()]
        sizes = [e.wire_size() for e in room.transcript()]
        names = [[k.hex(), name] for k, name in room.names.items()]
        out.append(
            [error, events, frames, room.get_timer(), room.lamport, dict(room.counters),
             room.tracked_authors, sizes, names, sorted(k.hex() for k in room.blocked)]
        )  # fmt: skip
    transcript = room.transcript()
    keys = list(dict.fromkeys(e.author for e in transcript))
    return out, [
        [[e.author.hex(), e.seq] for e in transcript],
        reactions_json(transcript),
        [[short_tag(k), key_colour(k)] for k in keys],
    ]


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
    got_steps, *got_transcript = await page.evaluate(RUN_JS, [start, concrete, camel(config)])
    for i, (want, got) in enumerate(zip(expected_steps, got_steps, strict=True)):
        # Frames to different members may leave in any order (Python iterates a
        # set); to each member, the order is the protocol's and must match.
        for result in (want, got):
            result[2] = sorted(result[2], key=lambda pair: pair[0])
        assert got == want, (i, steps[: i + 1])
    assert got_transcript == expected_transcript
    covered(expected_steps)


def covered(outputs: list[Any]) -> None:
    """What a run reached (pytest --hypothesis-show-statistics)."""
    for error, events, *_ in outputs:
        for said in (e[3] for e in events if e[0] == "d" and e[3] is not None):
            named = said[4] if said[0] == "reaction" else said[2]
            event(f"delivered {said[0]}" + (" named" if named else ""))
        if error:
            event("an own send refused")
        if any(e[0] == "r" for e in events):
            event("our key was behind: what we said taken back and said again")
    for counter in outputs[-1][5]:
        if counter == "own.behind" or (
            counter.startswith("drop.bad_") and counter != "drop.bad_history_request"
        ):
            event(counter)
    if any(len(out[8]) >= 3 for out in outputs):
        event("names at the small bound")
    for counter in ("drop.flood", "drop.blocked", "refused.blocked"):
        if counter in outputs[-1][5]:
            event(counter)
    if any(e[0] == "f" for out in outputs for e in out[1]):
        event("flooding reported")
    if any(out[9] for out in outputs) and any(e[0] == "d" for out in outputs for e in out[1]):
        event("delivered while a key was blocked")


PARSE_JS = (
    """([bodies, keys]) => {
    const m = window.m;"""
    + CONTENT_JS
    + """
    return [
        bodies.map(([kind, body]) => {
            const [content, defects] = m.parseContent(kind, body);
            return [contentJson(content), defects];
        }),
        keys.map(k => [m.shortTag(k), m.keyColour(k)]),
    ];
}"""
)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    bodies=st.lists(CONTENT, min_size=50, max_size=100),
    keys=st.lists(st.binary(min_size=32, max_size=32), max_size=20),
)
async def test_same_content_from_the_same_body(
    page: Any,  # noqa: F811
    bodies: list[tuple[str, str]],
    keys: list[bytes],
) -> None:
    """Many bodies per page call: the same content and the same defects, in the same
    order, from both parsers; the same tag and colour from any key."""
    expected = []
    for kind, body in bodies:
        content, defects = parse_content(kind, body)
        expected.append([content_json(content), list(defects)])
    got, tags = await page.evaluate(PARSE_JS, [bodies, [k.hex() for k in keys]])
    for (kind, body), want, have in zip(bodies, expected, got, strict=True):
        assert have == want, (kind, body)
    assert tags == [[short_tag(k), key_colour(k)] for k in keys]


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
        [...room.names()],
        env.lamport,
    ];
}"""

RESTORED_ENVELOPE = st.tuples(
    st.integers(0, 2), st.integers(1, 6), LAMPORT | st.just(2**53), st.integers(-1, 3)
)
"""(author, seq, lamport, name): -1 a text envelope, else a chat named n0..n2 or badly."""
RESTORED_NAMES = ["n0", "n1", "n2", "\u202e"]


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
    saved: list[tuple[int, int, int | tuple[str, int], int]],
    delivered: list[tuple[int, int]],
    config: dict[str, Any],
) -> None:
    """A saved state, poisoned or not (2^53 is what the old code signed after 2^53-1),
    restores to the same clock, history, re-sends, authors, `since` and names in both
    cores (with more authors saved than the small bounds keep)."""
    authors = [ME, *MEMBERS]
    saved_delivered = {AUTHORS[a]: n for a, n in delivered}
    history = [
        Envelope(ROOM, authors[a], s, lamport_at(lam, start), int(start * 1000), "text", "", SIG)
        if name < 0
        else Envelope(ROOM, authors[a], s, lamport_at(lam, start), int(start * 1000), "chat",
                      json.dumps({"text": "", "name": RESTORED_NAMES[name]}), SIG)
        for a, s, lam, name in saved
    ]  # fmt: skip
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
        [[k.hex(), name] for k, name in room.names.items()],
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
