"""Groups in the browser against the stand-in node of tests/peer/layernode.py (layers of
two or three): the page says which group it sits in and how many people the page has, lists a
few groups with their counts, moves to one (keyboard only), sits with a friend by key or
by an invite link, and says so when a group is full. Whatever a node answers to
`layers`, the page reads checked numbers or a ProtocolError."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peer.peer import Connected, MemberLeft
from tests.peer.layernode import LayerNode

from .conftest import ARTIFACTS, PageFactory, next_of
from .test_fuzz_js import JSON
from .test_vectors import page  # noqa: F401  (fixture)

URL = "https://example.org/a-busy-page"


@pytest.fixture
async def node() -> AsyncIterator[LayerNode]:
    started = await LayerNode.start(layer_size=2)
    yield started
    await started.stop()


async def browser_key(tab: Any) -> bytes:
    return bytes.fromhex(await tab.evaluate("window.pagemesh.peer.keyHex"))


async def sentence(tab: Any, text: str) -> None:
    await tab.wait_for_selector(f"#group:text-is('{text}')", timeout=10_000)


async def test_the_page_tells_its_group_and_moves_by_keyboard(
    node: LayerNode, peers: Any, open_page: PageFactory
) -> None:
    seated = []
    for name in ("a", "b", "c"):
        peer = await peers(name, [node.url])
        seated.append((peer, await peer.join(URL)))
    (_, room_a), _, (c, room_c) = seated
    tab = await open_page(node, "browser", room=URL)
    me = await browser_key(tab)
    await sentence(tab, "You are in group 2 of 2 · about 4 people on this page")
    await next_of(room_c, Connected, key=me)
    assert await tab.get_attribute("#group", "role") == "status"
    assert await tab.get_attribute("#group", "aria-live") == "polite"

    # open the list with the keyboard: focus the disclosure, Enter
    await tab.focus("#groups summary")
    await tab.keyboard.press("Enter")
    await tab.wait_for_selector("#group-list li[data-layer='0']", timeout=10_000)
    rows = await tab.locator("#group-list li").all_inner_texts()
    assert [re.sub(r"\s+", " ", r).strip() for r in rows] == [
        "Group 1 2 people Move here",
        "Group 2 2 people you are here",
    ]
    await tab.wait_for_selector("#group-list li[data-layer='0'] button", timeout=5_000)

    # a full group: the node refuses, the page says so, nothing moves
    await tab.focus("#group-list li[data-layer='0'] button")
    await tab.keyboard.press("Enter")
    await tab.wait_for_selector("#groups-note:text-is('Group 1 is full')", timeout=10_000)
    assert await tab.get_attribute("#groups-note", "data-kind") == "problem"

    # a seat frees up in group 1: Refresh, then Move here (Tab from Refresh's row)
    await seated[1][0].leave(seated[1][1])
    await tab.click("#groups-refresh")
    await tab.wait_for_selector("#group-list li[data-layer='0']:has-text('1 person')")
    await tab.focus("#group-list li[data-layer='0'] button")
    await tab.keyboard.press("Enter")
    await sentence(tab, "You are in group 1 of 2 · about 3 people on this page")
    await tab.wait_for_selector("#messages li.moved:has-text('you moved to group 1')")
    await next_of(room_a, Connected, key=me)
    await next_of(room_c, MemberLeft, key=me)
    await tab.wait_for_selector(f"#members li[data-key='{seated[0][0].public_key.hex()}']")
    assert await tab.locator(f"#members li[data-key='{c.public_key.hex()}']").count() == 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await tab.screenshot(path=str(ARTIFACTS / "groups.png"), full_page=True)

    # any group by its number: typed, Enter
    await tab.fill("#move-group", "5")
    await tab.press("#move-group", "Enter")
    await sentence(tab, "You are in group 5 of 5 · about 3 people on this page")
    await next_of(room_a, MemberLeft, key=me)


@pytest.fixture
async def node_of_three() -> AsyncIterator[LayerNode]:
    started = await LayerNode.start(layer_size=3)
    yield started
    await started.stop()


async def test_sitting_with_a_friend_by_key_and_by_invite_link(
    node_of_three: LayerNode, peers: Any, open_page: PageFactory
) -> None:
    node = node_of_three
    friend = await peers("friend", [node.url])
    room_f = await friend.join(URL, layer=3)
    tab = await open_page(node, "browser", room=URL)
    me = await browser_key(tab)
    await sentence(tab, "You are in group 1 of 4 · about 2 people on this page")
    await tab.click("#groups summary")
    await tab.fill("#friend-key", "not a key")
    await tab.press("#friend-key", "Enter")
    await tab.wait_for_selector("#groups-note[data-kind=problem]:has-text('64 hex digits')")
    await tab.fill("#friend-key", "00" * 32)
    await tab.press("#friend-key", "Enter")
    await tab.wait_for_selector("#groups-note:text-is('Nobody with that key is on this page')")
    await tab.fill("#friend-key", friend.public_key.hex())
    await tab.click("#friend-form button")
    await sentence(tab, "You are in group 4 of 4 · about 2 people on this page")
    await next_of(room_f, Connected, key=me)

    # an invite link: ?friend= sits the newcomer beside the one who sent it
    invite = await open_page(node, "invited", room=URL, friend=me.hex())
    await sentence(invite, "You are in group 4 of 4 · about 3 people on this page")
    assert await invite.evaluate("window.pagemesh.room.layer") == 3
    # and when that group is full, the page says so and sits down elsewhere
    late = await open_page(node, "late", room=URL, friend=me.hex())
    await sentence(late, "You are in group 1 of 4 · about 4 people on this page")
    assert "full" in await late.inner_text("#banner")
    # ?group=N sits in group N
    there = await open_page(node, "there", room=URL, group="7")
    await sentence(there, "You are in group 7 of 7 · about 5 people on this page")


CENSUS = st.fixed_dictionaries(
    {"type": st.just("layers")},
    optional={
        "layer": st.integers(-3, 70_000) | JSON,
        "layers": st.integers(-3, 2**60) | JSON,
        "total": st.integers(-3, 2**60) | JSON,
        "counts": st.lists(
            st.lists(st.integers(-2, 70_000) | JSON, min_size=0, max_size=3), max_size=40
        )
        | JSON,
    },
)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(answers=st.lists(CENSUS, min_size=20, max_size=20))
async def test_any_layers_answer_is_a_checked_picture_or_a_protocol_error(
    page: Any,  # noqa: F811
    answers: list[dict[str, Any]],
) -> None:
    """A node is trusted for availability only: whatever it answers to `layers`, the
    page gets safe counts (at most 16 of them) or a ProtocolError, nothing else."""
    outcomes = await page.evaluate(
        """async (answers) => {
            const { parseCensus } = await import('/web/js/peer.js');
            return answers.map((answer) => {
                try {
                    return parseCensus(answer);
                } catch (e) {
                    return e instanceof window.m.ProtocolError ? 'typed' : `${e.name}: ${e}`;
                }
            });
        }""",
        answers,
    )
    for answer, got in zip(answers, outcomes, strict=True):
        if got == "typed":
            continue
        assert isinstance(got, dict), (answer, got)
        numbers = [got["layer"], got["layers"], got["total"]]
        numbers += [n for c in got["counts"] for n in (c["layer"], c["count"])]
        assert all(isinstance(n, int) and 0 <= n < 2**53 for n in numbers), (answer, got)
        assert len(got["counts"]) <= 16 and all(c["layer"] <= 65535 for c in got["counts"])
