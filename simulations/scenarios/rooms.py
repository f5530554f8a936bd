"""rooms: people join pages' rooms through their home nodes, the real room core at every node.

`nodes` DHT nodes (oracle-filled routing tables) each run the room core of
signaling/layers.py, its commands carried out by simulations/roomnet.py as
signaling/node.py carries them out: layer reads and seat-list stores are the
nodes' own DHT lookups, home checks their identify RPC, node links a one-way
delay, clients sign what they are asked after a round trip. `users` people
arrive at `join_rate` per second, each picks a page by Zipf(`zipf_s`) over
`pages` URLs (rank 0 the most popular) and a home node at random, connects and
joins; a share `leave_share` of them closes the page after an exponential stay
(mean `stay_mean` s). The run ends `drain` s after the last arrival.

`prefill` people are already seated on page 0 when the run starts (a warm start,
`RoomNet.prefill`: full layers of made-up members whose seat lists, signed by half
of the nodes, are written straight into the DHT), so joins into a room of 10^5
can be measured without simulating 10^5 joins and their renewals first. Those
homes then take no newcomers (their cores would replace the made-up lists).

With `webrtc` on, every newcomer offers a connection to the members its `joined`
lists, through the room cores, members answer, and each connection is up a fixed
number of round trips later (`roomnet.WebRtcModel`, NAT types from `nat_*`):
`join.to_first_peer_s` is the join sent to the first data channel open. With the
fast paths a newcomer offers to the members its sign request names, before it is
seated (docs/protocol.md 2.5.3); `pipelined_joins = false` turns that and the read
ahead of 2.5.4 off (the fast paths as they were before those two rules);
`store_reads = false` turns off the check made from the seat store's replies (2.5.5:
the join reads the layer again after its store, as before); `seat_at_majority = false`
seats a newcomer only once every holder replied to that store (2.5.5 without 2.5.6);
`hopeful_placement = false` places only from proven lists (2.5.7 off).

Measured: join latency (client side: the join sent to its answer received);
DHT operations and DHT messages per join (each message counted against the
join whose operation it serves, roomnet's attribution), and every DHT message
of the run by cause (joins, the periodic refresh, departures, routing upkeep);
layer sizes and fill; the `total` each `joined` announced against the people
seated at that moment (after a room's first `warmup` joins); requests served
per node and on the hottest key.
"""

from __future__ import annotations

import dataclasses
import random
import statistics
from collections import Counter
from typing import Any

from dht.core import Message
from dht.ids import to_int
from dht.wire import Address, FindRecords, StoreRecords
from signaling.layers import RoomConfig
from signaling.rooms import MAX_LAYER, layer_key, room_key
from simulations.metrics import Series, describe, histogram, ratio, rnd
from simulations.network import NatMix
from simulations.oracle import IdSpace
from simulations.overlay import MessageObserver, SimNode
from simulations.roomnet import DEPARTURE, OTHER, REFRESH, JoinRecord, RoomNet, WebRtcModel
from simulations.scenario import Plot, Progress, Result, World
from simulations.workload import Zipf

DEFAULTS: dict[str, Any] = {
    "users": 1000,
    "pages": 100,
    "zipf_s": 1.0,
    "layer_size": 24,
    "layer_choices": 2,
    "join_rate": 20.0,
    "presence_ttl": 60.0,
    "refresh": 20.0,
    "leave_share": 0.0,
    "stay_mean": 300.0,
    "warmup": 200,
    "drain": 30.0,
    "prefill": 0,
    "webrtc": False,
    "pipelined_joins": True,
    "store_reads": True,
    "seat_at_majority": True,
    "hopeful_placement": True,
    "nat_open": 0.25,
    "nat_cone": 0.55,
    "nat_symmetric": 0.20,
}

HOT_PAGES = 8
HOT_LAYERS = 8
"""The hot-key report names layer keys of the top `HOT_PAGES` pages, up to `HOT_LAYERS`
past each one's highest occupied layer."""


class KeyLoad(MessageObserver):
    """Requests each record key receives (reads and stores), over all the nodes asked."""

    def __init__(self) -> None:
        self.by_key: Counter[bytes] = Counter()

    def delivered(self, node: SimNode, message: Message, src: Address) -> None:
        if not message.request:
            return
        body = message.body
        if isinstance(body, FindRecords):
            self.by_key[body.key] += 1
        elif isinstance(body, StoreRecords) and body.records:
            self.by_key[body.records[0].key] += 1


