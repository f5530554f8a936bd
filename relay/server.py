"""asyncio glue: a TurnCore on a UDP listener, TCP and TLS listeners, one UDP socket per allocation.

Feed the core, drain it, send, re-arm one timer (the aioquic pattern). The
core names sockets by integers; this module keeps the transport behind each
(`self._sockets`) and binds a relayed UDP socket when the core asks for one.
A `RelayServer` shares nothing global, so a node can run one inside its own
event loop: `await RelayServer.start(...)`, later `await server.stop()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import itertools
import logging
import random
import socket
import ssl
from asyncio.sslproto import SSLProtocol
from collections.abc import Iterable
from time import time as wall_clock
from typing import Any

from aiohttp import web

from .core import RelayClosed, RelayConfig, RelayRequested, TurnCore
from .metrics import CONTENT_TYPE, RelayMetrics
from .wire import CHANNEL_HEADER, FAMILY_IPV6, Address, StreamFramer, WireError

log = logging.getLogger("pagemesh.relay")

MAX_TCP_CONNECTIONS = 1024
READ_BATCH = 64
SOCKET_BUFFER = 1 << 20
"""SO_RCVBUF/SO_SNDBUF asked for (the kernel caps them at net.core.rmem_max/wmem_max)."""
BIND_ATTEMPTS = 64
TCP_WRITE_LIMIT = 256 * 1024
"""Bytes queued towards a TCP client beyond which relayed data for it is dropped."""
TLS_HANDSHAKE_TIMEOUT = 10
"""Seconds a TLS client has to finish its handshake; until then it holds one of the
MAX_TCP_CONNECTIONS places (a stranger's half-open handshakes cannot grow without bound)."""


class ListenerBindError(OSError):
    """The relay's UDP or TCP listener cannot have its port.

    An OSError (errno EADDRINUSE when the port is taken), so whoever reports a
    socket error at start reports this one too. `protocol` ("UDP" or "TCP") and
    `port` name the listener; port 0 means no port was free on both protocols.
    """

    def __init__(self, message: str, code: int, protocol: str, port: int) -> None:
        super().__init__(code, message)
        self.message = message
        self.protocol = protocol
        self.port = port

    def __str__(self) -> str:
        return self.message


def _two(addr: Any) -> Address:
    # IPv6 addresses come as 4-tuples; the core's addresses are (host, port).
    return (addr[0], addr[1])


class _UdpSocket:
    """A non-blocking UDP socket read in batches: the listener, or one relayed socket.

    asyncio's datagram transport reads one datagram per wake-up of the event
    loop; reading up to `READ_BATCH` per wake-up and servicing the core once
    per batch is what lets one Python process keep up with a relay's load.
    A datagram that does not fit the kernel's send buffer is dropped and
    counted (UDP may lose it anyway).

    ChannelData with a route (`TurnCore.channel_routes`, `peer_routes`) is
    relayed here without a call into the core: read into the server's one
    buffer, sent from a view of it (no copy), counted per batch. The core
    decided every route and removes it when anything about the allocation
    changes; this loop checks only the route's `until` against the batch's
    clock and charges the allocation's token bucket as the core would. Everything
    else goes to `core.receive`, and what the core sends in answer leaves
    before the next routed packet, so the order of what is sent is the order
    of what came in.
    """

    __slots__ = ("fileno", "server", "sock", "socket_id", "wide")

    def __init__(
        self, server: RelayServer, socket_id: int, sock: socket.socket, relayed: bool = False
    ) -> None:
        self.server = server
        self.socket_id = socket_id
        self.sock = sock
        self.fileno = sock.fileno()
        self.wide = sock.family == socket.AF_INET6  # addresses come as 4-tuples
        server._senders[socket_id] = sock.sendto
        server._loop.add_reader(self.fileno, self._from_peers if relayed else self._from_clients)

    @classmethod
    def bind(cls, server: RelayServer, socket_id: int, host: str, port: int) -> _UdpSocket:
        """A relayed socket (peers send to it) on `host:port`."""
        family, address = _datagram_address(host, port)
        return cls(server, socket_id, _bound_socket(family, socket.SOCK_DGRAM, address), True)

    @property
    def address(self) -> Address:
        return _two(self.sock.getsockname())

    def _from_clients(self) -> None:
        """The listener: ChannelData on a route goes straight to its peer."""
        server = self.server
        core = server.core
        receive = core.receive
        take_tokens = core.take_tokens
        recv_into = self.sock.recvfrom_into
        senders = server._senders
        buffer = server._buffer
        view = server._view
        socket_id = self.socket_id
        wide = self.wide
        routes = core.channel_routes(socket_id)
        unpack_header = CHANNEL_HEADER.unpack_from
        now = wall_clock()
        relayed = octets = 0
        answered = False  # the core has output not yet flushed
        for _ in range(READ_BATCH):
            try:
                size, addr = recv_into(buffer)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                # ICMP errors (a closed peer port) can surface here; UDP relaying ignores them.
                core.counters["socket.error"] += 1
                break
            if wide:
                addr = (addr[0], addr[1])
            channels = routes.get(addr)
            if channels is not None and size >= 4:
                number, length = unpack_header(buffer)
                route = channels.get(number)
                if route is not None and now < route.until and size >= 4 + length:
                    if route.metered is None or take_tokens(route.metered, length, now):
                        relayed += 1
                        octets += length
                        if answered:
                            server._flush()
                            answered = False
                        send = senders.get(route.socket)
                        if send is not None:
                            try:
                                send(view[4 : 4 + length], route.peer)
                            except (BlockingIOError, InterruptedError):
                                core.counters["drop.send_buffer"] += 1
                            except OSError:
                                core.counters["socket.error"] += 1
                    continue
            receive(bytes(view[:size]), addr, now, socket_id)
            answered = True
        core.count_relayed(relayed, octets, 0, 0)
        server._service()

    def _from_peers(self) -> None:
        """A relayed socket: a datagram on a route goes to its client as ChannelData."""
        server = self.server
        core = server.core
        receive = core.receive
        take_tokens = core.take_tokens
        senders = server._senders
        buffer = server._buffer
        view = server._view
        payload = server._payload  # the buffer after a ChannelData header's 4 bytes
        recv_into = self.sock.recvfrom_into
        socket_id = self.socket_id
        wide = self.wide
        routes = core.peer_routes(socket_id)
        pack_header = CHANNEL_HEADER.pack_into
        now = wall_clock()
        relayed = octets = 0
        answered = False
        for _ in range(READ_BATCH):
            try:
                size, addr = recv_into(payload)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                core.counters["socket.error"] += 1
                break
            if wide:
                addr = (addr[0], addr[1])
            route = routes.get(addr)
            if route is not None and now < route.until:
                if route.metered is None or take_tokens(route.metered, size, now):
                    relayed += 1
                    octets += size
                    if answered:
                        server._flush()
                        answered = False
                    send = senders.get(route.socket)
                    if send is not None:
                        pack_header(buffer, 0, route.number, size)
                        try:
                            send(view[: 4 + size], route.client)
                        except (BlockingIOError, InterruptedError):
                            core.counters["drop.send_buffer"] += 1
                        except OSError:
                            core.counters["socket.error"] += 1
                continue
            receive(bytes(payload[:size]), addr, now, socket_id)
            answered = True
        core.count_relayed(0, 0, relayed, octets)
        server._service()

    def sendto(self, data: bytes, addr: Address) -> None:
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self.server.core.counters["drop.send_buffer"] += 1
        except OSError:
            self.server.core.counters["socket.error"] += 1

    def close(self) -> None:
        if self.fileno >= 0:
            senders = self.server._senders
            if senders.get(self.socket_id) == self.sock.sendto:
                del senders[self.socket_id]
            self.server._loop.remove_reader(self.fileno)
            self.fileno = -1
            self.sock.close()


class _TcpConnection(asyncio.Protocol):
    """One TCP client: a stream of STUN and ChannelData messages (RFC 8656 section 12.5)."""

    def __init__(self, server: RelayServer) -> None:
        self.server = server
        self.framer = StreamFramer()
        self.socket_id = -1
        self.peer: Address = ("", 0)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        server = self.server
        if server._closed:  # a TLS handshake that ended after stop()
            transport.abort()
            return
        if len(server._tcp) >= MAX_TCP_CONNECTIONS:
            server.core.counters["refuse.tcp_connections"] += 1
            transport.abort()
            return
        self.transport = transport
        self.peer = _two(transport.get_extra_info("peername"))
        self.socket_id = server.core.open_endpoint(stream=True)
        server._sockets[self.socket_id] = _TcpSink(transport, server)
        server._tcp[self.socket_id] = self

    def data_received(self, data: bytes) -> None:
        server = self.server
        try:
            messages = self.framer.feed(data)
        except WireError as exc:
            server.core.counters[f"drop.{exc.reason}"] += 1
            if self.transport is not None:
                self.transport.abort()
            return
        now = wall_clock()
        for message in messages:
            server.core.receive(message, self.peer, now, self.socket_id)
        server._service()

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        if self.socket_id < 0:
            return
        server._sockets.pop(self.socket_id, None)
        server._tcp.pop(self.socket_id, None)
        server.core.close_endpoint(self.socket_id, wall_clock())
        server._service()


class _TlsHandshake(asyncio.Protocol):
    """A TLS client until its handshake ends; then a `_TcpConnection` like any TCP client.

    TURN over TLS frames its stream as TCP does (RFC 8656 sections 3.1 and 12.5), so the
    connection is a `_TcpConnection` behind asyncio's TLS protocol. The handshake is begun
    here rather than by `create_server(ssl=...)`, which would start one for every accepted
    socket unseen: a handshake in progress holds one of the MAX_TCP_CONNECTIONS places
    and its socket is closed at `stop()`, and one past the cap is refused before any TLS.
    (This is what `loop.start_tls` does, with the application's `connection_made` called
    once the handshake is done.)
    """

    def __init__(self, server: RelayServer, context: ssl.SSLContext) -> None:
        self.server = server
        self.context = context

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        server = self.server
        if server._closed or len(server._tcp) + len(server._handshakes) >= MAX_TCP_CONNECTIONS:
            server.core.counters["refuse.tcp_connections"] += 1
            transport.abort()
            return
        waiter: asyncio.Future[None] = server._loop.create_future()
        server._handshakes[waiter] = transport
        waiter.add_done_callback(server._handshake_ended)
        tls = SSLProtocol(
            server._loop,
            _TcpConnection(server),
            self.context,
            waiter,
            server_side=True,
            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
        )
        transport.set_protocol(tls)
        tls.connection_made(transport)


class _TcpSink:
    """`sendto` for a TCP client, so the service loop treats every socket alike."""

    __slots__ = ("server", "transport")

    def __init__(self, transport: asyncio.Transport, server: RelayServer) -> None:
        self.transport = transport
        self.server = server

    def sendto(self, data: bytes, addr: Address) -> None:
        if self.transport.get_write_buffer_size() > TCP_WRITE_LIMIT:
            self.server.core.counters["drop.tcp_backlog"] += 1
            return
        self.transport.write(data)

    def close(self) -> None:
        self.transport.close()


class RelayServer:
    """A running TURN server. Create it with `await RelayServer.start(...)`."""

    def __init__(self, core: TurnCore, relay_host: str, advertised_host: str) -> None:
        self.core = core
        self.relay_host = relay_host
        self.advertised_host = advertised_host
        self.metrics = RelayMetrics(lambda: self.core)
        self._loop = asyncio.get_running_loop()
        self._sockets: dict[int, Any] = {}
        self._senders: dict[int, Any] = {}
        """`sendto` of each UDP socket by socket id, for routed ChannelData (_UdpSocket)."""
        self._buffer = bytearray(4 + 65536)
        """Every UDP datagram is read into this; routed ones leave from views of it."""
        self._view = memoryview(self._buffer)
        self._payload = self._view[4:]
        self._relays: dict[int, _UdpSocket] = {}
        self._reserved: dict[int, _UdpSocket] = {}
        self._tcp: dict[int, _TcpConnection] = {}
        self._port_chooser = random.SystemRandom()
        self._udp: _UdpSocket | None = None
        self._tcp_server: asyncio.Server | None = None
        self._tls_server: asyncio.Server | None = None
        self._handshakes: dict[asyncio.Future[None], asyncio.Transport] = {}
        self._metrics_runner: web.AppRunner | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._closed = False
        self.metrics_address: Address | None = None

    @classmethod
    async def start(
        cls,
        host: str = "0.0.0.0",
        port: int = 3478,
        secret: bytes = b"",
        config: RelayConfig | None = None,
        *,
        tcp: bool = True,
        relay_host: str | None = None,
        external_host: str | None = None,
        metrics_port: int | None = None,
        tls_port: int | None = None,
        tls_context: ssl.SSLContext | None = None,
        rng: random.Random | None = None,
    ) -> RelayServer:
        """Listen on UDP (and TCP) `host:port`; relayed sockets bind `relay_host`.

        `external_host` is the address put in XOR-RELAYED-ADDRESS when the
        relay sits behind a 1:1 NAT (coturn's `external-ip`); without it, the
        address relayed sockets bind (never a wildcard). `metrics_port`
        serves `/metrics` for a standalone relay; a node mounts
        `server.metrics` itself instead. UDP and TCP listen on one port, found
        by `bind_listeners` for port 0; a ListenerBindError says when there is none.
        With `tls_context`, TURN over TLS listens on TCP `host:tls_port` too (0: any
        free port; 443 reaches clients on networks that let nothing else out).
        """
        config = config or RelayConfig()
        core = TurnCore(secret, rng or random.SystemRandom(), wall_clock(), config)
        bind_host = relay_host or _concrete_host(host)
        server = cls(core, bind_host, external_host or _concrete_host(bind_host))
        loop = asyncio.get_running_loop()
        udp, tcp_listener = bind_listeners(host, port, tcp)
        tls_listener: socket.socket | None = None
        try:
            server._udp = _UdpSocket(server, 0, udp)
            server._sockets[0] = server._udp
            if tcp_listener is not None:
                server._tcp_server = await loop.create_server(
                    lambda: _TcpConnection(server), sock=tcp_listener
                )
            if tls_context is not None:
                family, address = _datagram_address(host, tls_port or 0)
                tls_listener = _listener(family, socket.SOCK_STREAM, address, host)
                context = tls_context
                server._tls_server = await loop.create_server(
                    lambda: _TlsHandshake(server, context), sock=tls_listener
                )
            if metrics_port is not None:
                await server._serve_metrics(host, metrics_port)
        except BaseException:
            if server._udp is None:
                udp.close()
            if server._tcp_server is None and tcp_listener is not None:
                tcp_listener.close()
            if server._tls_server is None and tls_listener is not None:
                tls_listener.close()
            await server.stop()
            raise
        return server

    @property
    def address(self) -> Address:
        """The UDP listener's (host, port); the TCP listener has the same port."""
        assert self._udp is not None
        return self._udp.address

    @property
    def tcp_address(self) -> Address | None:
        if self._tcp_server is None or not self._tcp_server.sockets:
            return None
        return _two(self._tcp_server.sockets[0].getsockname())

    @property
    def serving(self) -> bool:
        """Whether its listeners are open: UDP, and TCP and TLS where it has them."""
        if self._closed or self._udp is None or self._udp.fileno < 0:
            return False
        listeners = (self._tcp_server, self._tls_server)
        return all(listener.is_serving() for listener in listeners if listener is not None)

    @property
    def tls_address(self) -> Address | None:
        """The TURN-over-TLS listener's (host, port), if there is one."""
        if self._tls_server is None or not self._tls_server.sockets:
            return None
        return _two(self._tls_server.sockets[0].getsockname())

    async def stop(self) -> None:
        """Close every socket and cancel every task this server started."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for listener in (self._tcp_server, self._tls_server):
            if listener is not None:
                listener.close()
        for transport in list(self._handshakes.values()):
            transport.abort()
        for connection in list(self._tcp.values()):
            if connection.transport is not None:
                connection.transport.abort()
        for relay in [*self._relays.values(), *self._reserved.values()]:
            relay.close()
        self._relays.clear()
        self._reserved.clear()
        if self._udp is not None:
            self._udp.close()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        for listener in (self._tcp_server, self._tls_server):
            if listener is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(listener.wait_closed(), 2.0)

    def _handshake_ended(self, waiter: asyncio.Future[None]) -> None:
        """A TLS handshake finished (the connection is a `_TcpConnection` now) or failed."""
        self._handshakes.pop(waiter, None)
        if not waiter.cancelled() and waiter.exception() is not None:
            self.core.counters["drop.tls_handshake"] += 1

    # --- driving the core ---------------------------------------------------

    def _service(self) -> None:
        self._flush()
        if self._handle_events():
            self._flush()  # an Allocate's answer follows its relayed socket
        deadline = self.core.get_timer()
        if deadline != self._timer_at and not self._closed:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._timer_at = deadline
            if deadline is not None:
                delay = max(0.0, deadline - wall_clock())
                self._timer = self._loop.call_later(delay, self._on_timer)

    def _flush(self) -> None:
        sockets = self._sockets
        for data, addr, socket_id in self.core.datagrams_to_send(wall_clock()):
            sink = sockets.get(socket_id)
            if sink is not None:
                sink.sendto(data, addr)

    def _handle_events(self) -> bool:
        handled = False
        while (event := self.core.next_event()) is not None:
            handled = True
            if isinstance(event, RelayRequested):
                if self._closed:
                    continue
                self._open_relay(event)
            elif isinstance(event, RelayClosed):
                self._sockets.pop(event.socket, None)
                for relays in (self._relays, self._reserved):
                    relay = relays.pop(event.socket, None)
                    if relay is not None:
                        relay.close()
        return handled

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.core.handle_timer(wall_clock())
        self._service()

    def _open_relay(self, event: RelayRequested) -> None:
        host = self.relay_host
        if event.family == FAMILY_IPV6:
            host = self.core.config.relay_host6 or "::1"
        reserved: _UdpSocket | None = None
        try:
            if event.reserved:
                transport = self._reserved.pop(event.socket)
            elif event.reserve_socket is not None:
                transport, reserved = self._bind_pair(host, event.socket, event.reserve_socket)
            else:
                transport = self._bind_relay(host, event.socket, event.even_port)
        except (OSError, KeyError) as exc:
            log.warning("cannot bind a relayed socket on %s: %s", host, exc)
            self.core.relay_failed(event.socket, wall_clock())
            return
        port = transport.address[1]
        advertised = self.advertised_host if event.family != FAMILY_IPV6 else host
        if self._closed or not self.core.relay_opened(
            event.socket, (advertised, port), wall_clock()
        ):
            transport.close()
            if reserved is not None:
                reserved.close()
        else:
            self._relays[event.socket] = transport
            self._sockets[event.socket] = transport
            if reserved is not None and event.reserve_socket is not None:
                self._reserved[event.reserve_socket] = reserved

    def _bind_relay(self, host: str, socket_id: int, even: bool = False) -> _UdpSocket:
        """A relayed UDP socket on `host`, in the configured port range, even if asked."""
        error: OSError | None = None
        for _ in range(BIND_ATTEMPTS):
            try:
                relay = _UdpSocket.bind(self, socket_id, host, self._pick_port(even))
            except OSError as exc:
                error = exc
                continue
            if not even or relay.address[1] % 2 == 0:
                return relay
            relay.close()
        raise error or OSError("no even port found")

    def _bind_pair(
        self, host: str, socket_id: int, reserve_id: int
    ) -> tuple[_UdpSocket, _UdpSocket]:
        """An even port and the odd one above it, kept for a RESERVATION-TOKEN."""
        for _ in range(BIND_ATTEMPTS):
            first = self._bind_relay(host, socket_id, even=True)
            try:
                second = _UdpSocket.bind(self, reserve_id, host, first.address[1] + 1)
            except OSError:
                first.close()
                continue
            return first, second
        raise OSError("no free pair of ports")

    def _pick_port(self, even: bool) -> int:
        config = self.core.config
        if not (config.min_port and config.max_port >= config.min_port):
            return 0
        port = self._port_chooser.randint(config.min_port, config.max_port)
        return port - port % 2 if even and port - 1 >= config.min_port else port

    async def _serve_metrics(self, host: str, port: int) -> None:
        async def metrics(request: web.Request) -> web.Response:
            return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._metrics_runner = runner
        server = site._server
        if isinstance(server, asyncio.Server) and server.sockets:
            self.metrics_address = _two(server.sockets[0].getsockname())


def _concrete_host(host: str) -> str:
    """The address relayed sockets bind and advertise when the listener binds `host`.

    For a wildcard listener this is the address the kernel would use for an
    outgoing route (connect on a UDP socket sends nothing).
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if not address.is_unspecified:
        return host
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # documentation address; no packet leaves
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def bind_listeners(
    host: str, port: int, tcp: bool = True, candidates: Iterable[int] | None = None
) -> tuple[socket.socket, socket.socket | None]:
    """The UDP listener's socket and, with `tcp`, the TCP listener's on the same port.

    Clients reach a relay's UDP and TCP transports at one port (a node advertises
    `turn:host:port?transport=udp` and `?transport=tcp`; RFC 8656 has 3478 for both),
    so the two are bound together. An explicit `port` taken on either protocol is a
    ListenerBindError naming it. With port 0 the kernel picks the UDP port, which may
    be taken on TCP: such a port is passed over, for at most BIND_ATTEMPTS tries.
    `candidates` stands in for the kernel's picks (0 lets the kernel pick), so that a
    test can make a port clash.
    """
    family, address = _datagram_address(host, port)
    udp_kind, tcp_kind = socket.SOCK_DGRAM, socket.SOCK_STREAM
    if port or not tcp:
        udp = _listener(family, udp_kind, address, host)
        try:
            return udp, _listener(family, tcp_kind, address, host) if tcp else None
        except BaseException:
            udp.close()
            raise
    passed_over: list[socket.socket] = []  # held open, so the kernel cannot pick them again
    tries = 0
    try:
        picks = itertools.repeat(0) if candidates is None else candidates
        for candidate in itertools.islice(picks, BIND_ATTEMPTS):
            tries += 1
            try:
                udp = _listener(family, udp_kind, _with_port(address, candidate), host)
            except ListenerBindError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue  # a candidate taken on UDP too
            try:
                return udp, _listener(family, tcp_kind, _with_port(address, _port(udp)), host)
            except ListenerBindError as exc:
                passed_over.append(udp)
                if exc.errno != errno.EADDRINUSE:
                    raise
    finally:
        for sock in passed_over:
            sock.close()
    raise ListenerBindError(
        f"no port on {host} is free on both UDP and TCP ({tries} tries)",
        errno.EADDRINUSE,
        "TCP",
        0,
    )


def _listener(family: int, kind: int, address: Any, host: str) -> socket.socket:
    """`_bound_socket`, its failure a ListenerBindError that names the protocol and port."""
    try:
        return _bound_socket(family, kind, address)
    except OSError as exc:
        protocol = "UDP" if kind == socket.SOCK_DGRAM else "TCP"
        port = address[1]
        if exc.errno == errno.EADDRINUSE:
            message = f"{protocol} port {port} on {host} is in use"
        else:
            message = f"cannot bind {protocol} port {port} on {host}: {exc.strerror}"
        raise ListenerBindError(message, exc.errno or 0, protocol, port) from exc


def _bound_socket(family: int, kind: int, address: Any) -> socket.socket:
    """A non-blocking socket bound to `address`; UDP ones with large buffers."""
    sock = socket.socket(family, kind)
    try:
        sock.setblocking(False)
        if kind == socket.SOCK_DGRAM:
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        else:
            # A restarted relay finds its last run's connections in TIME_WAIT on its port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _datagram_address(host: str, port: int) -> tuple[int, Any]:
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    return family, address


def _with_port(address: Any, port: int) -> Any:
    # IPv6 socket addresses carry flow info and scope id after the port.
    return (address[0], port, *address[2:])


def _port(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])
