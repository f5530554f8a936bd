"""One person, two devices (docs/protocol.md 5.3) across clients: a Python device and a
Chromium device of one identity in one room at once, seen by a third member as one
person with two devices and both devices' messages in one order; the page as the third
member shows one person with two devices, and a stranger's forged claim as its own key."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from peer.device import Delegation, issue_delegation, serialize_delegation
from peer.identity_file import export_identity
from peer.peer import Device, Revoked, Room
from peer.store import KEY_FILE, load_or_create_key
from tests.peer.conftest import PeerFactory, next_of
from tests.peer.test_devices_webrtc import (
    ana_devices,
    collect,
    show_made_up_identities,
    until_linked,
)
from tests.signaling.conftest import NodeFactory

from .conftest import PageFactory, browser_order, order, say

URL = "https://example.org/two-devices"
PASSPHRASE = "tide lantern orbit walnut"


async def as_device(page: Any, node_url: str, text: str, label: str, name: str) -> str:
    """Import an identity file into the page (docs/identity.md), then open the room as a
    device of it (`?device=LABEL`); the page's device key (hex)."""
    await page.evaluate(
        "async ([text, pass]) => window.pagemesh.peer.importIdentity(text, pass)",
        [text, PASSPHRASE],
    )
    query = urlencode({"name": name, "device": label, "room": URL})
    await page.goto(node_url.replace("ws://", "http://") + "/?" + query)
    await page.wait_for_selector("body[data-ready=true]", timeout=15_000)
    key: str = await page.evaluate("window.pagemesh.peer.keyHex")
    return key


async def until_devices(room: Room, keys: set[bytes], within: float = 30.0) -> None:
    async with asyncio.timeout(within):
        while not all(room.person_of(k) != k for k in keys):
            await room.next_event(within)


async def test_a_python_device_and_a_browser_device_are_one_person(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_page: PageFactory, tmp_path: Path
) -> None:
    a, b = await signaling_mesh(2)
    laptop = await peers("ana-laptop", [b.url], device="laptop")
    ana = laptop.identity_key
    text = export_identity((tmp_path / "ana-laptop" / KEY_FILE).read_bytes(), PASSPHRASE, "Ana")
    page = await open_page(a, "ana-phone")
    phone = bytes.fromhex(await as_device(page, a.url, text.decode(), "phone", "Ana"))
    assert await page.evaluate("window.pagemesh.peer.identityHex") == ana.hex()
    assert phone != ana

    bob = await peers("bob", [a.url])
    room_b = await bob.join(URL)
    room_l = await laptop.join(URL)
    await until_linked(room_b, {laptop.public_key, phone})
    await until_linked(room_l, {phone, bob.public_key})
    await until_devices(room_b, {laptop.public_key, phone})
    assert room_b.people() == {ana: {laptop.public_key, phone}, bob.public_key: {bob.public_key}}
    assert {laptop.public_key, phone} <= room_b.members  # both seated at once

    for i in range(3):
        await say(page, f"phone {i}")
        await room_l.say(f"laptop {i}")
    got = await collect(room_b, {laptop.public_key, phone}, 6)
    assert {room_b.person_of(m.author) for m in got} == {ana}
    await collect(room_l, {phone}, 3)
    await page.wait_for_function("window.pagemesh.room.transcript().length === 6")
    await asyncio.sleep(0)
    assert order(room_b.transcript()) == order(room_l.transcript()) == await browser_order(page)
    # the page, a device itself, sees the laptop as its own person's other device
    people = await page.evaluate(
        "Object.fromEntries([...window.pagemesh.room.people()].map(([k, v]) => [k, [...v].sort()]))"
    )
    assert people == {
        ana.hex(): sorted([laptop.public_key.hex(), phone.hex()]),
        bob.public_key.hex(): [bob.public_key.hex()],
    }


