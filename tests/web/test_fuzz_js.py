"""The browser's parsers and messaging core take any input: a typed ProtocolError
or a counted drop, never another exception (hypothesis generates, Chromium runs).
Its file offers, and what members' accepts make it upload, are bounded as
Python's are: the same operations give the same counters and state in both (a
differential test)."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peer.files import (
    BROWSER_ACCEPT,
    INLINE_IMAGE_BYTES,
    AcceptRule,
    FileOffer,
    OfferLimits,
    SharedFiles,
    UploadLimits,
)
from peer.store import PeerStore
from peer.transfer import HIGH_WATER, FileOffered, Transfers
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


TWIN = """async ([ops, limits, autoAccept]) => {
    const m = window.m;
    let now = 0;
    const sent = [];
    const offered = [];
    const t = new m.Transfers({
        sendControl: (member, frame) => { sent.push([member, frame.t, frame.id]); return true; },
        openChannel: () => null, maxSize: 1 << 22, autoAccept, limits, now: () => now,
        emit: (e) => { if (e.type === 'file-offered') offered.push([e.offer.id, e.earlier]); },
    });
    for (const [kind, member, value, at] of ops) {
        now = at;
        if (kind === 'offer') t.onControl(member, value);
        else if (kind === 'accept') t.accept(value);
        else if (kind === 'decline') t.decline(value);
        else if (kind === 'wait') t.onControl(member, {t: 'file-wait', id: value});
        else if (kind === 'leave') t.memberLeft(member);
        else t.handleTimer();
    }
    t.close();
    return {counters: t.counters, offers: [...t.offers.kept.keys()],
            incoming: [...t.incoming.keys()], sent, offered};
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


def offer_frame(
    file_id: str, size: int, good: bool, earlier: Any = False, mime: str = "application/x-f"
) -> dict[str, Any]:
    frame = {
        "t": "file-offer",
        "id": file_id,
        "name": "f.bin",
        "size": size,
        "mime": mime if good else "no mime",
        "sha256": hashlib.sha256(b"x").hexdigest(),
        "chunk": 65536,
    }
    if earlier is not False:
        frame["earlier"] = earlier
    return frame


OP = st.builds(
    lambda kind, m, i, size, good, earlier, mime: (
        (kind, m, offer_frame(i, size, good, earlier, mime) if kind == "offer" else i)
    ),
    st.sampled_from(["offer"] * 6 + ["accept", "decline", "wait", "leave", "timer"]),
    st.sampled_from(MEMBERS),
    st.sampled_from(IDS),
    st.integers(1, 100),
    st.sampled_from([True, True, True, False]),
    st.sampled_from([False, False, True, "yes"]),  # "yes": a malformed flag
    st.sampled_from(["application/x-f", "image/png", "IMAGE/GIF", "image/svg+xml"]),
)
RULE = st.builds(
    AcceptRule,
    st.sampled_from([None, 50]),
    st.booleans(),
    st.booleans(),
)


def js_rule(rule: AcceptRule) -> dict[str, Any]:
    return {
        "maxBytes": rule.max_bytes,
        "inlineImagesOnly": rule.inline_images_only,
        "earlier": rule.earlier,
    }


STEP = st.sampled_from([0.0] * 4 + [0.3, 1.0, 4.0, 11.0, 31.0])


async def python_twin(ops: list[Any], directory: Path, rule: AcceptRule) -> dict[str, Any]:
    clock = [0.0]
    sent: list[list[Any]] = []
    offered: list[list[Any]] = []

    def emit(event: Any) -> None:
        if isinstance(event, FileOffered):
            offered.append([event.offer.id, event.earlier])

    transfers = Transfers(
        PeerStore(directory / "store"),
        lambda member, frame: sent.append([member.hex(), frame["t"], frame["id"]]) is None,
        lambda member, label: None,
        emit,
        1 << 22,
        limits=TWIN_LIMITS,
        clock=lambda: clock[0],
    )
    transfers.auto_accept = directory / "in"
    transfers.accept_rule = rule
    for kind, member, value, at in ops:
        clock[0] = at
        key = bytes.fromhex(member)
        if kind == "offer":
            transfers.on_control(key, value)
        elif kind in ("accept", "decline"):
            with contextlib.suppress(KeyError):  # the browser's says nothing
                getattr(transfers, kind)(value, *([directory / "in"] if kind == "accept" else []))
        elif kind == "wait":  # the sender says our accept waits for a slot
            transfers.on_control(key, {"t": "file-wait", "id": value})
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
        "offered": offered,
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


async def both(
    page: Any,  # noqa: F811
    steps: list[Any],
    directory: Path,
    rule: AcceptRule | None = None,
) -> dict[str, Any]:
    """Run the steps ((op, seconds since the previous), ...) in both; their common result."""
    rule = rule or AcceptRule(earlier=True)
    ops, now = [], 0.0
    for (kind, member, value), step in steps:
        now += step
        ops.append([kind, member, value, now])
    browser = await page.evaluate(TWIN, [ops, JS_LIMITS, js_rule(rule)])
    python = await python_twin(ops, directory, rule)
    assert browser == python
    return python


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=st.lists(st.tuples(OP, STEP), max_size=60), rule=RULE)
async def test_offer_bounds_are_the_same_in_the_browser_and_python(
    page: Any,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
    steps: list[Any],
    rule: AcceptRule,
) -> None:
    await both(page, steps, tmp_path_factory.mktemp("twin"), rule)


