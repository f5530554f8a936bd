"""A stranger and X-Forwarded-For: only a trusted proxy may name the client.

Behind a reverse proxy every connection comes from the proxy, so the node
counts its per-source limits against the address the proxy forwards; a
stranger who reaches the node directly must not pick its own source by
sending the header. Real node, real sockets, several loopback addresses as
several hosts (127.0.0.2 is a stranger, 127.0.0.1 the proxy).
"""

from __future__ import annotations

import pytest

from signaling.admission import AdmissionLimits, client_address, proxy_networks
from tests.adversarial.conftest import Sockets
from tests.signaling.conftest import NodeFactory

pytestmark = pytest.mark.integration

# One connection waiting for its hello per source: a second from the same source is a 429.
ONE_EACH = AdmissionLimits(unauthenticated=1, connections=1, per_second=100.0, burst=100.0)


async def test_a_stranger_cannot_pick_its_source_with_the_header(
    signaling_mesh: NodeFactory, sockets: Sockets
) -> None:
    (node,) = await signaling_mesh(1, admission=ONE_EACH, trusted_proxies=("127.0.0.1",))
    assert await sockets.open(node, "127.0.0.2", forwarded="198.51.100.1") == 101
    # Another "client" named in the header: still the stranger's own address, over its cap.
    assert await sockets.open(node, "127.0.0.2", forwarded="198.51.100.2") == 429
    assert await sockets.open(node, "127.0.0.2", forwarded=None) == 429


async def test_a_trusted_proxy_names_each_client(
    signaling_mesh: NodeFactory, sockets: Sockets
) -> None:
    (node,) = await signaling_mesh(1, admission=ONE_EACH, trusted_proxies=("127.0.0.0/30",))
    # Two people behind one proxy (in a network of proxies, CIDR) are two sources...
    assert await sockets.open(node, "127.0.0.1", forwarded="198.51.100.1") == 101
    assert await sockets.open(node, "127.0.0.1", forwarded="198.51.100.2") == 101
    # ...and the first one again is over its own cap, whichever proxy it comes through.
    assert await sockets.open(node, "127.0.0.2", forwarded="198.51.100.1") == 429
    # A client's own header to the left of what the proxy appended is not believed.
    assert await sockets.open(node, "127.0.0.1", forwarded="198.51.100.9, 198.51.100.1") == 429
    assert await sockets.open(node, "127.0.0.1", forwarded="198.51.100.3") == 101


async def test_without_trusted_proxies_the_header_means_nothing(
    signaling_mesh: NodeFactory, sockets: Sockets
) -> None:
    (node,) = await signaling_mesh(1, admission=ONE_EACH)
    assert await sockets.open(node, "127.0.0.1", forwarded="198.51.100.1") == 101
    assert await sockets.open(node, "127.0.0.1", forwarded="198.51.100.2") == 429


@pytest.mark.parametrize(
    ("peer", "header", "expected"),
    [
        ("203.0.113.5", ["198.51.100.1"], "203.0.113.5"),  # not a proxy: its own address
        ("10.0.0.1", ["198.51.100.1"], "198.51.100.1"),
        ("10.0.0.1", ["1.2.3.4, 198.51.100.1"], "198.51.100.1"),  # the proxy appended the last
        ("10.0.0.1", ["1.2.3.4", "198.51.100.1"], "198.51.100.1"),  # two header lines
        ("10.0.0.1", ["198.51.100.1, 10.0.0.2"], "198.51.100.1"),  # two proxies in a row
        ("10.0.0.1", ["198.51.100.1, garbage"], "10.0.0.1"),  # nothing to believe
        ("10.0.0.1", ["1.2.3.4, garbage, 198.51.100.1"], "198.51.100.1"),
        ("10.0.0.1", [], "10.0.0.1"),
        ("::ffff:10.0.0.1", ["2001:db8::1"], "2001:db8::1"),  # a mapped proxy address
        ("10.0.0.1", ["::ffff:198.51.100.1"], "198.51.100.1"),
        ("10.0.0.1", [", ".join(["10.0.0.3"] * 40)], "10.0.0.3"),  # bounded walk
    ],
)
def test_client_address(peer: str, header: list[str], expected: str) -> None:
    assert client_address(peer, header, proxy_networks(("10.0.0.0/8",))) == expected
