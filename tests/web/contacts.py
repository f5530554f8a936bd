"""Meeting as contacts: what the page tests of contacts, devices and direct messages
start from (docs/protocol.md 7)."""

from __future__ import annotations

from typing import Any

from peer.peer import Connected, Peer, Room

from .conftest import PageFactory, next_of


async def contacts_on_a_page(
    node: Any, open_page: PageFactory, ana: Peer, url: str
) -> tuple[Room, Any, bytes]:
    """Ana (Python) and the page, as Ben, meet in `url`'s room and add each other as
    contacts: Ana's room there, the page, and Ben's identity key."""
    room = await ana.join(url)
    page = await open_page(node, "Ben", room=url)
    await page.wait_for_selector("body[data-contacts=ready]")
    ben = bytes.fromhex(await page.evaluate("window.pagemesh.peer.identityHex"))
    await next_of(room, Connected, key=ben)
    await page.evaluate(
        "([key]) => window.pagemesh.peer.friends.add(key, 'Ana')", [ana.identity_key.hex()]
    )
    ana.add_contact(ben, "Ben", room)
    return room, page, ben