async def test_the_accept_rules_take_the_same_offers_in_both(page: Any, tmp_path: Path) -> None:  # noqa: F811
    """The browser's own rule takes small inline images shared after it came, nothing
    else; the same rule in Python takes the same."""
    a, b = MEMBERS[:2]
    offers = iter(IDS)

    def offer(member: str, size: int, mime: str, earlier: bool = False) -> Any:
        return (("offer", member, offer_frame(next(offers), size, True, earlier, mime)), 0.0)

    small = INLINE_IMAGE_BYTES
    steps = [
        offer(a, 10, "image/png"),  # taken
        offer(b, small, "image/jpeg"),  # taken: at the limit
        offer(a, 10, "image/png", earlier=True),  # shared before we came: kept, not taken
        offer(b, small + 1, "image/png"),  # too large to show inline
        offer(a, 10, "image/svg+xml"),  # not a picture
        offer(b, 10, "text/plain"),
    ]
    result = await both(page, steps, tmp_path, BROWSER_ACCEPT)
    assert result["incoming"] == IDS[:2] and result["offers"] == IDS[2:6]
    assert result["offered"] == [[i, i == IDS[2]] for i in IDS[:6]]


SHARED_TWIN = """async ([ops, limits]) => {
    const m = window.m;
    const book = new m.SharedFiles(limits);
    const out = [];
    const offer = (id) => (
        {id, name: 'f.bin', size: 1, mime: 'a/b', sha256: '00'.repeat(32), chunk: 1024});
    for (const [kind, id, members, audience, at] of ops) {
        if (kind === 'add') out.push(book.add(offer(id), at, members, audience));
        else if (kind === 'address') out.push(book.address(id, members));
        else if (kind === 'for') out.push(members.map(
            (member) => book.forMember(member, at).map(({offer, earlier}) => [offer.id, earlier])));
        else if (kind === 'serves') out.push(members.map((member) => book.serves(id, member, at)));
        else if (kind === 'expire') out.push(book.expire(at));
        out.push(book.nextExpiry());
    }
    return out;
}"""
SHARED_LIMITS = OfferLimits(per_member=3, max_age=30, members=2)
SHARED_OP = st.tuples(
    st.sampled_from(["add", "add", "address", "for", "serves", "expire"]),
    st.sampled_from(IDS[:5]),
    st.lists(st.sampled_from(MEMBERS), max_size=3),
    st.none() | st.lists(st.sampled_from(MEMBERS), max_size=3),
    STEP,
)


