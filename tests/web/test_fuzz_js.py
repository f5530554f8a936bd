"""The browser's parsers and messaging core take any input: a typed ProtocolError
or a counted drop, never another exception (hypothesis generates, Chromium runs).
Its file offers are bounded as Python's are: the same operations give the same
counters and state in both (a differential test)."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peer.files import OfferLimits
from peer.store import PeerStore
from peer.transfer import Transfers
from peer.webrtc import ControlFrameRejected, parse_control_frame

from .test_vectors import page  # noqa: F401  (fixture)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=6)
    ),
    max_leaves=20,
)
KEYS = ["env", "envs", "seq", "since", "room", "author", "lamport", "ts", "kind", "body"]
FRAME = st.fixed_dictionaries(
    {"t": st.sampled_from(["msg", "hist", "ack", "hist-req", "file-offer", "x"])},
    optional={k: JSON for k in KEYS},
)

RUN = """async (inputs) => {
    const m = window.m;
    Object.assign(m, await import('/web/js/frames.js'));
    const room = new m.ReliableRoom('00'.repeat(20), '11'.repeat(32));
    room.connected('22'.repeat(32), 0);
    const outcomes = [];
    for (const [kind, value] of inputs) {
        try {
            if (kind === 'envelope') m.parseEnvelope(value);
            else if (kind === 'offer') m.parseOffer(value, 1 << 20);
            else if (kind === 'sdp') m.parseDescription(value);
            else if (kind === 'frame') room.receive('22'.repeat(32), value, 1);
            else if (kind === 'control') m.parseControlFrame(value);
            else if (kind === 'chunk') {
                const d = new m.Download({id: '0'.repeat(32), name: 'x', size: 100,
                                          mime: 'a/b', sha256: '00'.repeat(32), chunk: 1024});
                await d.receiveChunk(m.fromHex(value));
            }
            outcomes.push('ok');
        } catch (e) {
            outcomes.push(e instanceof m.ProtocolError ? 'typed' : `${e.name}: ${e.message}`);
        }
    }
    room.handleTimer(100);
    room.framesToSend();
    return outcomes;
}"""


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    batch=st.lists(
        st.one_of(
            st.tuples(st.sampled_from(["envelope", "offer", "sdp"]), JSON),
            st.tuples(st.just("frame"), FRAME | JSON),
            st.tuples(st.just("chunk"), st.binary(max_size=120).map(bytes.hex)),
            st.tuples(st.just("control"), st.text() | JSON.map(json.dumps) | st.text('[]{}"\\:,1')),
        ),
        min_size=1,
        max_size=40,
    )
)
async def test_js_parsers_and_core_never_throw_untyped(page: Any, batch: list[Any]) -> None:  # noqa: F811
    outcomes = await page.evaluate(RUN, batch)
    assert all(o in ("ok", "typed") for o in outcomes), [
        (i, o) for i, o in zip(batch, outcomes, strict=True) if o not in ("ok", "typed")
    ]


CONTROL = """async (texts) => {
    const {parseControlFrame} = await import('/web/js/frames.js');
    return texts.map((text) => {
        try {
            return JSON.stringify(parseControlFrame(text));
        } catch (e) {
            return e.name === 'ProtocolError' ? e.code : `${e.name}: ${e.message}`;
        }
    });
}"""


def python_control(text: str) -> str:
    try:
        return json.dumps(parse_control_frame(text), separators=(",", ":"))
    except ControlFrameRejected as exc:
        return exc.code


async def test_control_frames_deep_or_bad_are_refused_as_in_python(page: Any) -> None:  # noqa: F811
    texts = [
        "[" * 200_000,
        "[" * 100_000 + "]" * 100_000,
        '{"t":' * 40_000 + "1" + "}" * 40_000,
        "[" * 17 + '"\\' * 100_000,
        '{"t":"' + "[" * 100 + '"}',
        '{"t":"a\\"[[[[[[[[[[[[[[[[[[[[[["}',
        '{"a":' * 16 + "1" + "}" * 16,
        '{"a":' * 17 + "1" + "}" * 17,
        "[]",
        "nope",
        json.dumps({"t": "x", "pad": "a" * 300_000}),
    ]
    got = await page.evaluate(CONTROL, texts)
    assert got == [python_control(t) for t in texts]
    assert got[:4] == ["too_deep"] * 4 and got[-1] == "too_large"


TWIN = """async ([ops, limits]) => {
    const m = window.m;
    let now = 0;
    const sent = [];
    const t = new m.Transfers({
        sendControl: (member, frame) => { sent.push([member, frame.t, frame.id]); return true; },
        openChannel: () => null, emit: () => {}, maxSize: 1 << 20, autoAcceptBytes: 1 << 30,
        limits, now: () => now,
    });
    for (const [kind, member, value, at] of ops) {
        now = at;
        if (kind === 'offer') t.onControl(member, value);
        else if (kind === 'accept') t.accept(value);
        else if (kind === 'decline') t.decline(value);
        else if (kind === 'leave') t.memberLeft(member);
        else t.handleTimer();
    }
    t.close();
    return {counters: t.counters, offers: [...t.offers.kept.keys()],
            incoming: [...t.incoming.keys()], sent};
}"""

TWIN_LIMITS = OfferLimits(
    per_member=3,
    per_room=4,
    rate=0.5,
    burst=3,
    max_age=30,
    downloads_per_member=1,
    downloads_per_room=2,
    stall=10,
    settled=4,
    members=2,
)
MEMBERS = ["aa" * 32, "bb" * 32, "cc" * 32]
IDS = [f"{n:032x}" for n in range(12)]


def offer_frame(file_id: str, size: int, good: bool) -> dict[str, Any]:
    return {
        "t": "file-offer",
        "id": file_id,
        "name": "f.bin",
        "size": size,
        "mime": "application/octet-stream" if good else "no mime",
        "sha256": hashlib.sha256(b"x").hexdigest(),
        "chunk": 65536,
    }


OP = st.builds(
    lambda kind, m, i, size, good: (
        (kind, m, offer_frame(i, size, good) if kind == "offer" else i)
    ),
    st.sampled_from(["offer"] * 6 + ["accept", "decline", "leave", "timer"]),
    st.sampled_from(MEMBERS),
    st.sampled_from(IDS),
    st.integers(1, 100),
    st.sampled_from([True, True, True, False]),
)
STEP = st.sampled_from([0.0] * 4 + [0.3, 1.0, 4.0, 11.0, 31.0])


async def python_twin(ops: list[Any], directory: Path) -> dict[str, Any]:
    clock = [0.0]
    sent: list[list[Any]] = []
    transfers = Transfers(
        PeerStore(directory / "store"),
        lambda member, frame: sent.append([member.hex(), frame["t"], frame["id"]]) is None,
        lambda member, label: None,
        lambda event: None,
        1 << 20,
        limits=TWIN_LIMITS,
        clock=lambda: clock[0],
    )
    transfers.auto_accept = directory / "in"
    for kind, member, value, at in ops:
        clock[0] = at
        key = bytes.fromhex(member)
        if kind == "offer":
            transfers.on_control(key, value)
        elif kind in ("accept", "decline"):
            with contextlib.suppress(KeyError):  # the browser's says nothing
                getattr(transfers, kind)(value, *([directory / "in"] if kind == "accept" else []))
        elif kind == "leave":
            transfers.member_left(key)
        else:
            transfers.handle_timer()
    await transfers.close()
    return {
        "counters": transfers.counters,
        "offers": [i for i in transfers.offers._kept],
        "incoming": list(transfers.incoming),
        "sent": sent,
    }


JS_LIMITS = {
    "perMember": TWIN_LIMITS.per_member,
    "perRoom": TWIN_LIMITS.per_room,
    "rate": TWIN_LIMITS.rate,
    "burst": TWIN_LIMITS.burst,
    "maxAge": TWIN_LIMITS.max_age,
    "downloadsPerMember": TWIN_LIMITS.downloads_per_member,
    "downloadsPerRoom": TWIN_LIMITS.downloads_per_room,
    "stall": TWIN_LIMITS.stall,
    "settled": TWIN_LIMITS.settled,
    "members": TWIN_LIMITS.members,
}


async def both(page: Any, steps: list[Any], directory: Path) -> dict[str, Any]:  # noqa: F811
    """Run the steps ((op, seconds since the previous), ...) in both; their common result."""
    ops, now = [], 0.0
    for (kind, member, value), step in steps:
        now += step
        ops.append([kind, member, value, now])
    browser = await page.evaluate(TWIN, [ops, JS_LIMITS])
    python = await python_twin(ops, directory)
    assert browser == python
    return python


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=st.lists(st.tuples(OP, STEP), max_size=60))
async def test_offer_bounds_are_the_same_in_the_browser_and_python(
    page: Any,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
    steps: list[Any],
) -> None:
    await both(page, steps, tmp_path_factory.mktemp("twin"))


async def test_every_bound_is_reached_the_same_way_in_both(page: Any, tmp_path: Path) -> None:  # noqa: F811
    a, b, c = MEMBERS
    offers = iter(IDS)

    def offer(member: str, step: float = 0.0, good: bool = True) -> Any:
        return (("offer", member, offer_frame(next(offers), 10, good)), step)

    steps = [
        offer(a),  # taken by the policy (a member has one slot)
        offer(a),
        offer(a),  # kept, waiting
        offer(a),  # a's burst of 3 is spent: dropped by rate
        offer(b),  # b's slot; the room's two slots are full now
        offer(b, good=False),  # malformed
        offer(c),  # a third member: no bucket left for it
        offer(a, 4.0),  # two tokens later: a's third kept offer
        offer(a),  # a keeps 3 at most
        offer(b),  # the room's fourth
        offer(b),  # the room keeps 4 at most
        (("timer", a, None), 10.0),  # no data: both downloads stall, a's oldest is taken
        (("decline", a, IDS[2]), 0.0),
        (("timer", a, None), 31.0),  # the rest stall or age out
    ]
    result = await both(page, steps, tmp_path)
    assert set(result["counters"]) == {
        "drop.offer_rate",
        "drop.offer_members",
        "drop.offer_malformed",
        "drop.offer_member_full",
        "drop.offer_room_full",
        "failed.download_stalled",
        "expired.offer",
    }, result


FLOOD = """async (count) => {
    const m = window.m;
    const t = new m.Transfers({sendControl: () => true, openChannel: () => null, emit: () => {},
                               maxSize: 1 << 20, autoAcceptBytes: 1 << 30, now: () => 5});
    const frame = {t: 'file-offer', name: 'x', size: 10, mime: 'a/b', sha256: '00'.repeat(32)};
    for (let n = 0; n < count; n++) {
        t.onControl('66'.repeat(32), {...frame, id: n.toString(16).padStart(32, '0')});
    }
    t.close();
    return [t.offers.size, t.incoming.size, t.counters];
}"""


async def test_a_flood_of_offers_keeps_the_browser_bounded(page: Any) -> None:  # noqa: F811
    limits = OfferLimits()
    offers, incoming, counters = await page.evaluate(FLOOD, 100_000)
    assert offers + incoming == limits.burst and incoming == limits.downloads_per_member
    assert counters == {"drop.offer_rate": 100_000 - limits.burst}
