"""Refusals on a real node: forged hello, key takeover, presence signed by another key."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from nacl.signing import SigningKey

from peer.signaling import BadNodeFrame, ErrorFrame, PeerJoined, SignalingError
from relay.credentials import check_username, password_for
from signaling.config import IceConfig
from signaling.protocol import SignRequest, presence_payload
from signaling.rooms import HomeNode, canonical_url, room_key

from .conftest import ClientFactory, NodeFactory

pytestmark = pytest.mark.integration

ROOM = room_key(canonical_url("https://example.org/security"))


async def test_forged_hello_is_refused_and_nothing_else_is_accepted(
    signaling_mesh: NodeFactory, raw: Any
) -> None:
    (node,) = await signaling_mesh(1)
    mallory = await raw(node)
    reply = await mallory.hello(SigningKey.generate(), signer=SigningKey.generate())
    assert reply["type"] == "error" and reply["code"] == "bad-signature"
    await mallory.send({"type": "join", "room": ROOM.hex()})
    assert (await mallory.receive())["code"] == "not-authenticated"
    assert node.clients == {}


async def test_takeover_needs_the_private_key(
    signaling_mesh: NodeFactory, connect: ClientFactory, raw: Any
) -> None:
    (node,) = await signaling_mesh(1)
    key = SigningKey.generate()
    alice = await connect(node, key)
    await alice.join(ROOM)
    mallory = await raw(node)
    reply = await mallory.hello(key, signer=SigningKey.generate())  # alice's key, not her secret
    assert reply["code"] == "bad-signature"
    assert node.clients[alice.key] is not None
    assert await alice.ping() < 5  # alice's connection is untouched

    # the real owner reconnecting replaces the old connection
    again = await connect(node, key)
    event = await alice.next_event()
    assert isinstance(event, ErrorFrame) and event.code == "replaced"
    assert await again.ping() < 5


async def test_presence_signed_by_another_key_is_refused(
    signaling_mesh: NodeFactory, connect: ClientFactory, raw: Any
) -> None:
    a, b = await signaling_mesh(2)
    alice = await connect(a)
    await alice.join(ROOM)
    key, other = SigningKey.generate(), SigningKey.generate()
    mallory = await raw(b)
    assert (await mallory.hello(key))["type"] == "welcome"
    await mallory.send({"type": "join", "id": "j", "room": ROOM.hex()})
    sign = await mallory.receive()
    assert sign["type"] == "sign"
    payload = presence_payload(
        bytes(other.verify_key),  # presence claimed for someone else's key
        ROOM,
        sign["layer"],
        HomeNode(b.node_id, sign["url"]),
        sign["seq"],
        sign["expires"],
    )
    sig = base64.b64encode(other.sign(payload).signature).decode()
    await mallory.send({"type": "signed", "id": sign["id"], "sig": sig})
    reply = await mallory.receive()
    while reply["type"] == "members" and "id" not in reply:
        # members proven after the sign request (2.5.3), as the sign request names them:
        # what any key may learn by joining; signalling them needs a valid signature
        reply = await mallory.receive()
    assert (reply["type"], reply["code"], reply["id"]) == ("error", "bad-signature", "j")
    assert await alice.members(ROOM) == ()


async def test_signal_to_an_unknown_peer_is_an_error(
    signaling_mesh: NodeFactory, connect: ClientFactory
) -> None:
    (node,) = await signaling_mesh(1)
    alice = await connect(node)
    await alice.join(ROOM)
    await alice.signal(b"\x05" * 32, {"sdp": "x"}, ROOM)
    event = await alice.next_event()
    assert isinstance(event, ErrorFrame) and event.code == "unknown-peer"


async def test_client_refuses_to_sign_a_foreign_record(
    signaling_mesh: NodeFactory, connect: ClientFactory
) -> None:
    """A node cannot make a client sign presence for a room it did not join."""
    (node,) = await signaling_mesh(1)
    alice = await connect(node)
    other_room = room_key("https://example.org/elsewhere")
    await alice._dispatch(  # what a lying node would send
        SignRequest("sign-99", other_room, 0, bytes(20), 1, 1, "{}", node.node_id, node.url)
    )
    event = await alice.next_event()
    assert isinstance(event, BadNodeFrame) and event.code == "refused-sign"


async def test_layers_fill_and_a_friend_can_pick_one_with_a_seat(
    signaling_mesh: NodeFactory, connect: ClientFactory
) -> None:
    a, b = await signaling_mesh(2, layer_size=2)
    clients = [await connect(n) for n in (a, b, a, b)]
    layers = [(await c.join(ROOM)).layer for c in clients[:3]]
    assert layers == [0, 0, 1]
    with pytest.raises(SignalingError, match="layer-full"):
        await clients[3].join(ROOM, layer=0)  # a layer asked for is honoured only with a seat
    friend = await clients[3].join(ROOM, friend=clients[2].key)  # sits beside the third
    assert friend.layer == 1 and [m.key for m in friend.members] == [clients[2].key]
    assert friend.total == 4 and friend.layers == 2
    # the third client hears of its friend, and nothing of layer 0
    event = await clients[2].next_event()
    assert isinstance(event, PeerJoined) and event.member.key == clients[3].key
    event = await clients[0].next_event()
    assert isinstance(event, PeerJoined) and event.member.key == clients[1].key
    assert {m.key for m in await clients[2].members(ROOM)} == {clients[3].key}


async def test_joined_rooms_are_bounded(
    signaling_mesh: NodeFactory, connect: ClientFactory
) -> None:
    (node,) = await signaling_mesh(
        1, limits=__import__("signaling.session").session.SessionLimits(max_rooms=1)
    )
    alice = await connect(node)
    await alice.join(ROOM)
    with pytest.raises(SignalingError, match="too-many-rooms"):
        await alice.join(room_key("https://example.org/second"))


async def test_ice_servers_carry_fresh_relay_credentials(
    signaling_mesh: NodeFactory, connect: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAGEMESH_RELAY_SECRET", "relay-secret-for-tests")
    ice = IceConfig(stun_urls=("stun:127.0.0.1:3478",), turn_urls=("turn:127.0.0.1:3478",))
    (node,) = await signaling_mesh(1, ice=ice)
    alice = await connect(node)
    stun, turn = await alice.ice_servers()
    assert stun.to_json() == {"urls": ["stun:127.0.0.1:3478"]}
    assert turn.username is not None and turn.expires_at is not None
    expiry, peer = turn.username.split(":")
    assert peer == alice.key.hex() and 3500 < int(expiry) - time.time() <= 3600
    assert turn.expires_at == int(expiry)
    assert turn.credential == password_for(b"relay-secret-for-tests", turn.username)
    assert check_username(turn.username, time.time()) == alice.key.hex()
    joined = await alice.join(ROOM)
    assert joined.ice_servers[1].urls == ("turn:127.0.0.1:3478",)
    # the welcome hands out the same servers, with credentials minted for this key (5.0)
    assert alice.welcome_ice_servers is not None
    w_stun, w_turn = alice.welcome_ice_servers
    assert (w_stun.urls, w_turn.urls) == (stun.urls, turn.urls)
    assert w_turn.username is not None and check_username(w_turn.username, time.time()) == (
        alice.key.hex()
    )
    assert w_turn.credential == password_for(b"relay-secret-for-tests", w_turn.username)