def run(params: dict[str, Any], progress: Progress | None) -> Result:
    world = World(params, progress)
    overlay, rng = world.overlay, world.rng
    sims = [overlay.add_node() for _ in range(params["nodes"])]
    world.warm_tables(sims)
    config = RoomConfig(
        layer_size=params["layer_size"],
        presence_ttl=params["presence_ttl"],
        refresh=params["refresh"],
        choices=params["layer_choices"],
    )
    if world.fast:
        config = config.with_fast_paths()
        if not params["pipelined_joins"]:  # the fast paths as they were before 2.5.3, 2.5.4
            config = dataclasses.replace(config, early_offers=False, read_ahead=False)
        if not params["store_reads"]:  # the check reads after the store (before 2.5.5)
            config = dataclasses.replace(config, store_reads=False)
        if not params["seat_at_majority"]:  # seated once every holder replied (2.5.5)
            config = dataclasses.replace(config, seat_at_majority=False)
        if not params["hopeful_placement"]:  # placed from proven lists only (2.5.7)
            config = dataclasses.replace(config, hopeful_placement=False)
    webrtc = None
    if params["webrtc"]:
        nats = NatMix(params["nat_open"], params["nat_cone"], params["nat_symmetric"])
        webrtc = WebRtcModel(nat=nats)
    net = RoomNet(
        overlay,
        random.Random(rng.getrandbits(64)),
        config,
        keep_frames=False,
        webrtc=webrtc,
        spans=webrtc is not None,
    )
    homes = [net.add_node(sim) for sim in sims]
    zipf = Zipf(params["pages"], params["zipf_s"])
    rooms = [room_key(f"https://example.org/page/{i}") for i in range(params["pages"])]
    if params["prefill"] > 0:
        half = len(homes) // 2
        net.prefill(rooms[0], params["prefill"], homes[:half])
        homes = homes[half:]
    load = KeyLoad()
    overlay.observers.append(load)
    users, gap = params["users"], 1.0 / params["join_rate"]
    largest_seen = [0]
    series = Series(
        "rooms_over_time",
        ["t", "seated", "hottest_room", "hottest_layers", "largest_layer", "dht_messages"],
    )

    def arrive(user: int) -> None:
        client = net.add_client(homes[rng.randrange(len(homes))])
        net.connect(client)
        net.join(client, rooms[zipf.sample(rng)])
        if params["leave_share"] > 0 and rng.random() < params["leave_share"]:
            stay = rng.expovariate(1.0 / params["stay_mean"])
            world.at(world.t + stay, lambda _: net.disconnect(client))
        if user + 1 < users:
            world.at(1.0 + (user + 1) * gap, arrive, user + 1)

    def sample(t: float) -> None:
        counts = net.all_layer_counts()
        largest = max((max(c.values()) for c in counts.values()), default=0)
        largest_seen[0] = max(largest_seen[0], largest)
        hottest = counts.get(rooms[0], {})
        series.add(
            t=t,
            seated=sum(len(s) for s in net.seated.values()),
            hottest_room=sum(hottest.values()),
            hottest_layers=max(hottest, default=-1) + 1,
            largest_layer=largest,
            dht_messages=overlay.stats.sent,
        )

    end = 1.0 + users * gap + params["drain"]
    world.at(1.0, arrive, 0)
    world.every(params["sample_every"], sample, end)
    world.run_until(end)

    final = net.all_layer_counts()
    summary = {
        "nodes": params["nodes"],
        "users": users,
        "pages": params["pages"],
        "join": _joins(net),
        "messages": _messages(net, overlay.stats.sent),
        "layers": _layers(final, rooms, config.layer_size, largest_seen[0]),
        "estimate": _estimates(net.joins, params["warmup"], set(net.prefilled)),
        "load": _load(net.nodes, load, sims, rooms, params["k"], final),
        "sim_seconds": rnd(world.t, 3),
    }
    plots = _plots(net.joins, final.get(rooms[0], {}), rooms[0], config.layer_size)
    return Result(summary, [series], plots, world.engine.events)


def _joins(net: RoomNet) -> dict[str, Any]:
    records = net.joins
    seated = [r for r in records if r.layer is not None]
    refused = Counter(r.refused for r in records if r.refused is not None)
    summary = {
        "count": len(records),
        "seated": len(seated),
        "unanswered": sum(r.answered_at is None for r in records),
        "refused": dict(sorted(refused.items())),
        "latency_s": describe([r.latency for r in seated if r.latency is not None]),
        "dht_reads": describe([r.reads for r in seated if r.reads is not None]),
        "dht_messages": describe([net.messages_of(r) for r in seated]),
    }
    if net.webrtc is not None:
        offered = [r for r in seated if r.offers]
        connected = [r for r in offered if r.to_first_peer is not None]
        summary["with_members"] = len(offered)
        summary["first_peer_connected"] = len(connected)
        summary["first_peer_relayed_share"] = ratio(
            sum(r.first_peer_relayed for r in connected), len(connected)
        )
        summary["to_first_peer_s"] = describe(
            [r.to_first_peer for r in connected if r.to_first_peer is not None]
        )
        summary["first_peer_offered_early"] = sum(r.first_peer_early for r in connected)
        summary.update(_floors(seated, connected))
    return summary


