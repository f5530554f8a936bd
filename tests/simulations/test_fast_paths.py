"""The fast paths on the five-region model: the floor a lookup is measured against, the
warm start of proximity tables, and fast runs against the baseline in the same test."""

from __future__ import annotations

import random

import pytest

from dht.core import DHTConfig, Event, LookupCompleted
from signaling.layers import RoomConfig
from signaling.protocol import SignalFrom
from signaling.rooms import room_key
from simulations.engine import Engine
from simulations.network import NatMix, NetworkModel
from simulations.observe import HopCounter
from simulations.oracle import IdSpace, fill_near_contacts, fill_routing_tables
from simulations.overlay import EPOCH, Overlay, SimNode
from simulations.roomnet import (
    JoinRecord,
    RoomNet,
    RoomNode,
    VirtualClient,
    WebRtcModel,
    warm_overlay,
)
from simulations.scenario import make_scenario, run
from simulations.scenarios.rooms import PHASES, critical_path

ROOM = room_key("https://example.org/webrtc")


def warm(count: int, config: DHTConfig, seed: int = 3) -> Overlay:
    engine = Engine(EPOCH)
    overlay = Overlay(engine, random.Random(seed), NetworkModel(jitter_ms=0.0), config)
    nodes = [overlay.add_node() for _ in range(count)]
    fill_routing_tables(nodes, IdSpace(nodes), overlay.nodes, config.k, random.Random(seed))
    return overlay


def test_a_lookups_floor_is_the_round_trips_along_its_query_chain() -> None:
    overlay = warm(400, DHTConfig())
    network = overlay.network
    counter = HopCounter(lambda: overlay.now)
    overlay.observers.append(counter)
    rng = random.Random(4)
    for _ in range(20):
        origin = overlay.nodes[rng.randrange(400)]
        target = rng.randbytes(20)
        hops, floor, latency = measured(overlay, counter, origin, target)
        assert hops is not None and floor is not None
        # No jitter: every round trip is twice a one-way latency of the matrix.
        trips = [2 * network.base_delay(origin.region, r) for r in range(5)]
        assert hops * min(trips) - 1e-6 <= floor <= hops * max(trips) + 1e-6
        assert floor <= latency + 1e-6


def measured(
    overlay: Overlay, counter: HopCounter, origin: SimNode, target: bytes
) -> tuple[int | None, float | None, float]:
    counter.track(origin.addr, target)
    started = overlay.now
    got: list[tuple[int | None, float | None, float]] = []

    def done(node: SimNode, event: Event) -> None:
        assert isinstance(event, LookupCompleted)
        hops, floor = counter.finish_with_floor(node.addr, target, event.contacts[0].addr)
        got.append((hops, floor, overlay.now - started))

    overlay.find_node(origin, target, done)
    overlay.engine.run(until=overlay.now + 10)
    (result,) = got
    return result


def test_the_warm_start_of_proximity_tables_swaps_far_residents_for_near_ones() -> None:
    config = DHTConfig().with_fast_paths()
    overlay = warm(3000, config)
    network = overlay.network
    by_id = {n.node_id: n for n in overlay.nodes}

    def rtt(a: SimNode, b: SimNode) -> float:
        return 2 * network.base_delay(a.region, b.region)

    def mean_far_bucket_rtt(node: SimNode) -> float:
        node.core.table.open_all()
        buckets = [b for b in node.core.table.buckets.values() if len(b.contacts) >= config.k]
        trips = [rtt(node, by_id[c]) for b in buckets for c in b.contacts]
        return sum(trips) / len(trips)

    sample = overlay.nodes[:50]
    before = [mean_far_bucket_rtt(n) for n in sample]
    space = IdSpace(overlay.nodes)
    swaps = fill_near_contacts(
        sample, space, overlay.nodes, config.k, random.Random(5), rtt, config.pns_share
    )
    after = [mean_far_bucket_rtt(n) for n in sample]
    assert swaps > 0 and sum(after) < 0.8 * sum(before)
    for node in sample:
        table = node.core.table
        table.open_all()
        for bucket in table.buckets.values():
            near = [c for c in bucket.contacts if c in table.near]
            assert len(near) <= int(config.pns_share * config.k)
            assert len(bucket.contacts) <= config.k


def growth(fast: bool) -> dict[str, object]:
    params = {
        "nodes": 600,
        "prefill": 590,
        "lookups": 60,
        "lookup_rate": 50.0,
        "settle": 5.0,
        "reads": 60,
        "read_rate": 50.0,
        "fast": fast,
    }
    summary: dict[str, object] = run(make_scenario("growth", params)).summary
    return summary


def test_fast_lookups_and_reads_beat_the_baseline_on_the_five_region_model() -> None:
    base, fast = growth(False), growth(True)
    for summary in (base, fast):
        assert summary["lookup"]["success_rate"] == 1.0  # type: ignore[index]
        assert summary["reads"]["success_rate"] == 1.0  # type: ignore[index]
    latency = {n: s["lookup"]["latency_s"]["p50"] for n, s in (("base", base), ("fast", fast))}  # type: ignore[index]
    reads = {n: s["reads"]["latency_s"]["p50"] for n, s in (("base", base), ("fast", fast))}  # type: ignore[index]
    assert latency["fast"] < 0.6 * latency["base"]
    assert reads["fast"] < 0.3 * reads["base"]
    floor = fast["lookup"]["floor_s"]["p50"]  # type: ignore[index]
    assert 0 < floor <= latency["fast"]


