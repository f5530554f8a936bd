"""The link-management core (peer/mesh.py) on virtual time: who offers, glare, relinks,
make before break, fail-over, reconciliation, renewal, and what a rogue member or a
stranger cannot make it do."""

from __future__ import annotations

import itertools
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from peer import mesh

from .meshnet import ROOM, MeshNet

STRANGER = bytes([0xEE]) * 32


def everyone_connected(net: MeshNet, keys: list[bytes]) -> bool:
    return all(net.connected(a, b) for a, b in itertools.combinations(keys, 2))


def test_a_room_of_five_ends_with_one_link_per_pair() -> None:
    net = MeshNet(seed=3)
    keys = [net.add_peer() for _ in range(5)]
    net.run_for(0.5)
    for key in keys:
        net.join(key)
        net.run_for(0.05)
    net.run_for(5)
    assert everyone_connected(net, keys)
    for key in keys:  # each made or answered exactly one link per member, nothing more
        made = len(net.commands_of(key, mesh.Offer)) + len(net.commands_of(key, mesh.Answer))
        assert made == 4, (key.hex()[:4], net.log[key])


def test_crossed_joins_let_the_keys_decide() -> None:
    """Two joins at once: each is seated before it hears of the other, so neither is the
    newcomer. After the grace period the lower key offers and the higher relinks."""
    net = MeshNet(seed=1)
    low, high = net.add_peer(1), net.add_peer(2)
    net.run_for(0.5)
    net.crossing = True
    net.join(low)
    net.join(high)
    net.run_for(0.5)
    assert not net.connected(low, high)
    net.run_for(2)
    assert net.connected(low, high)
    assert net.commands_of(low, mesh.Offer) and not net.commands_of(high, mesh.Offer)


def test_glare_goes_to_the_lower_key() -> None:
    net = MeshNet(seed=2)
    low, high = net.add_peer(1), net.add_peer(2)
    net.run_for(0.5)
    for key in (low, high):
        net.join(key)
    net.run_for(0.2)
    # both decide to offer at the same moment (a relink crossing an offer, say)
    for me, other in ((low, high), (high, low)):
        core = net.peers[me]
        core._offer(ROOM, other, core.rooms[ROOM].members[other], net.now)
        net.pump(me)
    net.run_for(3)
    assert net.connected(low, high)
    assert net.peers[low].counters.get("glare.ours") == 1


def test_a_broken_link_is_offered_again_with_backoff() -> None:
    net = MeshNet(seed=4)
    a, b = net.seated_peers(2)
    assert net.connected(a, b)
    net.cut(a, b)
    net.run_for(0.01)
    assert not net.connected(a, b)
    net.run_for(5)
    assert net.connected(a, b)
    ups = [c for c in net.log[a] if isinstance(c, mesh.LinkUp)]
    downs = [c for c in net.log[a] if isinstance(c, mesh.LinkDown)]
    assert len(ups) == 2 and len(downs) == 1


def test_a_member_with_no_path_is_reported_once_and_retried() -> None:
    config = mesh.MeshConfig(connect_timeout=3.0)
    net = MeshNet(seed=5, config=config)
    a, b = net.add_peer(1), net.add_peer(2)
    net.blocked.add(frozenset((a, b)))
    net.run_for(0.5)
    net.join(a)
    net.run_for(0.2)
    net.join(b)
    net.run_for(30)
    assert not net.connected(a, b)
    reports = net.commands_of(a, mesh.Unreachable)
    assert len(reports) == 1  # told once...
    assert len(net.commands_of(a, mesh.Offer)) >= 4  # ...and tried again and again, spaced out
    net.blocked.clear()
    net.run_for(20)
    assert net.connected(a, b)


def test_an_offer_from_a_stranger_is_refused_and_adds_no_member() -> None:
    """The probe's finding 3, client side: a key the node never seated with us offered,
    and was listed as a member, connected and delivered messages."""
    net = MeshNet(seed=6)
    a = net.add_peer(1)
    net.run_for(0.5)
    net.join(a)
    net.run_for(0.5)
    core = net.peers[a]
    for _ in range(100):
        core.offer_received(ROOM, STRANGER, net.now)
        core.relink_received(ROOM, STRANGER, net.now)
    out = core.commands()
    assert not [c for c in out if isinstance(c, mesh.Answer | mesh.Offer | mesh.MemberJoined)]
    assert STRANGER not in core.rooms[ROOM].members
    assert core.counters["refused.offer.not_member"] == 100
    # a relink goes only to the lower key: a higher key never asks
    assert core.counters["refused.relink.not_member"] == 100


