"""The rooms scenario and its harness (simulations/roomnet.py): the real room core at every
node, measured; the same seed gives the same run."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

from dht.core import DHTConfig
from dht.ids import node_id_for
from dht.records import Record
from signaling.layers import RoomConfig
from signaling.rooms import HomeNode, layer_key, room_key, seat_list_value
from simulations.engine import Engine
from simulations.network import NetworkModel
from simulations.overlay import EPOCH, Overlay, make_identity
from simulations.roomnet import RoomNet, RoomNode, VirtualClient, warm_overlay
from simulations.scenario import make_scenario, run, summary_json

ROOT = Path(__file__).resolve().parents[2]
ROOM = room_key("https://example.org/")
SMALL = {"nodes": 40, "users": 150, "pages": 10, "layer_size": 10, "warmup": 20}


def small_net(seed: int, nodes: int = 6) -> tuple[RoomNet, list[RoomNode]]:
    engine = Engine(EPOCH)
    overlay = Overlay(engine, random.Random(seed), NetworkModel(), DHTConfig())
    sims = warm_overlay(overlay, nodes, random.Random(seed + 1))
    net = RoomNet(overlay, random.Random(seed + 2), RoomConfig(layer_size=6))
    return net, [net.add_node(sim) for sim in sims]


Trace = list[tuple[int | None, int | None, int | None, float | None, int]]


def crowd_of(seed: int, people: int = 30) -> tuple[RoomNet, Trace]:
    net, homes = small_net(seed)
    rng = random.Random(seed)

    def arrive(client: VirtualClient) -> None:
        net.connect(client)
        net.join(client, ROOM)

    for i in range(people):
        client = net.add_client(homes[rng.randrange(len(homes))])
        net.engine.schedule(EPOCH + 1.0 + 0.5 * i, arrive, client)
    net.run(60.0, max_events=2_000_000)
    trace = [(r.layer, r.total, r.truth, r.answered_at, net.messages_of(r)) for r in net.joins]
    return net, trace


def test_the_same_seed_gives_the_same_joins_and_another_seed_differs() -> None:
    _, a = crowd_of(5)
    _, b = crowd_of(5)
    _, c = crowd_of(6)
    assert a == b
    assert a != c
    assert all(layer is not None for layer, *_ in a)


def test_every_dht_message_is_counted_once_against_a_cause() -> None:
    net, _ = crowd_of(5)
    by_cause = net.messages_by_cause()
    assert sum(by_cause.values()) + net.background_messages() == net.overlay.stats.sent
    assert all(net.messages_of(r) > 0 for r in net.joins)
    assert net.stats.dht_refused == 0


def test_a_home_check_is_the_dht_identify_at_the_address_a_seat_list_names() -> None:
    """A seat list signed by a key no node runs, naming a live node's DHT address: the
    reader's DHT core asks that address to prove the id (an identify RPC on the
    simulated network), the answer proves another id, and nobody is seated by it."""
    net, homes = small_net(7)
    target = homes[2].sim
    key = make_identity("sim", bytes(32))
    home = HomeNode(node_id_for(key.public_key), "ws://203.0.113.5:8443")
    value = seat_list_value(ROOM, 0, home, target.addr, [(bytes(32), 1)], 1, 1)
    record = Record.create(key, layer_key(ROOM, 0), value, 1, int(net.now + 300))
    net.overlay.call(homes[3].sim, homes[3].sim.core.put_record(record, net.now), None)
    net.run(5.0)
    reader = homes[1]
    asked = target.core.counters["rpc.in.Identify"]
    client = net.add_client(reader)
    net.connect(client)
    joined = net.join(client, ROOM)
    net.run(15.0)
    assert joined.layer == 0 and joined.total == 1
    assert reader.core.counters["home.unproven"] == 1
    assert reader.sim.core.counters["identify.bad"] == 1
    assert target.core.counters["rpc.in.Identify"] == asked + 1


def test_the_scenario_seats_everyone_and_measures_what_joins_cost() -> None:
    summary = run(make_scenario("rooms", SMALL)).summary
    join = summary["join"]
    assert join["count"] == join["seated"] == 150
    assert join["refused"] == {} and join["unanswered"] == 0
    assert join["dht_messages"]["mean"] > 0 and join["dht_reads"]["p50"] >= 2
    assert 0 < join["latency_s"]["p50"] < 10
    messages = summary["messages"]
    counted = sum(messages[k] for k in ("joins", "refresh", "departures", "background"))
    assert counted + messages["other_requests"] == messages["dht_total"]
    assert summary["layers"]["fill_below_last"] >= 0.8
    assert summary["load"]["hottest_key"]["key"].startswith("page 0 layer ")
    assert summary["estimate"]["scored"] > 0


def test_dht_messages_per_join_do_not_grow_with_the_room() -> None:
    """One page, 60 then 240 people (10 then 40 layers of 6) joining at the same rate: a
    join reads a few layers whatever the room's size, where scanning the layers in order
    would cost four times more in the larger room. (Measured: p50 484 and 590 messages,
    5 and 8 reads; the larger room's joins find more of the layers they are offered full,
    the nodes' estimates lagging the room's growth, and move. The refresh is slowed here
    to keep the test short, which makes the estimates lag more.)"""
    common = {
        "nodes": 20,
        "pages": 1,
        "layer_size": 6,
        "join_rate": 1.0,
        "refresh": 300.0,
        "presence_ttl": 900.0,
        "warmup": 20,
    }
    small = run(make_scenario("rooms", {**common, "users": 60})).summary["join"]
    large = run(make_scenario("rooms", {**common, "users": 240})).summary["join"]
    assert large["dht_messages"]["p50"] <= 1.5 * small["dht_messages"]["p50"]
    assert large["dht_reads"]["p50"] <= small["dht_reads"]["p50"] + 4


TINY = {"nodes": 20, "users": 60, "pages": 5, "layer_size": 6, "warmup": 10}
SCRIPT = f"""
from simulations.scenario import make_scenario, run, summary_json
print(summary_json(run(make_scenario("rooms", {TINY!r}))), end="")
"""


def test_the_rooms_summary_is_byte_identical_across_processes_and_hash_seeds() -> None:
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT],
            cwd=ROOT,
            env=env,
            capture_output=True,
            check=True,
            timeout=300,
        )
        outputs.append(proc.stdout)
    assert outputs[0] == outputs[1]
    assert outputs[0] == summary_json(run(make_scenario("rooms", TINY))).encode()


def test_a_prefilled_room_is_joined_at_its_frontier_and_sized_from_its_hints() -> None:
    """120 people already seated on the page (20 full layers of 6, seat lists written
    straight into the DHT): newcomers sit past them, and the size they are told is the
    room's, not the handful that joined during the run."""
    params = {"nodes": 30, "users": 12, "pages": 1, "layer_size": 6, "join_rate": 0.5}
    summary = run(make_scenario("rooms", {**params, "prefill": 120})).summary
    assert summary["join"]["seated"] == 12
    assert summary["layers"]["hottest_room_people"] == 132
    assert summary["layers"]["hottest_room_layers"] >= 22
    assert summary["estimate"]["scored"] == 12
    assert summary["estimate"]["median_error"] < 0.1
