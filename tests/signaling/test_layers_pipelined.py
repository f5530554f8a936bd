"""Pipelined joins (docs/protocol.md 2.5.3 offers before seated, 2.5.4 reading ahead)
on virtual time, each rule beside the behaviour without it, and what a stranger or a
newcomer may not do with them: signal before it signed, signal anyone its sign request
did not name, be named a member whose home is not proven, move a join with hints."""

from __future__ import annotations

import random
from dataclasses import replace

from dht.core import DHTConfig
from signaling.layers import RoomConfig
from signaling.protocol import ErrorFrame, MemberList, PeerJoined, SignalFrom, SignRequest
from simulations.engine import Engine
from simulations.network import NetworkModel
from simulations.overlay import EPOCH, Overlay
from simulations.roomnet import (
    JoinRecord,
    RoomNet,
    RoomNode,
    VirtualClient,
    WebRtcModel,
    warm_overlay,
)
from tests.signaling.test_layers import ROOM, fill_room, join_one, plant_stranger_seat_lists, settle


def mesh(
    nodes: int, seed: int, config: RoomConfig, pipelined: bool = True
) -> tuple[RoomNet, list[RoomNode]]:
    """`nodes` nodes with every fast path (2.5.3 and 2.5.4 only when `pipelined`), and
    WebRTC setup modelled (all NATs open)."""
    overlay = Overlay(
        Engine(EPOCH), random.Random(seed), NetworkModel(), DHTConfig().with_fast_paths()
    )
    sims = warm_overlay(overlay, nodes, random.Random(seed + 1))
    fast = config.with_fast_paths()
    if not pipelined:
        fast = replace(fast, early_offers=False, read_ahead=False)
    net = RoomNet(overlay, random.Random(seed + 2), fast, webrtc=WebRtcModel())
    return net, [net.add_node(sim) for sim in sims]


def first_peer(pipelined: bool) -> tuple[JoinRecord, VirtualClient, set[bytes]]:
    net, homes = mesh(6, seed=21, config=RoomConfig(layer_size=24), pipelined=pipelined)
    members = {c.key for c in fill_room(net, homes[:3], 5)}
    newcomer = net.add_client(homes[4])
    record = join_one(net, newcomer)
    net.run(5.0)
    return record, newcomer, members


def test_a_newcomer_offers_to_the_members_its_sign_request_names_before_it_is_seated() -> None:
    record, newcomer, members = first_peer(True)
    before, _, _ = first_peer(False)
    assert record.layer == 0 and before.layer == 0
    asked = newcomer.received(SignRequest)[0]
    named = {m.key for m in asked.members or ()}
    later = [f for f in newcomer.received(MemberList) if f.id is None]  # proven since
    named |= {m.key for f in later for m in f.members}
    assert named == members  # every member, as `joined` lists them, and nobody else
    # Its first peer answered an offer made before `joined`, and was up sooner by about
    # what the store and the check took (a few tens of ms on six nodes).
    assert record.first_peer_early and record.to_first_peer and before.to_first_peer
    assert record.latency and record.first_peer_named_at is not None
    assert record.to_first_peer < before.to_first_peer - 0.02
    assert not before.first_peer_early and not before.named_at


def test_without_the_rule_the_sign_request_names_nobody() -> None:
    _, newcomer, _ = first_peer(False)
    assert all(f.members is None for f in newcomer.received(SignRequest))


def signal_during_join(answers: bool, to: str) -> tuple[VirtualClient, list[VirtualClient]]:
    """A newcomer (signing or silent) signals, while its join is under way, a member its
    sign request named or someone it did not name (a member of another layer)."""
    config = RoomConfig(layer_size=4, sign_timeout=3.0)
    net, homes = mesh(6, seed=22, config=config)
    people = fill_room(net, homes[:3], 6)  # layer 0 full, two in layer 1
    newcomer = net.add_client(homes[4], answers=answers)
    net.connect(newcomer)
    record = net.join(newcomer, ROOM)
    while not newcomer.received(SignRequest):
        net.run(0.01)
    asked = newcomer.received(SignRequest)[0]
    named = {m.key for m in asked.members or ()}
    outside = [c for c in people if c.key not in named and c.layers.get(ROOM) != asked.layer]
    targets = [c for c in people if c.key in named] if to == "named" else outside
    assert targets
    net.run(2 * newcomer.delay + 0.001)  # its signature (if any) is at the node
    for target in targets:
        net.signal(newcomer, ROOM, target.key, {"offer": "x"})
    settle(net, [record])
    net.run(2.0)
    return newcomer, targets


def heard_from(client: VirtualClient, sender: VirtualClient) -> bool:
    return any(isinstance(f, SignalFrom) and f.sender == client.key for f in sender.frames or ())


def test_a_joining_client_reaches_only_the_members_it_was_named_and_only_once_it_signed() -> None:
    newcomer, named = signal_during_join(True, "named")
    assert not [f for f in newcomer.received(ErrorFrame) if f.code == "unknown-peer"]
    assert all(heard_from(newcomer, member) for member in named)
    stranger, others = signal_during_join(True, "other")
    assert not any(heard_from(stranger, member) for member in others)
    refusals = [f for f in stranger.received(ErrorFrame) if f.code == "unknown-peer"]
    assert len(refusals) == len(others)
    silent, named = signal_during_join(False, "named")  # it never signs
    assert not any(heard_from(silent, member) for member in named)
    assert [f for f in silent.received(ErrorFrame) if f.code == "unknown-peer"]
    assert [f for f in silent.received(ErrorFrame) if f.code == "bad-signature"]