def test_a_signal_never_closes_an_open_link() -> None:
    """The probe's finding 2: an unsigned relink closed a working link (154 renegotiations
    in 8 s). Signals are now signed; and even a member's own valid relinks and offers, in a
    flood, make a spare beside the open link at a bounded rate, never a break."""
    net = MeshNet(seed=7)
    low, high = net.seated_peers(2)
    assert net.connected(low, high)
    first = net.peers[low].rooms[ROOM].members[high].link
    assert first is not None
    core = net.peers[low]
    for i in range(400):  # 8 s of a member relinking every 20 ms
        net.at(
            i * 0.02, lambda: net._deliver(low, lambda c: c.relink_received(ROOM, high, net.now))
        )
    net.run_for(8.5)
    log = net.log[low]
    for i, command in enumerate(log):  # a link goes down only as its spare takes over
        if isinstance(command, mesh.LinkDown):
            assert isinstance(log[i + 2], mesh.LinkUp), log[i : i + 3]
    assert net.connected(low, high)
    offers = len(net.commands_of(low, mesh.Offer))
    assert offers <= 1 + core.config.offer_burst + core.config.offers_per_second * 8.5
    assert core.counters["refused.relink.rate"] >= 390


def test_a_spare_that_fails_leaves_the_open_link_alone() -> None:
    net = MeshNet(seed=8)
    low, high = net.seated_peers(2)
    old = net.peers[low].rooms[ROOM].members[high].link
    assert old is not None and old.open
    net.blocked.add(frozenset((low, high)))  # the spare will never find a path
    net._deliver(low, lambda c: c.relink_received(ROOM, high, net.now))
    net.run_for(40)
    entry = net.peers[low].rooms[ROOM].members[high]
    assert entry.link is old and old.open and entry.spare is None
    assert net.connected(low, high)
    assert not net.commands_of(low, mesh.LinkDown)


def test_fail_over_tries_every_node_then_backs_off_with_jitter() -> None:
    core = mesh.Mesh(
        b"\x01" * 32, ["ws://a", "ws://b", "ws://a"], mesh.MeshConfig(), lambda: 1.0, 0
    )
    core.start(0.0)
    assert [c for c in core.commands() if isinstance(c, mesh.ConnectNode)] == [
        mesh.ConnectNode("ws://a")
    ]
    core.node_failed("ws://a", 0.1)
    assert mesh.ConnectNode("ws://b") in core.commands()
    core.node_failed("ws://b", 0.2)
    out = core.commands()
    assert mesh.NodeStatus("retrying", "", 0.5) in out  # full jitter (rng 1.0) of base 0.5
    assert core.get_timer() == 0.7
    waits = []
    for attempt in range(8):
        core.handle_timer(core.get_timer() or 0)
        core.node_failed("ws://a", core.get_timer() or 0)
        now = 100.0 * (attempt + 1)
        core.node_failed("ws://b", now)
        waits += [c.wait for c in core.commands() if isinstance(c, mesh.NodeStatus) and c.wait]
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]  # capped at 30 s


def test_a_replaced_identity_does_not_reconnect() -> None:
    """Python ignored close code 4001: two processes with one key replaced each other in
    a loop. Now the one replaced stops, and says so."""
    core = mesh.Mesh(b"\x01" * 32, ["ws://a", "ws://b"], mesh.MeshConfig(), random.random, 0)
    core.start(0.0)
    core.node_connected("ws://a", ["ws://b", "ws://b", "ws://c"], 0.1)
    assert core.nodes == ["ws://a", "ws://b", "ws://c"]  # learned, deduplicated
    core.commands()
    core.node_lost("ws://a", mesh.CLOSE_REPLACED, 5.0)
    assert core.commands() == [mesh.NodeStatus("replaced", "ws://a")]
    assert core.get_timer() is None and core.state is mesh.NodeState.REPLACED


