"""Block, mute and the flood cut in the page, with real Python peers (docs/protocol.md 5.4).

The attacker's tests: a key the page blocked gets no link, message or file
through and is not shown, after a reload too; a member flooding the room is
muted with a note while another member's messages keep coming. The controls
are reached with the keyboard and labelled, and screenshots at 1280x800 and
390x844 are kept in the artifacts."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dht.identity import Identity
from peer.blocks import (
    MAX_FLOOD_MUTED,
    MAX_FLOOD_NOTES,
    BlockRecordError,
    FloodMutes,
    parse_block_row,
)
from peer.messaging import Envelope, RoomConfig
from peer.peer import FileOffered, PeerConfig
from tests.peer.conftest import PeerFactory
from tests.signaling.conftest import NodeFactory

from .conftest import ARTIFACTS, PageFactory, next_of

pytestmark = pytest.mark.integration

ROOM = "https://example.org/blocks"
SIZES = {"wide": (1280, 800), "phone": (390, 844)}


async def shots(page: Any, name: str, show: str | None = None) -> None:
    """Screenshots at both sizes; `show`: a part of the page scrolled into view first."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for label, (width, height) in SIZES.items():
        await page.set_viewport_size({"width": width, "height": height})
        toggle = "#people-toggle"
        if (
            label == "phone"
            and await page.is_visible(toggle)
            and await page.get_attribute(toggle, "aria-expanded") != "true"
        ):
            await page.click(toggle)  # the people panel, folded away on a phone
        if show is not None:
            await page.locator(show).scroll_into_view_if_needed()
        await page.screenshot(path=str(ARTIFACTS / f"block-{name}-{label}.png"))
    await page.set_viewport_size({"width": 1280, "height": 800})


async def linked(page: Any, key: bytes) -> None:
    await page.wait_for_selector(
        f'#members li[data-key="{key.hex()}"] .path[data-path="direct"]', timeout=30_000
    )


async def bodies(page: Any, author: bytes) -> list[str]:
    texts: list[str] = await page.eval_on_selector_all(
        f'#messages li.msg[data-author="{author.hex()}"]:not([hidden]) .body',
        "nodes => nodes.map(n => n.textContent)",
    )
    return texts


async def state(page: Any, key: bytes) -> dict[str, Any]:
    found: dict[str, Any] = await page.evaluate(
        """(key) => {
            const room = window.pagemesh.room, peer = window.pagemesh.peer;
            return {member: room.members.has(key), linked: room.links.has(key),
                    blocked: peer.blocked.has(key), refused: peer.counters['refused.blocked'] ?? 0,
                    shown: room.transcript().some(e => e.author === key)};
        }""",
        key.hex(),
    )
    return found