def test_members_of_unproven_homes_are_never_named_nor_dialled() -> None:
    """A stranger's seat lists (throwaway keys, a home nobody runs) under the layers a
    newcomer is placed in: the sign request and the `peer-joined` frames of the join
    name none of their members, so no signal is ever sent towards that home."""
    net, homes = mesh(6, seed=23, config=RoomConfig(layer_size=8))
    _, fake = plant_stranger_seat_lists(net, homes, range(3))
    people = fill_room(net, homes, 10)
    for client in people:
        asked = {m.key for f in client.received(SignRequest) for m in f.members or ()}
        later = {m.key for f in client.received(MemberList) if f.id is None for m in f.members}
        heard = later | {f.key for f in client.received(PeerJoined)}
        assert not (asked | heard) & fake
    assert all(node.core.counters["signal.refused"] == 0 for node in homes)
    assert net.stats.link_dropped == 0  # nothing went towards the stranger's home


def forget_homes(nodes: list[RoomNode], homes: list[RoomNode]) -> None:
    """As in a big network: `homes` are neither among the contacts of `nodes` nor proven
    to them (their seat lists must be proven first)."""
    for node in nodes:
        for home in homes:
            node.sim.core.table.remove(home.node_id)
            node.sim.core._verified.pop(home.node_id, None)


def cold_join(read_ahead: bool, strangers: bool = False) -> tuple[JoinRecord, RoomNode, RoomNet]:
    """Layers 0..3 of four seats filled by three nodes (their lists renewed since); a node
    that never saw the room seats a newcomer (with `strangers`: 24 seat lists under
    throwaway keys in layers 0 and 1 first, whose hints claim 500 layers: most of the
    hints the cold node reads)."""
    net, homes = mesh(9, seed=24, config=RoomConfig(layer_size=4))
    for node in homes:
        node.core.config = replace(node.core.config, read_ahead=read_ahead)
    if strangers:
        layers = [0] * 12 + [1] * 12  # more lists than the honest ones: the median is theirs
        plant_stranger_seat_lists(net, homes, layers, members=3)
    fill_room(net, homes[:3], 14)
    net.run(25.0)  # renewed, the lists' hints say four layers
    cold = homes[7]
    forget_homes([cold], homes[:3])
    record = join_one(net, net.add_client(cold))
    net.run(1.0)  # the answer reaches the client (its latency is the client's)
    return record, cold, net


def test_a_cold_node_reads_the_placement_round_ahead_while_homes_are_proven() -> None:
    ahead, node, net = cold_join(True)
    before, _, _ = cold_join(False)
    assert ahead.layer == before.layer == 3  # the one layer with a seat, either way
    assert node.core.counters["join.read_ahead"] > 0
    assert ahead.latency and before.latency
    assert ahead.latency < before.latency - 0.05
    assert max(net.layer_counts(ROOM).values()) <= 4


def test_hints_from_strangers_move_no_join_and_cost_a_bounded_number_of_reads() -> None:
    honest, _, _ = cold_join(True)
    misled, node, net = cold_join(True, strangers=True)
    assert misled.layer == honest.layer == 3
    config = node.core.config
    assert node.core.counters["join.read_ahead"] <= config.choices + 1 + config.hinted_ahead
    assert (misled.reads or 0) <= (honest.reads or 0) + config.choices + 1 + config.hinted_ahead
    assert max(net.layer_counts(ROOM).values()) <= 4


def test_a_member_at_the_newcomers_own_node_answers_its_offer_before_it_is_seated() -> None:
    """Newcomer and members homed at one node: the members' answers go through the node's
    own routing, which knows the newcomer only from its join under way (2.5.3)."""
    net, homes = mesh(4, seed=25, config=RoomConfig(layer_size=24))
    members = fill_room(net, homes[:1], 3)
    newcomer = net.add_client(homes[0])
    record = join_one(net, newcomer)
    net.run(5.0)
    assert record.first_peer_early and record.to_first_peer is not None
    for member in members:
        assert not [f for f in member.received(ErrorFrame) if f.code == "unknown-peer"]
    assert homes[0].core.counters["signal.refused"] == 0
    stranger = net.add_client(homes[0])  # not joining: nobody answers it, nor is reached
    net.connect(stranger)
    net.run(1.0)
    net.signal(stranger, ROOM, members[0].key, {"offer": "x"})
    net.signal(members[0], ROOM, stranger.key, {"answer": "x"})
    net.run(1.0)
    assert not heard_from(stranger, members[0]) and not heard_from(members[0], stranger)
    assert homes[0].core.counters["signal.refused"] == 2


def test_a_member_at_the_newcomers_own_node_hears_of_it_before_its_first_signal() -> None:
    """Clients take signals only from members their node named (peer/mesh.py): a member
    homed where the newcomer joins hears `peer-joined` for it before the newcomer's
    first signal, as a member homed elsewhere does from its own node."""
    net, homes = mesh(4, seed=25, config=RoomConfig(layer_size=24))
    members = fill_room(net, homes[:1], 3)
    newcomer = net.add_client(homes[0])
    record = join_one(net, newcomer)
    net.run(5.0)
    assert record.first_peer_early
    reached = 0
    for member in members:
        frames = member.frames or []
        signals = [
            i
            for i, f in enumerate(frames)
            if isinstance(f, SignalFrom) and f.sender == newcomer.key
        ]
        told = [
            i for i, f in enumerate(frames) if isinstance(f, PeerJoined) and f.key == newcomer.key
        ]
        if signals:
            reached += 1
            assert told and told[0] < signals[0]
    assert reached >= 1