def test_after_failing_over_to_a_learned_node_it_goes_back_to_the_chosen_one() -> None:
    """A node the person did not choose (learned from a welcome or a member's home) is a
    fall-back: once there, the chosen node is tried again after `return_after`, doubling
    per failed try up to `return_cap`, and the rooms move back when it answers. Without
    this, one restart of the chosen node left every later room at a stranger's node."""
    core = mesh.Mesh(b"\x01" * 32, ["ws://mine"], mesh.MeshConfig(), lambda: 1.0, 0)
    core.start(0.0)
    core.node_connected("ws://mine", ["ws://learned"], 0.1)
    core.join(ROOM)
    core.joined(ROOM, 0, [], None, 0.2)
    core.commands()
    assert core.get_timer() is None  # at a chosen node: nothing to go back to
    core.node_lost("ws://mine", 1006, 10.0)
    assert mesh.ConnectNode("ws://learned") in core.commands()
    core.node_connected("ws://learned", [], 10.5)
    assert mesh.JoinRoom(ROOM, 0) in core.commands()
    tries = []
    for _ in range(6):  # the chosen node stays down: tried at 60, 120, 240, ... s
        at = core.get_timer()
        assert at is not None
        core.handle_timer(at)
        out = core.commands()
        assert out == [mesh.NodeStatus("returning", "ws://mine"), mesh.ConnectNode("ws://mine")]
        assert core.state is mesh.NodeState.CONNECTED and core.node == "ws://learned"
        assert not core.wants("ws://learned") and core.wants("ws://mine")
        core.node_failed("ws://mine", at + 1)
        tries.append(at)
    gaps = [round(b - a - 1, 3) for a, b in itertools.pairwise(tries)]
    assert tries[0] == 70.5 and gaps == [120.0, 240.0, 480.0, 960.0, 960.0]
    at = core.get_timer()
    assert at is not None
    core.handle_timer(at)
    core.commands()
    core.node_connected("ws://mine", [], at + 0.5)  # back: the rooms rejoin there
    assert core.commands() == [mesh.NodeStatus("connected", "ws://mine"), mesh.JoinRoom(ROOM, 0)]
    assert core.node == "ws://mine" and core.get_timer() is None


def test_a_chosen_node_that_welcomes_then_drops_is_returned_to_less_and_less_often() -> None:
    """A chosen node that accepts the connection and drops it soon after (broken, or
    its operator's choice) pulled the rooms back and forth every `return_after`: each
    welcome started the tries over. A return counts as failed until the chosen node
    has served `return_after`, so the waits double as for a node that refuses."""
    core = mesh.Mesh(b"\x01" * 32, ["ws://mine"], mesh.MeshConfig(), lambda: 1.0, 0)
    core.start(0.0)
    core.node_connected("ws://mine", ["ws://learned"], 0.1)
    core.node_lost("ws://mine", 1006, 500.0)  # it served a while: no penalty
    core.node_connected("ws://learned", [], 500.5)
    assert core.get_timer() == 560.5
    returns = []
    for _ in range(5):
        at = core.get_timer()
        assert at is not None
        core.handle_timer(at)
        assert mesh.ConnectNode("ws://mine") in core.commands()
        core.node_connected("ws://mine", [], at + 0.5)  # welcomed...
        core.node_lost("ws://mine", 1006, at + 5.0)  # ...and dropped
        assert mesh.ConnectNode("ws://learned") in core.commands()
        core.node_connected("ws://learned", [], at + 5.5)
        returns.append(at)
    gaps = [round(b - a - 5.5, 3) for a, b in itertools.pairwise(returns)]
    assert gaps == [120.0, 240.0, 480.0, 960.0]
    at = core.get_timer()
    assert at is not None
    core.handle_timer(at)
    core.node_connected("ws://mine", [], at + 0.5)
    core.node_lost("ws://mine", 1006, at + 200.0)  # this time it served: tries start over
    core.node_connected("ws://learned", [], at + 200.5)
    assert core.get_timer() == at + 260.5


def test_a_return_in_flight_is_dropped_when_the_learned_node_is_lost() -> None:
    core = mesh.Mesh(b"\x01" * 32, ["ws://mine"], mesh.MeshConfig(), lambda: 1.0, 0)
    core.start(0.0)
    core.node_connected("ws://mine", ["ws://learned"], 0.1)
    core.node_lost("ws://mine", 1006, 1.0)
    core.node_connected("ws://learned", [], 1.5)
    core.handle_timer(61.5)
    assert core.returning == "ws://mine"
    core.node_lost("ws://learned", 1006, 62.0)  # fail-over goes on as before
    assert core.returning is None and core.state is mesh.NodeState.CONNECTING
    assert core.wants(core.node or "") and not core.wants("ws://elsewhere")


