"""A rogue room member against a peer's history (docs/protocol.md 5.0.1), on real aiortc.

The review found that each 30-byte `hist-req` made its victim queue a ~244 KB
`hist` reply on the control channel (300 requests: 69 MiB queued), and that
one member's own large messages made a reply larger than a data channel
message may be (256 KiB), which aiortc refused: a newcomer got none of a
left member's messages. Here the rogue floods history requests while the
victim holds large messages of a member who left, and a newcomer still gets
them all, while the victim's send queue stays under its mark.
"""

from __future__ import annotations

import asyncio

import pytest

from peer.peer import Connected, Message, Room
from peer.webrtc import MAX_CONTROL_BUFFERED
from tests.peer.conftest import PeerFactory, next_of
from tests.signaling.conftest import NodeFactory

pytestmark = pytest.mark.integration

URL = "https://example.org/rogue-history"
FLOOD = 300
BODY = 16_384
"""max_body_bytes: the largest message anyone may send."""


async def messages_from(room: Room, author: bytes, count: int, within: float) -> list[Message]:
    got: list[Message] = []
    async with asyncio.timeout(within):
        while len(got) < count:
            event = await room.next_event(within)
            if isinstance(event, Message) and event.author == author:
                got.append(event)
    return got


async def test_a_hist_req_flood_neither_fills_the_queue_nor_starves_a_newcomer(
    signaling_mesh: NodeFactory, peers: PeerFactory
) -> None:
    (node,) = await signaling_mesh(1)
    left = await peers("left", [node.url])
    victim = await peers("victim", [node.url])
    left_room = await left.join(URL)
    victim_room = await victim.join(URL)
    await next_of(left_room, Connected, key=victim.public_key)
    for i in range(20):  # 20 x 16 KiB: one history reply of ~330 KB before the fix
        await left_room.send(f"{i:02d}".ljust(BODY, "."))
    await messages_from(victim_room, left.public_key, 20, within=10)
    await left.leave(left_room)

    rogue = await peers("rogue", [node.url])
    rogue_room = await rogue.join(URL)
    await next_of(rogue_room, Connected, key=victim.public_key)
    to_victim = rogue_room.links[victim.public_key]
    victim_link = victim_room.links[rogue.public_key]
    queued = 0  # the most the victim had queued for the rogue
    for _ in range(FLOOD):  # 30 bytes each
        assert to_victim.send({"t": "hist-req", "since": {}})
        await asyncio.sleep(0)
        queued = max(queued, victim_link.control.bufferedAmount)
    for _ in range(50):  # the victim reads the rest of the flood
        await asyncio.sleep(0.01)
        queued = max(queued, victim_link.control.bufferedAmount)
    newcomer = await peers("newcomer", [node.url])
    newcomer_room = await newcomer.join(URL)
    got = await messages_from(newcomer_room, left.public_key, 20, within=10)
    assert [m.text[:2] for m in got] == [f"{i:02d}" for i in range(20)]
    counters = victim_room.core.counters
    print(f"victim queued at most {queued / 2**10:.0f} KiB; {counters}")
    assert counters.get("drop.hist_req_rate", 0) >= FLOOD - 2  # one per connection, 1 per 10 s
    assert queued <= MAX_CONTROL_BUFFERED + 100_000
    assert victim_link.counters.get("error.send", 0) == 0  # no frame over aiortc's limit


async def test_a_message_refused_by_a_full_queue_still_arrives(
    signaling_mesh: NodeFactory, peers: PeerFactory
) -> None:
    """The send queue's mark refuses frames while the link stays up: the messaging core
    sends what is not acknowledged again (resend_interval), on the same link."""
    (node,) = await signaling_mesh(1)
    alice = await peers("alice", [node.url])
    bob = await peers("bob", [node.url])
    alice_room = await alice.join(URL)
    bob_room = await bob.join(URL)
    await next_of(alice_room, Connected, key=bob.public_key)
    link = alice_room.links[bob.public_key]
    padding = {"t": "padding", "x": "p" * 60_000}  # bob counts and drops these
    for _ in range(100):  # 6 MB, if nothing refused them
        if not link.send(padding):
            break
    assert link.control.bufferedAmount > MAX_CONTROL_BUFFERED
    await alice_room.send("through a full queue")  # its msg frame is refused
    assert link.counters["drop.send_queue_full"] >= 2
    started = asyncio.get_running_loop().time()
    (got,) = await messages_from(bob_room, alice.public_key, 1, within=10)
    waited = asyncio.get_running_loop().time() - started
    print(f"re-sent and delivered after {waited:.1f} s; {alice_room.core.counters}")
    assert got.text == "through a full queue"
    assert alice_room.core.counters["resent"] >= 1
    assert alice_room.links[bob.public_key] is link  # the same link: no reconnection