PHASES = ("client", "read", "store", "check", "sign", "wait")


def critical_path(
    record: JoinRecord, until: float | None = None
) -> tuple[dict[str, float], float, int] | None:
    """Where a seated join's time went, and its floor: walking back from the moment the
    node answered, the span (`roomnet.Span`) that ended last before that moment gated
    it; its time counts for its kind, its floor to the join's, and the walk goes on from
    its start. Time between spans is `wait` (the core waited on something no span of this
    join covers: a read another join started, a timer); `client` is the join's and the
    answer's trip between client and node. The floor is the client's round trip plus
    the floors of the gating spans: the sequential round trips the join needed, each
    to the contact it actually ended on. With `until` (a moment at the node before the
    answer), the walk starts there and `client` is the join's trip only: what the join
    needed before that moment."""
    sent, arrived, answered, heard = (
        record.sent_at,
        record.arrived_at,
        record.answered_at,
        record.heard_at,
    )
    if arrived is None or answered is None or heard is None:
        return None
    phases = dict.fromkeys(PHASES, 0.0)
    phases["client"] = (arrived - sent) + (heard - answered)
    if until is not None:
        phases["client"], answered = arrived - sent, until
    floor, rounds, now = phases["client"], 0, answered
    spans = [s for s in record.spans or () if s.end is not None and s.start >= arrived - 1e-9]
    while True:
        gating = [s for s in spans if s.end is not None and s.end <= now + 1e-9]
        if not gating:
            break
        span = max(gating, key=lambda s: (s.end, -s.start))
        spans.remove(span)
        assert span.end is not None
        phases["wait"] += max(0.0, now - span.end)
        phases[span.kind] += span.end - span.start
        floor += span.floor or 0.0
        rounds += span.end > span.start
        now = min(now, span.start)
    phases["wait"] += max(0.0, now - arrived)
    return phases, floor, rounds


def _floors(seated: list[JoinRecord], connected: list[JoinRecord]) -> dict[str, Any]:
    """The joins' floors and critical paths (`critical_path`). A first peer's floor is the
    join's plus what followed `joined` (offer, answer and the connection's round trips are
    modelled at their floor: the first member to connect is the nearest); when the first
    peer answered an offer made before `joined` (docs/protocol.md 2.5.3), it is the floor
    of what the join needed before the node named that member (`critical_path` until
    then: in the sign request, or once its home was proven) plus what followed (the
    signature and the offer, the answer, the connection: all at their floor)."""
    paths = {r.id: critical_path(r) for r in seated}
    done = [(r, p) for r, p in paths.items() if p is not None]
    by_id = {r.id: r for r in seated}
    floors = {i: p[1] for i, p in done}
    over = [(by_id[i].latency or 0.0) - floors[i] for i in floors]
    first: list[float] = []
    for r in connected:
        if r.id not in floors or r.first_peer_at is None or r.heard_at is None:
            continue
        named = r.first_peer_named_at
        if r.first_peer_early and named is not None:
            before = critical_path(r, until=named)
            if before is not None:
                first.append(before[1] + r.first_peer_at - named)
                continue
        first.append(floors[r.id] + r.first_peer_at - r.heard_at)
    count = max(1, len(done))
    return {
        "floor_s": describe(list(floors.values())),
        "over_floor_s": describe(over),
        "critical_path": {
            "rounds": describe([float(p[2]) for _, p in done]),
            "mean_s": {k: rnd(sum(p[0][k] for _, p in done) / count) for k in PHASES},
        },
        "first_peer_floor_s": describe(first),
    }


def _messages(net: RoomNet, sent: int) -> dict[str, Any]:
    by_cause = net.messages_by_cause()
    joins = sum(n for cause, n in by_cause.items() if cause > 0)
    people = max(1, len(net.joins))
    return {
        "dht_total": sent,
        "per_join_all_causes": rnd(sent / people, 3),
        "joins": joins,
        "refresh": by_cause.get(REFRESH, 0),
        "departures": by_cause.get(DEPARTURE, 0),
        "other_requests": by_cause.get(OTHER, 0),
        "background": net.background_messages(),
        "refused_operations": net.stats.dht_refused,
        "link_frames": net.stats.link_frames,
        "sign_requests": net.stats.sign_requests,
    }