def test_moving_lists_are_deduplicated_and_bounded() -> None:
    core = mesh.Mesh(b"\x01" * 32, ["ws://a"], mesh.MeshConfig(), random.random, 0)
    core.moving(["ws://b", "ws://b", "ws://a"] + [f"ws://n{i}" for i in range(200)])
    assert core.nodes[:2] == ["ws://b", "ws://a"]
    assert len(core.nodes) == len(set(core.nodes)) == mesh.MAX_NODES


def test_a_member_who_left_during_fail_over_is_reconciled_away() -> None:
    """The probe's finding 6: a member who left while we were between nodes stayed
    listed, with no MemberLeft, and was retried forever."""
    net = MeshNet(seed=9)
    a, b, c = net.add_peer(1), net.add_peer(2), net.add_peer(3)
    net.run_for(0.5)
    for key in (a, b, c):
        net.join(key)
        net.run_for(0.2)
    net.run_for(3)
    assert everyone_connected(net, [a, b, c])
    # a's node goes away; while a is between nodes, c leaves the room (and its links die)
    net.node_up = False
    net._deliver(a, lambda core: core.node_lost("ws://node", 1006, net.now))
    net.leave_room(c)
    net.peers[c].leave(ROOM)
    net.pump(c)
    net.run_for(2)
    net.node_up = True
    net.run_for(40)
    members = net.peers[a].rooms[ROOM].members
    assert c not in members and b in members
    assert mesh.MemberLeft(ROOM, c) in net.log[a]
    assert net.connected(a, b)


def test_ice_credentials_are_renewed_and_relayed_links_replaced_before_expiry() -> None:
    """The probe's finding 5: credentials minted once per join; a relayed link died at the
    first allocation refresh after they expired (5 s TTL)."""
    net = MeshNet(seed=10)
    net.ice_expires = net.now + 5.0
    low, high = net.add_peer(1), net.add_peer(2)
    net.run_for(0.1)
    net.join(low)
    net.run_for(0.1)
    net.join(high)
    net.run_for(0.5)
    assert net.connected(low, high)
    # the links came up through the relay
    for key, other in ((low, high), (high, low)):
        entry = net.peers[key].rooms[ROOM].members[other]
        assert entry.link is not None
        entry.link.relayed = True
    first = net.peers[low].rooms[ROOM].members[high].link
    # fresh credentials are handed out by the node on request
    net.ice_expires = net.now + 60.0
    net.run_for(3.5)
    assert net.commands_of(low, mesh.RequestIceServers)
    assert net.peers[low]._ice_expires is not None and net.peers[low]._ice_expires > 1000 + 50
    entry = net.peers[low].rooms[ROOM].members[high]
    assert entry.link is not first and entry.link is not None and entry.link.open
    assert entry.link.credentials_expire is not None and entry.link.credentials_expire > 1050
    assert net.connected(low, high)
    assert not net.commands_of(low, mesh.Unreachable)


def test_timers_never_fall_in_the_past_while_the_node_is_away() -> None:
    core = mesh.Mesh(b"\x02" * 32, ["ws://a"], mesh.MeshConfig(), lambda: 0.5, 0.0)
    core.start(0.0)
    core.node_connected("ws://a", [], 0.0)
    core.join(ROOM)
    core.joined(ROOM, 0, [b"\x01" * 32], 10.0, 0.0)
    core.commands()
    core.node_lost("ws://a", 1006, 0.1)
    core.node_failed("ws://a", 0.2)
    for _ in range(50):  # the node stays away: timers move on, nothing spins
        when = core.get_timer()
        assert when is not None
        core.handle_timer(when)
        assert (core.get_timer() or when + 1) > when
        core.node_failed("ws://a", when)


# --- property: whatever members and strangers do, the rules hold --------------------------

