"""The page's Export identity and Import identity controls, against the Python
reader and writer (peer/identity_file.py): the same key on both sides."""

from __future__ import annotations

import os
from pathlib import Path

from nacl.signing import SigningKey

from peer.identity_file import export_identity, import_identity
from peer.peer import Connected, Message
from tests.peer.conftest import PeerFactory, next_of
from tests.signaling.conftest import NodeFactory
from tests.web.conftest import PageFactory

PASSPHRASE = "tide lantern orbit walnut"


async def test_a_key_exported_in_the_page_imports_in_python(
    signaling_mesh: NodeFactory, open_page: PageFactory, tmp_path: Path
) -> None:
    (node,) = await signaling_mesh(1)
    page = await open_page(node, "Ana")
    key = await page.evaluate("window.pagemesh.peer.keyHex")
    assert await page.is_enabled("#export-identity")
    await page.focus("#export-identity")
    await page.keyboard.press("Enter")  # reachable and usable from the keyboard
    await page.fill("#identity-passphrase", PASSPHRASE)
    await page.fill("#identity-passphrase-again", PASSPHRASE + "x")
    await page.click("#identity-ok")
    await page.wait_for_selector("#identity-error:has-text('differ')")
    await page.fill("#identity-passphrase-again", PASSPHRASE)
    async with page.expect_download() as info:
        await page.click("#identity-ok")
    download = await info.value
    assert download.suggested_filename == "Ana.pagemesh-identity"
    path = tmp_path / "ana.pagemesh-identity"
    await download.save_as(path)
    seed, name = import_identity(path.read_bytes(), PASSPHRASE)
    assert bytes(SigningKey(seed).verify_key).hex() == key
    assert name == "Ana"


async def test_a_python_exported_key_becomes_the_page_key(
    signaling_mesh: NodeFactory, open_page: PageFactory, tmp_path: Path
) -> None:
    (node,) = await signaling_mesh(1)
    page = await open_page(node, "Someone")
    old = await page.evaluate("window.pagemesh.peer.keyHex")
    seed = os.urandom(32)
    key = bytes(SigningKey(seed).verify_key).hex()
    path = tmp_path / "bo.pagemesh-identity"
    path.write_bytes(export_identity(seed, PASSPHRASE, "Bo"))
    async with page.expect_file_chooser() as chooser:
        await page.click("#import-identity")
    await (await chooser.value).set_files(str(path))
    await page.wait_for_selector(f"#identity-dialog-text:has-text('{key}')")
    await page.fill("#identity-passphrase", "not it")
    await page.click("#identity-ok")
    await page.wait_for_selector("#identity-error:has-text('wrong passphrase')")
    await page.fill("#identity-passphrase", PASSPHRASE)
    async with page.expect_navigation():
        await page.click("#identity-ok")
    await page.wait_for_selector("body[data-ready=true]", timeout=15_000)
    assert await page.evaluate("window.pagemesh.peer.keyHex") == key != old
    assert await page.evaluate("window.pagemesh.peer.exportable")


async def test_a_key_moved_from_python_to_the_page_loses_nothing_it_says(
    signaling_mesh: NodeFactory, open_page: PageFactory, peers: PeerFactory, tmp_path: Path
) -> None:
    """The room heard three messages from a key in Python; the same key, imported into
    a browser that never was in the room, speaks at once: every member gets its new
    words after the old ones (seq 4 on), none taken for a duplicate (5.0.1)."""
    a, b = await signaling_mesh(2)
    room_url = "https://example.org/moving-house"
    witness = await peers("witness", [b.url])
    witness_room = await witness.join(room_url)
    bo = await peers("bo", [a.url])
    bo_room = await bo.join(room_url)
    await next_of(witness_room, Connected, key=bo.public_key)
    for text in ("one", "two", "three"):
        await bo_room.say(text)
    for text in ("one", "two", "three"):
        await next_of(witness_room, Message, author=bo.public_key, text=text)
    path = tmp_path / "bo.pagemesh-identity"
    path.write_bytes(export_identity(bo.store.key.encode(), PASSPHRASE, "Bo"))
    await bo.close()

    page = await open_page(a, "Bo", room=room_url)
    async with page.expect_file_chooser() as chooser:
        await page.click("#import-identity")
    await (await chooser.value).set_files(str(path))
    await page.fill("#identity-passphrase", PASSPHRASE)
    async with page.expect_navigation():
        await page.click("#identity-ok")
    await page.wait_for_selector("body[data-ready=true]", timeout=15_000)
    await page.wait_for_selector("#text:enabled", timeout=15_000)
    await page.fill("#text", "moved to a browser")
    await page.press("#text", "Enter")
    said = await next_of(witness_room, Message, author=bo.public_key, text="moved to a browser")
    assert said.seq == 4
    await page.wait_for_selector(f"#messages li.msg[data-id='{bo.public_key.hex()}:4']")
    assert await page.evaluate("window.pagemesh.room.core.seq") == 4