def _layers(
    final: dict[bytes, dict[int, int]], rooms: list[bytes], size: int, largest_seen: int
) -> dict[str, Any]:
    """Fill of the layers below each room's highest occupied one, pooled over rooms."""
    below = seats = 0
    sizes: list[int] = []
    for counts in final.values():
        top = max(counts)
        sizes.extend(counts.get(i, 0) for i in range(top + 1))
        below += top
        seats += sum(min(counts.get(i, 0), size) for i in range(top))
    hottest = final.get(rooms[0], {})
    top = max(hottest, default=0)
    return {
        "rooms_occupied": len(final),
        "layers": len(sizes),
        "fill_below_last": ratio(seats, below * size),
        "hottest_room_people": sum(hottest.values()),
        "hottest_room_layers": top + 1 if hottest else 0,
        "hottest_room_fill_below_last": ratio(
            sum(min(hottest.get(i, 0), size) for i in range(top)), top * size
        ),
        "largest": max(sizes, default=0),
        "largest_seen": largest_seen,
        "over_size": sum(s > size for s in sizes),
        "size_histogram": histogram(sizes),
    }


def _estimates(records: list[JoinRecord], warmup: int, prefilled: set[bytes]) -> dict[str, Any]:
    """|announced total - people seated| / people seated, after each room's first `warmup`
    joins (every join of a prefilled room)."""
    by_room: dict[bytes, list[JoinRecord]] = {}
    for record in records:
        if record.layer is not None and record.truth:
            by_room.setdefault(record.room, []).append(record)
    errors: list[float] = []
    for seated in by_room.values():
        seated.sort(key=lambda r: (r.answered_at or 0.0, r.id))
        skip = 0 if seated[0].room in prefilled else warmup
        errors.extend(abs((r.total or 0) - (r.truth or 0)) / (r.truth or 1) for r in seated[skip:])
    return {
        "scored": len(errors),
        "relative_error": describe(errors),
        "median_error": rnd(statistics.median(errors)) if errors else None,
        "within_10pct_share": ratio(sum(e <= 0.10 for e in errors), len(errors)),
    }


def _load(
    homes: list[Any],
    load: KeyLoad,
    sims: list[SimNode],
    rooms: list[bytes],
    k: int,
    final: dict[bytes, dict[int, int]],
) -> dict[str, Any]:
    """Requests served per node (every RPC kind), and by the nodes closest to the hottest key."""
    served = {
        home.sim.index: sum(v for n, v in home.sim.core.counters.items() if n.startswith("rpc.in."))
        for home in homes
    }
    values = list(served.values())
    mean = sum(values) / len(values) if values else 0.0
    hot: dict[str, Any] = {}
    if load.by_key:
        key, requests = max(load.by_key.items(), key=lambda item: (item[1], item[0]))
        holders = IdSpace(sims).closest(to_int(key), k)
        top = max(served[i] for i in holders)
        hot = {
            "key": _name_key(key, rooms, final),
            "requests": requests,
            "share_of_keyed_requests": ratio(requests, sum(load.by_key.values())),
            "holders_served_max": top,
            "holders_served_max_over_mean": rnd(top / mean) if mean else None,
            "keys": len(load.by_key),
        }
    return {
        "served_per_node": describe(values),
        "served_max_over_mean": rnd(max(values) / mean) if mean else None,
        "hottest_key": hot,
    }


def _name_key(key: bytes, rooms: list[bytes], final: dict[bytes, dict[int, int]]) -> str:
    """`page R layer L` for a layer key of one of the top pages, else `other`."""
    for rank, room in enumerate(rooms[:HOT_PAGES]):
        top = max(final.get(room, {}), default=0)
        for layer in range(min(top + HOT_LAYERS, MAX_LAYER + 1)):
            if layer_key(room, layer) == key:
                return f"page {rank} layer {layer}"
    return "other"


def _plots(
    records: list[JoinRecord], hottest: dict[int, int], room: bytes, size: int
) -> list[Plot]:
    seated = sorted(
        (r for r in records if r.room == room and r.layer is not None and r.truth),
        key=lambda r: (r.answered_at or 0.0, r.id),
    )
    order = [float(i) for i in range(1, len(seated) + 1)]
    estimate = Plot(
        "rooms_estimate",
        "The hottest page: room size announced in `joined` vs seated",
        "joins answered",
        "people",
        [
            ("seated at that moment", order, [float(r.truth or 0) for r in seated]),
            ("announced total", order, [float(r.total or 0) for r in seated]),
        ],
    )
    index = [float(i) for i in range(max(hottest, default=-1) + 1)]
    layers = Plot(
        "rooms_layer_sizes",
        "The hottest page: members of each layer, at the end",
        "layer",
        "members",
        [
            ("members", index, [float(hottest.get(int(i), 0)) for i in index]),
            ("layer size", index, [float(size)] * len(index)),
        ],
    )
    return [estimate, layers]
