"""nat: peers behind a NAT mix meet in rooms; how many links need a relay, and how much.

Users arrive (Poisson), pick a page by Zipf popularity, sit in the first layer
of `layer_size` with a free seat (an idealised placement: the room core's own,
with its DHT reads and estimates, is measured by the rooms scenario) and open one
connection to every member of their layer, as the peer does. The NAT pair
table (simulations.network.DIRECT) decides direct or relayed; a relayed link
takes an allocation on the relay of the newcomer's home node (`relays` of the
`nodes` signaling nodes run one, each with `relay_capacity` allocations) and
carries `link_bps` each way while both ends stay. Users leave after a Weibull
session. The DHT is not exercised here (see rooms and growth for that).
"""

from __future__ import annotations

from typing import Any

from simulations.metrics import Series, describe, ratio, rnd
from simulations.network import NatMix, NatType, Relay, connects_directly
from simulations.scenario import Plot, Progress, Result, World
from simulations.workload import Weibull, Zipf, steady_arrival_rate

DEFAULTS: dict[str, Any] = {
    "users": 2000,
    "pages": 200,
    "zipf_s": 0.8,
    "layer_size": 20,
    "nat_open": 0.25,
    "nat_cone": 0.55,
    "nat_symmetric": 0.20,
    "relays": 10,
    "relay_capacity": 500,
    "link_bps": 16000.0,
    "session_shape": 0.59,
    "session_scale": 600.0,
    "duration": 1800.0,
}


class _User:
    __slots__ = ("layer", "links", "nat", "page", "relay")

    def __init__(self, nat: NatType, page: int, layer: int, relay: int) -> None:
        self.nat = nat
        self.page = page
        self.layer = layer
        self.relay = relay
        self.links: list[tuple[_User, int | None]] = []


def run(params: dict[str, Any], progress: Progress | None) -> Result:
    world = World(params, progress)
    rng = world.rng
    mix = NatMix(params["nat_open"], params["nat_cone"], params["nat_symmetric"])
    zipf = Zipf(params["pages"], params["zipf_s"])
    sessions = Weibull(params["session_shape"], params["session_scale"])
    relays = [Relay(f"relay{i}", params["relay_capacity"]) for i in range(params["relays"])]
    layers: dict[tuple[int, int], list[_User]] = {}
    counts = {"direct": 0, "relayed": 0, "failed": 0}
    rate = steady_arrival_rate(params["users"], sessions)
    link_bps = params["link_bps"]
    duration = params["duration"]
    online = [0]
    last_t = [0.0]

    def account(now: float) -> None:
        # Relay bandwidth: each allocation carries 2 * link_bps while it lasts.
        span = now - last_t[0]
        for relay in relays:
            relay.bytes_relayed += relay.allocations * 2 * link_bps / 8 * span
        last_t[0] = now

    def arrive(_: Any) -> None:
        account(world.t)
        page = zipf.sample(rng)
        layer = 0  # the first layer with a free seat
        while (page, layer) in layers and len(layers[(page, layer)]) >= params["layer_size"]:
            layer += 1
        home_relay = rng.randrange(params["nodes"])
        user = _User(mix.pick(rng), page, layer, home_relay)
        members = layers.setdefault((page, layer), [])
        for other in members:
            if connects_directly(user.nat, other.nat):
                counts["direct"] += 1
                user.links.append((other, None))
                other.links.append((user, None))
                continue
            relay_index = user.relay % len(relays) if relays else None
            if relay_index is None or not relays[relay_index].allocate():
                counts["failed"] += 1
                continue
            counts["relayed"] += 1
            user.links.append((other, relay_index))
            other.links.append((user, relay_index))
        members.append(user)
        online[0] += 1
        world.at(world.t + sessions.sample(rng), leave, user)
        world.at(world.t + rng.expovariate(rate), arrive)

    def leave(user: _User) -> None:
        account(world.t)
        layers[(user.page, user.layer)].remove(user)
        for other, relay_index in user.links:
            other.links = [(u, r) for u, r in other.links if u is not user]
            if relay_index is not None:
                relays[relay_index].release()
        online[0] -= 1

    world.at(0.0, arrive)
    series = Series("relays_over_time", ["t", "users", "allocations", "max_allocations"])
    world.every(
        params["sample_every"],
        lambda t: series.add(
            t=t,
            users=online[0],
            allocations=sum(r.allocations for r in relays),
            max_allocations=max((r.allocations for r in relays), default=0),
        ),
        duration,
    )
    world.run_until(duration)
    account(duration)
    total = sum(counts.values())
    bandwidth = [r.bytes_relayed * 8 / duration for r in relays]
    summary = {
        "nodes": params["nodes"],
        "connections": {
            "total": total,
            "direct": counts["direct"],
            "relayed": counts["relayed"],
            "failed": counts["failed"],
            "relayed_share": ratio(counts["relayed"], total),
            "failed_share": ratio(counts["failed"], total),
        },
        "relays": {
            "count": len(relays),
            "bandwidth_bps": describe(bandwidth, 1),
            "peak_allocations": describe([r.peak for r in relays]),
            "refused": sum(r.refused for r in relays),
        },
        "sim_seconds": rnd(duration, 3),
    }
    ts = series.column("t")
    plots = [
        Plot(
            "relay_allocations",
            "Relay allocations over time",
            "simulated seconds",
            "allocations",
            [
                ("all relays", ts, series.column("allocations")),  # type: ignore[list-item]
                ("busiest relay", ts, series.column("max_allocations")),  # type: ignore[list-item]
            ],
        )
    ]
    return Result(summary, [series], plots, world.engine.events)
