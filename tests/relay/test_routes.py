"""Routes: the core's published ChannelData decisions, and the glue's path that follows them.

The core's tests check what a route holds and that every change to an allocation
removes its routes. The glue's test runs two RelayServers on fake sockets and a
hand-moved clock, one whose core publishes routes and one whose core does not, and
feeds both the same random events: whatever either sends, and every counter, must
be the same.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import socket
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import server as glue
from relay import wire
from relay.core import RelayConfig, TurnCore
from relay.credentials import mint_credentials
from relay.wire import Address

from .conftest import Inbox, transact
from .turn import CLIENT, PEER, PEER2, SECRET, T0, Harness, TurnClient, error_code

# --- the core's routes ------------------------------------------------------------


def bound_client(h: Harness, number: int = 0x4000, peer: Address = PEER) -> TurnClient:
    client = h.client()
    h.allocated(client)
    assert h.ask(client, client.channel_bind(number, peer)).cls == wire.SUCCESS
    return client


def test_channel_data_relayed_by_receive_publishes_its_route() -> None:
    h = Harness()
    client = bound_client(h)
    assert h.core.channel_routes(0) == {}
    h.feed(wire.serialize_channel_data(0x4000, b"hi"))
    route = h.core.channel_routes(0)[CLIENT][0x4000]
    allocation = h.core.allocation_for(CLIENT)
    assert allocation is not None
    assert (route.peer, route.socket) == (PEER, allocation.socket)
    assert route.until == allocation.channels[0x4000].expires
    assert route.metered is allocation  # the default config limits bandwidth
    assert client.username == allocation.username


def test_peer_datagram_on_a_channel_publishes_its_route() -> None:
    h = Harness()
    bound_client(h)
    socket = h.socket_of()
    h.feed(b"back", PEER, socket)
    route = h.core.peer_routes(socket)[PEER]
    assert (route.number, route.client, route.socket) == (0x4000, CLIENT, 0)


def test_permission_only_traffic_publishes_no_route() -> None:
    h = Harness()
    client = h.client()
    h.allocated(client)
    assert h.ask(client, client.create_permission(PEER)).cls == wire.SUCCESS
    socket = h.socket_of()
    out = h.feed(b"data", PEER, socket)
    assert len(out) == 1 and wire.is_stun(out[0][0])  # a Data indication
    assert h.core.peer_routes(socket) == {}


def test_unlimited_bandwidth_routes_are_not_metered() -> None:
    h = Harness(config=RelayConfig(nonce_lifetime=86400.0, bandwidth_bps=0))
    bound_client(h)
    h.feed(wire.serialize_channel_data(0x4000, b"hi"))
    assert h.core.channel_routes(0)[CLIENT][0x4000].metered is None


def routed(h: Harness) -> tuple[int, int]:
    """Publish both routes of the allocation at CLIENT; (client routes, peer routes)."""
    socket = h.socket_of()
    h.feed(wire.serialize_channel_data(0x4000, b"out"))
    h.feed(b"in", PEER, socket)
    return len(h.core.channel_routes(0)), len(h.core.peer_routes(socket))


def test_every_request_on_the_allocation_removes_its_routes() -> None:
    h = Harness()
    client = bound_client(h)
    socket = h.socket_of()
    requests: list[Callable[[], bytes]] = [
        lambda: client.channel_bind(0x4000, PEER),  # a refresh of the same binding
        lambda: client.channel_bind(0x4001, PEER2),
        lambda: client.create_permission(PEER2),
        lambda: client.refresh(600),
    ]
    for request in requests:
        assert routed(h) == (1, 1)
        assert h.ask(client, request()).cls == wire.SUCCESS
        assert h.core.channel_routes(0) == {}
        assert h.core.peer_routes(socket) == {}


def test_timers_and_deletion_remove_routes() -> None:
    h = Harness()
    client = bound_client(h)
    socket = h.socket_of()
    assert routed(h) == (1, 1)
    h.advance(h.config.permission_lifetime + 1)  # the permission the bind installed lapses
    assert h.core.channel_routes(0) == {} and h.core.peer_routes(socket) == {}
    assert routed(h) == (1, 1)  # the binding still stands for its peer
    assert h.ask(client, client.refresh(0)).cls == wire.SUCCESS
    assert h.core.channel_routes(0) == {} and h.core.peer_routes(socket) == {}


def test_expired_channel_route_is_past_its_until() -> None:
    h = Harness()
    bound_client(h)
    routed(h)
    route = h.core.channel_routes(0)[CLIENT][0x4000]
    h.now = route.until  # no timer has run: the route alone must say it no longer holds
    assert not h.now < route.until
    h.feed(wire.serialize_channel_data(0x4000, b"late"))
    assert h.core.counters["drop.no_channel"] == 1


def test_tcp_clients_and_a_core_without_routes_publish_none() -> None:
    h = Harness()
    stream = h.core.open_endpoint(stream=True)
    client = h.client()
    h.login(client)
    response = h.ask(client, client.allocate(), CLIENT, stream)
    assert response.cls == wire.SUCCESS, error_code(response)
    assert h.ask(client, client.channel_bind(0x4000, PEER), CLIENT, stream).cls == wire.SUCCESS
    h.feed(wire.serialize_channel_data(0x4000, b"tcp", stream=True), CLIENT, stream)
    allocation = h.core.allocation_for(CLIENT, stream)
    assert allocation is not None
    h.feed(b"in", PEER, allocation.socket)
    assert h.core.channel_routes(stream) == {}
    assert h.core.peer_routes(allocation.socket) == {}

    plain = Harness()
    plain.core = TurnCore(SECRET, random.Random(7), plain.now, plain.config, routes=False)
    bound_client(plain)
    assert routed(plain) == (0, 0)


# --- the glue: routed and unrouted servers decide alike ---------------------------

RELAY_HOST = "192.0.2.10"
CLIENTS: list[Address] = [("198.51.100.20", 40000), ("198.51.100.21", 40001)]
PEERS: list[Address] = [PEER, (PEER[0], PEER[1] + 1), PEER2]
CHANNELS = [0x4000, 0x4001, 0x7FFF]


class FakeLoop:
    """What RelayServer asks of its event loop, on a clock the test moves."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.readers: dict[int, Callable[[], None]] = {}
        self.timers: list[FakeTimer] = []

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        self.readers[fd] = callback

    def remove_reader(self, fd: int) -> None:
        self.readers.pop(fd, None)

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self.clock[0] + delay, callback)
        self.timers.append(timer)
        return timer

    def fire_due(self) -> None:
        for _ in range(1000):
            due = [t for t in self.timers if not t.cancelled and t.when <= self.clock[0]]
            if not due:
                return
            timer = min(due, key=lambda t: t.when)
            self.timers.remove(timer)
            timer.callback()
        raise AssertionError("timers did not settle")


