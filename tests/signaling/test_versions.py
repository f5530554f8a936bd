"""Protocol versions on a real node (docs/protocol.md 3.1): a client announces `v` in its
hello, a node serves every version from its oldest up and names its own in the welcome;
an older client gets `too-old`, and the Python client says to upgrade."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from nacl.signing import SigningKey

from peer import signaling as python_client
from peer.signaling import SignalingClient, SignalingError
from signaling.config import ConfigError, load_node_config
from signaling.node import SignalingNode
from signaling.protocol import MIN_CLIENT_VERSION, PROTOCOL_VERSION
from signaling.session import CLOSE_TOO_OLD, SessionLimits

from .conftest import ClientFactory, NodeFactory, RawClient

RawFactory = Callable[[SignalingNode], Awaitable[RawClient]]

pytestmark = pytest.mark.integration

SERVES_CURRENT_ONLY = SessionLimits(min_client_version=PROTOCOL_VERSION)


async def test_today_s_clients_and_version_1_clients_are_welcome(
    signaling_mesh: NodeFactory, connect: ClientFactory, raw: RawFactory
) -> None:
    (node,) = await signaling_mesh(1)
    client = await connect(node)
    assert client.node_version == PROTOCOL_VERSION
    old = await raw(node)  # a hello without `v`: what every client sent before versions
    welcome = await old.hello(SigningKey.generate())
    assert welcome["type"] == "welcome" and welcome["v"] == PROTOCOL_VERSION


async def test_a_client_older_than_the_node_serves_is_told_and_closed(
    signaling_mesh: NodeFactory, raw: RawFactory
) -> None:
    (node,) = await signaling_mesh(1, limits=SERVES_CURRENT_ONLY)
    old = await raw(node)
    refused = await old.hello(SigningKey.generate())
    assert refused == {
        "type": "error",
        "code": "too-old",
        "message": f"protocol version 1 is older than this node serves "
        f"({PROTOCOL_VERSION} to {PROTOCOL_VERSION})",
    }
    closing = await old.ws.receive(timeout=5)
    assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == CLOSE_TOO_OLD
    assert node.clients == {}


async def test_the_python_client_says_to_upgrade(
    signaling_mesh: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    (node,) = await signaling_mesh(1, limits=SERVES_CURRENT_ONLY)
    monkeypatch.setattr(python_client, "PROTOCOL_VERSION", PROTOCOL_VERSION - 1)
    with pytest.raises(SignalingError) as refused:
        await SignalingClient.connect(node.url, SigningKey.generate())
    assert refused.value.code == "too-old"
    assert str(refused.value) == (
        f"too-old: protocol version {PROTOCOL_VERSION - 1} is older than this node serves "
        f"({PROTOCOL_VERSION} to {PROTOCOL_VERSION}): upgrade pagemesh"
    )


@pytest.mark.parametrize("oldest", [MIN_CLIENT_VERSION - 1, PROTOCOL_VERSION + 1])
def test_a_node_serves_only_versions_it_speaks(oldest: int) -> None:
    with pytest.raises(ConfigError, match="min_client_version must be"):
        load_node_config(None, {"limits": {"min_client_version": oldest}})