async def test_the_page_shows_one_person_with_two_devices_and_a_stranger_as_itself(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_page: PageFactory, tmp_path: Path
) -> None:
    a, b = await signaling_mesh(2)
    laptop, phone = await ana_devices(peers, tmp_path, a.url, b.url)
    ana = laptop.identity_key
    mallory = await peers("mallory", [a.url], device="laptop")
    own = mallory.delegation
    assert own is not None
    mallory.delegation = Delegation(  # Ana's identity claimed, Mallory's identity signed
        ana, own.device, own.not_before, own.expires, "laptop", own.signature
    )
    page = await open_page(b, "bob", room=URL)
    rooms = [await p.join(URL) for p in (laptop, phone, mallory)]
    bob = bytes.fromhex(await page.evaluate("window.pagemesh.peer.keyHex"))
    for room in rooms:
        await until_linked(room, {bob})
    for room, who in zip(rooms, ("laptop", "phone", "mallory"), strict=True):
        await room.say(f"hello from {who}")
    await page.wait_for_function("document.querySelectorAll('#messages li.msg').length === 3")

    rows = f'#members li[data-person="{ana.hex()}"]'
    await page.wait_for_function(
        f"""() => [...document.querySelectorAll('{rows} .device')]
            .filter((b) => b.dataset.devices === '2').length === 2"""
    )
    badges = sorted(
        await page.eval_on_selector_all(f"{rows} .device", "bs => bs.map(b => b.textContent)")
    )
    assert badges == ["laptop · 2 devices", "phone · 2 devices"]
    shown = await page.eval_on_selector_all(
        f'#messages li.msg .who[data-person="{ana.hex()}"]', "ws => ws.map(w => w.textContent)"
    )
    assert len(shown) == 2 and len(set(shown)) == 1  # one person's name on both devices' words
    # Mallory: refused, shown as her own key, never under Ana
    m = mallory.public_key.hex()
    assert await page.get_attribute(f'#members li[data-key="{m}"]', "data-person") == m
    assert await page.query_selector(f'#members li[data-key="{m}"] .device') is None
    assert await page.evaluate("window.pagemesh.room.refusedDevices") == {"signature": 1}
    assert await page.evaluate(f"window.pagemesh.room.personOf('{m}')") == m


async def test_the_page_takes_back_a_stolen_laptop(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_page: PageFactory, tmp_path: Path
) -> None:
    """Ana's phone (the page) revokes her laptop (Python): Bob (Python) and the page show
    the laptop as its own key from then on; the phone stays Ana's."""
    (node,) = await signaling_mesh(1)
    laptop = await peers("ana-laptop", [node.url], device="laptop")
    ana = laptop.identity_key
    text = export_identity((tmp_path / "ana-laptop" / KEY_FILE).read_bytes(), PASSPHRASE, "Ana")
    page = await open_page(node, "ana-phone")
    phone = bytes.fromhex(await as_device(page, node.url, text.decode(), "phone", "Ana"))
    bob = await peers("bob", [node.url])
    room_b = await bob.join(URL)
    await laptop.join(URL)
    await until_linked(room_b, {laptop.public_key, phone})
    await until_devices(room_b, {laptop.public_key, phone})

    await page.evaluate(f"window.pagemesh.peer.revokeDevice('{laptop.public_key.hex()}')")
    event = await next_of(room_b, Revoked, within=20)
    assert event == Revoked(laptop.public_key, ana)
    assert room_b.people()[ana] == {phone}
    assert room_b.person_of(laptop.public_key) == laptop.public_key
    lap = laptop.public_key.hex()
    await page.wait_for_function(
        f"""() => document.querySelector('#members li[data-key="{lap}"]')
            ?.dataset.person === '{lap}'"""
    )
    assert await page.query_selector(f'#members li[data-key="{lap}"] .device') is None
    # kept: after a reload the page still shows it on every link
    await page.reload()
    await page.wait_for_selector("body[data-ready=true]", timeout=15_000)
    assert await page.evaluate("window.pagemesh.peer.revocations.map(r => r.device)") == [lap]


async def test_the_page_as_a_device_whose_identity_key_stays_home(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_page: PageFactory, tmp_path: Path
) -> None:
    """The page adopts a delegation its identity's client (Python, `identity delegate`)
    issued to the page's own device key: Bob sees Ana's tablet; the page holds no key of
    Ana's, so it cannot revoke."""
    (node,) = await signaling_mesh(1)
    home = tmp_path / "ana-home"
    home.mkdir()
    ana = load_or_create_key(home)
    page = await open_page(node, "ana-tablet", device="tablet")
    tablet = await page.evaluate("window.pagemesh.peer.keyHex")
    cert = issue_delegation(
        lambda m: ana.sign(m).signature, bytes(ana.verify_key), bytes.fromhex(tablet),
        int(time.time() * 1000), 24 * 3600 * 1000, "tablet",
    )  # fmt: skip
    adopted = await page.evaluate(
        "(text) => window.pagemesh.peer.adoptDelegation(text)",
        serialize_delegation(cert).hex() + "\n",
    )
    assert adopted == bytes(ana.verify_key).hex()
    query = urlencode({"name": "Ana", "device": "whatever", "room": URL})
    await page.goto(node.url.replace("ws://", "http://") + "/?" + query)
    await page.wait_for_selector("body[data-ready=true]", timeout=15_000)
    assert await page.evaluate("window.pagemesh.peer.identityHex") == adopted
    assert await page.evaluate("window.pagemesh.peer.keyHex") == tablet

    bob = await peers("bob", [node.url])
    room_b = await bob.join(URL)
    event = await next_of(room_b, Device, within=30)
    assert event == Device(bytes.fromhex(tablet), bytes(ana.verify_key), "tablet")
    refused = await page.evaluate(
        f"""window.pagemesh.peer.revokeDevice('{bob.public_key.hex()}')
            .then(() => 'revoked', (e) => e.message)"""
    )
    assert "does not hold" in refused