@dataclasses.dataclass
class FakeTimer:
    when: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeSocket:
    """A UDP socket without a kernel: datagrams queued by the test, sends logged."""

    family = socket.AF_INET

    def __init__(self, fd: int, address: Address, log: list[tuple[Address, bytes, Address]]):
        self.fd = fd
        self.address = address
        self.log = log
        self.inbox: list[tuple[bytes, Address]] = []

    def fileno(self) -> int:
        return self.fd

    def getsockname(self) -> Address:
        return self.address

    def recvfrom_into(self, buffer: Any) -> tuple[int, Address]:
        if not self.inbox:
            raise BlockingIOError
        data, addr = self.inbox.pop(0)
        buffer[: len(data)] = data
        return len(data), addr

    def sendto(self, data: Any, addr: Address) -> int:
        self.log.append((self.address, bytes(data), addr))
        return len(data)

    def close(self) -> None:
        pass


class Relay:
    """A RelayServer on fake sockets; `routes` says whether its core publishes routes."""

    def __init__(self, config: RelayConfig, routes: bool, clock: list[float]) -> None:
        self.clock = clock
        self.loop = FakeLoop(clock)
        self.log: list[tuple[Address, bytes, Address]] = []
        self.sockets: dict[Address, FakeSocket] = {}
        self.receives = 0
        core = TurnCore(SECRET, random.Random(3), clock[0], config, routes=routes)
        with self.patched():
            self.server = glue.RelayServer(core, RELAY_HOST, RELAY_HOST)
            listener = self.open_socket(socket.AF_INET, socket.SOCK_DGRAM, ("", 3478))
            udp = glue._UdpSocket(self.server, 0, listener)  # type: ignore[arg-type]
            self.server._udp = udp
            self.server._sockets[0] = udp
        receive = core.receive

        def counted(*args: Any) -> None:
            self.receives += 1
            receive(*args)

        core.receive = counted  # type: ignore[method-assign,assignment]
        self.listener = listener

    def open_socket(self, family: int, kind: int, address: Any) -> FakeSocket:
        port = address[1] or 50000 + 2 * len(self.sockets)
        sock = FakeSocket(100 + len(self.sockets), (address[0] or RELAY_HOST, port), self.log)
        self.sockets[sock.address] = sock
        return sock

    @contextmanager
    def patched(self) -> Iterator[None]:
        with (
            mock.patch.object(asyncio, "get_running_loop", return_value=self.loop),
            mock.patch.object(glue, "wall_clock", lambda: self.clock[0]),
            mock.patch.object(glue, "_bound_socket", self.open_socket),
        ):
            yield

    def deliver(self, sock: FakeSocket, datagrams: list[tuple[bytes, Address]]) -> None:
        sock.inbox.extend(datagrams)
        with self.patched():
            self.loop.readers[sock.fd]()
            self.loop.fire_due()

    def tick(self) -> None:
        with self.patched():
            self.loop.fire_due()

    def relayed_socket(self, client: Address) -> FakeSocket | None:
        allocation = self.server.core.allocation_for(client)
        if allocation is None or allocation.relayed is None:
            return None
        return self.sockets.get(allocation.relayed)