EVENT = st.one_of(
    st.tuples(st.just("run"), st.floats(0.01, 3.0)),
    st.tuples(st.just("cut"), st.integers(0, 3), st.integers(0, 3)),
    st.tuples(st.just("stranger"), st.integers(0, 3)),
    st.tuples(st.just("relink"), st.integers(0, 3), st.integers(0, 3)),
    st.tuples(st.just("offer"), st.integers(0, 3), st.integers(0, 3)),
    st.tuples(st.just("node"), st.booleans()),
)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), events=st.lists(EVENT, max_size=25))
def test_after_any_storm_the_room_converges(seed: int, events: list[tuple[object, ...]]) -> None:
    net = MeshNet(seed=seed)
    keys = [net.add_peer(i + 1) for i in range(4)]
    net.run_for(0.2)
    for key in keys:
        net.join(key)
        net.run_for(0.05)
    for event in events:
        kind = event[0]
        if kind == "run":
            net.run_for(float(event[1]))  # type: ignore[arg-type]
        elif kind == "cut":
            net.cut(keys[event[1]], keys[event[2]])  # type: ignore[index]
        elif kind == "stranger":
            target = keys[event[1]]  # type: ignore[index]
            net._deliver(target, lambda c: c.offer_received(ROOM, STRANGER, net.now))
        elif kind in ("relink", "offer"):
            target, sender = keys[event[1]], keys[event[2]]  # type: ignore[index]
            if target != sender:
                method = "relink_received" if kind == "relink" else "offer_received"
                net._deliver(target, lambda c, m=method, s=sender: getattr(c, m)(ROOM, s, net.now))
        else:
            up = bool(event[1])
            if net.node_up and not up:
                for key in keys:
                    net._deliver(key, lambda c: c.node_lost("ws://node", 1006, net.now))
            net.node_up = up
        for key in keys:  # invariants after every step
            core = net.peers[key]
            members = core.rooms[ROOM].members if ROOM in core.rooms else {}
            assert STRANGER not in members and key not in members
    net.node_up = True
    for key in keys:
        if net.peers[key].state is mesh.NodeState.CONNECTED:
            continue
        if net.peers[key].state is mesh.NodeState.CONNECTING:
            net._deliver(key, lambda c: c.node_failed(c.node or "", net.now))
    net.run_for(120)
    assert everyone_connected(net, keys), {k.hex()[:2]: net.log[k][-6:] for k in keys}
    for key in keys:
        for entry in net.peers[key].rooms[ROOM].members.values():
            assert entry.link is not None and entry.link.open and entry.spare is None


def connected_core(key: bytes = b"\x01" * 32) -> mesh.Mesh:
    core = mesh.Mesh(key, ["ws://a"], mesh.MeshConfig(), lambda: 1.0, 0.0)
    core.start(0.0)
    core.node_connected("ws://a", [], 0.0)
    core.join(ROOM)
    core.commands()
    return core


def reconnect(core: mesh.Mesh, lost_at: float) -> float:
    """The node drops `core` at `lost_at`; it waits out its backoff and gets back on."""
    core.node_lost("ws://a", 1006, lost_at)
    when = core.get_timer()
    assert when is not None and core.state is mesh.NodeState.WAITING
    core.handle_timer(when)
    assert mesh.ConnectNode("ws://a") in core.commands()
    core.node_connected("ws://a", [], when)
    return when


def test_backoff_never_overflows_however_long_a_member_stays_unreachable() -> None:
    """2**1024 does not fit a float: days of retries must not end in an exception."""
    core = connected_core()
    other = b"\x02" * 32
    core.joined(ROOM, 0, [other], None, 0.0)
    for _ in range(1100):
        offer = next(c for c in core.commands() if isinstance(c, mesh.Offer))
        core.link_failed(ROOM, other, offer.link, True, core.get_timer() or 0.0)
        now = core.get_timer()
        assert now is not None
        core.handle_timer(now)
    assert core.rooms[ROOM].members[other].attempts >= 1100


def test_fresh_ice_servers_are_asked_again_when_the_node_does_not_answer() -> None:
    core = connected_core()
    core.joined(ROOM, 0, [], 100.0, 0.0)
    assert core.get_timer() == 50.0  # half the credentials' life
    core.handle_timer(50.0)
    assert core.commands() == [mesh.RequestIceServers()]
    assert core.get_timer() == 50.0 + mesh.RETRY_ICE_AFTER  # no answer: ask again
    core.handle_timer(80.0)
    assert core.commands() == [mesh.RequestIceServers()]
    core.ice_servers(300.0, 85.0)
    assert core.get_timer() == 85.0 + 107.5