def python_shared(ops: list[Any]) -> list[Any]:
    book = SharedFiles(SHARED_LIMITS)
    out: list[Any] = []
    for kind, file_id, members, audience, at in ops:
        keys = [bytes.fromhex(m) for m in members]
        chosen = None if audience is None else [bytes.fromhex(m) for m in audience]
        if kind == "add":
            offer = FileOffer(file_id, "f.bin", 1, "a/b", bytes(32), 1024)
            out.append(book.add(offer, at, keys, chosen))
        elif kind == "address":
            out.append([m.hex() for m in book.address(file_id, keys)])
        elif kind == "for":
            out.append([[[o.id, e] for o, e in book.for_member(m, at)] for m in keys])
        elif kind == "serves":
            out.append([book.serves(file_id, m, at) for m in keys])
        else:
            out.append(book.expire(at))
        out.append(book.next_expiry())
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=st.lists(SHARED_OP, max_size=40))
async def test_what_a_sender_offers_and_to_whom_is_the_same_in_both(
    page: Any,  # noqa: F811
    steps: list[Any],
) -> None:
    """A sender's newest files for an hour, new to whoever was present and shared
    earlier to the rest, some for chosen members only: the same in both."""
    ops, now = [], 0.0
    for kind, file_id, members, audience, step in steps:
        now += step
        ops.append([kind, file_id, members, audience, now])
    limits = {**JS_LIMITS, "perMember": 3, "maxAge": 30, "members": 2}
    assert await page.evaluate(SHARED_TWIN, [ops, limits]) == python_shared(ops)


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
        (("wait", a, IDS[1]), 9.0),  # a's download waits for a slot at a: not stalled
        (("wait", b, IDS[1]), 0.0),  # b says so of a's download: nothing
        (("timer", a, None), 2.0),
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
    const autoAccept = {maxBytes: null, inlineImagesOnly: false, earlier: false};
    const t = new m.Transfers({sendControl: () => true, openChannel: () => null, emit: () => {},
                               maxSize: 1 << 20, autoAccept, now: () => 5});
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


# --- what a member's accepts make a sender do: the same in both ---------------------------

UPLOAD_TWIN = """async ([ops, limits, files]) => {
    const m = window.m;
    let now = 0;
    const log = [];
    const channels = [];
    const fake = (member, label) => {
        const listeners = {};
        const channel = {
            label, member, readyState: 'connecting', bufferedAmount: 2 ** 40,  // never drains
            bufferedAmountLowThreshold: 0, binaryType: 'blob',
            addEventListener(type, fn) { (listeners[type] ??= []).push(fn); },
            fire(type) { for (const fn of listeners[type] ?? []) fn(); },
            send() { throw new Error('nothing is sent: the channel never drains'); },
            close() {
                if (channel.readyState === 'closed') return;
                log.push(['closed', member, label]);
                channel.readyState = 'closed';
                channel.fire('close');
            },
        };
        channels.push(channel);
        return channel;
    };
    const t = new m.Transfers({
        sendControl: (member, frame) => { log.push([member, frame.t, frame.id]); return true; },
        openChannel: (member, label) => {
            log.push(['opened', member, label]);
            return fake(member, label);
        },
        emit: () => {}, maxSize: 1 << 20, uploadLimits: limits, now: () => now,
    });
    for (const [id, size] of files) {
        const offer = {id, name: 'f.bin', size, mime: 'a/b', sha256: '00'.repeat(32), chunk: 1024};
        t.outgoing.set(id, {offer, file: new Blob([new Uint8Array(size)])});
    }
    const newest = (member, id) => channels.filter(
        (c) => c.member === member && c.label === `file:${id}` && c.readyState !== 'closed').pop();
    for (const [kind, member, id, offset, at] of ops) {
        now = at;
        if (kind === 'accept') t.onControl(member, {t: 'file-accept', id, offset});
        else if (kind === 'open') {
            const c = newest(member, id);
            if (c && c.readyState === 'connecting') { c.readyState = 'open'; c.fire('open'); }
        } else if (kind === 'close') {
            const c = newest(member, id);
            if (c) { c.readyState = 'closed'; c.fire('close'); }
        } else if (kind === 'leave') t.memberLeft(member);
        else t.handleTimer();
    }
    const running = [...t.uploads.running].map(
        ([serial, r]) => [serial, r.member, r.id, r.offset, r.begun]);
    const waiting = [...t.uploads.waiting.values()].map((w) => [w.member, w.id, w.offset]);
    t.close();
    return {counters: t.counters, log, running, waiting};
}"""