async def test_a_blocked_key_gets_nothing_through_and_is_not_shown_after_reload(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_page: PageFactory, tmp_path: Path
) -> None:
    (node,) = await signaling_mesh(1)
    mallory, bob = await peers("mallory", [node.url]), await peers("bob", [node.url])
    room_m, room_b = await mallory.join(ROOM), await bob.join(ROOM)
    page = await open_page(node, "ana", room=ROOM)
    ana = bytes.fromhex(await page.evaluate("window.pagemesh.peer.keyHex"))
    await linked(page, mallory.public_key)
    await linked(page, bob.public_key)
    await room_m.say("hi, I am mallory")
    await page.wait_for_selector(f'#messages li[data-author="{mallory.public_key.hex()}"]')
    row = f'#members li[data-key="{mallory.public_key.hex()}"]'
    block = page.locator(f"{row} .block-member")
    await page.wait_for_selector(f'{row} .block-member[aria-label="Block mallory"]')
    await shots(page, "members")
    # By keyboard: focus Block, Enter opens the dialog with Cancel focused.
    await block.focus()
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#block-dialog[open]")
    assert await page.evaluate("document.activeElement.id") == "block-cancel"
    assert await page.text_content("#block-dialog-title") == "Block mallory?"
    await shots(page, "confirm")
    await page.keyboard.press("Shift+Tab")  # to "Block"
    await page.keyboard.press("Enter")
    await page.wait_for_selector(row, state="detached", timeout=15_000)
    assert await bodies(page, mallory.public_key) == []  # what was shown is hidden too
    # Mallory talks and offers a file; Bob hears it, the page does not.
    source = tmp_path / "spam.txt"
    source.write_bytes(b"spam" * 100)
    await room_m.say("can you see me?")
    await room_m.send_file(source)
    await next_of(room_b, FileOffered, sender=mallory.public_key)
    await room_b.say("hello ana")
    await page.wait_for_function(
        "(k) => [...document.querySelectorAll(`#messages li[data-author='${k}'] .body`)]"
        ".some(n => n.textContent === 'hello ana')",
        arg=bob.public_key.hex(),
    )
    await asyncio.sleep(1.0)
    seen = await state(page, mallory.public_key)
    assert seen == {**seen, "member": False, "linked": False, "blocked": True, "shown": False}
    assert await page.locator("#messages li.file").count() == 0
    link = room_m.links.get(ana)
    assert link is None or not link.open  # to Mallory, the page is unreachable
    # Reload: the block is kept (IndexedDB), and listed with Unblock.
    await page.reload()
    await page.wait_for_selector("body[data-ready=true]", timeout=15_000)
    await linked(page, bob.public_key)
    await room_m.say("and after a reload?")
    await room_b.say("welcome back")
    await page.wait_for_function(
        "(k) => [...document.querySelectorAll(`#messages li[data-author='${k}'] .body`)]"
        ".some(n => n.textContent === 'welcome back')",
        arg=bob.public_key.hex(),
    )
    await page.wait_for_function(
        "() => (window.pagemesh.peer.counters['refused.blocked'] ?? 0) > 0", timeout=30_000
    )
    seen = await state(page, mallory.public_key)
    assert seen == {**seen, "member": False, "linked": False, "blocked": True, "shown": False}
    assert await bodies(page, mallory.public_key) == []
    await page.click("#blocked-panel summary")
    undo = page.locator(f'#blocked li[data-key="{mallory.public_key.hex()}"] button')
    assert (
        await undo.get_attribute("aria-label") == f"Unblock mallory·{mallory.public_key.hex()[:4]}"
    )
    await shots(page, "list", "#blocked-panel")
    await undo.focus()
    await page.keyboard.press("Enter")
    await linked(page, mallory.public_key)
    await room_m.say("thanks")
    await page.wait_for_function(
        "(k) => [...document.querySelectorAll(`#messages li[data-author='${k}'] .body`)]"
        ".some(n => n.textContent === 'thanks')",
        arg=mallory.public_key.hex(),
    )


async def test_mute_hides_messages_and_keeps_the_link(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_page: PageFactory
) -> None:
    (node,) = await signaling_mesh(1)
    bob = await peers("bob", [node.url])
    room_b = await bob.join(ROOM)
    page = await open_page(node, "ana", room=ROOM)
    await linked(page, bob.public_key)
    await page.click(f'#members li[data-key="{bob.public_key.hex()}"] .mute-member')
    await page.click("#block-ok")
    await room_b.say("muted words")
    await asyncio.sleep(1.0)
    assert await bodies(page, bob.public_key) == []
    seen = await state(page, bob.public_key)
    assert seen["linked"] and seen["member"] and seen["shown"]  # link and history kept
    await page.click("#blocked-panel summary")
    await page.click(f'#blocked li[data-key="{bob.public_key.hex()}"] button')
    await page.wait_for_function(
        "(k) => document.querySelectorAll(`#messages li[data-author='${k}']`).length === 1",
        arg=bob.public_key.hex(),
    )
    assert await bodies(page, bob.public_key) == ["muted words"]


