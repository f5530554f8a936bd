"""messaging: the peers' messaging core (peer/messaging.py) under dropping links.

`nodes` peers sit in rooms of `room_size`; every pair in a room has a link
(an ordered, reliable data channel, as SCTP gives) whose one-way delay comes
from the network model (regions, latency matrix, jitter). Each peer talks at
`message_rate` messages per second (Poisson). Each link drops
`link_drops_per_hour` times an hour on average: what is in flight on it is
lost, both ends are told (`disconnected`), and after a reconnection delay
(exponential, mean `reconnect_mean` seconds, what ICE and the relink backoff
take) both ends are told it is up again (`connected`), which is where the
core re-sends from the member's last ack and asks for history.

The cores are the real `ReliableRoom`s, fed frames, connection changes and
timers on the virtual clock; signatures are not computed (a fixed signature,
a verifier that accepts), which changes nothing the core decides. After
`duration`, sending and dropping stop and the run drains for `drain` seconds.
Then every peer must hold every message of its room exactly once, and every
room one order: the summary counts what is lost, duplicated, or out of
agreement, and the delivery latency it took.
"""

from __future__ import annotations

from typing import Any

from peer.messaging import Delivered, Discontinuity, ReliableRoom, RoomConfig
from simulations.metrics import Series, describe, ratio, rnd
from simulations.scenario import Plot, Progress, Result, World

DEFAULTS: dict[str, Any] = {
    "nodes": 240,
    "room_size": 12,
    "message_rate": 0.05,
    "body_bytes": 64,
    "link_drops_per_hour": 6.0,
    "reconnect_mean": 3.0,
    "resume_window": 30.0,
    "duration": 600.0,
    "drain": 120.0,
}

SIGNATURE = bytes(64)


def _accept(_key: bytes, _message: bytes, _signature: bytes) -> bool:
    return True


class _Peer:
    __slots__ = ("core", "index", "key", "region", "room", "seen", "timer", "timer_at")

    def __init__(self, index: int, room: int, region: int, config: RoomConfig) -> None:
        self.index = index
        self.key = index.to_bytes(32, "big")
        self.room = room
        self.region = region
        self.core = ReliableRoom(room.to_bytes(20, "big"), self.key, _sign, _accept, config)
        self.seen: set[tuple[bytes, int]] = set()
        self.timer: Any = None
        self.timer_at = 0.0


def _sign(_message: bytes) -> bytes:
    return SIGNATURE


def _to_whom(frame: tuple[bytes, Any]) -> bytes:
    return frame[0]


class _Link:
    """One data channel between two peers: ordered, reliable while up, lossy when it drops."""

    __slots__ = ("a", "b", "epoch", "last", "up")

    def __init__(self, a: _Peer, b: _Peer) -> None:
        self.a, self.b = a, b
        self.up = True
        self.epoch = 0
        self.last = {a.index: 0.0, b.index: 0.0}
        """Per receiving end: when the last frame arrives (frames never overtake)."""