# --- WebRTC setup after a join (simulations/roomnet.py, WebRtcModel) --------------------


def webrtc_net(nat: NatMix | None, spans: bool = False) -> tuple[RoomNet, list[RoomNode]]:
    network = NetworkModel(
        regions=("lab",), latency_ms=((20.0,),), region_weights=(1.0,), jitter_ms=0.0
    )
    engine = Engine(EPOCH)
    overlay = Overlay(engine, random.Random(7), network, DHTConfig().with_fast_paths())
    sims = warm_overlay(overlay, 4, random.Random(8))
    config = RoomConfig().with_fast_paths()
    net = RoomNet(overlay, random.Random(9), config, webrtc=WebRtcModel(nat=nat), spans=spans)
    return net, [net.add_node(sim) for sim in sims]


def seat(net: RoomNet, client: VirtualClient) -> JoinRecord:
    net.connect(client)
    record = net.join(client, ROOM)
    for _ in range(400):
        if record.first_peer_at is not None or (record.heard_at and not record.offers):
            break
        net.run(0.05, max_events=200_000)
    return record


def test_a_newcomer_is_connected_the_model_s_round_trips_after_the_answer() -> None:
    """One region, 20 ms one way between hosts, 15 ms of access link at each client: a
    direct path between two clients is 2 x (20 + 2 x 15) = 100 ms a round trip; the data
    channel is open 1 + 2 + 1 + 0.5 = 4.5 of them after the answer reached the newcomer."""
    net, homes = webrtc_net(None)
    first = seat(net, net.add_client(homes[0]))
    assert first.offers == 0 and first.first_peer_at is None  # alone in the room
    newcomer = net.add_client(homes[1])
    answered: list[float] = []
    signalled = net._signalled

    def watch(client: VirtualClient, frame: SignalFrom) -> None:
        if client is newcomer and "answer" in frame.payload:
            answered.append(net.t)
        signalled(client, frame)

    net._signalled = watch  # type: ignore[method-assign]
    record = seat(net, newcomer)
    assert record.offers == 1 and record.first_peer_at is not None
    assert not record.first_peer_relayed
    assert abs(record.first_peer_at - (answered[0] + 4.5 * 0.100)) < 1e-6
    assert record.heard_at is not None and record.first_peer_at > record.heard_at


def test_a_joins_critical_path_adds_up_to_its_latency_and_its_floor_to_its_round_trips() -> None:
    """One region, 20 ms one way and no jitter: every DHT round trip is 40 ms, and four
    nodes know each other, so each DHT operation's floor is one round trip; the client's
    is 2 x (20 + 15) ms. Walking back from the answer, the spans the join waited on, the
    waits between them and the client's trips add up to its latency; its floor is the
    client's round trip, a placement read, and the seat list's store (whose replies are
    the check, 2.5.5) or the signature asked at the same time (the slower: the
    signature)."""
    net, homes = webrtc_net(None, spans=True)
    seat(net, net.add_client(homes[0]))
    record = seat(net, net.add_client(homes[1]))
    path = critical_path(record)
    assert path is not None and record.latency is not None and record.spans
    phases, floor, rounds = path
    assert set(phases) == set(PHASES)
    assert abs(sum(phases.values()) - record.latency) < 1e-6
    client_trip, dht_trip = 2 * (0.020 + 0.015), 0.040
    assert abs(phases["client"] - client_trip) < 1e-6
    assert {s.kind for s in record.spans} >= {"read", "store", "sign"}
    assert all(s.floor is not None and s.end is not None for s in record.spans)
    assert rounds == 2
    assert abs(floor - (client_trip + dht_trip + max(client_trip, dht_trip))) < 1e-6
    assert abs(phases["read"] - dht_trip) < 1e-6 and abs(phases["sign"] - client_trip) < 1e-6
    assert phases["check"] == 0.0  # no check read: the store's replies were the check
    assert floor <= record.latency + 1e-6


def test_a_pair_whose_nats_do_not_meet_connects_through_the_newcomers_relay() -> None:
    net, homes = webrtc_net(NatMix(open=0.0, cone=0.0, symmetric=1.0))
    seat(net, net.add_client(homes[0]))
    record = seat(net, net.add_client(homes[1]))
    assert record.first_peer_relayed and record.first_peer_at is not None
    # Through the relay: 2 x (20 + 20 + 2 x 15) ms a round trip, after the TURN allocation
    # (2 round trips of 2 x (20 + 15) ms) that started when `joined` arrived.
    assert record.to_first_peer is not None
    assert record.to_first_peer > (record.latency or 0) + 4.5 * 0.140


@pytest.mark.parametrize("seed", [1, 3])
def test_sybils_near_a_key_hide_no_more_with_the_fast_paths(seed: int) -> None:
    """Attackers ground near a key answer lookups with each other and swallow stores
    (simulations/attack.py). Quorum reads must not let their empty answers end a read,
    and a record read must not sweep to the k nearest (they fill it): the reads that
    return an honest record, and all of them, are as many as without the fast paths,
    on the same workload (the proximity warm start draws from its own generator)."""
    reads = {}
    for fast in (False, True):
        summary = run(make_scenario("sybil", {"seed": seed, "fast": fast})).summary
        reads[fast] = summary["reads"]
    assert reads[True]["honest_share"] >= reads[False]["honest_share"]
    assert reads[True]["success_rate"] >= reads[False]["success_rate"]
    assert reads[True]["latency_s"]["p50"] < 0.5 * reads[False]["latency_s"]["p50"]
