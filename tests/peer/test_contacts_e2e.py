"""Two people add each other and see each other online, and on which page (docs/protocol.md 7):
real nodes, real aiortc peers, real DHT records. A third person who met them in the same
room, with both their cards, reads nothing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from peer.device import issue_delegation, serialize_delegation
from peer.friends import ContactCard, epoch_of, presence_slot, x25519_seed
from peer.peer import MAX_CARDS, MAX_DEVICE_CHANGES, Peer
from signaling.protocol import canonical_url, room_key
from tests.signaling.conftest import NodeFactory

from .conftest import PeerFactory
from .test_rooms_webrtc import connected

pytestmark = pytest.mark.integration

URL = "https://example.org/friends"


async def until(check: object, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_two_people_see_each_other_online_and_where_and_a_third_sees_nothing(
    signaling_mesh: NodeFactory, peers: PeerFactory
) -> None:
    a, b = await signaling_mesh(2)
    ana = await peers("ana", [a.url])
    ben = await peers("ben", [b.url])
    eve = await peers("eve", [b.url])
    room_a = await ana.join(URL)
    room_b = await ben.join(URL)
    room_e = await eve.join(URL)
    await connected(room_a)
    await connected(room_b)
    await connected(room_e)
    # Cards arrive on every link: Eve has both of theirs, as they have hers.
    await until(lambda: ben.identity_key in ana.cards and ana.identity_key in ben.cards)
    await until(lambda: ana.identity_key in eve.cards and ben.identity_key in eve.cards)

    ana.add_contact(ben.identity_key, "Ben", room_a)
    ben.add_contact(ana.identity_key, "Ana", room_b)
    eve.add_contact(ana.identity_key, "Ana?", room_e)  # one-sided: Ana never added Eve
    eve.add_contact(ben.identity_key, "Ben?", room_e)
    (saved,) = ana.contacts()
    assert saved.room == room_key(canonical_url(URL)) and saved.page == canonical_url(URL)
    assert saved.x == ben.card.x
    ana.set_presence("with-room")
    ben.set_presence("on")
    eve.set_presence("with-room")
    await ana.refresh_presence()
    await ben.refresh_presence()
    await eve.refresh_presence()
    seen_by_ben = await ben.refresh_presence()
    seen_by_ana = await ana.refresh_presence()
    note = seen_by_ben[ana.identity_key]
    assert note.online and note.room == room_a.key and note.layer == room_a.layer
    assert note.page == canonical_url(URL) and note.node == a.url
    assert seen_by_ana[ben.identity_key].online and seen_by_ana[ben.identity_key].room is None
    assert await eve.refresh_presence() == {}

    # Every node holds the records; none of them names the pair.
    pair = ana.presence.secret_with(ben.identity_key)
    assert pair is not None
    slot = presence_slot(pair, ana.identity_key, ben.identity_key, epoch_of(time.time()))
    held = [r for node in (a, b) for r in node.dht.core.records if r.key == slot.dht_key]
    assert held and all(r.publisher == slot.publisher for r in held)
    for record in held:
        for who in (ana.identity_key, ben.identity_key, room_a.key):
            assert who not in record.key + record.publisher + record.value

    # Ana goes: Ben sees it at his next read, long before her note's expiry.
    await ana.close()
    assert ana.identity_key not in await ben.refresh_presence()


async def test_contacts_and_presence_survive_a_restart(
    tmp_path: Path, signaling_mesh: NodeFactory
) -> None:
    (node,) = await signaling_mesh(1)
    data = tmp_path / "ana"
    async with Peer(data, [node.url], name="ana") as ana:
        ana.add_contact(b"\x05" * 32, "Zed")
        ana.set_presence("on")
    async with Peer(data, [node.url], name="ana") as again:
        assert [c.petname for c in again.contacts()] == ["Zed"]
        assert again.presence.mode == "on"
        assert again.rename_contact(b"\x05" * 32, "Zoe") and again.forget_contact(b"\x05" * 32)
        assert again.contacts() == []


async def test_the_chat_commands_add_list_rename_join_and_forget(
    signaling_mesh: NodeFactory, peers: PeerFactory
) -> None:
    from peer.cli import command

    (node,) = await signaling_mesh(1)
    ana = await peers("ana", [node.url])
    ben = await peers("ben", [node.url])
    room_a, room_b = await ana.join(URL), await ben.join(URL)
    await connected(room_a)
    await connected(room_b)
    await until(lambda: room_a.name_of(ben.public_key) == "ben" and ben.identity_key in ana.cards)
    await until(lambda: ana.identity_key in ben.cards)
    assert await command(room_a, "/contacts") == [
        "* no contacts yet: /contact add WHO NAME keeps a member of your group"
    ]
    assert await command(room_a, "/contact add nobody X") == [
        "* nobody called 'nobody' in your group (/who lists them)"
    ]
    tag = "\u00b7" + ben.identity_key.hex()[:4]
    assert await command(room_a, "/contact add ben Ben B.") == [f"* Ben B. {tag} is a contact"]
    assert await command(room_b, "/contact add ana Ana") == [
        f"* Ana \u00b7{ana.identity_key.hex()[:4]} is a contact"
    ]
    assert await command(room_b, "/presence with-room") == ["* you tell your contacts: with-room"]
    assert await command(room_a, "/presence on") == ["* you tell your contacts: on"]
    assert await command(room_a, "/presence everyone") == ["* presence is off, on or with-room"]
    await command(room_b, "/contacts")  # Ben publishes
    lines = await command(room_a, "/contacts")
    assert lines[0] == "* your contacts (you tell them: on):"
    assert lines[1].startswith(f"*   \u25cf Ben B. {tag}  here, in group 1")
    assert lines[1].endswith(f"met on {canonical_url(URL)}")
    assert await command(room_a, "/rename Ben B. Benny") == [
        "* no contact 'Ben' (/contacts lists them)"
    ]
    assert await command(room_a, f"/rename {tag} Benny") == ["* Ben B. is now Benny"]
    assert await command(room_a, "/join Benny") == ["* you sit with Benny in group 1"]
    assert await command(room_a, "/forget benny") == ["* Benny is no longer a contact"]
    assert ana.contacts() == []


async def test_a_device_sends_its_identitys_card_and_is_seen_as_the_person(
    signaling_mesh: NodeFactory, peers: PeerFactory
) -> None:
    (node,) = await signaling_mesh(1)
    ana = await peers("ana", [node.url], device="laptop")
    ben = await peers("ben", [node.url])
    room_a, room_b = await ana.join(URL), await ben.join(URL)
    await connected(room_a)
    await connected(room_b)
    assert ana.public_key != ana.identity_key
    await until(lambda: ana.identity_key in ben.cards)
    assert ana.public_key not in ben.cards  # the device key has no card of its own
    assert room_b.person_of(ana.public_key) == ana.identity_key
    ben.add_contact(room_b.person_of(ana.public_key), "Ana", room_b)
    ana.add_contact(ben.identity_key, "Ben", room_a)
    ana.set_presence("on")
    await ana.refresh_presence()
    assert (await ben.refresh_presence())[ana.identity_key].online


async def test_many_contacts_are_paced_under_the_nodes_limits(
    signaling_mesh: NodeFactory, peers: PeerFactory
) -> None:
    from nacl.signing import SigningKey

    from peer.friends import ContactCard, x25519_seed
    from peer.store import Contact

    (node,) = await signaling_mesh(1)
    ana = await peers("ana", [node.url])
    for n in range(25):  # 25 contacts with cards: 50 requests a round, past every burst
        seed = bytes([n + 1]) * 32
        card = ContactCard.create(SigningKey(seed), x25519_seed(seed))
        ana.store.save_contact(Contact(card.key, f"c{n}", card.x, card.sig))
    ana._reload_contacts()
    ana.set_presence("on")
    started = time.monotonic()
    await ana.refresh_presence()
    took = time.monotonic() - started

    def count(metric: Any, label: str) -> float:
        return float(metric.labels(label)._value.get())

    assert count(node.metrics.client_records, "put") == 25
    assert count(node.metrics.client_records, "get") >= 25
    assert count(node.metrics.errors, "rate-limited") == 0
    assert took >= (50 - 20) / 1.8 - 1  # paced, not refused


async def test_one_member_cycling_identities_cannot_flush_the_cards_kept(
    signaling_mesh: NodeFactory, peers: PeerFactory
) -> None:
    """The attacker: one member, on its one link, shows a delegation to its own key from
    a made-up identity and that identity's card, again and again (two signatures each).
    The cards of the others it met stay: a link gives one person's card at a time, the
    one it speaks for now (7.1), so its earlier ones go, not anyone else's."""
    (node,) = await signaling_mesh(1)
    ben = await peers("ben", [node.url])
    carol = await peers("carol", [node.url])
    rogue = await peers("rogue", [node.url])
    room_b, room_c, room_r = [await p.join(URL) for p in (ben, carol, rogue)]
    await connected(room_b)
    await connected(room_c)
    await connected(room_r)
    await until(lambda: carol.identity_key in ben.cards and rogue.identity_key in ben.cards)
    link = room_r.links[ben.public_key]
    now_ms = int(time.time() * 1000)
    for i in range(MAX_CARDS + 50):
        made = SigningKey((i + 1).to_bytes(4, "big") + b"\3" * 28)
        made_key = bytes(made.verify_key)
        own = issue_delegation(
            lambda m, k=made: k.sign(m).signature, made_key, rogue.public_key, now_ms, 3_600_000, ""
        )
        while link.control.bufferedAmount > 256 * 1024:  # the rogue paces what it sends  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        link.send({"t": "device", "cert": serialize_delegation(own).hex()})
        link.send(ContactCard.create(made, x25519_seed(bytes(made))).to_frame())
    # Past MAX_DEVICE_CHANGES the link stays the person it last became (5.3); every
    # delegation after that is refused, and the cards of identities it is not go.
    refused = MAX_CARDS + 50 - 1 - MAX_DEVICE_CHANGES
    await until(lambda: room_b.refused_devices.get("changes") == refused, 60)
    kept = bytes(SigningKey((MAX_DEVICE_CHANGES + 1).to_bytes(4, "big") + b"\3" * 28).verify_key)
    await until(lambda: kept in ben.cards)
    assert carol.identity_key in ben.cards  # not pushed out
    assert len(ben.cards) <= 3  # carol's, the rogue's own or its latest, nothing more
