"""Browser (Chromium) and Python with real nodes (two, on loopback, layers of two): each
sees its group and the page's estimates, moves to another group, and sits in a
friend's group (the friend homed on the other node); a full group is refused and
nothing moves."""

from __future__ import annotations

import re
from typing import Any

from peer.peer import Connected, MemberLeft, Room
from peer.signaling import SignalingError
from tests.peer.test_layers_e2e import key, layered_nodes
from tests.signaling.conftest import NodeFactory

from .conftest import ARTIFACTS, PageFactory, next_of

URL = "https://example.org/a-page-in-layers"
SENTENCE = re.compile(r"You are in group ([\d,]+) of ([\d,]+) · about ([\d,]+) people on this page")


async def seat_of(page: Any) -> tuple[int, int, int]:
    """(group, groups, people) as the page shows them; checked against its Room."""
    text = await page.inner_text("#group")
    match = SENTENCE.fullmatch(text.strip())
    assert match, text
    group, groups, people = (int(n.replace(",", "")) for n in match.groups())
    layer, layers, total = await page.evaluate(
        "(({layer, layers, total}) => [layer, layers, total])(window.pagemesh.room)"
    )
    assert (group, people) == (layer + 1, total) and groups == max(layers, group)
    return group, groups, people


async def in_group(page: Any, group: int) -> None:
    await page.wait_for_selector(f"#group[data-layer='{group - 1}']", timeout=15_000)


async def test_browser_and_python_see_their_group_move_and_sit_with_a_friend(
    signaling_mesh: NodeFactory, peers: Any, open_page: PageFactory
) -> None:
    a, b = await layered_nodes(signaling_mesh, 2)

    async def join(name: str, node: Any, **where: object) -> Room:
        peer = await peers(name, [node.url])
        return await peer.join(URL, **where)  # type: ignore[no-any-return]

    # placed by the nodes first, in the first layers; the others sit where they ask
    crowd = [await join(f"crowd{i}", (a, b)[i % 2]) for i in range(2)]
    beside = await join("beside", b, layer=2)
    lonely = await join("lonely", a, layer=6)
    friend = await join("friend", b, layer=9)
    page = await open_page(a, "browser", room=URL, group="3")
    me = await join("me", b, layer=12)
    browser = bytes.fromhex(await page.evaluate("window.pagemesh.peer.keyHex"))

    # each sees where it sits (the estimates are checked at the end)
    await in_group(page, 3)
    assert (await seat_of(page))[0] == 3
    await next_of(beside, Connected, key=browser)
    assert me.layer == 12
    assert all(room.layer not in (2, 6, 9, 12) for room in crowd)

    # the browser moves to group 7 by its number; Python moves to the seat it left
    await page.click("#groups summary")  # opening it asks for a census (checked below)
    await page.fill("#move-group", "7")
    await page.press("#move-group", "Enter")
    await in_group(page, 7)
    await next_of(lonely, Connected, key=browser)
    await next_of(beside, MemberLeft, key=browser)
    assert await me.move(2) == 2
    await next_of(me, Connected, key=key(beside))

    # each sits with a friend: the browser by key (its friend homed on the other node)
    await page.fill("#friend-key", key(friend).hex())
    await page.press("#friend-key", "Enter")
    await in_group(page, 10)
    await next_of(friend, Connected, key=browser)
    await next_of(lonely, MemberLeft, key=browser)
    assert await me.sit_with(key(lonely)) == 6
    await next_of(me, Connected, key=key(lonely))

    # full groups are refused, and nothing moves
    try:
        await me.sit_with(key(friend))
        raise AssertionError("a full group took a third member")
    except SignalingError as refused:
        assert refused.code == "layer-full"
    assert me.layer == 6 and me.members == {key(lonely)}
    await page.fill("#friend-key", key(lonely).hex())
    await page.press("#friend-key", "Enter")
    await page.wait_for_selector('#groups-note:text-is("Your friend\'s group is full")')
    await in_group(page, 10)
    row = f"#members li[data-key='{key(friend).hex()}'] .path[data-path=direct]"
    await page.wait_for_selector(row)

    # the census agrees: two in the browser's group, two in Python's
    await page.click("#groups-refresh")
    await page.wait_for_selector("#group-list li.mine[data-layer='9']:has-text('2 people')")
    census = await me.census()
    assert [c.count for c in census.counts if c.layer == 6] == [2]

    # the page's estimates (the node's to make): at least ten groups, as group 10 is
    # seated, and at least the two people of one's own group; each client shows its own
    assert census.layers >= 10 and census.total >= 2
    assert (me.total, me.layers) == (census.total, census.layers)
    group, groups, people = await seat_of(page)
    assert group == 10 and groups >= 10 and people >= 2
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "groups-e2e.png"), full_page=True)
