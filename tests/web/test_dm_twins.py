"""The browser's dm.js and Python's peer/dm.py decide the same DM rooms, and both note
parsers read the `dm` flag alike (docs/protocol.md 7.4): hypothesis, in Chromium."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peer.dm import plan
from peer.friends import PresenceError, parse_presence_note
from tests.signaling.conftest import NodeFactory

from .conftest import PageFactory

KEYS = st.lists(st.sampled_from([f"{i:02x}" * 32 for i in range(24)]), max_size=24, unique=True)
INPUTS = st.fixed_dictionaries(
    {
        name: KEYS
        for name in ("contacts", "online", "waiting", "knocking", "opened", "joined", "linked")
    }
)


@pytest.fixture
async def page(signaling_mesh: NodeFactory, open_page: PageFactory) -> Any:
    (node,) = await signaling_mesh(1)
    page = await open_page(node, "dm")
    await page.evaluate(
        """async () => {
            window.dm = await import('/web/js/dm.js');
            window.friends = await import('/web/js/friends.js');
        }"""
    )
    return page


def python_plan(case: dict[str, list[str]]) -> list[list[str]]:
    b = {k: [bytes.fromhex(x) for x in v] for k, v in case.items()}
    decided = plan(
        b["contacts"], b["online"], b["waiting"], set(b["knocking"]), b["opened"], b["joined"],
        b["linked"],
    )  # fmt: skip
    return [[k.hex() for k in decided.join], [k.hex() for k in decided.leave]]


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(cases=st.lists(INPUTS, min_size=1, max_size=30))
async def test_both_plans_agree(page: Any, cases: list[dict[str, list[str]]]) -> None:
    got = await page.evaluate(
        """(cases) => cases.map((c) => {
            const d = window.dm.plan({ ...c, knocking: new Set(c.knocking) });
            return [d.join, d.leave];
        })""",
        cases,
    )
    for case, browser in zip(cases, got, strict=True):
        assert browser == python_plan(case), case


DM_VALUES = st.one_of(
    st.booleans(), st.none(), st.integers(-2, 2), st.text(max_size=3), st.just([])
)


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(notes=st.lists(st.tuples(st.booleans(), DM_VALUES | st.just("absent")), max_size=30))
async def test_both_read_the_dm_flag_alike(page: Any, notes: list[tuple[bool, Any]]) -> None:
    bodies = []
    for online, dm in notes:
        body: dict[str, Any] = {"v": 1, "on": online, "exp": 5}
        if dm != "absent":
            body["dm"] = dm
        bodies.append(json.dumps(body).encode())
    got = await page.evaluate(
        """(notes) => notes.map((n) => {
            try {
                const note = window.friends.parseNote(Uint8Array.from(n));
                return [note.online, note.dm];
            } catch (e) {
                return e instanceof window.friends.PresenceError ? 'refused' : 'threw ' + e;
            }
        })""",
        [list(b) for b in bodies],
    )
    for data, browser in zip(bodies, got, strict=True):
        try:
            note = parse_presence_note(data)
            python: Any = [note.online, note.dm]
        except PresenceError:
            python = "refused"
        assert browser == python, data
    written = await page.evaluate(
        """() => [window.friends.noteJson({ online: true, expires: 5, dm: true }),
                  window.friends.noteJson({ online: true, expires: 5 })]
               .map((b) => new TextDecoder().decode(b))"""
    )
    assert written == ['{"v":1,"on":true,"exp":5,"dm":true}', '{"v":1,"on":true,"exp":5}']
