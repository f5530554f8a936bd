"""sybil: attackers grind ids next to a room key; do reads still return honest records?

`nodes` honest nodes run with oracle-filled routing tables; `attackers`
Sybils (simulations.attack.SybilCore) get ids closer to the key than the
`placement`-th closest honest node and enter routing tables as any verified
node would. `publishers` honest users then store their records under the key
through random honest nodes, and `reads` random honest nodes read it. A read
is honest when it returns at least one honest record.
"""

from __future__ import annotations

from typing import Any

from dht.ids import to_int
from dht.wire import WireContact
from simulations.attack import SybilCore, grind_identity
from simulations.lookups import LookupProbe
from simulations.metrics import describe, ratio, rnd
from simulations.oracle import IdSpace
from simulations.overlay import EPOCH
from simulations.scenario import Progress, Result, World

DEFAULTS: dict[str, Any] = {
    "attackers": 20,
    "placement": 20,
    "publishers": 10,
    "reads": 200,
    "read_rate": 10.0,
}


def run(params: dict[str, Any], progress: Progress | None) -> Result:
    world = World(params, progress)
    overlay = world.overlay
    rng = world.rng
    k = params["k"]
    key = rng.randbytes(20)
    honest = [overlay.add_node() for _ in range(params["nodes"])]
    space = IdSpace(honest)
    rank = max(1, min(params["placement"], len(honest)))
    nth = space.closest(to_int(key), rank)[-1]
    within = to_int(overlay.nodes[nth].node_id) ^ to_int(key)
    attackers = []
    tries = []
    for _ in range(params["attackers"]):
        identity, spent = grind_identity(key, within, rng)
        tries.append(spent)
        attackers.append(overlay.add_node(identity=identity, core_factory=SybilCore))
    allies = [WireContact(a.node_id, a.addr[0], a.addr[1]) for a in attackers]
    SybilCore.allies = allies
    everyone = honest + attackers
    world.warm_tables(everyone)

    stored = []

    def publish(_: Any) -> None:
        for i in range(params["publishers"]):
            via = honest[rng.randrange(len(honest))]
            core = via.core
            record = core.create_record(key, b"honest-%d" % i, 3600, 1, overlay.now)
            overlay.call(via, core.put_record(record, overlay.now), lambda n, e: stored.append(e))

    world.at(1.0, publish)
    probe = LookupProbe(overlay, EPOCH, k)
    start = 30.0
    gap = 1.0 / params["read_rate"]
    for i in range(params["reads"]):
        world.at(start + i * gap, lambda n: probe.get(n, key), honest[rng.randrange(len(honest))])
    end = start + params["reads"] * gap + 4 * params["rpc_timeout"]
    world.run_until(end)
    SybilCore.allies = []

    samples = probe.samples
    closest = IdSpace(everyone).closest(to_int(key), k)
    sybil_ids = {a.index for a in attackers}
    holders = [
        sum(1 for r in overlay.nodes[i].core.local_records(key, overlay.now)) for i in closest
    ]
    summary = {
        "nodes": params["nodes"],
        "attack": {
            "attackers": len(attackers),
            "attackers_in_closest_k": sum(1 for i in closest if i in sybil_ids),
            "grind_tries": describe(tries),
        },
        "stores": {
            "puts": len(stored),
            "mean_stored_at": rnd(
                sum(getattr(e, "stored", 0) for e in stored) / len(stored) if stored else None
            ),
            "honest_holders_in_closest_k": sum(
                1 for i, h in zip(closest, holders, strict=True) if h and i not in sybil_ids
            ),
        },
        "reads": {
            "count": len(samples),
            "honest_share": ratio(sum(s.records > 0 for s in samples), len(samples)),
            "success_rate": ratio(
                sum(s.records >= params["publishers"] for s in samples), len(samples)
            ),
            "records": describe([s.records for s in samples]),
            "latency_s": describe([s.latency for s in samples]),
        },
        "sim_seconds": rnd(world.t, 3),
    }
    return Result(summary, [], [], world.engine.events)