UPLOAD_TWIN_LIMITS = UploadLimits(
    per_member=2,  # two, so that which member goes first when a slot frees matters
    per_room=3,
    waiting_per_member=2,
    waiting_per_room=3,
    rate=0.5,
    burst=3,
    stall=10,
    wait_notice=4,
    members=3,
)
UPLOAD_JS_LIMITS = {
    "perMember": 2,
    "perRoom": 3,
    "waitingPerMember": 2,
    "waitingPerRoom": 3,
    "rate": 0.5,
    "burst": 3,
    "stall": 10,
    "waitNotice": 4,
    "bufferedPerMember": UPLOAD_TWIN_LIMITS.buffered_per_member,
    "bufferedPerRoom": UPLOAD_TWIN_LIMITS.buffered_per_room,
    "members": 3,
}
UPLOAD_MEMBERS = [*MEMBERS, "dd" * 32]  # one more than the buckets kept
FILES = [(IDS[0], 100), (IDS[1], 100), (IDS[2], 0)]  # IDS[3] is not offered


class TwinChannel:
    """The browser test's fake channel: opens and closes when told, never drains."""

    def __init__(self, log: list[list[Any]], member: str, label: str) -> None:
        self.log, self.member, self.label = log, member, label
        self.readyState = "connecting"
        self.bufferedAmount = 2**40
        self.bufferedAmountLowThreshold = 0
        self.handlers: dict[str, list[Any]] = {}

    def on(self, event: str, handler: Any) -> None:
        self.handlers.setdefault(event, []).append(handler)

    def fire(self, event: str) -> None:
        for handler in self.handlers.get(event, []):
            handler()

    def send(self, data: bytes) -> None:
        raise AssertionError("nothing is sent: the channel never drains")

    def close(self) -> None:
        if self.readyState != "closed":
            self.log.append(["closed", self.member, self.label])
            self.readyState = "closed"
            self.fire("close")


async def python_upload_twin(ops: list[Any], directory: Path) -> dict[str, Any]:
    clock = [0.0]
    log: list[list[Any]] = []
    channels: list[TwinChannel] = []

    def open_channel(member: bytes, label: str) -> Any:
        log.append(["opened", member.hex(), label])
        channels.append(TwinChannel(log, member.hex(), label))
        return channels[-1]

    transfers = Transfers(
        PeerStore(directory / "store"),
        lambda member, frame: log.append([member.hex(), frame["t"], frame["id"]]) is None,
        open_channel,
        lambda event: None,
        1 << 20,
        upload_limits=UPLOAD_TWIN_LIMITS,
        clock=lambda: clock[0],
    )
    for file_id, size in FILES:
        path = directory / file_id
        path.write_bytes(bytes(size))
        offer = FileOffer(file_id, "f.bin", size, "a/b", bytes(32), 1024)
        transfers.outgoing[file_id] = (offer, path)

    def newest(member: str, file_id: str) -> TwinChannel | None:
        label = f"file:{file_id}"
        found = [c for c in channels if (c.member, c.label) == (member, label)]
        return found[-1] if found and found[-1].readyState != "closed" else None

    for kind, member, file_id, offset, at in ops:
        clock[0] = at
        if kind == "accept":
            transfers.on_control(
                bytes.fromhex(member), {"t": "file-accept", "id": file_id, "offset": offset}
            )
        elif kind in ("open", "close") and (channel := newest(member, file_id)) is not None:
            if kind == "open" and channel.readyState == "connecting":
                channel.readyState = "open"
                channel.fire("open")
            elif kind == "close":
                channel.readyState = "closed"
                channel.fire("close")
        elif kind == "leave":
            transfers.member_left(bytes.fromhex(member))
        elif kind == "timer":
            transfers.handle_timer()
    uploads = transfers.uploads
    result = {
        "counters": dict(transfers.counters),
        "log": log,
        "running": [
            [serial, r.member.hex(), r.file_id, r.offset, r.begun]
            for serial, r in uploads.running.items()
        ],
        "waiting": [[m.hex(), i, w.offset] for (m, i), w in uploads.waiting.items()],
    }
    await transfers.close()
    return result


