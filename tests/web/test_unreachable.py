"""A member no path reaches: the page says so (once, with why) instead of spinning."""

from __future__ import annotations

from peer.mesh import MeshConfig
from peer.peer import PeerConfig
from tests.peer.conftest import PeerFactory
from tests.signaling.conftest import NodeFactory

from .conftest import PageFactory

ROOM = "https://example.org/unreachable"


async def test_the_page_says_when_a_member_cannot_be_reached(
    signaling_mesh: NodeFactory, peers: PeerFactory, open_page: PageFactory
) -> None:
    (node,) = await signaling_mesh(1)  # no relay on this node
    # A peer that insists on a relay, where there is none, offers no candidates at all.
    config = PeerConfig(mesh=MeshConfig(connect_timeout=3.0), relay_only=True)
    python = await peers("py", [node.url], config)
    await python.join(ROOM)
    page = await open_page(node, "browser")
    await page.evaluate("window.pagemesh.peer.mesh.config.connectTimeout = 3")
    await page.fill("#room-url", ROOM)
    await page.click("#join")
    key = python.public_key.hex()
    notice = f'#messages li[data-unreachable="{key}"]'
    problem = await page.wait_for_selector(notice, timeout=20_000)
    text = await problem.text_content() or ""
    assert f"cannot connect to {key[:12]}" in text
    assert "no relay to fall back on" in text
    badge = f'#members li[data-key="{key}"] .path'
    assert await page.get_attribute(badge, "data-path") == "unreachable"
    # Told once, not at every retry: wait until the link has been given up twice
    # (a third link made to that member).
    await page.wait_for_function(
        f"(window.pagemesh.room.linksMade.get('{key}') ?? 0) >= 3", timeout=30_000
    )
    assert len(await page.query_selector_all(f'#messages li[data-unreachable="{key}"]')) == 1
