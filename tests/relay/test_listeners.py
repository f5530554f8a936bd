"""The relay's UDP and TCP listeners share one port, also when the kernel picks it.

The node advertises `turn:host:port?transport=udp` and `?transport=tcp` with one
port, so a port free on UDP but taken on TCP must be passed over, never half used.
"""

from __future__ import annotations

import resource
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from relay.server import BIND_ATTEMPTS, ListenerBindError, RelayServer, bind_listeners

from .conftest import LOOPBACK
from .turn import SECRET

pytestmark = pytest.mark.integration

HELD_TCP_PORTS = 4000
"""TCP ports held on loopback by the run of starts: with the usual ephemeral range
(32768-60999) about one UDP port in seven the kernel hands out is taken on TCP."""


def bound(kind: socket.SocketKind, port: int = 0) -> socket.socket:
    """A socket bound on loopback and not listening: its port is taken for `kind`."""
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind(("127.0.0.1", port))
    return sock


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


@contextmanager
def tcp_ports_held(count: int) -> Iterator[None]:
    """`count` TCP ports on loopback taken at once (fewer if the descriptor limit is low)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    with ExitStack() as stack:
        for _ in range(max(0, min(count, soft - 512))):
            stack.enter_context(bound(socket.SOCK_STREAM))
        yield


def test_a_port_taken_on_tcp_is_passed_over() -> None:
    with bound(socket.SOCK_STREAM) as taken:
        udp, tcp = bind_listeners("127.0.0.1", 0, candidates=[port_of(taken), 0])
        assert tcp is not None
        with udp, tcp:
            assert port_of(udp) != port_of(taken)
            assert port_of(tcp) == port_of(udp)


def test_the_ports_passed_over_are_let_go() -> None:
    with bound(socket.SOCK_STREAM) as first, bound(socket.SOCK_STREAM) as second:
        udp, tcp = bind_listeners("127.0.0.1", 0, candidates=[port_of(first), port_of(second), 0])
        assert tcp is not None
        udp.close()
        tcp.close()
        for taken in (first, second):
            bound(socket.SOCK_DGRAM, port_of(taken)).close()


def test_no_port_free_on_both_is_a_typed_error_after_bounded_tries() -> None:
    with bound(socket.SOCK_STREAM) as taken:
        clash = port_of(taken)
        with pytest.raises(ListenerBindError) as caught:
            bind_listeners("127.0.0.1", 0, candidates=[clash] * (BIND_ATTEMPTS + 5))
        assert str(caught.value) == (
            f"no port on 127.0.0.1 is free on both UDP and TCP ({BIND_ATTEMPTS} tries)"
        )
        bound(socket.SOCK_DGRAM, clash).close()


def test_without_tcp_the_udp_port_alone_is_bound() -> None:
    with bound(socket.SOCK_STREAM) as taken:
        udp, tcp = bind_listeners("127.0.0.1", port_of(taken), tcp=False)
        with udp:
            assert tcp is None
            assert port_of(udp) == port_of(taken)


async def test_an_explicit_port_taken_on_tcp_names_the_port_and_protocol() -> None:
    with bound(socket.SOCK_STREAM) as taken:
        port = port_of(taken)
        with pytest.raises(ListenerBindError) as caught:
            await RelayServer.start("127.0.0.1", port, SECRET, LOOPBACK)
        assert str(caught.value) == f"TCP port {port} on 127.0.0.1 is in use"
        assert (caught.value.protocol, caught.value.port) == ("TCP", port)
        bound(socket.SOCK_DGRAM, port).close()  # the UDP listener did not stay behind


async def test_an_explicit_port_taken_on_udp_names_the_port_and_protocol() -> None:
    with bound(socket.SOCK_DGRAM) as taken:
        port = port_of(taken)
        with pytest.raises(ListenerBindError) as caught:
            await RelayServer.start("127.0.0.1", port, SECRET, LOOPBACK)
        assert str(caught.value) == f"UDP port {port} on 127.0.0.1 is in use"
        assert (caught.value.protocol, caught.value.port) == ("UDP", port)


async def test_thirty_relays_in_a_row_on_port_zero_share_one_port() -> None:
    with tcp_ports_held(HELD_TCP_PORTS):
        for _ in range(30):
            server = await RelayServer.start("127.0.0.1", 0, SECRET, LOOPBACK)
            try:
                assert server.tcp_address == server.address
            finally:
                await server.stop()