def run(params: dict[str, Any], progress: Progress | None) -> Result:
    world = World(params, progress)
    rng = world.rng
    engine = world.engine
    network = world.network
    config = RoomConfig(resume_window=float(params["resume_window"]))
    size = max(2, int(params["room_size"]))
    rooms = max(1, int(params["nodes"]) // size)
    peers = [_Peer(i, i // size, network.pick_region(rng), config) for i in range(rooms * size)]
    links: dict[tuple[int, int], _Link] = {}
    by_key = {peer.key: peer for peer in peers}
    sent_at: dict[tuple[bytes, int], float] = {}
    latencies: list[float] = []
    counts = {"sent": 0, "delivered": 0, "duplicates": 0, "drops": 0, "gaps": 0, "frames": 0}
    frame_kinds: dict[str, int] = {}
    duration = float(params["duration"])
    drop_rate = float(params["link_drops_per_hour"]) / 3600.0
    body = "x" * int(params["body_bytes"])

    def link_of(a: _Peer, b: _Peer) -> _Link:
        return links[(a.index, b.index) if a.index < b.index else (b.index, a.index)]

    def service(peer: _Peer) -> None:
        now = engine.now
        core = peer.core
        # The core sends to its members in set order, which differs between processes
        # (hash seeds); by member key, the delay draws are the same in every run.
        for member, frame in sorted(core.frames_to_send(), key=_to_whom):
            other = by_key[member]
            link = link_of(peer, other)
            if not link.up:
                continue
            counts["frames"] += 1
            kind = frame["t"]
            frame_kinds[kind] = frame_kinds.get(kind, 0) + 1
            arrive = now + network.delay(rng, peer.region, other.region)
            arrive = max(arrive, link.last[other.index])
            link.last[other.index] = arrive
            engine.post(arrive, deliver, (link, link.epoch, peer, other, frame))
        while (event := core.next_event()) is not None:
            if isinstance(event, Delivered):
                env = event.envelope
                if env.author == peer.key:
                    continue
                ident = (env.author, env.seq)
                if ident in peer.seen:
                    counts["duplicates"] += 1
                    continue
                peer.seen.add(ident)
                counts["delivered"] += 1
                latencies.append(now - sent_at[ident])
            elif isinstance(event, Discontinuity):
                counts["gaps"] += 1
        deadline = core.get_timer()
        if deadline is not None and (peer.timer is None or deadline < peer.timer_at):
            if peer.timer is not None:
                peer.timer.cancel()
            peer.timer = engine.schedule(deadline, fire, peer)
            peer.timer_at = deadline

    def fire(peer: _Peer) -> None:
        peer.timer = None
        peer.core.handle_timer(engine.now)
        service(peer)

    def deliver(item: tuple[_Link, int, _Peer, _Peer, dict[str, Any]]) -> None:
        link, epoch, source, target, frame = item
        if link.epoch != epoch or not link.up:
            return  # the channel dropped while this frame was in flight
        target.core.receive(source.key, frame, engine.now)
        service(target)

    def talk(peer: _Peer) -> None:
        if world.t >= duration:
            return
        env = peer.core.send(body, engine.now)
        sent_at[(env.author, env.seq)] = engine.now
        counts["sent"] += 1
        service(peer)
        world.at(world.t + rng.expovariate(params["message_rate"]), talk, peer)

    def drop(link: _Link) -> None:
        if world.t >= duration:
            return
        counts["drops"] += 1
        link.up = False
        link.epoch += 1
        link.a.core.disconnected(link.b.key)
        link.b.core.disconnected(link.a.key)
        world.at(world.t + rng.expovariate(1.0 / params["reconnect_mean"]), reconnect, link)

    def reconnect(link: _Link) -> None:
        link.up = True
        now = engine.now
        link.last = {link.a.index: now, link.b.index: now}
        link.a.core.connected(link.b.key, now)
        link.b.core.connected(link.a.key, now)
        service(link.a)
        service(link.b)
        if drop_rate > 0:
            world.at(world.t + rng.expovariate(drop_rate), drop, link)

    for room in range(rooms):
        members = peers[room * size : (room + 1) * size]
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                links[(a.index, b.index)] = _Link(a, b)
    for (a, b), link in links.items():
        peers[a].core.connected(peers[b].key, engine.now)
        peers[b].core.connected(peers[a].key, engine.now)
        if drop_rate > 0:
            world.at(rng.expovariate(drop_rate), drop, link)
    for peer in peers:
        service(peer)
        world.at(rng.expovariate(params["message_rate"]), talk, peer)

    series = Series("messaging_over_time", ["t", "links_up", "sent", "delivered", "pending"])

    def sample(t: float) -> None:
        expected = counts["sent"] * (size - 1)
        series.add(
            t=t,
            links_up=sum(1 for link in links.values() if link.up),
            sent=counts["sent"],
            delivered=counts["delivered"],
            pending=expected - counts["delivered"],
        )

    end = duration + float(params["drain"])
    world.every(params["sample_every"], sample, end)
    world.run_until(end)

    # What each peer should hold: every message of its room's other members.
    by_room: dict[int, list[tuple[bytes, int]]] = {}
    for author, seq in sent_at:
        by_room.setdefault(by_key[author].room, []).append((author, seq))
    lost = 0
    agreeing = 0
    for room in range(rooms):
        members = peers[room * size : (room + 1) * size]
        wanted = by_room.get(room, [])
        for peer in members:
            lost += sum(1 for m in wanted if m[0] != peer.key and m not in peer.seen)
        orders = {tuple((e.author, e.seq) for e in p.core.transcript()) for p in members}
        agreeing += len(orders) == 1
    expected = counts["sent"] * (size - 1)
    summary = {
        "nodes": len(peers),
        "rooms": rooms,
        "room_size": size,
        "messages": {
            "sent": counts["sent"],
            "deliveries_expected": expected,
            "delivered": counts["delivered"],
            "lost": lost,
            "duplicates": counts["duplicates"],
            "discontinuities": counts["gaps"],
            "delivered_share": ratio(counts["delivered"], expected),
        },
        "rooms_in_one_order": agreeing,
        "rooms_in_one_order_share": ratio(agreeing, rooms),
        "latency_s": describe(latencies, 4),
        "links": {"count": len(links), "drops": counts["drops"]},
        "frames": {
            "total": counts["frames"],
            "per_delivery": ratio(counts["frames"], counts["delivered"], 3),
            "by_kind": dict(sorted(frame_kinds.items())),
        },
        "sim_seconds": rnd(end, 3),
    }
    ts = series.column("t")
    plots = [
        Plot(
            "messaging_pending",
            "Deliveries still pending, and links up",
            "simulated seconds",
            "count",
            [
                ("pending deliveries", ts, series.column("pending")),  # type: ignore[list-item]
                ("links up", ts, series.column("links_up")),  # type: ignore[list-item]
            ],
        )
    ]
    return Result(summary, [series], plots, engine.events)
