"""What `/healthz` says (docs/operations.md): the rule on plain facts, then real nodes.

A node answers 200 only when it can serve its clients, else 503 with the reasons. A node
started alone (no bootstrap, nobody in its routing table) can: its clients meet each
other, as in development; it says so in a note. A node meant to be part of a mesh that
has nobody in its routing table cannot, nor can one whose links to the other nodes
fail, nor one whose embedded relay is down.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from nacl.signing import SigningKey

from pagemesh.embedded_relay import start_embedded_relay
from peer.signaling import ErrorFrame, SignalingClient
from signaling.health import HealthFacts, Note, Reason, assess
from signaling.node import SignalingNode
from signaling.protocol import MIN_CLIENT_VERSION, PROTOCOL_VERSION
from signaling.rooms import canonical_url, room_key

from .conftest import FAST_DHT, FAST_NODE, ClientFactory, NodeFactory

HEALTHY = HealthFacts(
    now=1000.0,
    dht_peers=5,
    bootstrap=True,
    other_nodes=2,
    links=1,
    link_failed_at=None,
    link_ok_at=900.0,
    relay=None,
    stopping=False,
)


def test_a_node_in_a_mesh_is_healthy() -> None:
    health = assess(HEALTHY)
    assert health.ok and health.reasons == () and health.notes == ()


def test_a_node_alone_serves_and_says_so() -> None:
    alone = dataclasses.replace(HEALTHY, dht_peers=0, bootstrap=False, other_nodes=0, links=0)
    health = assess(alone)
    assert health.ok and health.reasons == () and health.notes == (Note.ALONE,)


@pytest.mark.parametrize(
    "facts",
    [
        {"bootstrap": True, "other_nodes": 0},  # its seeds never answered, or all left
        {"bootstrap": False, "other_nodes": 3},  # it knew others, and lost them
    ],
)
def test_no_dht_peers_in_a_node_meant_for_a_mesh(facts: dict[str, object]) -> None:
    health = assess(dataclasses.replace(HEALTHY, dht_peers=0, **facts))  # type: ignore[arg-type]
    assert not health.ok and health.reasons == (Reason.NO_DHT_PEERS,)


def test_links_that_fail_with_other_nodes_known() -> None:
    failing = dataclasses.replace(HEALTHY, links=0, link_failed_at=990.0, link_ok_at=900.0)
    assert assess(failing).reasons == (Reason.NO_NODE_LINKS,)
    # an idle node has no links and needs none: not a reason by itself
    assert assess(dataclasses.replace(HEALTHY, links=0, link_failed_at=None)).ok
    # a link made since the failure, or one open now, clears it
    assert assess(dataclasses.replace(failing, link_ok_at=995.0)).ok
    assert assess(dataclasses.replace(failing, links=1)).ok
    # a failure long ago, with nothing tried since, is not news
    assert assess(dataclasses.replace(failing, now=990.0 + 61.0)).ok
    # no other node known: nothing to link to
    assert assess(dataclasses.replace(failing, other_nodes=0)).ok


def test_a_relay_that_is_down_and_a_node_that_stops() -> None:
    assert assess(dataclasses.replace(HEALTHY, relay=True)).ok
    assert assess(dataclasses.replace(HEALTHY, relay=False)).reasons == (Reason.RELAY_DOWN,)
    assert assess(dataclasses.replace(HEALTHY, stopping=True)).reasons == (Reason.STOPPING,)


def test_every_reason_at_once_in_a_fixed_order() -> None:
    worst = dataclasses.replace(
        HEALTHY, dht_peers=0, links=0, link_failed_at=999.0, relay=False, stopping=True
    )
    assert assess(worst).reasons == (
        Reason.STOPPING,
        Reason.NO_DHT_PEERS,
        Reason.NO_NODE_LINKS,
        Reason.RELAY_DOWN,
    )


# --- real nodes on loopback ----------------------------------------------------------------


async def healthz(node: SignalingNode) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(node.url.replace("ws://", "http://") + "/healthz") as response,
    ):
        body: dict[str, object] = await response.json()
        return response.status, body


@pytest.mark.integration
async def test_a_node_started_alone_answers_200_with_a_note(signaling_mesh: NodeFactory) -> None:
    (node,) = await signaling_mesh(1)
    status, body = await healthz(node)
    assert status == 200
    assert body["status"] == "ok" and body["reasons"] == [] and body["notes"] == ["alone"]
    assert body["protocol"] == {"version": PROTOCOL_VERSION, "oldest_served": MIN_CLIENT_VERSION}
    assert isinstance(body["version"], str) and body["version"]
    assert body["dht_peers"] == 0 and body["other_nodes"] == 0 and "relay" not in body


@pytest.mark.integration
async def test_a_mesh_is_healthy(signaling_mesh: NodeFactory) -> None:
    nodes = await signaling_mesh(2)
    for node in nodes:
        status, body = await healthz(node)
        assert status == 200 and body["reasons"] == [] and body["notes"] == [], body


@pytest.mark.integration
async def test_a_node_whose_seeds_never_answer_has_no_dht_peers(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # bound, never read
        silent.bind(("127.0.0.1", 0))
        seed = f"127.0.0.1:{silent.getsockname()[1]}"
        config = dataclasses.replace(FAST_NODE, data_dir=str(tmp_path / "n"), bootstrap=(seed,))
        node = await SignalingNode.start(config, FAST_DHT)
        try:
            status, body = await healthz(node)
        finally:
            await node.stop(moving=False)
    assert status == 503
    assert body["status"] == "unavailable" and body["reasons"] == ["no-dht-peers"]


ROOM = room_key(canonical_url("https://example.org/health"))


A_NODE = """
[node]
host = "127.0.0.1"
port = 0
dht_port = 0
presence_ttl = 10.0
refresh_interval = 1.0
"""
STARTED = re.compile(r"pagemesh node ([0-9a-f]{40}) at (\S+) dht (\S+)")


@pytest.mark.integration
async def test_links_to_a_node_that_died(tmp_path: Path, connect: ClientFactory) -> None:
    """Node a is killed (SIGKILL: it tells nobody); b still knows it, and must link to it
    to forward bob's signal to alice, whose home a was."""
    (tmp_path / "a.toml").write_text(A_NODE)
    a = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pagemesh", "node", "--config", str(tmp_path / "a.toml"),
        "--data-dir", str(tmp_path / "a"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    b: SignalingNode | None = None
    alice: SignalingClient | None = None
    try:
        assert a.stdout is not None
        started = STARTED.search((await asyncio.wait_for(a.stdout.readline(), 30)).decode())
        assert started is not None
        a_url, a_dht = started.group(2), started.group(3)
        config = dataclasses.replace(FAST_NODE, data_dir=str(tmp_path / "b"), bootstrap=(a_dht,))
        b = await SignalingNode.start(config, FAST_DHT)
        alice = await SignalingClient.connect(a_url, SigningKey.generate())
        bob = await connect(b)
        await alice.join(ROOM)
        joined = await bob.join(ROOM)
        assert alice.key in {m.key for m in joined.members} and a_url in b.known_nodes
        assert (await healthz(b))[0] == 200

        a.kill()
        await a.wait()
        deadline = time.monotonic() + 10
        # The link's reader notices the reset; LinkPool has no callback to hang an Event
        # on, so the poll decides only when to look (bounded), never the outcome.
        while len(b.links) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        assert len(b.links) == 0
        await bob.signal(alice.key, {"hello": "are you there"}, ROOM)  # b must link to a
        while True:  # the failure comes back to bob as an error
            event = await bob.next_event(within=max(0.01, deadline - time.monotonic()))
            if isinstance(event, ErrorFrame) and event.code == "unavailable":
                break
        status, body = await healthz(b)
        assert status == 503 and "no-node-links" in body["reasons"], body
    finally:
        if alice is not None:
            await alice.close()
        if b is not None:
            await b.stop(moving=False)
        if a.returncode is None:
            a.kill()
            await a.wait()


@pytest.mark.integration
async def test_an_embedded_relay_that_is_down(tmp_path: Path) -> None:
    config = dataclasses.replace(FAST_NODE, data_dir=str(tmp_path / "n"), relay_port=0)
    relay = await start_embedded_relay(config, None)
    node = await SignalingNode.start(config, FAST_DHT, relay)
    try:
        status, body = await healthz(node)
        assert status == 200 and body["relay"] == "serving"
        await relay.server.stop()  # its sockets closed under the node: it relays nothing
        status, body = await healthz(node)
        assert status == 503 and body["reasons"] == ["relay-down"] and body["relay"] == "down"
    finally:
        await node.stop(moving=False)


def test_a_relay_nobody_elsewhere_reaches_is_a_note() -> None:
    facts = dataclasses.replace(HEALTHY, relay=True, relay_on_loopback=True)
    health = assess(facts)
    assert health.ok and health.notes == (Note.RELAY_ON_LOOPBACK,)


@pytest.mark.integration
async def test_healthz_notes_a_relay_bound_to_loopback_that_advertises_elsewhere(
    tmp_path: Path,
) -> None:
    config = dataclasses.replace(
        FAST_NODE, data_dir=str(tmp_path / "n"), relay_port=0, relay_host="203.0.113.7"
    )
    relay = await start_embedded_relay(config, None)
    node = await SignalingNode.start(config, FAST_DHT, relay)
    try:
        status, body = await healthz(node)
        assert status == 200 and body["relay"] == "serving"
        assert body["notes"] == ["alone", "relay-on-loopback"]
    finally:
        await node.stop(moving=False)
