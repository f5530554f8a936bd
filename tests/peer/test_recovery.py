"""A peer restarts mid-conversation and catches up; a node that rewrites an offer is caught."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from peer.peer import Connected, FileFailed, FileOffered, Message, Peer, PeerProblem, Rejoined, Room
from signaling.layers import RoomCore
from tests.signaling.conftest import NodeFactory

from .conftest import PeerFactory

pytestmark = pytest.mark.integration

URL = "https://example.org/recovery"


async def until(room: Room, kind: type, within: float = 20.0, mine: bool | None = None) -> Any:
    async def find() -> Any:
        async for event in room.events():
            if isinstance(event, kind) and (mine is None or event.mine == mine):
                return event

    return await asyncio.wait_for(find(), within)


async def texts(room: Room, count: int, within: float = 20.0) -> list[str]:
    got: list[str] = []
    while len(got) < count:
        got.append((await until(room, Message, within, mine=False)).text)
    return got


async def test_a_restarted_peer_catches_up_exactly_once(
    signaling_mesh: NodeFactory, peers: PeerFactory, tmp_path: Path
) -> None:
    a, b = await signaling_mesh(2)
    alice = await peers("alice", [a.url])
    room_a = await alice.join(URL)
    bob = Peer(tmp_path / "bob", [b.url])
    await bob.__aenter__()
    room_b = await bob.join(URL)
    await until(room_b, Connected)
    for i in range(3):
        await room_a.send(f"before {i}")
    assert await texts(room_b, 3) == ["before 0", "before 1", "before 2"]
    await room_b.send("bob was here")

    await bob.close()  # the process goes away...
    assert (await until(room_a, Message, mine=False)).text == "bob was here"
    for i in range(4):
        await room_a.send(f"while away {i}")

    bob = Peer(tmp_path / "bob", [b.url])  # ...and comes back with its data directory
    await bob.__aenter__()
    try:
        room_b = await bob.join(URL)
        assert await texts(room_b, 4) == [f"while away {i}" for i in range(4)]
        env = await room_b.send("back")
        assert env.seq == 2  # bob's seq survived the restart
        history = bob.store.history(room_b.key)
        ids = [(e.author, e.seq) for e in history]
        assert len(ids) == len(set(ids)) == 9
        assert [e.body for e in history][:3] == ["before 0", "before 1", "before 2"]
    finally:
        await bob.close()


async def test_a_node_that_rewrites_the_fingerprint_is_refused(
    signaling_mesh: NodeFactory, peers: PeerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    (node,) = await signaling_mesh(1)
    original = RoomCore.signal

    def tampering(self: RoomCore, client: bytes, signal: Any, now: float) -> None:
        payload = signal.payload
        if isinstance(payload, dict) and payload.get("t") == "sdp":
            sdp = payload["desc"]["sdp"]
            forged = re.sub(r"(a=fingerprint:sha-256 )\S+", r"\g<1>" + "AB:" * 31 + "AB", sdp)
            payload = {**payload, "desc": {**payload["desc"], "sdp": forged}}
            signal = type(signal)(signal.to, payload, signal.room, signal.id)
        original(self, client, signal, now)

    monkeypatch.setattr(RoomCore, "signal", tampering)
    alice = await peers("alice", [node.url])
    bob = await peers("bob", [node.url])
    room_a = await alice.join(URL)
    await bob.join(URL)
    problem = await until(room_a, PeerProblem)
    assert "refused a description" in problem.message and "fingerprint" in problem.message
    assert not any(link.open for link in room_a.links.values())


async def test_node_loss_fails_over_and_keeps_the_data_channel(
    signaling_mesh: NodeFactory, peers: PeerFactory
) -> None:
    a, b = await signaling_mesh(2)
    alice = await peers("alice", [a.url, b.url])
    bob = await peers("bob", [b.url])
    room_a = await alice.join(URL)
    room_b = await bob.join(URL)
    await until(room_b, Connected)
    link = room_a.links[bob.public_key]
    await a.stop()  # alice's node goes away (graceful: it says `moving`)
    await room_a.send("still here")  # the data channel does not need the node
    assert (await until(room_b, Message, mine=False)).text == "still here"
    assert room_a.links[bob.public_key] is link and link.open

    rejoined = await until(room_a, Rejoined)
    assert rejoined.node == b.url and alice.node is not None
    assert room_a.key in alice.node.rooms


async def test_a_declined_file_is_reported_to_the_sender(
    signaling_mesh: NodeFactory, peers: PeerFactory, tmp_path: Path
) -> None:
    (node,) = await signaling_mesh(1)
    alice = await peers("alice", [node.url])
    bob = await peers("bob", [node.url])
    room_a = await alice.join(URL)
    room_b = await bob.join(URL)
    await until(room_a, Connected)
    source = tmp_path / "note.txt"
    source.write_text("hello")
    file_id = await room_a.send_file(source)
    offered = await until(room_b, FileOffered)
    assert offered.offer.id == file_id and offered.offer.name == "note.txt"
    room_b.decline_file(file_id)
    failed = await until(room_a, FileFailed)
    assert failed.id == file_id and "declined" in failed.reason
