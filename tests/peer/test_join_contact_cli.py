"""`/join NAME` in `pagemesh chat` follows a contact to another page (docs/protocol.md 7.2,
docs/groups.md): a real `pagemesh chat` process, real nodes, real aiortc peers, real
presence records. Ben, on page B, joins Ana on page A in her group, reads what was said
there before him, chats with her, and `/back` takes him to page B again; a contact in a
private room is not followed."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from peer.peer import Connected, MemberLeft, Message, Peer, Room
from tests.signaling.conftest import NodeFactory

from .conftest import PeerFactory, next_of
from .test_cli_chat import Start
from .test_cli_chat import start as start_fixture
from .test_rooms_webrtc import connected

pytestmark = pytest.mark.integration
start = start_fixture  # `pagemesh` processes, as tests/peer/test_cli_chat.py starts them

MET = "https://example.org/where-they-met"
PAGE_A = "https://example.org/page-a"
PAGE_B = "https://example.org/page-b"


async def until(check: object, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def said(room: Room, text: str, within: float = 30.0) -> Message:
    async with asyncio.timeout(within):
        while True:
            event = await room.next_event(within)
            if isinstance(event, Message) and event.text == text:
                return event


async def test_join_takes_ben_to_anas_page_and_group_and_back_takes_him_home(
    signaling_mesh: NodeFactory, peers: PeerFactory, tmp_path: Path, start: Start
) -> None:
    a, b = await signaling_mesh(2)
    ana = await peers("ana", [a.url])
    cy = await peers("cy", [b.url])  # stays on page B throughout
    # Ana and Ben meet, keep each other as contacts, and say where they are.
    async with Peer(tmp_path / "ben", [b.url], name="ben") as ben:
        met_a, met_b = await ana.join(MET), await ben.join(MET)
        await connected(met_a)
        await connected(met_b)
        await until(lambda: ben.identity_key in ana.cards and ana.identity_key in ben.cards)
        ana.add_contact(ben.identity_key, "Ben", met_a)
        ben.add_contact(ana.identity_key, "Ana", met_b)
        ben.set_presence("with-room")
    await ana.leave(met_a)
    ana.set_presence("with-room")
    room_a = await ana.join(PAGE_A, layer=2)  # group 3: not where a node would seat Ben
    await room_a.say("said on A before Ben came")
    await ana.refresh_presence()
    room_c = await cy.join(PAGE_B)

    proc = await start("chat", PAGE_B, "--node", b.url, "--data-dir", str(tmp_path / "ben"))
    await proc.expect(r"^joined the room of " + PAGE_B)
    await connected(room_c)
    await proc.expect(r"^\* cy is here")
    await proc.type("/contacts")
    await proc.expect(rf"Ana .*on {PAGE_A}, group 3")

    await proc.type("/join Ana")
    await proc.expect(r"^\* you join Ana$")
    await proc.expect(rf"^\* now in {PAGE_A}, group 3 of \d+$")
    await next_of(room_c, MemberLeft)  # he left page B's room
    # The new room's history and Ana's arrival, in the order the screen settles them.
    either = r"<ana> said on A before Ben came$|^\* ana is here \(direct\)$"
    shown = {await proc.expect(either), await proc.expect(either)}
    assert len(shown) == 2, proc.text
    await proc.type("hello Ana, it is Ben")
    heard = await said(room_a, "hello Ana, it is Ben")
    assert room_a.person_of(heard.author) == ben.identity_key
    assert room_a.layer == 2 and heard.author in room_a.members  # in her group
    await room_a.say("welcome to A")
    await proc.expect(r"<ana> welcome to A$")
    await proc.type("/help")
    await proc.expect(r"^\* /back ")

    await proc.type("/back")
    await proc.expect(r"^\* back where you were before /join$")
    await proc.expect(rf"^\* now in {PAGE_B}, group 1 of \d+$")
    await next_of(room_a, MemberLeft)
    await next_of(room_c, Connected)
    await proc.type("home on B")
    heard = await said(room_c, "home on B")
    assert room_c.person_of(heard.author) == ben.identity_key
    await proc.type("/back")
    await proc.expect(r"^\* /back returns to the page /join took you from; there is none$")

    # In a private room, Ana's note has no page: /join says why it cannot follow.
    await ana.leave(room_a)
    await ana.join(PAGE_A, secret=b"\x07" * 32)
    await ana.refresh_presence()
    await proc.type("/contacts", "/join Ana")
    await proc.expect(r"Ana .*on a private room")
    await proc.expect(r"^\* Ana is in a private room: .*cannot follow them there$")
    await proc.type("/leave")
    assert await proc.finish() == 0


async def test_join_finds_a_contacts_device_by_the_group_their_note_names_in_json(
    signaling_mesh: NodeFactory, peers: PeerFactory, tmp_path: Path, start: Start
) -> None:
    """Ana chats from a device: the node knows its key, not her identity's, so the friend
    join finds nobody and Ben sits in the group her note names; --json tells the seat."""
    (node,) = await signaling_mesh(1)
    ana = await peers("ana", [node.url], device="laptop")
    async with Peer(tmp_path / "ben", [node.url], name="ben") as ben:
        met_a, met_b = await ana.join(MET), await ben.join(MET)
        await connected(met_a)
        await connected(met_b)
        await until(lambda: ben.identity_key in ana.cards and ana.identity_key in ben.cards)
        ana.add_contact(ben.identity_key, "Ben", met_a)
        ben.add_contact(met_b.person_of(ana.public_key), "Ana", met_b)
    await ana.leave(met_a)
    ana.set_presence("with-room")
    room_a = await ana.join(PAGE_A, layer=1)
    await ana.refresh_presence()
    assert ana.public_key != ana.identity_key

    proc = await start(
        "chat", PAGE_B, "--node", node.url, "--data-dir", str(tmp_path / "ben"), "--json"
    )
    await proc.expect(r'^\{"event": "seated"')
    await proc.type("/contacts", "/join Ana")
    await proc.expect(rf"Ana .*on {PAGE_A}, group 2")
    seated = json.loads(await proc.expect(r'"event": "seated", "page"'))
    assert seated == {"event": "seated", "page": PAGE_A, "layer": 1, "group": 2} | {
        k: seated[k] for k in ("layers", "total")
    }
    await proc.type("from Ben's terminal")
    heard = await said(room_a, "from Ben's terminal")
    assert heard.author in room_a.members and room_a.layer == 1
    await room_a.say("and back from Ana")
    line = json.loads(await proc.expect(r'"text": "and back from Ana"'))
    assert line["event"] == "message" and line["name"] == "ana"
    await proc.type("/back")
    seated = json.loads(await proc.expect(r'"event": "seated", "page"'))
    assert seated["page"] == PAGE_B and seated["group"] == 1
    await next_of(room_a, MemberLeft)
    await proc.type("/leave")
    assert await proc.finish() == 0