UPLOAD_OP = st.tuples(
    st.sampled_from(["accept"] * 5 + ["open"] * 3 + ["close"] * 2 + ["leave", "timer"]),
    st.sampled_from(UPLOAD_MEMBERS),
    st.sampled_from(IDS[:4]),
    st.sampled_from([0, 0, 40, 100, 101, -1, True, "7", None]),
)
UPLOAD_STEP = st.sampled_from([0.0] * 4 + [0.3, 2.0, 4.0, 11.0])


async def both_uploads(page: Any, steps: list[Any], directory: Path) -> dict[str, Any]:  # noqa: F811
    ops, now = [], 0.0
    for (kind, member, file_id, offset), step in steps:
        now += step
        ops.append([kind, member, file_id, offset, now])
    browser = await page.evaluate(UPLOAD_TWIN, [ops, UPLOAD_JS_LIMITS, FILES])
    python = await python_upload_twin(ops, directory)
    assert browser == python
    return python


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=st.lists(st.tuples(UPLOAD_OP, UPLOAD_STEP), max_size=60))
async def test_upload_bounds_are_the_same_in_the_browser_and_python(
    page: Any,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
    steps: list[Any],
) -> None:
    await both_uploads(page, steps, tmp_path_factory.mktemp("uploads"))


async def test_every_upload_bound_is_reached_the_same_way_in_both(
    page: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    a, b, c, d = UPLOAD_MEMBERS
    f, g, h, unknown = IDS[:4]

    def op(kind: str, member: str, file_id: str = f, offset: Any = 0, step: float = 0.0) -> Any:
        return ((kind, member, file_id, offset), step)

    steps = [
        op("accept", a, f),  # a's first slot
        op("accept", a, f, 40),  # not open yet: the new offset is taken
        op("open", a, f),  # streaming from 40
        op("accept", a, f, 100),  # streaming: replaced, a new channel (a's burst of 3 spent)
        op("accept", a, g),  # dropped by rate
        op("accept", a, unknown),  # not offered
        op("accept", a, f, 101),  # past the end
        op("accept", b, f),
        op("accept", c, f),  # the room's three slots are taken
        op("accept", d, f),  # a fourth member: no bucket left for it
        op("accept", a, g, step=2.0),  # a token later: waits, hears file-wait
        op("accept", c, g),  # waits too
        op("close", c, f),  # c's receiver closed it: the slot goes to c (none running), not a
        op("timer", a, step=4.0),  # a still waits: it hears so again
        op("accept", b, g),  # waits
        op("accept", a, h),  # waits (a's second)
        op("accept", b, h),  # the room keeps 3 waiting at most
        op("timer", a, step=11.0),  # nothing moved: all stalled; a, b, then a's second start
        op("leave", a),  # a left: its uploads stop
    ]
    result = await both_uploads(page, steps, tmp_path)
    assert result["counters"] == {
        "drop.accept_rate": 1,
        "drop.accept_unknown": 2,
        "drop.accept_members": 1,
        "drop.accept_queue_full": 1,
        "failed.upload_stalled": 3,
    }, result
    waits = [entry[::2] for entry in result["log"] if entry[1] == "file-wait"]
    assert waits == [[a, g], [c, g], [a, g], [b, g], [a, h]], result
    opened = [entry[1:] for entry in result["log"] if entry[0] == "opened"]
    starts = [(a, f), (a, f), (b, f), (c, f), (c, g), (a, g), (b, g), (a, h)]
    assert opened == [[m, f"file:{i}"] for m, i in starts], result
    assert [r[1:3] for r in result["running"]] == [[b, g]] and not result["waiting"], result


BUFFERED = """async ([size, members]) => {
    const m = window.m;
    let now = 0;
    const channels = [];
    const fake = (member, label) => {
        const listeners = {};
        const channel = {
            label, member, readyState: 'connecting', bufferedAmount: 0,
            bufferedAmountLowThreshold: 0, binaryType: 'blob', sent: [],
            addEventListener(type, fn) { (listeners[type] ??= []).push(fn); },
            fire(type) { for (const fn of listeners[type] ?? []) fn(); },
            send(frame) {
                if (channel.readyState !== 'open') throw new Error('not open');
                channel.sent.push([m.readU64be(frame), frame.length - 40]);
                channel.bufferedAmount += frame.length;
            },
            drain() {  // the receiver read everything
                const was = channel.bufferedAmount;
                channel.bufferedAmount = 0;
                if (was > channel.bufferedAmountLowThreshold) channel.fire('bufferedamountlow');
                if (channel.readyState === 'closing') channel.closed();
            },
            close() {  // what is buffered still goes out, then it closes (as a browser's)
                if (channel.readyState !== 'open' && channel.readyState !== 'connecting') return;
                const buffered = channel.bufferedAmount && channel.readyState === 'open';
                if (buffered) channel.readyState = 'closing';
                else channel.closed();
            },
            closed() { channel.readyState = 'closed'; channel.fire('close'); },
        };
        channels.push(channel);
        return channel;
    };
    const t = new m.Transfers({
        sendControl: () => true, openChannel: fake, emit: () => {},
        maxSize: 1 << 30, now: () => now,
    });
    const data = new Uint8Array(size);
    for (let at = 0; at < size; at += 65536) crypto.getRandomValues(data.subarray(at, at + 65536));
    const offer = await t.offer(new File([data], 'f.bin'), []);
    const tick = () => new Promise((resolve) => {
        const c = new MessageChannel();
        c.port1.onmessage = resolve;
        c.port2.postMessage(0);
    });
    const total = (member) => channels
        .filter((c) => c.readyState !== 'closed' && (member === undefined || c.member === member))
        .reduce((sum, c) => sum + c.bufferedAmount, 0);
    const open = () => {
        for (const c of channels) {
            if (c.readyState === 'connecting') { c.readyState = 'open'; c.fire('open'); }
        }
    };
    const settle = async () => {  // until nothing has moved for a while
        for (let still = 0, last = -1; still < 30; ) {
            await tick();
            const sent = channels.reduce((sum, c) => sum + c.sent.length, 0);
            still = sent === last ? still + 1 : 0;
            last = sent;
        }
    };
    let peak = 0, peakMember = 0;
    for (const member of members) {  // nobody drains; each re-accepts, leaving a closing channel
        for (let round = 0; round < 4; round++) {
            t.onControl(member, {t: 'file-accept', id: offer.id, offset: 0});
            open();
            await settle();
            now += 1;
            peak = Math.max(peak, total());
            for (const other of members) peakMember = Math.max(peakMember, total(other));
        }
    }
    const complete = (c) => c.sent.length && c.sent.at(-1)[0] + c.sent.at(-1)[1] === size;
    for (let round = 0; round < 400 && channels.some((c) => c.readyState !== 'closed'); round++) {
        open();  // the receivers read again: every stream goes on and ends
        for (const c of channels) {
            if (c.readyState === 'closed') continue;
            c.drain();
            if (complete(c)) c.close();  // a receiver closes the channel once it has the file
        }
        await settle();
    }
    const whole = members.map((member) => {
        const last = channels.filter((c) => c.member === member).pop();
        let at = 0;
        for (const [offset, length] of last.sent) {
            if (offset !== at) return false;
            at += length;
        }
        return at === size;
    });
    const left = channels.filter((c) => c.readyState !== 'closed').length;
    const running = t.uploads.running.size;
    t.close();
    return {peak, peakMember, whole, left, running};
}"""


async def test_the_browser_bounds_what_its_uploads_buffer(page: Any) -> None:  # noqa: F811
    limits = UploadLimits()
    frame = 65536 + 40
    members = [bytes([n]).hex() * 32 for n in range(1, 7)]
    result = await page.evaluate(BUFFERED, [6 << 20, members])
    assert result["peak"] <= limits.buffered_per_room + frame, result
    assert result["peakMember"] <= limits.buffered_per_member + frame, result
    assert result["peak"] >= limits.buffered_per_room - HIGH_WATER, result  # the room was used
    assert result["whole"] == [True] * len(members), result
    assert result["left"] == result["running"] == 0, result