def test_a_member_missing_from_a_rejoin_is_kept_while_its_link_is_open() -> None:
    """A fresh DHT read can miss a record for a moment, and an open link shows the member
    is there: it is kept. Once that link drops, it is removed, not retried forever
    against a node that answers `unknown-peer`."""
    core = connected_core()
    other = b"\x02" * 32
    core.joined(ROOM, 0, [other], None, 0.0)
    offer = next(c for c in core.commands() if isinstance(c, mesh.Offer))
    core.link_open(ROOM, other, offer.link, False, 0.5)
    back = reconnect(core, 1.0)
    core.joined(ROOM, 0, [], None, back)
    core.commands()
    assert other in core.rooms[ROOM].members  # its link is open: kept
    core.link_failed(ROOM, other, offer.link, False, back + 1)
    out = core.commands()
    assert mesh.MemberLeft(ROOM, other) in out
    assert other not in core.rooms[ROOM].members and core.get_timer() is None


def test_a_failed_renewal_is_tried_again_but_never_beside_a_pending_spare() -> None:
    core = connected_core()
    other = b"\x02" * 32
    core.joined(ROOM, 0, [other], 100.0, 0.0)
    offer = next(c for c in core.commands() if isinstance(c, mesh.Offer))
    core.link_open(ROOM, other, offer.link, True, 1.0)  # relayed, credentials until 100
    core.ice_servers(1000.0, 1.0)  # fresh ones are in (and due much later)
    renew_at = 0.0 + 75.0  # three quarters of the link's credentials' life
    assert core.get_timer() == renew_at
    core.handle_timer(renew_at)
    spare = next(c for c in core.commands() if isinstance(c, mesh.Offer))
    assert core.get_timer() == renew_at + core.config.connect_timeout  # only the spare's deadline
    core.handle_timer(renew_at + core.config.connect_timeout)
    out = core.commands()
    assert mesh.CloseLink(ROOM, other, spare.link) in out  # the spare gave up...
    again = [c for c in out if isinstance(c, mesh.Offer)]
    assert len(again) == 1 and again[0].link != spare.link  # ...and renewal tries again
    assert core.rooms[ROOM].members[other].link is not None
    assert core.rooms[ROOM].members[other].link.id == offer.link  # the open link stayed


def test_a_relink_long_after_our_offer_means_it_never_arrived() -> None:
    """An offer whose answer link the other side closed before answering is never
    answered; the other side's relinks then make us offer again, not wait for the
    connect deadline (30 s; seen in a five-peer room with forced drops)."""
    core = connected_core()  # key 01: the lower key offers
    other = b"\x02" * 32
    core.joined(ROOM, 0, [other], None, 0.0)
    first = next(c for c in core.commands() if isinstance(c, mesh.Offer))
    core.relink_received(ROOM, other, 0.5)  # crossing our offer: it is on its way
    assert core.commands() == []
    core.relink_received(ROOM, other, 3.0)  # asked again later: it never got there
    out = core.commands()
    assert mesh.CloseLink(ROOM, other, first.link) in out
    assert [c for c in out if isinstance(c, mesh.Offer)] != []
    assert core.counters["reoffer"] == 1


def test_unreachable_is_told_connect_timeout_after_the_first_try_however_many_links() -> None:
    """Links replaced by glare or relinks restart their own deadlines; the person hears
    `connect_timeout` after the first try all the same (the NAT lab's walled peer)."""
    core = connected_core()
    other = b"\x02" * 32
    core.joined(ROOM, 0, [other], None, 0.0)
    core.commands()
    for at in (2.0, 5.0, 8.0, 11.0):  # the other side keeps offering: a new link each time
        core.offer_received(ROOM, other, at)
    out = core.commands()
    assert not [c for c in out if isinstance(c, mesh.Unreachable)]
    when = core.get_timer()
    assert when == 0.0 + core.config.connect_timeout
    core.handle_timer(when)
    assert [c for c in core.commands() if isinstance(c, mesh.Unreachable)]


# --- moving between layers (docs/protocol.md 3.2: a join while seated) --------------------


def layered(seed: int, layer_size: int = 2, count: int = 4) -> tuple[MeshNet, list[bytes]]:
    """`count` peers joined one after the other into layers of `layer_size`."""
    net = MeshNet(seed=seed, layer_size=layer_size)
    keys = net.seated_peers(count)
    return net, keys


def linked_to(net: MeshNet, key: bytes) -> set[bytes]:
    """The members `key` holds an open connection to."""
    return {other for other in net.peers if other != key and net.connected(key, other)}


