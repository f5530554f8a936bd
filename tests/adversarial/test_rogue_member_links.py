"""A rogue member's and a stranger's view of a peer's links, on real nodes and aiortc.

The probe found that anyone could tear down a working link with an unsigned
`relink` (154 renegotiations in 8 s), that any key that offered became a
member, that a member who left during a fail-over stayed listed forever,
and that two processes with one key replaced each other in a loop. Each
test here plays one of those attackers against the real clients.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from peer import mesh
from peer.peer import Connected, MemberJoined, MemberLeft, Message, Peer, Replaced, Room
from peer.sdp import NONCE_BYTES, RELINK, sign_description
from peer.signaling import SignalFrom, SignalingClient, SignalingError
from peer.store import KEY_FILE
from peer.webrtc import PeerLink
from signaling.protocol import canonical_url, room_key
from tests.peer.conftest import PeerFactory, next_of
from tests.signaling.conftest import NodeFactory

pytestmark = pytest.mark.integration

URL = "https://example.org/rogue-member"
ROOM = room_key(canonical_url(URL))


def relink_payload(signer: SigningKey, claimed: bytes, to: bytes) -> dict[str, Any]:
    """A relink signed by `signer` but claiming to come from `claimed`."""
    desc = sign_description(
        RELINK, "", ROOM, claimed, to, os.urandom(NONCE_BYTES), time.time(), _signer(signer)
    )
    return {"t": "relink", "desc": desc.to_json()}


def _signer(key: SigningKey) -> Any:
    return lambda message: key.sign(message).signature


async def pair(signaling_mesh: NodeFactory, peers: PeerFactory) -> tuple[Any, Peer, Room, Peer]:
    (node,) = await signaling_mesh(1)
    alice = await peers("alice", [node.url])
    bob = await peers("bob", [node.url])
    room = await alice.join(URL)
    await bob.join(URL)
    await next_of(room, Connected)
    return node, alice, room, bob


async def test_no_signal_from_anyone_else_touches_an_open_link(
    signaling_mesh: NodeFactory, peers: PeerFactory
) -> None:
    node, alice, room, bob = await pair(signaling_mesh, peers)
    link = room.links[bob.public_key]
    # a stranger, seated in the same layer (so the node routes its signals to alice)
    mallory_key = SigningKey.generate()
    mallory = await SignalingClient.connect(node.url, mallory_key)
    try:
        await mallory.join(ROOM, 0)
        attacks = [
            {"t": "relink"},  # unsigned, as before
            relink_payload(mallory_key, bob.public_key, alice.public_key),  # claims to be bob
            relink_payload(SigningKey.generate(), mallory.key, alice.public_key),  # wrong key
            {"t": "sdp", "desc": {"kind": "offer"}},  # garbage
        ]
        for _ in range(40):  # 160 signals in a burst, four times what it took before
            for payload in attacks:
                await mallory.signal(alice.public_key, payload, ROOM)
        await asyncio.sleep(1.0)
        assert room.links[bob.public_key] is link and link.open
        bob_links = [lk for lk in room._by_id.values() if lk.member == bob.public_key]
        assert bob_links == [link]  # no renegotiation at all
        await room.send("still here")
        bob_room = bob.rooms[ROOM]
        assert (await next_of(bob_room, Message, mine=False)).text == "still here"
    finally:
        await mallory.close()


async def test_a_members_relink_flood_builds_connections_at_a_bounded_rate(
    signaling_mesh: NodeFactory, peers: PeerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    (node,) = await signaling_mesh(1)
    alice = await peers("alice", [node.url])
    room = await alice.join(URL)
    mallory_key = SigningKey.generate()
    while bytes(mallory_key.verify_key) < alice.public_key:  # relinks go to the lower key
        mallory_key = SigningKey.generate()
    made: list[bytes] = []
    original = Room.make_link

    def counting(self: Room, member: bytes, link_id: int) -> PeerLink:
        made.append(member)
        return original(self, member, link_id)

    monkeypatch.setattr(Room, "make_link", counting)
    mallory = await SignalingClient.connect(node.url, mallory_key)
    try:
        await mallory.join(ROOM, 0)
        await next_of(room, MemberJoined)
        started = time.monotonic()
        for _ in range(80):  # valid, signed, its own: as fast as the node lets through (20/s)
            await mallory.signal(
                alice.public_key, relink_payload(mallory_key, mallory.key, alice.public_key), ROOM
            )
            await asyncio.sleep(0.055)
        elapsed = time.monotonic() - started
        config = alice.config.mesh
        bound = 2 + config.offer_burst + config.offers_per_second * elapsed
        assert len(made) <= bound, (len(made), bound)
        assert alice.mesh.counters.get("refused.relink.rate", 0) >= 60
    finally:
        await mallory.close()


async def test_an_offer_from_a_key_the_node_never_seated_is_refused(
    signaling_mesh: NodeFactory, peers: PeerFactory
) -> None:
    """What a rogue node could deliver: a validly signed offer from a key that is not a
    member of alice's layer. It is not answered, and the key is not made a member."""
    node, alice, room, _ = await pair(signaling_mesh, peers)
    stranger_dir = alice.store.data_dir.parent / "stranger"
    stranger = Peer(stranger_dir, [node.url])  # never entered: only its key and a link
    link = PeerLink(
        ROOM,
        stranger.public_key,
        alice.public_key,
        stranger.sign,
        _no_ice(),
        _ignore,
        _ignore,
        _ignore,
    )
    try:
        offer = await link.offer(time.time())
        event = SignalFrom(stranger.public_key, {"t": "sdp", "desc": offer.to_json()}, ROOM)
        before = len(room._by_id)
        alice._on_signal(event, time.time())
        alice._drive()
        assert len(room._by_id) == before
        assert stranger.public_key not in room.members
        assert alice.mesh.counters["refused.offer.not_member"] == 1
    finally:
        await link.close()
        stranger.store.close()


