"""The browser's link core (web/js/mesh.js) and peer/mesh.py are twins: the same
random run of node connections and losses, joins, moves to other layers or beside a
friend and their refusals, members coming and going (announced in our layer or another),
offers and relinks from members and strangers, links opening and failing, ICE
credentials and timers, with the same random numbers, gives the same commands,
the same next timer, node state and list after every step, and the same
counters at the end (hypothesis generates, Python runs first and fixes the
concrete events, Chromium runs the JS)."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from peer import mesh as core

from .test_vectors import page  # noqa: F401  (fixture)

ME = bytes([0x80]) * 32
KEYS = [bytes([b]) * 32 for b in (0x10, 0x40, 0xC0, 0xF0)]
"""Members, two below our key and two above (who offers depends on it)."""
STRANGERS = [bytes([b]) * 32 for b in (0x30, 0xE0)]
"""Keys the node never seats: their offers and relinks are refused (unless a
`peer-joined` makes one a member, which the run also draws)."""
ANYONE = [*KEYS, *STRANGERS, ME]
ROOMS = [bytes([1]) * 20, bytes([2]) * 20]
URLS = ["ws://a", "ws://b", "ws://c", "ws://d"]
CODES = [None, 1000, 1001, 1006, core.CLOSE_REPLACED]
STARTS = st.sampled_from([0.0, 1_763_880_000.0])
"""Time 0 (the simulator's clock) or a wall clock in 2025."""

TYPES = {
    core.ConnectNode: "connect-node",
    core.JoinRoom: "join-room",
    core.RequestIceServers: "request-ice-servers",
    core.Offer: "offer",
    core.Answer: "answer",
    core.SendRelink: "send-relink",
    core.CloseLink: "close-link",
    core.MemberJoined: "member-joined",
    core.MemberLeft: "member-left",
    core.LinkUp: "link-up",
    core.LinkDown: "link-down",
    core.Unreachable: "unreachable",
    core.Refused: "refused",
    core.NodeStatus: "node-status",
}

ROOM = st.integers(0, len(ROOMS) - 1)
WHO = st.integers(0, len(ANYONE) - 1)
URL = st.none() | st.integers(0, len(URLS) - 1)
"""None: the node the core asked for last; else one of the pool."""
ICE = st.none() | st.floats(-10, 7200)
"""TURN credentials' expiry relative to now (None: no relay)."""
BURST = st.integers(1, 6)
LAYER = st.none() | st.integers(0, 2)
FRIEND = st.none() | WHO
LINK = st.integers(0, 7)
"""Which issued link: 0 is the newest, 1 the one before..."""
SENDER = st.integers(0, len(KEYS) - 1) | WHO
"""Mostly members; strangers and ourselves too."""
EVENTS: list[tuple[int, st.SearchStrategy[tuple[Any, ...]]]] = [
    (2, st.tuples(st.just("start"))),
    (3, st.tuples(st.just("node-connected"), URL, st.lists(st.sampled_from(URLS), max_size=4))),
    (2, st.tuples(st.just("node-failed"), URL)),
    (2, st.tuples(st.just("node-lost"), URL, st.sampled_from(CODES))),
    (2, st.tuples(st.just("moving"), st.lists(st.sampled_from(URLS), max_size=5))),
    (2, st.tuples(st.just("ice-servers"), ICE)),
    (3, st.tuples(st.just("join"), ROOM, LAYER, FRIEND)),
    (1, st.tuples(st.just("leave"), ROOM)),
    (4, st.tuples(st.just("joined"), ROOM, st.integers(0, 2), st.lists(WHO, max_size=6), ICE)),
    (3, st.tuples(st.just("move"), ROOM, LAYER, FRIEND)),
    (2, st.tuples(st.just("join-refused"), ROOM, st.booleans())),
    (4, st.tuples(st.just("peer-joined"), ROOM, WHO, LAYER)),
    (3, st.tuples(st.just("named"), ROOM, st.lists(SENDER, max_size=4))),
    (2, st.tuples(st.just("peer-left"), ROOM, WHO, LAYER)),
    (10, st.tuples(st.just("offer"), ROOM, SENDER, BURST)),
    (6, st.tuples(st.just("relink"), ROOM, SENDER, BURST)),
    (8, st.tuples(st.just("answered"), LINK)),
    (10, st.tuples(st.just("link-open"), LINK, st.booleans())),
    (6, st.tuples(st.just("link-failed"), LINK, st.booleans())),
    (8, st.tuples(st.just("timer"), st.floats(0, 40))),
    (8, st.tuples(st.just("due"))),
]
"""Each kind of event with its weight: signals, links and time come most often.
`timer` moves time by a drawn amount; `due` moves it to the core's own timer."""
WEIGHTED = [strategy for weight, strategy in EVENTS for _ in range(weight)]


@st.composite
def step(draw: st.DrawFn) -> tuple[Any, ...]:
    return draw(WEIGHTED[draw(st.integers(0, len(WEIGHTED) - 1))])


@st.composite
def prologue(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """Most runs start connected and seated (else few get as far as links): start,
    connect, join one or both rooms, be seated with drawn members."""
    steps: list[tuple[Any, ...]] = [
        ("start",),
        ("node-connected", None, draw(st.lists(st.sampled_from(URLS), max_size=3))),
        ("join", 0, None, None),
        ("joined", 0, 0, draw(st.lists(SENDER, min_size=2, max_size=6)), draw(ICE)),
        ("join", 1, 2, None),
        ("joined", 1, 2, draw(st.lists(SENDER, max_size=6)), draw(ICE)),
    ]
    return steps[: draw(st.sampled_from([6, 4, 2, 0]))]


def cyclic(values: list[float]) -> core.Rng:
    """The drawn random numbers, in order, over and over (the same in both cores)."""
    index = [0]

    def rng() -> float:
        value = values[index[0] % len(values)]
        index[0] += 1
        return value

    return rng


def as_pairs(command: Any) -> list[list[Any]]:
    """A command as [name, value] pairs, type first, bytes as hex (the JS object's entries)."""
    pairs: list[list[Any]] = [["type", TYPES[type(command)]]]
    for f in dataclasses.fields(command):
        value = getattr(command, f.name)
        pairs.append([f.name, value.hex() if isinstance(value, bytes) else value])
    return pairs


def hexed(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [hexed(v) for v in value]
    return value


def run_python(
    start: float,
    nodes: list[str],
    randoms: list[float],
    steps: list[tuple[Any, ...]],
    close: bool,
    max_members: int = 256,
) -> tuple[list[list[Any]], list[Any], dict[str, int]]:
    """Run peer/mesh.py, resolving each drawn step into a concrete one (URLs, link ids,
    absolute times) that the JS run replays; the outputs after every step."""
    # a short way back to the chosen nodes, so that runs reach it between fail-overs
    config = core.MeshConfig(max_members=max_members, return_after=3.0, return_cap=20.0)
    mesh = core.Mesh(ME, nodes, config, cyclic(randoms), start)
    now = start
    links: list[tuple[bytes, bytes, int]] = []
    asked = nodes[0]
    concrete: list[list[Any]] = []
    outputs: list[Any] = []

    def url(choice: int | None) -> str:
        return asked if choice is None else URLS[choice]

    def ice(offset: float | None) -> float | None:
        return None if offset is None else now + offset

    for step in [*steps, ("close",)] if close else steps:
        kind = step[0]
        if kind == "start":
            mesh.start(now)
            concrete.append(["start", now])
        elif kind == "node-connected":
            mesh.node_connected(url(step[1]), step[2], now)
            concrete.append([kind, url(step[1]), step[2], now])
        elif kind == "node-failed":
            mesh.node_failed(url(step[1]), now)
            concrete.append([kind, url(step[1]), now])
        elif kind == "node-lost":
            mesh.node_lost(url(step[1]), step[2], now)
            concrete.append([kind, url(step[1]), step[2], now])
        elif kind == "moving":
            mesh.moving(step[1])
            concrete.append([kind, step[1]])
        elif kind in ("join", "move"):
            friend = None if len(step) < 4 or step[3] is None else ANYONE[step[3]]
            (mesh.join if kind == "join" else mesh.move)(ROOMS[step[1]], step[2], friend)
            concrete.append([kind, ROOMS[step[1]], step[2], friend])
        elif kind == "join-refused":
            mesh.join_refused(ROOMS[step[1]], step[2])
            concrete.append([kind, ROOMS[step[1]], step[2]])
        elif kind == "leave":
            mesh.leave(ROOMS[step[1]])
            concrete.append([kind, ROOMS[step[1]]])
        elif kind == "joined":
            members = [ANYONE[i] for i in step[3]]
            expires = ice(step[4])
            mesh.joined(ROOMS[step[1]], step[2], members, expires, now)
            concrete.append([kind, ROOMS[step[1]], step[2], members, expires, now])
        elif kind == "named":
            members = [ANYONE[i] for i in step[2]]
            mesh.named(ROOMS[step[1]], members, now)
            concrete.append([kind, ROOMS[step[1]], members, now])
        elif kind == "peer-joined":
            layer = step[3] if len(step) > 3 else None
            mesh.peer_joined(ROOMS[step[1]], ANYONE[step[2]], now, layer)
            concrete.append([kind, ROOMS[step[1]], ANYONE[step[2]], now, layer])
        elif kind == "peer-left":
            layer = step[3] if len(step) > 3 else None
            mesh.peer_left(ROOMS[step[1]], ANYONE[step[2]], layer)
            concrete.append([kind, ROOMS[step[1]], ANYONE[step[2]], layer])
        elif kind in ("offer", "relink"):
            receive = mesh.offer_received if kind == "offer" else mesh.relink_received
            for _ in range(step[3]):
                receive(ROOMS[step[1]], ANYONE[step[2]], now)
            concrete.append([kind, ROOMS[step[1]], ANYONE[step[2]], step[3], now])
        elif kind in ("answered", "link-open", "link-failed"):
            if not links:
                continue
            room, member, link = links[-1 - step[1] % len(links)]
            if kind == "answered":
                mesh.answered(room, member, link)
                concrete.append([kind, room, member, link])
            elif kind == "link-open":
                mesh.link_open(room, member, link, step[2], now)
                concrete.append([kind, room, member, link, step[2], now])
            else:
                mesh.link_failed(room, member, link, step[2], now)
                concrete.append([kind, room, member, link, step[2], now])
        elif kind == "ice-servers":
            expires = ice(step[1])
            mesh.ice_servers(expires, now)
            concrete.append([kind, expires, now])
        elif kind in ("timer", "due"):
            if kind == "timer":
                now += step[1]
            else:
                timer = mesh.get_timer()
                now = max(now, timer) if timer is not None else now
            mesh.handle_timer(now)
            concrete.append(["timer", now])
        else:
            mesh.close()
            concrete.append(["close"])
        commands = mesh.commands()
        for command in commands:
            if isinstance(command, core.Offer | core.Answer):
                links.append((command.room, command.member, command.link))
            elif isinstance(command, core.ConnectNode):
                asked = command.url
        outputs.append(
            [
                [as_pairs(c) for c in commands],
                mesh.get_timer(),
                mesh.state.value,
                list(mesh.nodes),
            ]
        )
    return hexed(concrete), outputs, mesh.counters


RUN_JS = """([start, nodes, randoms, steps, maxMembers = 256]) => {
    let index = 0;
    const rng = () => randoms[index++ % randoms.length];
    const config = { maxMembers, returnAfter: 3.0, returnCap: 20.0 };
    const mesh = new window.m.Mesh('80'.repeat(32), nodes, config, rng, start);
    const run = {
        'start': (now) => mesh.start(now),
        'node-connected': (url, learned, now) => mesh.nodeConnected(url, learned, now),
        'node-failed': (url, now) => mesh.nodeFailed(url, now),
        'node-lost': (url, code, now) => mesh.nodeLost(url, code, now),
        'moving': (urls) => mesh.moving(urls),
        'join': (room, layer, friend) => mesh.join(room, layer, friend),
        'move': (room, layer, friend) => mesh.move(room, layer, friend),
        'join-refused': (room, full) => mesh.joinRefused(room, full),
        'leave': (room) => mesh.leave(room),
        'joined': (...a) => mesh.joined(...a),
        'peer-joined': (room, member, now, layer) => mesh.peerJoined(room, member, now, layer),
        'named': (room, members, now) => mesh.named(room, members, now),
        'peer-left': (room, member, layer) => mesh.peerLeft(room, member, layer),
        'offer': (room, sender, n, now) => {
            for (let i = 0; i < n; i++) mesh.offerReceived(room, sender, now);
        },
        'relink': (room, sender, n, now) => {
            for (let i = 0; i < n; i++) mesh.relinkReceived(room, sender, now);
        },
        'answered': (room, member, link) => mesh.answered(room, member, link),
        'link-open': (...a) => mesh.linkOpen(...a),
        'link-failed': (...a) => mesh.linkFailed(...a),
        'ice-servers': (expires, now) => mesh.iceServers(expires, now),
        'timer': (now) => mesh.handleTimer(now),
        'close': () => mesh.close(),
    };
    const out = [];
    for (const [kind, ...args] of steps) {
        run[kind](...args);
        const commands = mesh.commands().map((c) => Object.entries(c));
        out.push([commands, mesh.getTimer(), mesh.state, [...mesh.nodes]]);
    }
    return [out, mesh.counters];
}"""


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    start=STARTS,
    nodes=st.lists(st.sampled_from(URLS), min_size=1, max_size=5),
    randoms=st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=8),
    first=prologue(),
    steps=st.lists(step(), min_size=30, max_size=120),
    close=st.booleans(),
    max_members=st.sampled_from([3, 256]),
)
async def test_same_events_same_commands(
    page: Any,  # noqa: F811
    start: float,
    nodes: list[str],
    randoms: list[float],
    first: list[tuple[Any, ...]],
    steps: list[tuple[Any, ...]],
    close: bool,
    max_members: int,
) -> None:
    runs = (start, nodes, randoms, first + steps, close, max_members)
    concrete, expected, counters = run_python(*runs)
    for kind in {pairs[0][1] for out in expected for pairs in out[0]} | set(counters):
        event(kind)  # what the runs reach: pytest --hypothesis-show-statistics
    if any(["state", "returning"] in pairs for out in expected for pairs in out[0]):
        event("returning to a chosen node")
    got, got_counters = await page.evaluate(RUN_JS, [start, nodes, randoms, concrete, max_members])
    assert len(got) == len(expected)
    for i, (want, have) in enumerate(zip(expected, got, strict=True)):
        assert have == want, (i, concrete[: i + 1])
    assert got_counters == counters


def summary(pairs: list[list[Any]]) -> str:
    """A command in a few characters: its type, keys and rooms by their first byte."""
    values = [v[:2] if isinstance(v, str) and len(v) >= 40 else v for _, v in pairs[1:]]
    return " ".join(str(v) for v in [pairs[0][1], *values])


# One written-out run, step by step with what the core must say (keys and rooms by
# their first byte: we are 80; 10 and 40 are below us, c0 and f0 above; 30 and e0
# are strangers), so the random runs are not all that stands between the twins.
SCRIPT: list[tuple[tuple[Any, ...], list[str]]] = [
    (("start",), ["node-status connecting ws://a 0.0", "connect-node ws://a"]),
    (("node-failed", None), ["node-status connecting ws://b 0.0", "connect-node ws://b"]),
    (("node-connected", None, ["ws://c"]), ["node-status connected ws://b 0.0"]),
    (("join", 0, None), ["join-room 01 None None"]),
    # the newcomer offers to each member listed (once, though listed twice)
    (
        ("joined", 0, 1, [0, 2, 6, 2], 600.0),
        ["member-joined 01 10", "offer 01 10 1", "member-joined 01 c0", "offer 01 c0 2"],
    ),
    (("offer", 0, 0, 1), ["close-link 01 10 1", "answer 01 10 3"]),  # glare: 10's offer wins
    (("offer", 0, 2, 1), []),  # glare: ours wins over c0's (counted)
    (("relink", 0, 4, 1), ["refused 01 30 relink from a key that is not a member"]),
    (("relink", 0, 5, 1), ["refused 01 e0 relink from a key that is not a member"]),
    (("offer", 0, 5, 2), ["refused 01 e0 offer from a key that is not a member"] * 2),
    (("link-open", 0, False), ["link-up 01 10 3"]),
    (("answered", 1), []),
    (("link-open", 1, True), ["link-up 01 c0 2"]),  # relayed, credentials until 600
    # make before break: offers on an open link make one spare at a time, then the rate
    (
        ("offer", 0, 0, 5),
        [
            "answer 01 10 4",
            "close-link 01 10 4",
            "answer 01 10 5",
            "close-link 01 10 5",
            "answer 01 10 6",
            "refused 01 10 too many offers",
            "refused 01 10 too many offers",
        ],
    ),
    (("link-failed", 0, True), ["close-link 01 10 6"]),  # the spare fails: link 3 stays
    (("due",), ["request-ice-servers"]),  # at 300: half of the credentials' life
    (("ice-servers", 1000.0), []),
    (("due",), ["offer 01 c0 7"]),  # at 450: the relayed link renews itself
    (("peer-joined", 0, 3), ["member-joined 01 f0"]),
    (("due",), ["offer 01 f0 8"]),  # the grace is over: the lower key (we) offers
    # the spare's deadline: link 2 stays, and renews again (a try per relink_cap at most)
    (("due",), ["close-link 01 c0 7", "offer 01 c0 9"]),
    (("due",), ["unreachable 01 f0 8", "close-link 01 f0 8"]),
    (
        ("node-lost", None, 1006),
        ["node-status lost ws://b 0.0", "node-status connecting ws://a 0.0", "connect-node ws://a"],
    ),
    (("node-connected", None, []), ["node-status connected ws://a 0.0", "join-room 01 1 None"]),
    # reconciliation: f0 left while we were away (no link: removed); 10 is not listed
    # either but its link is open (kept); 40 is new
    (("joined", 0, 1, [1, 2], 1200.0), ["member-left 01 f0", "member-joined 01 40"]),
    (("peer-left", 0, 0), ["link-down 01 10 3", "close-link 01 10 3", "member-left 01 10"]),
    (("due",), ["send-relink 01 40"]),  # the higher key asks 40 to offer
    (("offer", 0, 1, 1), ["answer 01 40 10"]),
    (("node-lost", None, core.CLOSE_REPLACED), ["node-status replaced ws://a 0.0"]),
    (
        ("close",),
        ["close-link 01 c0 9", "link-down 01 c0 2", "close-link 01 c0 2", "close-link 01 40 10"],
    ),
]


async def test_a_written_run(page: Any) -> None:  # noqa: F811
    steps = [step for step, _ in SCRIPT[:-1]]
    concrete, expected, counters = run_python(0.0, ["ws://a", "ws://b"], [0.5], steps, True)
    for (step, want), out in zip(SCRIPT, expected, strict=True):
        assert [summary(c) for c in out[0]] == want, step
    assert counters == {
        "glare.ours": 1,
        "refused.relink.not_member": 2,
        "refused.offer.not_member": 2,
        "refused.offer.rate": 2,
    }
    got, got_counters = await page.evaluate(RUN_JS, [0.0, ["ws://a", "ws://b"], [0.5], concrete])
    for i, (want_out, have) in enumerate(zip(expected, got, strict=True)):
        assert have == want_out, (i, concrete[i])
    assert got_counters == counters


# A move, written out: links stay while the node answers; a refused move asks for the
# old seat again; a member announced (joined or left) in a layer we neither sit in
# nor asked for is ignored; `joined` in another layer lets every old member go (open links too) and
# offers to the new ones; fail-over rejoins the new layer; a rejoin refused because
# that layer filled up sits anywhere, once.
MOVE_SCRIPT: list[tuple[tuple[Any, ...], list[str]]] = [
    (("start",), ["node-status connecting ws://a 0.0", "connect-node ws://a"]),
    (("node-connected", None, []), ["node-status connected ws://a 0.0"]),
    (("join", 0, None), ["join-room 01 None None"]),
    (
        ("joined", 0, 0, [0, 2], None),
        ["member-joined 01 10", "offer 01 10 1", "member-joined 01 c0", "offer 01 c0 2"],
    ),
    (("link-open", 1, False), ["link-up 01 10 1"]),
    (("link-open", 0, False), ["link-up 01 c0 2"]),
    (("move", 0, 2, None), ["join-room 01 2 None"]),
    (("peer-joined", 0, 1, 0), ["member-joined 01 40"]),  # layer 0: still our seat
    (("peer-joined", 0, 3, 1), []),  # layer 1: neither our seat nor asked for
    (("join-refused", 0, True), ["join-room 01 0 None"]),  # layer 2 is full: our seat again
    (("joined", 0, 0, [0, 2, 1], None), []),  # the same layer: nothing changes
    (("move", 0, None, 3), ["join-room 01 None f0"]),  # beside f0
    (("peer-joined", 0, 3, 1), ["member-joined 01 f0"]),  # f0's layer, not known yet
    (
        ("joined", 0, 1, [3, 5], None),
        [
            "link-down 01 10 1",
            "close-link 01 10 1",
            "member-left 01 10",
            "link-down 01 c0 2",
            "close-link 01 c0 2",
            "member-left 01 c0",
            "member-left 01 40",
            "member-joined 01 e0",
            "offer 01 e0 3",
        ],
    ),
    (("peer-left", 0, 3, 0), []),  # layer 0's, told late: f0 sits with us in layer 1
    (
        ("node-lost", None, 1006),
        ["node-status lost ws://a 0.0", "node-status connecting ws://b 0.0", "connect-node ws://b"],
    ),
    (("node-connected", None, []), ["node-status connected ws://b 0.0", "join-room 01 1 None"]),
    (("join-refused", 0, True), ["join-room 01 None None"]),  # layer 1 filled up meanwhile
    (("join-refused", 0, True), []),  # never asked twice
    (("joined", 0, 2, [], None), ["member-left 01 f0", "close-link 01 e0 3", "member-left 01 e0"]),
]


async def test_a_written_move(page: Any) -> None:  # noqa: F811
    steps = [step for step, _ in MOVE_SCRIPT]
    nodes = ["ws://a", "ws://b"]
    concrete, expected, counters = run_python(0.0, nodes, [0.5], steps, False)
    for (step, want), out in zip(MOVE_SCRIPT, expected, strict=True):
        assert [summary(c) for c in out[0]] == want, step
    assert counters == {
        "refused.member.other_layer": 1,
        "refused.member_left.other_layer": 1,
    }
    got, got_counters = await page.evaluate(RUN_JS, [0.0, nodes, [0.5], concrete])
    for i, (want_out, have) in enumerate(zip(expected, got, strict=True)):
        assert have == want_out, (i, concrete[i])
    assert got_counters == counters


# Offers before seated (docs/protocol.md 2.5.3), written out: a first join's sign
# request names members (offered at once), a `members` frame names one more (only
# the new one is offered), `joined` offers to no one twice and lets go of a named
# member it does not list (its open link closed too); named members outside a first
# join under way (seated, or a room never joined) are refused and counted.
NAMED_SCRIPT: list[tuple[tuple[Any, ...], list[str]]] = [
    (("start",), ["node-status connecting ws://a 0.0", "connect-node ws://a"]),
    (("node-connected", None, []), ["node-status connected ws://a 0.0"]),
    (("named", 1, [0]), []),  # a room we are not joining
    (("join", 0, None), ["join-room 01 None None"]),
    (
        ("named", 0, [0, 2, 6]),
        ["member-joined 01 10", "offer 01 10 1", "member-joined 01 c0", "offer 01 c0 2"],
    ),
    (("named", 0, [0, 2, 3]), ["member-joined 01 f0", "offer 01 f0 3"]),
    (("link-open", 0, False), ["link-up 01 f0 3"]),
    (("link-open", 2, False), ["link-up 01 10 1"]),
    # seated where c0 and f0 are not: both let go (f0's open link too); 40 is new
    (
        ("joined", 0, 0, [0, 1], None),
        [
            "close-link 01 c0 2",
            "member-left 01 c0",
            "link-down 01 f0 3",
            "close-link 01 f0 3",
            "member-left 01 f0",
            "member-joined 01 40",
            "offer 01 40 4",
        ],
    ),
    (("named", 0, [2]), []),  # seated: a late `members` frame names no one
    (("joined", 0, 0, [0, 1], None), []),  # a rejoin in the same layer: nothing changes
]


async def test_a_written_early_join(page: Any) -> None:  # noqa: F811
    steps = [step for step, _ in NAMED_SCRIPT]
    nodes = ["ws://a"]
    concrete, expected, counters = run_python(0.0, nodes, [0.5], steps, False)
    for (step, want), out in zip(NAMED_SCRIPT, expected, strict=True):
        assert [summary(c) for c in out[0]] == want, step
    assert counters == {"refused.named.not_joining": 2, "named.not_listed": 2}
    got, got_counters = await page.evaluate(RUN_JS, [0.0, nodes, [0.5], concrete])
    for i, (want_out, have) in enumerate(zip(expected, got, strict=True)):
        assert have == want_out, (i, concrete[i])
    assert got_counters == counters
