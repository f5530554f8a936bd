"""rooms: users on Zipf-popular pages join rooms through their home node, with layers.

`nodes` DHT nodes (oracle-filled routing tables) serve as home nodes. `users`
users arrive at `join_rate` per second; each picks a page by Zipf(`zipf_s`)
over `pages` URLs and a random home node, which runs the node's join exactly
as signaling/node.py does with the real cores: read layers
`layer_scan_batch` at a time (`dht get_records` on `layer_key(room, i)`)
until one has fewer than `layer_size` members (`signaling.rooms.choose_layer`),
then store the user's presence record there (`put_record`). The same
workload then runs again with one unbounded layer per room, to show what
layers do to the hottest key.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from dht.records import Record
from signaling.rooms import HomeNode, choose_layer, layer_key, presence_value, room_key
from simulations.metrics import describe, rnd
from simulations.oracle import IdSpace, fill_routing_tables
from simulations.overlay import make_identity
from simulations.scenario import Progress, Result, World
from simulations.workload import Zipf

DEFAULTS: dict[str, Any] = {
    "users": 1000,
    "pages": 100,
    "zipf_s": 1.0,
    "layer_size": 24,
    "layer_scan_batch": 2,
    "join_rate": 20.0,
    "presence_ttl": 60,
}


def _one_pass(params: dict[str, Any], progress: Progress | None, layer_size: int) -> dict[str, Any]:
    world = World(params, progress)
    overlay, rng = world.overlay, world.rng
    nodes = [overlay.add_node() for _ in range(params["nodes"])]
    fill_routing_tables(nodes, IdSpace(nodes), overlay.nodes, params["k"], rng)
    zipf = Zipf(params["pages"], params["zipf_s"])
    rooms = [room_key(f"https://example.org/page/{i}") for i in range(params["pages"])]
    batch = max(1, params["layer_scan_batch"])
    latencies: list[float] = []
    lookups: list[int] = []
    seats: Counter[tuple[bytes, int]] = Counter()

    def join(user: int) -> None:
        room = rooms[zipf.sample(rng)]  # rank 0 is the most popular page
        home = nodes[rng.randrange(len(nodes))]
        identity = make_identity(params["identities"], rng.randbytes(32))
        started = overlay.now
        counts: list[int] = []
        reads = [0]

        def scan() -> None:
            first = len(counts)
            results: dict[int, int] = {}
            for layer in range(first, first + batch):
                op = home.core.get_records(layer_key(room, layer), overlay.now)
                reads[0] += 1

                def done(_n: Any, event: Any, layer: int = layer) -> None:
                    results[layer] = len(event.records)
                    if len(results) == batch:
                        counts.extend(results[i] for i in sorted(results))
                        chosen = choose_layer(counts, layer_size)
                        if chosen < len(counts):
                            seat(chosen)
                        else:
                            scan()

                overlay.call(home, op, done)

        def seat(layer: int) -> None:
            key = layer_key(room, layer)
            value = presence_value(room, layer, HomeNode(home.node_id, f"sim://{home.index}"))
            expires = int(overlay.now + params["presence_ttl"])
            record = Record.create(identity, key, value, user + 1, expires)
            op = home.core.put_record(record, overlay.now)

            def stored(_n: Any, _event: Any) -> None:
                latencies.append(overlay.now - started)
                lookups.append(reads[0] + 1)
                seats[(room, layer)] += 1

            overlay.call(home, op, stored)

        scan()

    gap = 1.0 / params["join_rate"]
    for user in range(params["users"]):
        world.at(1.0 + user * gap, join, user)
    end = 1.0 + params["users"] * gap + 8 * params["rpc_timeout"]
    world.run_until(end)

    # Load per node: records held and requests served (by the real cores' counters).
    held = [len(n.core.records) for n in nodes]
    served = [
        sum(v for name, v in n.core.counters.items() if name.startswith("rpc.in.")) for n in nodes
    ]
    hottest_room = rooms[0]  # Zipf rank 0
    hot_keys = {layer_key(hottest_room, i) for i in range(64)}
    held_hot_keys: set[bytes] = set()
    holders = []
    for n in nodes:
        counts = {key: len(n.core.records.get(key, overlay.now)) for key in hot_keys}
        held_hot_keys.update(key for key, count in counts.items() if count)
        if total := sum(counts.values()):
            holders.append(total)
    layer_sizes = list(seats.values())
    return {
        "joins": len(latencies),
        "join_latency_s": describe(latencies),
        "lookups_per_join": describe(lookups),
        "layers_used": len(seats),
        "layer_size": describe(layer_sizes),
        "records_held_per_node": describe(held),
        "records_held_max_over_mean": rnd(
            max(held) / (sum(held) / len(held)) if sum(held) else None
        ),
        "requests_served_per_node": describe(served),
        "requests_served_max_over_mean": rnd(
            max(served) / (sum(served) / len(served)) if sum(served) else None
        ),
        "hottest_room_members": sum(c for (r, _), c in seats.items() if r == hottest_room),
        "hottest_room_keys": len(held_hot_keys),
        "hottest_room_nodes_holding": len(holders),
        "hottest_room_records_at_one_node_max": max(holders, default=0),
        "hottest_room_records_per_holding_node_mean": rnd(
            sum(holders) / len(holders) if holders else None
        ),
        "sim_seconds": rnd(world.t, 3),
        "_events": world.engine.events,
    }


def run(params: dict[str, Any], progress: Progress | None) -> Result:
    layered = _one_pass(params, progress, params["layer_size"])
    flat = _one_pass(params, progress, params["users"] + 1)
    events = layered.pop("_events") + flat.pop("_events")
    summary = {
        "nodes": params["nodes"],
        "users": params["users"],
        "pages": params["pages"],
        "with_layers": layered,
        "without_layers": flat,
    }
    return Result(summary, [], [], events)