def _no_ice() -> Any:
    from peer.webrtc import ice_configuration

    return ice_configuration([])


def _ignore(*_args: object) -> None:
    return None


async def test_a_member_who_left_during_an_outage_is_reconciled_away(
    signaling_mesh: NodeFactory, peers: PeerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await signaling_mesh(2)
    alice = await peers("alice", [a.url, b.url])
    bob = await peers("bob", [b.url])
    room = await alice.join(URL)
    room_b = await bob.join(URL)
    await next_of(room, Connected)
    # alice's network goes away: her node dies and she cannot reach any other for a while
    outage = True
    connect = SignalingClient.connect

    async def flaky(url: str, key: SigningKey, name: str | None = None) -> SignalingClient:
        if outage and key == alice.store.key:
            raise SignalingError("unreachable", "the network is down")
        return await connect(url, key, name)

    monkeypatch.setattr(SignalingClient, "connect", flaky)
    await a.stop(moving=False)
    await bob.leave(room_b)  # bob leaves while alice is away...
    await asyncio.sleep(4.0)  # ...and his presence lapses (presence_ttl 3 s in tests)
    outage = False
    left = await next_of(room, MemberLeft, within=40.0)
    assert left.key == bob.public_key
    assert bob.public_key not in room.members
    assert bob.public_key not in alice.mesh.rooms[ROOM].members


async def test_two_processes_with_one_key_do_not_fight_over_the_node(
    signaling_mesh: NodeFactory, peers: PeerFactory, tmp_path: Path
) -> None:
    (node,) = await signaling_mesh(1)
    first = await peers("first", [node.url])
    room = await first.join(URL)
    (tmp_path / "second").mkdir()
    shutil.copy(tmp_path / "first" / KEY_FILE, tmp_path / "second" / KEY_FILE)
    second = await peers("second", [node.url])
    assert second.public_key == first.public_key
    replaced = await next_of(room, Replaced)
    assert "elsewhere" in replaced.message
    connections = node.metrics.connections._value.get()
    await asyncio.sleep(3.0)  # the old client does not come back and replace the new one
    assert node.metrics.connections._value.get() == connections == 2
    assert first.mesh.state is mesh.NodeState.REPLACED
    assert second.node is not None and await second.node.ping() < 1