def test_a_move_lets_the_old_layer_go_and_links_the_new_one() -> None:
    net, (a, b, c, d) = layered(seed=21, layer_size=3)
    assert net.in_layer(0) == [a, b, c] and net.in_layer(1) == [d]
    assert linked_to(net, a) == {b, c}
    net.move(a, 1)
    net.run_for(0.01)
    assert linked_to(net, a) == {b, c}  # nothing closes before the node answers
    net.run_for(3)
    assert net.in_layer(1) == [d, a]
    assert linked_to(net, a) == {d} and linked_to(net, b) == {c}
    assert set(net.peers[a].rooms[ROOM].members) == {d}
    assert a not in net.peers[b].rooms[ROOM].members
    assert a not in net.peers[c].rooms[ROOM].members
    assert net.peers[a].rooms[ROOM].seat == 1
    log = net.log[a]
    for old in (b, c):
        assert mesh.MemberLeft(ROOM, old) in log
        assert any(isinstance(x, mesh.LinkDown) and x.member == old for x in log)
    # the newcomer offered at once: no relink, no wait for the grace period
    offers = [x for x in log if isinstance(x, mesh.Offer) and x.member == d]
    assert len(offers) == 1 and not net.commands_of(d, mesh.Offer)
    assert not net.commands_of(a, mesh.Unreachable) and not net.commands_of(b, mesh.Unreachable)


def test_sitting_with_a_friend_moves_to_the_friends_layer() -> None:
    net, (a, b, c, d) = layered(seed=22)
    assert net.layer_of[a] == 0 and net.layer_of[d] == 1
    net.move(d, friend=a)  # layer 0 is full
    net.run_for(1)
    assert net.layer_of[d] == 1 and linked_to(net, d) == {c}
    net.move(c, friend=d)  # d and c share a layer already: nothing changes
    net.run_for(1)
    assert net.commands_of(c, mesh.JoinRoom)[-1] == mesh.JoinRoom(ROOM, None, d)
    net.layer_size = 3
    net.move(d, friend=a)
    net.run_for(3)
    assert net.layer_of[d] == 0 and linked_to(net, d) == {a, b}
    assert linked_to(net, c) == set()
    assert net.peers[d].rooms[ROOM].friend is None  # answered: a rejoin asks for the seat


def test_a_refused_move_keeps_the_seat_and_its_links() -> None:
    net, (a, b, _, _) = layered(seed=23)
    net.move(a, 1)  # full
    net.run_for(2)
    joins = net.commands_of(a, mesh.JoinRoom)
    assert joins[-2:] == [mesh.JoinRoom(ROOM, 1, None), mesh.JoinRoom(ROOM, 0, None)]
    assert linked_to(net, a) == {b}
    assert not net.commands_of(a, mesh.LinkDown) and not net.commands_of(a, mesh.MemberLeft)
    state = net.peers[a].rooms[ROOM]
    assert (state.seat, state.layer, state.moving) == (0, 0, False)
    net.move(a, friend=bytes([0x77]) * 32)  # not in the room: unknown-peer
    net.run_for(2)
    assert net.commands_of(a, mesh.JoinRoom)[-1] == mesh.JoinRoom(ROOM, 0, None)
    assert linked_to(net, a) == {b}


def test_fail_over_rejoins_the_layer_moved_to() -> None:
    net, (a, _, _, d) = layered(seed=24, layer_size=3)
    net.move(a, 1)
    net.run_for(3)
    assert linked_to(net, a) == {d}
    net.node_up = False
    net._deliver(a, lambda core: core.node_lost("ws://node", 1006, net.now))
    net.run_for(1)
    net.node_up = True
    net.run_for(40)
    assert net.commands_of(a, mesh.JoinRoom)[-1] == mesh.JoinRoom(ROOM, 1, None)
    assert net.layer_of[a] == 1 and linked_to(net, a) == {d}


def test_a_move_asked_while_the_node_is_away_is_carried_by_the_rejoin() -> None:
    net, (a, _, _, d) = layered(seed=25, layer_size=3)
    net.node_up = False
    net._deliver(a, lambda core: core.node_lost("ws://node", 1006, net.now))
    net.move(a, 1)
    assert net.commands_of(a, mesh.JoinRoom)[-1] == mesh.JoinRoom(ROOM, None, None)  # not sent
    net.run_for(1)
    net.node_up = True
    net.run_for(40)
    assert net.layer_of[a] == 1 and linked_to(net, a) == {d}