async def test_a_flooder_is_muted_with_a_note_while_others_keep_talking(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_page: PageFactory
) -> None:
    (node,) = await signaling_mesh(1)
    rogue = PeerConfig(room=dataclasses.replace(RoomConfig(), max_unacked=10**6))
    flooder = await peers("flooder", [node.url], config=rogue)
    bob = await peers("bob", [node.url])
    room_f, room_b = await flooder.join(ROOM), await bob.join(ROOM)
    page = await open_page(node, "ana", room=ROOM)
    await linked(page, flooder.public_key)
    await linked(page, bob.public_key)
    sent = 0
    for burst in range(10):  # 500 a second, for two seconds, Bob talking in between
        for _ in range(100):
            await room_f.send(f"flood {sent}")
            sent += 1
        await room_b.say(f"bob {burst}")
        await asyncio.sleep(0.2)
    note = f'#messages li.note[data-flooding="{flooder.public_key.hex()}"]'
    await page.wait_for_selector(note, timeout=20_000)
    text = await page.text_content(note)
    assert text is not None and text.startswith("Muted flooder for flooding:")
    await page.wait_for_function(
        "(k) => document.querySelectorAll(`#messages li[data-author='${k}']`).length === 10",
        arg=bob.public_key.hex(),
        timeout=20_000,
    )
    assert await bodies(page, bob.public_key) == [f"bob {i}" for i in range(10)]
    assert await bodies(page, flooder.public_key) == []
    dropped = await page.evaluate("window.pagemesh.room.core.counters['drop.flood']")
    assert dropped > 0  # how many reach the page depends on the link's queue
    await shots(page, "flooding")


async def test_a_member_forwarding_many_flooders_leaves_a_bounded_few_notes(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_page: PageFactory
) -> None:
    """The attacker: a member forwards, in history frames, floods of made-up authors,
    each just over the page's cut. Each used to add a note to the conversation (and a
    row to "Blocked and muted"); the notes are the newest MAX_FLOOD_NOTES, the rows the
    room's flood mutes, the newest 256."""
    (node,) = await signaling_mesh(1)
    rogue = await peers("rogue", [node.url])
    room_r = await rogue.join(ROOM)
    page = await open_page(node, "ana", room=ROOM)
    await linked(page, rogue.public_key)
    ana = bytes.fromhex(await page.evaluate("window.pagemesh.peer.keyHex"))
    config = RoomConfig()
    # over the cut by more than what refills while the page checks an author's signatures
    authors, per_author = MAX_FLOOD_NOTES + 8, config.flood_messages + 20
    room_id = room_r.key
    now_ms = int(time.time() * 1000)
    envs = []
    for i in range(authors):
        who = Identity.from_seed(i.to_bytes(4, "big") + b"\2" * 28)
        for seq in range(1, per_author + 1):
            env = Envelope(room_id, who.public_key, seq, now_ms + seq, now_ms, "text", "x")
            envs.append(replace(env, signature=who.sign(env.signed_bytes())).to_json())
    async with asyncio.timeout(20):
        while not (ana in room_r.links and room_r.links[ana].open):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    link = room_r.links[ana]
    for first in range(0, len(envs), 50):
        assert link.send({"t": "hist", "envs": envs[first : first + 50]})
        await asyncio.sleep(0.02)
    await page.wait_for_function(
        "(n) => (window.pagemesh.room.core.counters['drop.flood'] ?? 0) >= n",
        arg=authors,
        timeout=60_000,
    )
    newest = Identity.from_seed((authors - 1).to_bytes(4, "big") + b"\2" * 28).public_key
    await page.wait_for_selector(
        f'#messages li.note[data-flooding="{newest.hex()}"]', state="attached", timeout=20_000
    )
    notes = await page.eval_on_selector_all("#messages li.note[data-flooding]", "n => n.length")
    assert notes <= MAX_FLOOD_NOTES


# --- the stored list's parser, the twin of peer/blocks.py -----------------------------

