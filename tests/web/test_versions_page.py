"""A page older than its node serves (docs/protocol.md 3.1) says so in its banner.

An out-of-date page is what a browser keeps in its cache after the node was upgraded:
here the node serves only the current protocol version, and the page's signaling module
is rewritten on its way in to announce the one before it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from signaling.node import SignalingNode
from signaling.protocol import PROTOCOL_VERSION
from signaling.session import SessionLimits
from tests.signaling.conftest import NodeFactory

ROOM = "https://example.org/versions"
CURRENT = f"export const PROTOCOL_VERSION = {PROTOCOL_VERSION};"
PREVIOUS = f"export const PROTOCOL_VERSION = {PROTOCOL_VERSION - 1};"


async def page_at(chromium: Any, node: SignalingNode, older: bool) -> Any:
    context = await chromium.new_context(bypass_csp=True)
    if older:

        async def previous_version(route: Any) -> None:
            response = await route.fetch()
            text = await response.text()
            assert CURRENT in text  # the page's version, as signaling.protocol has it
            await route.fulfill(response=response, body=text.replace(CURRENT, PREVIOUS))

        await context.route("**/web/js/signaling.js", previous_version)
    page = await context.new_page()
    query = urlencode({"name": "old" if older else "new", "room": ROOM})
    await page.goto(node.url.replace("ws://", "http://") + "/?" + query)
    return page  # ready once seated in the room (body[data-ready=true]), never for the old one


async def test_an_out_of_date_page_says_to_reload(
    signaling_mesh: NodeFactory, chromium: Any
) -> None:
    (node,) = await signaling_mesh(1, limits=SessionLimits(min_client_version=PROTOCOL_VERSION))
    old = await page_at(chromium, node, older=True)
    banner = await old.wait_for_selector("#banner:has-text('out of date')", timeout=20_000)
    assert await banner.inner_text() == (
        f"This page is out of date: protocol version {PROTOCOL_VERSION - 1} is older than "
        f"this node serves ({PROTOCOL_VERSION} to {PROTOCOL_VERSION}). Reload the page."
    )
    assert node.clients == {}

    # The page as the node serves it today is welcome there.
    new = await page_at(chromium, node, older=False)
    await new.wait_for_selector("body[data-ready=true]", timeout=20_000)
    assert await new.get_attribute("#status", "data-state") == "connected"
    assert await new.is_hidden("#banner")
    assert await new.evaluate("window.pagemesh.peer.node.nodeVersion") == PROTOCOL_VERSION
