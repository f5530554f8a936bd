"""When the browser's description may go before ICE gathering completes
(web/js/gathering.js, docs/protocol.md 5.0 "Gathering"): the rule on virtual time,
run in Chromium. A description never leaves without the candidate types its
configuration can give (a relay when relay-only), unless gathering completed or
the old 5 s bound passed; with them it waits only `settle` for their siblings.
Times are multiples of 1/64 s and `settle` is 0.25 s here, so sums are exact."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.signaling.conftest import NodeFactory

from .conftest import PageFactory

STUN = {"urls": "stun:198.51.100.1:3478"}
TURN = {
    "urls": ["turn:198.51.100.1:3478?transport=udp", "turns:198.51.100.1:443?transport=tcp"],
    "username": "1700000000:ab",
    "credential": "x",
}

RUN = """async ([servers, relayOnly, steps]) => {
    const { GatherWait, expectedTypes } = await import('/web/js/gathering.js');
    const wait = new GatherWait(expectedTypes(servers, relayOnly), { settle: 0.25, bound: 5 });
    const out = [];
    for (const [what, at] of steps) {
        if (what === 'start') wait.start(at);
        else if (what === 'complete') wait.complete(at);
        else if (what === 'check') out.push([at, wait.ready(at), wait.timer()]);
        else wait.candidate(what, at);
    }
    return out;
}"""


@pytest.fixture
async def page(signaling_mesh: NodeFactory, open_page: PageFactory) -> Any:
    (node,) = await signaling_mesh(1)
    return await open_page(node, "gathering")


async def run(page: Any, servers: list[Any], steps: list[Any], relay_only: bool = False) -> Any:
    return [tuple(c) for c in await page.evaluate(RUN, [servers, relay_only, steps])]


async def test_the_types_a_configuration_can_give(page: Any) -> None:
    cases = [
        ([], False),
        ([STUN], False),
        ([TURN], False),
        ([STUN, TURN], False),
        ([STUN, TURN], True),
        ([{"urls": ["STUN:h", "turns:h:443"]}, {"urls": None}, None, {"urls": "http://x"}], False),
    ]
    got = await page.evaluate(
        """async (cases) => {
            const { expectedTypes } = await import('/web/js/gathering.js');
            return cases.map(([servers, only]) => [...expectedTypes(servers, only)].sort());
        }""",
        cases,
    )
    assert got == [
        ["host"],
        ["host", "srflx"],
        ["host", "relay"],
        ["host", "relay", "srflx"],
        ["relay"],
        ["host", "relay", "srflx"],
    ]


async def test_without_servers_the_host_candidates_suffice_after_settle(page: Any) -> None:
    # Chromium's own "complete" comes some 125 ms later (its three allocation phases, 50 ms apart)
    steps = [
        ["start", 0.0],
        ["check", 0.0],
        ["host", 0.125],
        ["host", 0.25],
        ["check", 0.25],
        ["check", 0.375],
    ]
    assert await run(page, [], steps) == [
        (0.0, False, 5.0),
        (0.25, False, 0.375),
        (0.375, True, 0.375),
    ]


async def test_with_stun_and_turn_it_waits_for_both_their_candidates(page: Any) -> None:
    steps = [
        ["host", 0.0],  # gathered before the wait began: counted, the bound runs from start
        ["start", 0.015625],
        ["srflx", 0.5],
        ["check", 0.75],
        ["relay", 1.0],
        ["check", 1.125],
        ["check", 1.25],
    ]
    assert await run(page, [STUN, TURN], steps) == [
        (0.75, False, 5.015625),
        (1.125, False, 1.25),
        (1.25, True, 1.25),
    ]


async def test_a_relay_candidate_alone_is_enough(page: Any) -> None:
    # UDP blocked (the NAT lab's tcp-443 network): no srflx ever comes, the TLS relay does
    steps = [["start", 0.0], ["host", 0.015625], ["relay", 0.5], ["check", 0.75]]
    assert await run(page, [STUN, TURN], steps) == [(0.75, True, 0.75)]


async def test_a_server_that_never_answers_costs_the_old_bound_and_no_more(page: Any) -> None:
    steps = [["start", 1.0], ["host", 1.015625], ["check", 5.875], ["check", 6.0]]
    assert await run(page, [STUN], steps) == [(5.875, False, 6.0), (6.0, True, 6.0)]


async def test_complete_ends_the_wait_at_once(page: Any) -> None:
    steps = [["start", 0.0], ["host", 0.015625], ["complete", 0.0625], ["check", 0.0625]]
    assert await run(page, [STUN, TURN], steps) == [(0.0625, True, None)]


async def test_relay_only_waits_for_a_relay_candidate(page: Any) -> None:
    steps = [
        ["start", 0.0],
        ["host", 0.015625],
        ["srflx", 0.03125],
        ["prflx", 0.0625],
        ["check", 0.5],
        ["relay", 0.75],
        ["check", 1.0],
    ]
    assert await run(page, [STUN, TURN], steps, relay_only=True) == [
        (0.5, False, 5.0),
        (1.0, True, 1.0),
    ]


async def test_unknown_types_count_for_nothing(page: Any) -> None:
    steps = [["start", 0.0], ["tcp", 0.015625], ["", 0.03125], ["check", 1.0]]
    assert await run(page, [], steps) == [(1.0, False, 5.0)]


# --- what a page keeps of its node's servers between openings ------------------------

HINTS = """async ([servers, hints]) => {
    const { earlyServers, serversHint } = await import('/web/js/gathering.js');
    return {
        kept: servers.map((s) => earlyServers(serversHint(s))),
        read: hints.map((h) => earlyServers(h)),
    };
}"""


async def test_only_stun_urls_are_kept_never_a_credential(page: Any) -> None:
    got = await page.evaluate(
        HINTS,
        [[[], [STUN], [TURN], [STUN, TURN], [{"urls": [f"stun:h{i}:3478" for i in range(9)]}]], []],
    )
    assert got["kept"] == [
        [],  # nothing handed out: gather with no server
        [{"urls": ["stun:198.51.100.1:3478"]}],
        None,  # TURN: wait for the welcome's credentials
        None,
        [{"urls": [f"stun:h{i}:3478" for i in range(4)]}],  # at most four
    ]
    kept = await page.evaluate(
        "async (s) => (await import('/web/js/gathering.js')).serversHint(s)", [STUN, TURN]
    )
    assert "credential" not in kept and "username" not in kept and "turn:" not in kept


HINT = st.one_of(
    st.text(max_size=80),
    st.builds(
        json.dumps,
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=300),
            lambda inner: (
                st.lists(inner, max_size=6)
                | st.dictionaries(st.sampled_from(["v", "stun", "relay", "x"]), inner)
            ),
            max_leaves=12,
        ),
    ),
    st.builds(
        lambda urls: json.dumps({"v": 1, "stun": urls}),
        st.lists(st.text(max_size=20).map(lambda t: "stun:" + t), max_size=6),
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(hints=st.lists(HINT, min_size=1, max_size=20))
async def test_a_kept_hint_is_untrusted_input(page: Any, hints: list[str]) -> None:
    # Storage another script could have written: never an exception, never anything but
    # "wait" (null) or at most four STUN URLs of bounded length.
    for got in (await page.evaluate(HINTS, [[], hints]))["read"]:
        assert got is None or got == [] or (len(got) == 1 and 0 < len(got[0]["urls"]) <= 4)
        for server in got or []:
            assert all(u.lower().startswith("stun") and len(u) <= 256 for u in server["urls"])
