"""What the browser keeps of its rooms (web/js/store.js): page rooms are bounded by
`MAX_PAGE_ROOMS`, the least recently used forgotten first, since the extension joins
every page its person reads; a direct conversation's room is never forgotten. The
kept map is read back from the database as untrusted input."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.signaling.conftest import NodeFactory

from .conftest import PageFactory

HEX = st.binary(min_size=32, max_size=32).map(bytes.hex)


@pytest.fixture
async def page(signaling_mesh: NodeFactory, open_page: PageFactory) -> Any:
    (node,) = await signaling_mesh(1)
    return await open_page(node, "rooms")


async def test_page_rooms_are_bounded_and_a_direct_conversation_is_kept(page: Any) -> None:
    got = await page.evaluate(
        """async () => {
            const { Store, MAX_PAGE_ROOMS } = await import('/web/js/store.js');
            const store = await Store.open('bounded-rooms');
            const hex = (i) => i.toString(16).padStart(64, '0');
            const dm = 'd'.repeat(64);
            await store.saveRoomState(dm, { dm: true }); // a contact's room
            const total = MAX_PAGE_ROOMS + 5;
            for (let i = 0; i < total; i++) {
                store.pageRoomsUsed.clear(); // each page read on another day
                await store.saveRoomState(hex(i), { i }, { page: true });
                await new Promise((r) => setTimeout(r, 2));
                if (i === 50) { // the first page read again
                    store.pageRoomsUsed.clear();
                    await store.saveRoomState(hex(0), { i: 0 }, { page: true });
                }
            }
            // the same session: a plain save
            await store.saveRoomState(hex(total - 1), { again: true }, { page: true });
            const keys = await new Promise((resolve) => {
                const r = store.db.transaction('rooms').objectStore('rooms').getAllKeys();
                r.onsuccess = () => resolve(r.result);
            });
            return { keys, max: MAX_PAGE_ROOMS, total, dm: await store.roomState(dm),
                     last: await store.roomState(hex(total - 1)) };
        }"""
    )
    keys = set(got["keys"])
    hexes = [f"{i:064x}" for i in range(got["total"])]
    assert "d" * 64 in keys and got["dm"] == {"dm": True}
    assert len(keys) == got["max"] + 1  # the page rooms at their bound, and the DM's
    assert hexes[0] in keys  # used again later: not among the least recent
    assert not {hexes[1], hexes[2], hexes[3], hexes[4], hexes[5]} & keys  # the oldest
    assert set(hexes[6:]) <= keys and got["last"] == {"again": True}


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    used=st.one_of(
        st.none(),
        st.integers(),
        st.lists(st.integers()),
        st.dictionaries(
            HEX | st.text(max_size=70),
            st.integers(-(2**40), 2**40) | st.floats() | st.none() | st.text(max_size=3),
            max_size=30,
        ),
    ),
    room=HEX,
    at=st.integers(0, 2**41),
    limit=st.integers(1, 12),
)
async def test_the_kept_map_is_untrusted_and_the_result_bounded(
    page: Any, used: Any, room: str, at: int, limit: int
) -> None:
    got = await page.evaluate(
        """async ([used, room, at, max]) => {
            const { pageRoomsKept } = await import('/web/js/store.js');
            return pageRoomsKept(used, room, at, max);
        }""",
        [used, room, at, limit],
    )
    kept, forget = got["used"], got["forget"]
    assert kept[room] == at and len(kept) <= limit
    assert not set(kept) & set(forget)
    valid = {
        k: v
        for k, v in (used.items() if isinstance(used, dict) else [])
        if len(k) == 64
        and all(c in "0123456789abcdef" for c in k)
        and isinstance(v, int | float)
        and not isinstance(v, bool)
        and v == v
        and abs(v) != float("inf")
        and k != room
    }
    assert set(kept) | set(forget) == {room, *valid}
    if forget and len(kept) > 1:  # every room forgotten was used no later than any kept
        assert max(valid[k] for k in forget) <= min(v for k, v in kept.items() if k != room)
