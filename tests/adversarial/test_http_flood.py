"""One address hammering a node's plain HTTP: the page, its modules, /healthz,
/v1/dht. Each answer costs the node about as much as a 429 would (0.1 to 0.4 ms),
but over one keep-alive connection an address could ask without end, past any
limit on new connections. A node takes `http_per_second` requests from one
source (bursts of `http_burst`); past it, 429 and the connection is closed, so
the next burst costs the address a new connection. Real node, real sockets.
"""

from __future__ import annotations

import time
from collections import Counter

import aiohttp
import pytest

from tests.signaling.conftest import NodeFactory

pytestmark = pytest.mark.integration

RATE, BURST = 20.0, 60.0


def from_address(source: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0)))


async def test_one_address_hammering_http_is_slowed_and_others_are_served(
    signaling_mesh: NodeFactory,
) -> None:
    (node,) = await signaling_mesh(1, http_per_second=RATE, http_burst=BURST)
    base = node.page_url.rstrip("/")
    statuses: Counter[int] = Counter()
    closing = 0
    started = time.monotonic()
    async with from_address("127.0.0.2") as http:
        for n in range(400):
            path = ("/v1/dht", "/healthz", "/", "/web/js/people.js")[n % 4]
            async with http.get(base + path) as reply:
                await reply.read()
                statuses[reply.status] += 1
                if reply.status == 429:
                    assert reply.headers["Retry-After"] == "1"
                    closing += reply.headers.get("Connection", "").lower() == "close"
        elapsed = time.monotonic() - started
        assert statuses[200] <= BURST + RATE * elapsed + 1
        assert statuses[429] == 400 - statuses[200] > 0
        assert closing == statuses[429]  # each refusal ends its keep-alive connection
        assert node.metrics.http_refused._value.get() == statuses[429]
        # WebSocket upgrades are admission's (per-source connection limits), not this.
        ws = await http.ws_connect(node.url + "/v1/ws")
        await ws.close()
    # Another address is served all along.
    async with from_address("127.0.0.3") as other:
        for path in ("/", "/v1/dht", "/healthz"):
            async with other.get(base + path) as reply:
                assert reply.status == 200