def test_a_rejoin_to_a_layer_that_filled_up_sits_anywhere() -> None:
    core = connected_core()
    core.joined(ROOM, 3, [], None, 0.0)
    back = reconnect(core, 1.0)
    assert mesh.JoinRoom(ROOM, 3, None) in core.commands()
    core.join_refused(ROOM, True)
    assert core.commands() == [mesh.JoinRoom(ROOM, None, None)]
    core.join_refused(ROOM, True)  # anywhere is refused too: the application hears it
    core.join_refused(ROOM, False)
    assert core.commands() == []
    core.joined(ROOM, 5, [], None, back)
    assert core.rooms[ROOM].seat == 5


def test_a_first_join_refused_asks_nothing_more() -> None:
    core = mesh.Mesh(b"\x01" * 32, ["ws://a"], mesh.MeshConfig(), lambda: 1.0, 0.0)
    core.start(0.0)
    core.node_connected("ws://a", [], 0.0)
    core.join(ROOM, 7)
    assert core.commands()[-1] == mesh.JoinRoom(ROOM, 7, None)
    core.join_refused(ROOM, True)
    assert core.commands() == [] and core.rooms[ROOM].seat is None


def test_a_member_announced_in_another_layer_is_ignored() -> None:
    """A `peer-joined` the node sent before it moved us names the old layer: that member
    can never be linked through the node (signals stay within a layer)."""
    core = connected_core()
    other, late = b"\x02" * 32, b"\x03" * 32
    core.joined(ROOM, 0, [other], None, 0.0)
    core.move(ROOM, 4)
    core.peer_joined(ROOM, late, 0.1, 0)  # our seat until the node answers: a member
    core.joined(ROOM, 4, [], None, 0.2)
    core.commands()
    core.peer_joined(ROOM, b"\x04" * 32, 0.3, 0)  # the old layer, told late
    core.peer_joined(ROOM, b"\x05" * 32, 0.3, 9)  # a layer never asked for
    core.peer_joined(ROOM, b"\x06" * 32, 0.3, 4)
    core.peer_joined(ROOM, b"\x07" * 32, 0.3)  # no layer named: believed
    assert set(core.rooms[ROOM].members) == {b"\x06" * 32, b"\x07" * 32}
    assert core.counters["refused.member.other_layer"] == 2


MOVES = st.lists(
    st.one_of(
        st.tuples(st.just("run"), st.floats(0.01, 2.0)),
        st.tuples(st.just("move"), st.integers(0, 5), st.integers(0, 3)),
        st.tuples(st.just("friend"), st.integers(0, 5), st.integers(0, 5)),
        st.tuples(st.just("node"), st.booleans()),
    ),
    max_size=20,
)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), events=MOVES)
def test_after_any_moves_each_layer_converges(seed: int, events: list[tuple[Any, ...]]) -> None:
    """Six peers in layers of three move about, to layers and beside each other, while
    the node comes and goes: in the end each is linked to exactly the others of its
    layer, and holds no one else."""
    net = MeshNet(seed=seed, layer_size=3)
    keys = net.seated_peers(6)
    for event in events:
        kind = event[0]
        if kind == "run":
            net.run_for(event[1])
        elif kind == "move":
            net.move(keys[event[1]], event[2])
        elif kind == "friend":
            if event[1] != event[2]:
                net.move(keys[event[1]], friend=keys[event[2]])
        else:
            up = bool(event[1])
            if net.node_up and not up:
                for key in keys:
                    net._deliver(key, lambda c: c.node_lost("ws://node", 1006, net.now))
            net.node_up = up
    net.node_up = True
    for key in keys:
        if net.peers[key].state is mesh.NodeState.CONNECTING:
            net._deliver(key, lambda c: c.node_failed(c.node or "", net.now))
    net.run_for(120)
    for key in keys:
        layer = net.layer_of[key]
        mates = {m for m in net.in_layer(layer) if m != key}
        state = net.peers[key].rooms[ROOM]
        assert state.seat == layer, (key.hex()[:2], net.log[key][-6:])
        assert set(state.members) == mates, (key.hex()[:2], layer, net.log[key][-8:])
        assert linked_to(net, key) == mates
