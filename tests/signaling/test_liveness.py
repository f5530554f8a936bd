"""Liveness on real sockets: the node's WebSocket pings keep a quiet client, not its timers.

A browser answers a WebSocket PING in its network stack, whatever its page's
timers do (Chromium runs a long-hidden page's chained timers at most once a
minute), so a client that sends nothing but the PONGs its WebSocket answers
by itself stays connected; one that answers nothing is dropped after the
idle timeout (docs/protocol.md 3.1). Nothing a client sends makes the node
ping more often. The rule itself is tested on a virtual clock in
test_session.py; here, with an idle timeout of a second, that the glue keeps it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from nacl.signing import SigningKey

from signaling.node import SignalingNode
from signaling.session import CLOSE_IDLE
from tests.signaling.conftest import FAST_NODE, NodeFactory, RawClient

pytestmark = pytest.mark.integration

IDLE = 1.0  # the node's idle timeout in these tests (60 s by default)
LIMITS = dataclasses.replace(FAST_NODE.limits, idle_timeout=IDLE)

Dial = Callable[..., Awaitable[RawClient]]


@pytest.fixture
async def dial() -> AsyncIterator[Dial]:
    """`await dial(node, autoping=...)`: a raw client that has said hello and been welcomed."""
    opened: list[RawClient] = []

    async def dial_(node: SignalingNode, autoping: bool = True) -> RawClient:
        http = aiohttp.ClientSession()
        ws = await http.ws_connect(node.url + "/v1/ws", autoping=autoping)
        client = RawClient(http, ws)
        opened.append(client)
        assert (await client.hello(SigningKey.generate()))["type"] == "welcome"
        return client

    yield dial_
    for client in opened:
        await client.ws.close()
        await client.http.close()


def idle_errors(node: SignalingNode) -> float:
    value: float = node.metrics.errors.labels("idle")._value.get()
    return value


async def test_a_client_that_sends_nothing_but_automatic_pongs_stays(
    signaling_mesh: NodeFactory, dial: Dial
) -> None:
    """A hidden page whose ping timer never fires: its WebSocket still answers the node's
    pings, and that is enough."""
    (node,) = await signaling_mesh(1, limits=LIMITS)
    client = await dial(node)  # autoping: aiohttp answers PINGs inside receive()
    # No idle error, no close, for four idle timeouts. (Not `receive(timeout=...)`: that
    # timeout starts again after each PING receive() answers, so it would never expire.)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(4 * IDLE):
            await client.ws.receive()
    assert not client.ws.closed
    await client.send({"type": "ping", "id": "p"})
    assert await client.receive() == {"type": "pong", "id": "p"}
    assert len(node.clients) == 1
    assert idle_errors(node) == 0


async def test_a_client_that_answers_nothing_is_dropped_after_the_idle_timeout(
    signaling_mesh: NodeFactory, dial: Dial
) -> None:
    (node,) = await signaling_mesh(1, limits=LIMITS)
    client = await dial(node, autoping=False)  # PINGs surface here and go unanswered
    loop = asyncio.get_running_loop()
    start, pings, frames = loop.time(), 0, []
    async with asyncio.timeout(3 * IDLE):
        while (msg := await client.ws.receive()).type is not aiohttp.WSMsgType.CLOSE:
            if msg.type is aiohttp.WSMsgType.PING:
                pings += 1
            elif msg.type is aiohttp.WSMsgType.TEXT:
                frames.append(json.loads(msg.data))
    elapsed = loop.time() - start
    assert msg.data == CLOSE_IDLE
    assert [f["code"] for f in frames] == ["idle"]
    assert IDLE * 0.9 <= elapsed < IDLE * 1.5, elapsed
    # At a third and two thirds of the idle timeout, then closed (test_session.py has the
    # exact schedule on a virtual clock; a loop stalled for a third of a second skips one).
    assert 1 <= pings <= 2, pings
    assert idle_errors(node) == 1


async def test_a_client_cannot_make_the_node_ping_more(
    signaling_mesh: NodeFactory, dial: Dial
) -> None:
    """Each node PING answered with a burst of PONGs and a PING of the client's own: the
    node still pings once per third of the idle timeout of quiet, and answers the
    client's PINGs as any WebSocket peer must (RFC 6455 section 5.5.2)."""
    (node,) = await signaling_mesh(1, limits=LIMITS)
    client = await dial(node, autoping=False)
    loop = asyncio.get_running_loop()
    end, pings, pongs = loop.time() + 3 * IDLE, 0, 0
    while (left := end - loop.time()) > 0:
        try:
            msg = await client.ws.receive(timeout=left)
        except TimeoutError:
            break
        if msg.type is aiohttp.WSMsgType.PING:
            pings += 1
            for _ in range(5):
                await client.ws.pong(msg.data)
            await client.ws.ping(b"mine")
        elif msg.type is aiohttp.WSMsgType.PONG:
            assert msg.data == b"mine"
            pongs += 1
        else:
            pytest.fail(f"unexpected {msg.type}: {msg.data!r}")
    assert 7 <= pings <= 10, pings  # 3 idle timeouts of quiet at one ping per IDLE / 3
    assert pongs == pings
    assert len(node.clients) == 1
    assert idle_errors(node) == 0