def channel_data(number: int, payload: bytes, length_error: int) -> bytes:
    return struct.pack("!HH", number, max(0, len(payload) + length_error)) + payload


@st.composite
def events(draw: st.DrawFn) -> tuple[Any, ...]:
    client = draw(st.integers(0, len(CLIENTS) - 1))
    payload = draw(st.sampled_from([b"", b"x", b"hello", b"p" * 1400, b"q" * 9000]))
    kind = draw(st.sampled_from(["allocate", "bind", "permit", "refresh", *["data", "peer"] * 4]))
    # Mostly the client's own channel and peer (bound at the start), sometimes any.
    channel = st.sampled_from([CHANNELS[client]] * 3 + CHANNELS)
    peer = st.sampled_from([PEERS[client]] * 3 + PEERS)
    if kind == "bind":
        return (kind, client, draw(channel), draw(peer))
    if kind == "permit":
        return (kind, client, draw(peer))
    if kind == "refresh":
        return (kind, client, draw(st.sampled_from([None, 600, 0])))
    if kind == "data":
        burst = draw(
            st.lists(
                st.one_of(
                    st.tuples(
                        st.just("channel"),
                        channel,
                        st.sampled_from([0, 0, 0, 1, -1]),  # a length field past or short
                    ),
                    st.tuples(st.just("send"), peer, st.just(0)),
                ),
                min_size=1,
                max_size=8,
            )
        )
        return (kind, client, payload, burst)
    if kind == "peer":
        senders = draw(st.lists(peer, min_size=1, max_size=8))
        return (kind, client, payload, senders)
    return (kind, client)


# Before each event the clock stands still or moves; by the lifetimes themselves too,
# so that packets come exactly at an expiry.
pauses = st.sampled_from([0.0] * 8 + [0.5, 30.0, 60.0, 120.0, 299.0, 300.0, 301.0, 600.0, 601.0])


