"""Blocking a person in the page (docs/protocol.md 5.4 with 5.3), with real Python peers.

The attacker's tests: the page blocks Ana from her laptop's row; her laptop and phone
(Python devices of one identity) get no link and nothing of them is shown, after a
reload too; a third device that first talks as a stranger is caught the moment it
shows Ana's delegation, and what it said goes; Mallory, claiming Ana's identity with a
delegation Ana never signed, is her own key, neither blocked nor hidden."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peer.blocks import BlockRecordError, parse_block_device
from peer.device import Delegation
from tests.peer.conftest import PeerFactory
from tests.peer.test_devices_webrtc import ana_devices, move_identity, until_linked
from tests.signaling.conftest import NodeFactory

from .conftest import PageFactory
from .test_block_page import blocks_page, bodies, linked, shots, state  # noqa: F401  (a fixture)

pytestmark = pytest.mark.integration

ROOM = "https://example.org/blocking-people"


async def says(page: Any, author: bytes, text: str) -> None:
    await page.wait_for_function(
        "([k, t]) => [...document.querySelectorAll(`#messages li[data-author='${k}'] .body`)]"
        ".some(n => n.textContent === t)",
        arg=[author.hex(), text],
        timeout=30_000,
    )


async def gone(page: Any, keys: list[bytes]) -> None:
    for key in keys:
        seen = await state(page, key)
        assert seen == {**seen, "member": False, "linked": False, "blocked": True, "shown": False}
        assert await bodies(page, key) == []


async def test_the_page_blocks_a_person_with_all_her_devices(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_page: PageFactory, tmp_path: Path
) -> None:
    (node,) = await signaling_mesh(1)
    laptop, phone = await ana_devices(peers, tmp_path, node.url)
    bob = await peers("bob", [node.url])
    ana = laptop.identity_key
    devices = [laptop.public_key, phone.public_key]
    room_l, room_p, room_b = [await p.join(ROOM) for p in (laptop, phone, bob)]
    page = await open_page(node, "alice", room=ROOM)
    alice = bytes.fromhex(await page.evaluate("window.pagemesh.peer.keyHex"))
    for key in [*devices, bob.public_key]:
        await linked(page, key)
    await room_l.say("hello from the laptop")
    await room_p.say("hello from the phone")
    await says(page, laptop.public_key, "hello from the laptop")
    await says(page, phone.public_key, "hello from the phone")
    rows = f'#members li[data-person="{ana.hex()}"] .device[data-devices="2"]'
    await page.wait_for_function(f"document.querySelectorAll('{rows}').length === 2")

    # Block from the laptop's row: the dialog names the person and her two devices.
    await page.click(f'#members li[data-key="{laptop.public_key.hex()}"] .block-member')
    await page.wait_for_selector("#block-dialog[open]")
    title = await page.text_content("#block-dialog-title")
    assert title is not None and re.fullmatch(r"Block .+ \(2 devices\)\?", title), title
    assert "all 2 of their devices" in (await page.text_content("#block-dialog-text") or "")
    await page.click("#block-ok")
    for key in devices:
        await page.wait_for_selector(f'#members li[data-key="{key.hex()}"]', state="detached")
    assert await bodies(page, laptop.public_key) == [] == await bodies(page, phone.public_key)
    stored = await page.evaluate("[...window.pagemesh.peer.blocks.keys()]")
    assert stored == [ana.hex()]  # the identity, not the device key
    await room_l.say("from the laptop")
    await room_p.say("from the phone")
    await until_linked(room_b, set(devices))
    await room_b.say("bob here")
    await says(page, bob.public_key, "bob here")
    await page.wait_for_function(
        "() => (window.pagemesh.peer.counters['refused.blocked'] ?? 0) > 0", timeout=30_000
    )
    await asyncio.sleep(1.0)
    await gone(page, devices)
    for room in (room_l, room_p):
        link = room.links.get(alice)
        assert link is None or not link.open  # to both devices the page is unreachable

    # Reload: both devices are caught from IndexedDB before any link opens.
    await page.reload()
    await page.wait_for_selector("body[data-ready=true]", timeout=15_000)
    await linked(page, bob.public_key)
    await room_l.say("after a reload")
    await room_b.say("welcome back")
    await says(page, bob.public_key, "welcome back")
    await page.wait_for_function(
        "() => (window.pagemesh.peer.counters['refused.blocked'] ?? 0) > 0", timeout=30_000
    )
    await gone(page, devices)

    # A third device talks first as a stranger (no delegation shown yet), then shows
    # Ana's: the page closes its link and takes away what it had shown.
    move_identity(tmp_path / "ana-laptop", tmp_path / "ana-tablet")
    tablet = await peers("ana-tablet", [node.url], device="tablet")
    delegation, tablet.delegation = tablet.delegation, None
    room_t = await tablet.join(ROOM)
    await linked(page, tablet.public_key)
    await room_t.say("hi, new here")
    await says(page, tablet.public_key, "hi, new here")
    tablet.delegation = delegation
    room_t.links[alice].send(tablet.device_frame())  # as a renewal sends it
    await page.wait_for_selector(
        f'#members li[data-key="{tablet.public_key.hex()}"]', state="detached", timeout=15_000
    )
    await room_t.say("still here?")
    await asyncio.sleep(1.0)
    await gone(page, [tablet.public_key])

    # Mallory claims Ana's identity with a delegation Ana never signed: her own key.
    mallory = await peers("mallory", [node.url], device="x")
    own = mallory.delegation
    assert own is not None
    mallory.delegation = Delegation(
        ana, own.device, own.not_before, own.expires, "phone", own.signature
    )
    room_m = await mallory.join(ROOM)
    await linked(page, mallory.public_key)
    await room_m.say("I am Ana, honest")
    await says(page, mallory.public_key, "I am Ana, honest")
    m = mallory.public_key.hex()
    assert await page.evaluate(f"window.pagemesh.room.personOf('{m}')") == m
    assert await page.evaluate(f"window.pagemesh.peer.blocked.has('{m}')") is False
    assert await page.evaluate("window.pagemesh.room.refusedDevices") == {"signature": 1}

    # The list: one entry, the person, with her three devices; Unblock lets all back.
    await page.click("#blocked-panel summary")
    entry = page.locator(f'#blocked li[data-key="{ana.hex()}"]')
    assert await page.locator("#blocked li").count() == 1
    name = await entry.locator(".name").text_content()
    assert name is not None and name.endswith(f"·{ana.hex()[:4]}"), name
    assert await entry.locator(".devices").text_content() == "(3 devices)"
    label = await entry.locator("button").get_attribute("aria-label")
    assert label == f"Unblock {name} (3 devices)"
    await shots(page, "person-list", "#blocked-panel")
    await entry.locator("button").click()
    await linked(page, tablet.public_key)
    await room_t.say("thanks")
    await says(page, tablet.public_key, "thanks")


async def test_the_page_mutes_a_person_on_all_her_devices_and_keeps_the_links(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_page: PageFactory, tmp_path: Path
) -> None:
    (node,) = await signaling_mesh(1)
    laptop, phone = await ana_devices(peers, tmp_path, node.url)
    room_l, room_p = await laptop.join(ROOM), await phone.join(ROOM)
    page = await open_page(node, "alice", room=ROOM)
    for key in (laptop.public_key, phone.public_key):
        await linked(page, key)
    await room_p.say("before")
    await says(page, phone.public_key, "before")
    await page.click(f'#members li[data-key="{laptop.public_key.hex()}"] .mute-member')
    title = await page.text_content("#block-dialog-title")
    assert title is not None and re.fullmatch(r"Mute .+ \(2 devices\)\?", title), title
    await page.click("#block-ok")
    await page.wait_for_function(
        "(k) => !document.querySelector(`#messages li[data-author='${k}']`)",
        arg=phone.public_key.hex(),
    )  # what the phone said goes too
    await room_l.say("muted laptop")
    await room_p.say("muted phone")
    await asyncio.sleep(1.0)
    for key in (laptop.public_key, phone.public_key):
        assert await bodies(page, key) == []
        seen = await state(page, key)
        assert seen["linked"] and seen["member"]  # a mute keeps the links
    stored = await page.evaluate("[...window.pagemesh.peer.blocks.keys()]")
    assert stored == [laptop.identity_key.hex()]


# --- the remembered devices' parser, the twin of peer.blocks.parse_block_device -----

HEXISH = st.sampled_from(["ab" * 32, "cd" * 32, "AB" * 32, "ab" * 31, ""]) | st.text(max_size=3)
PAIR = st.lists(HEXISH | st.none() | st.integers(), min_size=0, max_size=3)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(pairs=st.lists(PAIR | st.none() | st.text(max_size=2), max_size=6))
async def test_property_the_remembered_devices_parse_as_python_reads_them(
    blocks_page: Any,  # noqa: F811
    pairs: list[Any],
) -> None:
    """The page keeps a [device, identity] pair exactly when peer/blocks.py keeps the
    row, a later pair of one device replacing an earlier one (order is not kept)."""
    got = await blocks_page.evaluate("(pairs) => [...window.b.parseBlockDevices(pairs)]", pairs)
    want: dict[str, str] = {}
    for item in pairs:
        if not isinstance(item, list) or len(item) != 2:
            continue
        try:
            device, identity = parse_block_device(item[0], item[1])
        except BlockRecordError:
            continue
        want[device.hex()] = identity.hex()  # a later pair of one device replaces it
    assert dict(got) == want and len(got) == len(want)