BLOCKS_JS = """async () => { window.b = await import('/web/js/blocks.js'); }"""
KEYS = st.sampled_from(["ab" * 32, "AB" * 32, "ab" * 31, "zz" * 32, ""]) | st.text(max_size=3)
ENTRY = st.fixed_dictionaries(
    {
        "key": KEYS,
        "level": st.sampled_from(["block", "mute", "ban", ""]) | st.none(),
        "label": st.text(max_size=70) | st.integers(),
        "since": st.integers(-3, 2**60) | st.none() | st.text(max_size=2),
    }
)


@pytest.fixture
async def blocks_page(signaling_mesh: NodeFactory, open_page: PageFactory) -> Any:
    (node,) = await signaling_mesh(1)
    page = await open_page(node, "blocks")
    await page.evaluate(BLOCKS_JS)
    return page


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(entries=st.lists(ENTRY | st.none() | st.integers() | st.lists(st.none()), max_size=8))
async def test_property_the_stored_list_parses_as_python_reads_a_row(
    blocks_page: Any, entries: list[Any]
) -> None:
    """Each entry is kept by the page exactly when peer/blocks.py would keep the row,
    and nothing else escapes the parser."""
    got = await blocks_page.evaluate(
        """(entries) => {
            const {entries: kept, dropped} = window.b.parseBlockList(entries);
            return [[...kept.values()].map(e => [e.key, e.level, e.label, e.since]), dropped];
        }""",
        entries,
    )
    want: dict[str, list[Any]] = {}
    for item in entries:
        if not isinstance(item, dict):
            continue
        key = item["key"]
        raw = bytes.fromhex(key) if re.fullmatch("[0-9a-f]{64}", key) else key.encode()
        try:
            entry = parse_block_row((raw, item["level"], item["label"], item["since"]))
        except BlockRecordError:
            continue
        want.pop(key, None)  # a later entry of one key replaces an earlier one
        want[key] = [entry.key.hex(), entry.level, entry.label, entry.since]
    assert got[0] == list(want.values())
    assert got[1] == len(entries) - sum(
        1 for item in entries if isinstance(item, dict) and item["key"] in want and _kept(item)
    )


def _kept(item: dict[str, Any]) -> bool:
    try:
        parse_block_row((b"\0" * 32, item["level"], item["label"], item["since"]))
    except BlockRecordError:
        return False
    return re.fullmatch("[0-9a-f]{64}", item["key"]) is not None


# --- authors muted for flooding: bounded, the twin of peer/blocks.py FloodMutes ---------


async def test_the_pages_flood_mutes_stay_bounded(
    signaling_mesh: NodeFactory, open_page: PageFactory
) -> None:
    """The attacker forwards floods of a thousand made-up authors (tests/peer/
    test_block_peers.py plays it over aiortc): the room's set of authors muted for
    flooding, and so the rows "Blocked and muted" draws of it, keeps the newest 256."""
    (node,) = await signaling_mesh(1)
    page = await open_page(node, "ana", room=ROOM)
    got = await page.evaluate(
        """() => {
            const muted = window.pagemesh.room.floodMuted;
            for (let i = 0; i < 1000; i++) muted.add(i.toString(16).padStart(64, '0'));
            return [muted.size, muted.has((999).toString(16).padStart(64, '0')),
                    muted.has('0'.repeat(64))];
        }"""
    )
    assert got == [MAX_FLOOD_MUTED, True, False]


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    ops=st.lists(st.tuples(st.booleans(), st.integers(0, 9)), max_size=40),
    limit=st.integers(1, 5),
)
async def test_property_flood_mutes_keep_what_python_keeps(
    blocks_page: Any, ops: list[tuple[bool, int]], limit: int
) -> None:
    got = await blocks_page.evaluate(
        """([ops, limit]) => {
            const muted = new window.b.FloodMutes([], limit);
            for (const [add, k] of ops) add ? muted.add(String(k)) : muted.delete(String(k));
            return [...muted];
        }""",
        [ops, limit],
    )
    python = FloodMutes(limit=limit)
    for add, k in ops:
        (python.add if add else python.discard)(str(k).encode())
    assert got == [k.decode() for k in python]
    assert len(python) <= limit