class Session:
    """The same client actions on both relays; answers are read from the unrouted one."""

    def __init__(self, config: RelayConfig) -> None:
        self.clock = [T0]
        self.routed = Relay(config, True, self.clock)
        self.plain = Relay(config, False, self.clock)
        self.clients: list[TurnClient] = []
        for index in range(len(CLIENTS)):
            username, password = mint_credentials(SECRET, f"user{index}", 86400.0, T0)
            self.clients.append(TurnClient(username, password, seed=index))

    def both(self, to: Callable[[Relay], FakeSocket | None], datagrams: Any) -> None:
        for relay in (self.routed, self.plain):
            sock = to(relay)
            if sock is not None:
                relay.deliver(sock, list(datagrams))

    def request(self, index: int, data: bytes) -> None:
        start = len(self.plain.log)
        self.both(lambda relay: relay.listener, [(data, CLIENTS[index])])
        for _, sent, _ in self.plain.log[start:]:
            if wire.is_stun(sent):
                self.clients[index].learn(wire.parse_stun(sent))

    def run(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "advance":
            self.clock[0] += event[1]
            for relay in (self.routed, self.plain):
                relay.tick()
            return
        index = event[1]
        client = self.clients[index]
        if kind == "allocate":
            self.request(index, client.allocate())
        elif kind == "bind":
            self.request(index, client.channel_bind(event[2], event[3]))
        elif kind == "permit":
            self.request(index, client.create_permission(event[2]))
        elif kind == "refresh":
            self.request(index, client.refresh(event[2]))
        elif kind == "data":
            payload, burst = event[2], event[3]
            datagrams = [
                (
                    channel_data(target, payload, error)
                    if what == "channel"
                    else client.send(target, payload),
                    CLIENTS[index],
                )
                for what, target, error in burst
            ]
            self.both(lambda relay: relay.listener, datagrams)
        elif kind == "peer":
            payload, senders = event[2], event[3]
            datagrams = [(payload, sender) for sender in senders]
            self.both(lambda relay: relay.relayed_socket(CLIENTS[index]), datagrams)

    def check(self) -> None:
        assert self.routed.log == self.plain.log
        assert self.routed.server.core.counters == self.plain.server.core.counters


RELAY_CONFIGS = [
    RelayConfig(bandwidth_bps=0, default_lifetime=3600.0),  # channels end before allocations
    RelayConfig(bandwidth_bps=80_000),  # 64 KiB of burst, then 10 kB/s: the bucket runs dry
    RelayConfig(bandwidth_bps=0, permission_lifetime=60.0, channel_lifetime=120.0),
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(RELAY_CONFIGS), st.lists(st.tuples(pauses, events()), min_size=10, max_size=60)
)
def test_routed_and_unrouted_relays_send_and_count_alike(
    config: RelayConfig, script: list[tuple[float, tuple[Any, ...]]]
) -> None:
    session = Session(config)
    for index in range(len(CLIENTS)):  # start where routes matter: allocated and bound
        session.run(("allocate", index))
        session.run(("allocate", index))
        session.run(("bind", index, CHANNELS[index], PEERS[index]))
    session.check()
    for pause, event in script:
        if pause:
            session.run(("advance", pause))
        session.run(event)
        session.check()


def test_routed_channel_data_skips_the_core() -> None:
    session = Session(RelayConfig(bandwidth_bps=0))
    session.run(("allocate", 0))
    session.run(("allocate", 0))
    session.run(("bind", 0, 0x4000, PEER))
    before = (session.routed.receives, session.plain.receives)
    for _ in range(10):
        session.run(("data", 0, b"out", [("channel", 0x4000, 0)]))
        session.run(("peer", 0, b"in", [PEER]))
    session.check()
    assert session.plain.receives - before[1] == 20
    assert session.routed.receives - before[0] == 2  # the first of each direction
    counters = session.routed.server.core.counters
    assert counters["relayed.packets.to_peer"] == counters["relayed.packets.to_client"] == 10
    assert counters["relayed.bytes.to_peer"] == 30
    sent = [data for _, data, addr in session.routed.log if addr == CLIENTS[0]][-1]
    assert sent == wire.serialize_channel_data(0x4000, b"in")


def test_answers_and_routed_packets_leave_in_arrival_order() -> None:
    session = Session(RelayConfig(bandwidth_bps=0))
    session.run(("allocate", 0))
    session.run(("allocate", 0))
    session.run(("bind", 0, 0x4000, PEER))
    session.run(("data", 0, b"first", [("channel", 0x4000, 0)]))  # publishes the route
    binding = session.clients[0].request(wire.BINDING, sign=False)
    route = channel_data(0x4000, b"after", 0)
    session.both(lambda relay: relay.listener, [(binding, CLIENTS[0]), (route, CLIENTS[0])])
    session.check()
    last_two = session.routed.log[-2:]
    assert wire.is_stun(last_two[0][1]) and last_two[1][1] == b"after"


def bound_session(config: RelayConfig) -> Session:
    session = Session(config)
    session.run(("allocate", 0))
    session.run(("allocate", 0))
    session.run(("bind", 0, 0x4000, PEER))
    return session


def both_ways(session: Session) -> None:
    session.run(("data", 0, b"out", [("channel", 0x4000, 0)]))
    session.run(("peer", 0, b"in", [PEER]))


def test_a_route_ends_exactly_at_its_channels_expiry() -> None:
    config = RelayConfig(bandwidth_bps=0, permission_lifetime=60.0, channel_lifetime=120.0)
    session = bound_session(config)
    session.run(("advance", 60.0))  # the bind's permission lapses: routes removed
    both_ways(session)  # published again, until the channel's expiry at 120 s
    assert session.routed.server.core.channel_routes(0)
    session.run(("advance", 60.0))
    both_ways(session)
    session.check()
    counters = session.routed.server.core.counters
    assert counters["drop.no_channel"] == 1 and counters["drop.no_permission"] == 1


def test_a_deleted_allocation_takes_its_routes() -> None:
    session = bound_session(RelayConfig(bandwidth_bps=0))
    both_ways(session)
    delete = session.clients[0].refresh(0)
    data = channel_data(0x4000, b"gone", 0)
    batch = [(data, CLIENTS[0]), (delete, CLIENTS[0]), (data, CLIENTS[0])]  # one read
    session.both(lambda relay: relay.listener, batch)
    session.check()
    counters = session.routed.server.core.counters
    assert counters["relayed.packets.to_peer"] == 2 and counters["drop.no_allocation"] == 1


# --- real sockets: IPv6 addresses come as 4-tuples --------------------------------


@pytest.mark.integration
async def test_routes_on_ipv6_sockets() -> None:
    """Listener and relayed socket on ::1: routed ChannelData both ways, counted."""
    config = RelayConfig(
        families=(1, 2), relay_host6="::1", allow_peers=("::1/128",), bandwidth_bps=0
    )
    server = await glue.RelayServer.start("::1", 0, SECRET, config, tcp=False)
    loop = asyncio.get_running_loop()
    try:
        _, box = await loop.create_datagram_endpoint(Inbox, local_addr=("::1", 0))
        _, peer = await loop.create_datagram_endpoint(Inbox, local_addr=("::1", 0))
        username, password = mint_credentials(SECRET, "six", 600, time.time())
        client = TurnClient(username, password)
        client.learn(await transact(box, server.address, client.allocate()))
        attrs = [
            (wire.REQUESTED_TRANSPORT, bytes([17, 0, 0, 0])),
            (wire.REQUESTED_ADDRESS_FAMILY, bytes([2, 0, 0, 0])),
        ]
        response = await transact(box, server.address, client.request(wire.ALLOCATE, attrs))
        assert response.cls == wire.SUCCESS, error_code(response)
        raw = response.get(wire.XOR_RELAYED_ADDRESS)
        assert raw is not None
        relayed = wire.decode_xor_address(raw, response.transaction_id)
        bind = client.channel_bind(0x4000, peer.address)
        assert (await transact(box, server.address, bind)).cls == wire.SUCCESS

        async def round_trip(n: int) -> None:
            box.send(wire.serialize_channel_data(0x4000, b"out%d" % n), server.address)
            assert await peer.receive() == (b"out%d" % n, relayed)
            peer.send(b"in%d" % n, relayed)
            assert (await box.receive())[0] == wire.serialize_channel_data(0x4000, b"in%d" % n)

        await round_trip(0)  # publishes both routes: the core sees nothing more
        with mock.patch.object(server.core, "receive", wraps=server.core.receive) as receive:
            await round_trip(1)
            await round_trip(2)
        assert receive.call_count == 0
        assert server.core.channel_routes(0)[box.address][0x4000].peer == peer.address
        allocation = server.core.allocation_for(box.address)
        assert allocation is not None and peer.address in server.core.peer_routes(allocation.socket)
        counters = server.core.counters
        assert counters["relayed.packets.to_peer"] == counters["relayed.packets.to_client"] == 3
        box.close()
        peer.close()
    finally:
        await server.stop()