async def test_the_page_renews_its_delegation_before_it_expires(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_page: PageFactory
) -> None:
    (node,) = await signaling_mesh(1)
    bob = await peers("bob", [node.url])
    room_b = await bob.join(URL)
    page = await open_page(node, "ana", room=URL, device="phone")
    phone = bytes.fromhex(await page.evaluate("window.pagemesh.peer.keyHex"))
    await next_of(room_b, Device, within=30)
    # from now on 3 s delegations, renewed at half their life
    await page.evaluate(
        "async () => { window.pagemesh.peer.config.deviceLifetimeMs = 3000;"
        " await window.pagemesh.peer.renewDelegation(); window.pagemesh.room.send('renewed'); }"
    )
    await collect(room_b, {phone}, 1)  # the device frame went before it, on one channel
    first = room_b.devices.delegation(phone, int(time.time() * 1000))
    assert first is not None and first.expires - first.not_before == 3000
    # past the first 3 s one's expiry, in real time: the renewal timer is the page's own
    await asyncio.sleep(max(0.0, (first.expires + 300) / 1000 - time.time()))
    assert room_b.person_of(phone) != phone
    renewed = room_b.devices.delegation(phone, int(time.time() * 1000))
    assert renewed is not None and renewed.not_before > first.not_before


async def test_the_page_holds_a_revocation_in_every_room(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_page: PageFactory, tmp_path: Path
) -> None:
    """As tests/peer/test_devices_webrtc.py: the thief of Ana's laptop sits with Bob's
    page in another room than the one where Ana's phone showed the revocation; the
    page's every room shows the laptop as its own key, and a room it opens later too."""
    (node,) = await signaling_mesh(1)
    laptop, phone = await ana_devices(peers, tmp_path, node.url)
    ana, thief = laptop.identity_key.hex(), laptop.public_key.hex()
    page = await open_page(node, "bob", room=URL)
    bob = bytes.fromhex(await page.evaluate("window.pagemesh.peer.keyHex"))
    join_y = "async (u) => { window.roomY = await window.pagemesh.peer.join(u); }"
    await page.evaluate(join_y, URL + "/thief")
    phone_x, laptop_y = await phone.join(URL), await laptop.join(URL + "/thief")
    await until_linked(phone_x, {bob})
    await until_linked(laptop_y, {bob})
    await laptop_y.say("hi")
    await page.wait_for_function("(k) => window.roomY.personOf(k[0]) === k[1]", arg=[thief, ana])

    phone.revoke_device(laptop.public_key)  # heard by the page in the phone's room only
    await page.wait_for_function("(k) => window.roomY.personOf(k) === k", arg=thief, timeout=20_000)
    later = await page.evaluate(
        """async ([u, ana, thief]) => {
            const room = await window.pagemesh.peer.join(u);
            return [room.devices.revoked(ana, thief), window.pagemesh.peer.deviceIdentity(thief)];
        }""",
        [URL + "/later", ana, thief],
    )
    assert later == [True, None]


async def test_the_page_lets_a_member_change_its_person_a_bounded_few_times(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_page: PageFactory
) -> None:
    """As tests/peer/test_devices_webrtc.py: a member's link shows delegations from one
    made-up identity after another; past MAX_DEVICE_CHANGES the page refuses them
    (`changes`) and the member stays the person it was."""
    from peer.peer import MAX_DEVICE_CHANGES

    (node,) = await signaling_mesh(1)
    rogue = await peers("rogue", [node.url])
    page = await open_page(node, "bob", room=URL)
    bob = bytes.fromhex(await page.evaluate("window.pagemesh.peer.keyHex"))
    room_r = await rogue.join(URL)
    await until_linked(room_r, {bob})
    made = show_made_up_identities(room_r, bob, 6, MAX_DEVICE_CHANGES + 20)
    await room_r.say("after the delegations")
    await page.wait_for_function("document.querySelectorAll('#messages li.msg').length === 1")
    got = await page.evaluate(
        "(k) => [window.pagemesh.room.refusedDevices.changes, window.pagemesh.room.personOf(k)]",
        rogue.public_key.hex(),
    )
    assert got == [
        len(made) - 1 - MAX_DEVICE_CHANGES,
        made[MAX_DEVICE_CHANGES].hex(),
    ]
