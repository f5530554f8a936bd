"""Who may read `/metrics`: the networks in `[node] metrics_from`, nobody when it is empty.

The rule's party is a stranger: anyone with a socket can ask a node for its page, but
only the operator's own scraper (this machine by default) may read its counters. The
address that counts is the client's, after `trusted_proxies`: a proxy's own address lets
nothing through, and a stranger's X-Forwarded-For is not believed. Each refusal is
counted (`pagemesh_metrics_refused_total`).
"""

from __future__ import annotations

import aiohttp
import pytest

from dht.options import ConfigError
from signaling.config import NodeConfig, load_node_config
from signaling.node import SignalingNode

from .conftest import NodeFactory

pytestmark = pytest.mark.integration

STRANGER = "127.0.0.2"
"""Another address of this machine's loopback, playing a visitor from elsewhere."""


async def scrape(node: SignalingNode, source: str = "127.0.0.1", **headers: str) -> int:
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get(node.page_url + "/metrics", headers=headers) as response,
    ):
        await response.read()
        return response.status


def refused(node: SignalingNode) -> float:
    value: float = node.metrics.metrics_refused._value.get()
    return value


def test_the_default_is_this_machine_only() -> None:
    assert NodeConfig().metrics_from == ("127.0.0.0/8", "::1/128")


def test_a_typo_in_metrics_from_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="metrics_from"):
        load_node_config(None, {"metrics_from": ["127.0.0.1/33"]})


async def test_this_machine_reads_metrics_by_default(signaling_mesh: NodeFactory) -> None:
    (node,) = await signaling_mesh(1)
    assert await scrape(node) == 200
    assert await scrape(node, STRANGER) == 200  # 127.0.0.0/8 is all this machine's


async def test_an_address_outside_metrics_from_gets_403(signaling_mesh: NodeFactory) -> None:
    (node,) = await signaling_mesh(1, metrics_from=("127.0.0.1/32",))
    assert await scrape(node) == 200
    assert await scrape(node, STRANGER) == 403
    assert refused(node) == 1
    # A stranger naming an allowed address in a header it may not write is still itself.
    assert await scrape(node, STRANGER, **{"X-Forwarded-For": "127.0.0.1"}) == 403
    assert refused(node) == 2


async def test_behind_a_trusted_proxy_the_forwarded_client_counts(
    signaling_mesh: NodeFactory,
) -> None:
    (node,) = await signaling_mesh(1, trusted_proxies=("127.0.0.1",))
    # The proxy (on this machine) forwards a visitor from elsewhere: refused, although
    # the connection itself comes from 127.0.0.1.
    assert await scrape(node, **{"X-Forwarded-For": "198.51.100.7"}) == 403
    # The proxy forwards a scraper on this machine: allowed.
    assert await scrape(node, **{"X-Forwarded-For": "127.0.0.1"}) == 200
    # Straight to the node from this machine, no proxy: allowed.
    assert await scrape(node, STRANGER) == 200


async def test_an_empty_metrics_from_turns_metrics_off(signaling_mesh: NodeFactory) -> None:
    (node,) = await signaling_mesh(1, metrics_from=())
    assert await scrape(node) == 404
