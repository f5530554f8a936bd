"""The TURN server core (RFC 8656, STUN Binding of RFC 8489): no I/O, driven by `now`.

Three things drive it, as in aioquic's QuicConnection and dht/core.py:

* datagrams, through `receive(data, addr, now, socket)`: from a client on a
  listener socket, or from a peer on an allocation's relayed socket;
* the glue's answer to a relayed socket request, `relay_opened` or
  `relay_failed`, and `close_endpoint` when a TCP connection ends;
* time, through `get_timer()` and `handle_timer(now)`.

Sockets are named by integers the core hands out. `open_endpoint(stream)`
names a client-facing socket (the UDP listener, one TCP connection); socket
0 is a UDP listener opened at construction. An Allocate that passes every
check asks the glue for a relayed UDP socket with a `RelayRequested(socket)`
event; the glue binds one and reports its address with `relay_opened`, and
only then does the client get its success response. `RelayClosed(socket)`
tells the glue to close a relayed socket. Everything to send comes out of
`datagrams_to_send(now)` as `(data, addr, socket)`: "send `data` to `addr`
from socket `socket`", whichever kind of socket that is.

Rules kept here (section numbers are RFC 8656's unless noted):

* An allocation is keyed by its 5-tuple, `(client socket, client address)`
  (section 2.2); requests on it must carry the username that created it (441).
* Long-term credentials (RFC 8489 section 9.2) with ephemeral usernames
  `expiry:peer` whose password is base64(HMAC-SHA1(secret, username))
  (relay/credentials.py). Nonces are stateless: an expiry and an HMAC over it
  and the client's address under a key from the injected `random.Random`.
* The expiry in a username is checked only where an allocation is created.
  Requests on an existing allocation are checked against the allocation's
  own username and key, expired or not (draft-uberti-behave-turn-rest-00
  section 4.2: the timestamp is checked "when processing ALLOCATE requests";
  coturn caches the key at a session's first request). A client cannot move
  an allocation to fresh credentials (section 5, 441), so a stricter check
  would cut every relayed link when its credentials expire. An allocation
  ends at the latest `max_past_expiry` after its credentials' expiry.
* Lifetimes: allocations `default_lifetime`, capped at `max_lifetime`
  (section 7.2); permissions 300 s (section 9); channels 600 s, and a
  channel number or peer address stays reserved for 300 s after its binding
  expires (section 12).
* A live channel binding lets traffic through to and from its own peer
  transport address, even once the permission it installed has expired:
  aioice rebinds channels every 500 s and never sends CreatePermission.
  coturn goes further (a ChannelBind gives the peer's whole IP a permission
  for the channel's 600 s); see docs/relay.md, "Permissions".
* Quotas: allocations per username (486) and in total (508), permissions and
  channels per allocation (508), a token bucket per allocation in bits per
  second (excess is dropped and counted).
* Peer addresses pass relay/policy.py: refused with 403 on CreatePermission
  and ChannelBind, silently dropped for Send.
* Any bytes in are either handled, answered with an error, or dropped and
  counted in `counters` under `drop.<reason>`; nothing is raised.

Routes. Relaying ChannelData is most of a relay's work, so the core also
publishes what it decided for a channel as data the glue may act on without
calling `receive`: `channel_routes(socket)` (ChannelData from a client on a
UDP socket, by client address and channel number) and `peer_routes(socket)`
(datagrams from a peer address on a relayed socket, sent on as ChannelData).
A route holds exactly what the packet path decided (destination, sending
socket, and `until`, the time from which its decision no longer holds), and is
installed only when a packet took that path. Every change to an allocation
(ChannelBind, CreatePermission, Refresh, a permission or channel timed out,
the allocation gone) removes its routes, so a route never says more than
`receive` would. The bandwidth limit still applies packet by packet:
`route.metered` is the allocation whose bucket `take_tokens` charges.
Routes cover UDP clients only (TCP pads ChannelData and reads by stream).
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import ipaddress
import random
from collections import Counter, deque
from dataclasses import dataclass, field

from dht.ratelimit import source_of

from .credentials import CredentialError, parse_username, password_for
from .policy import PeerPolicy
from .wire import (
    ALLOCATE,
    BINDING,
    CHANNEL_BIND,
    CHANNEL_HEADER,
    CHANNEL_NUMBER,
    CREATE_PERMISSION,
    DATA_ATTR,
    DONT_FRAGMENT,
    ERROR,
    ERROR_CODE,
    EVEN_PORT,
    FAMILY_IPV4,
    FAMILY_IPV6,
    FINGERPRINT,
    INDICATION,
    LIFETIME,
    MAX_CHANNEL,
    MAX_NONCE_BYTES,
    MAX_REALM_BYTES,
    MAX_USERNAME_BYTES,
    MESSAGE_INTEGRITY,
    MIN_CHANNEL,
    NONCE,
    REALM,
    REFRESH,
    REQUEST,
    REQUESTED_ADDRESS_FAMILY,
    REQUESTED_TRANSPORT,
    RESERVATION_TOKEN,
    SEND,
    SOFTWARE,
    SUCCESS,
    TRANSPORT_UDP,
    UNKNOWN_ATTRIBUTES,
    USERNAME,
    XOR_MAPPED_ADDRESS,
    XOR_PEER_ADDRESS,
    XOR_RELAYED_ADDRESS,
    Address,
    Attribute,
    StunMessage,
    WireError,
    check_integrity,
    data_indication,
    decode_channel_number,
    decode_family,
    decode_text,
    decode_transport,
    decode_u32,
    decode_xor_address,
    family_of,
    parse_stun,
    serialize_stun,
)

Output = tuple[bytes, Address, int]
"""(data, destination address, socket id to send it from)."""

REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    420: "Unknown Attribute",
    437: "Allocation Mismatch",
    438: "Stale Nonce",
    440: "Address Family not Supported",
    441: "Wrong Credentials",
    442: "Unsupported Transport Protocol",
    443: "Peer Address Family Mismatch",
    486: "Allocation Quota Reached",
    508: "Insufficient Capacity",
}


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """Server parameters. Times are seconds; tests shrink them."""

    realm: str = "pagemesh"
    software: str = "pagemesh-relay"
    default_lifetime: float = 600.0
    max_lifetime: float = 3600.0
    permission_lifetime: float = 300.0
    channel_lifetime: float = 600.0
    channel_cooldown: float = 300.0
    nonce_lifetime: float = 600.0
    max_past_expiry: float = 86400.0
    """How long an allocation may outlive the expiry of the credentials it was created with.

    Requests on an allocation do not check that expiry (module docstring);
    this bounds how long an allocation whose user is no longer given
    credentials (banned, or the secret rotated) keeps the relay's resources.
    Refreshes are granted at most up to it."""
    pending_timeout: float = 10.0
    """How long an Allocate may wait for the glue's relayed socket."""
    max_allocations: int = 1000
    max_allocations_per_user: int = 8
    """Per user: the peer named after the expiry in `expiry:peer`, however often re-minted."""
    max_allocations_per_source: int = 64
    """Per client source (an IPv4 address, or an IPv6 /64), whatever users it names: keys
    cost a stranger nothing, so the per-user quota alone lets one address take them all."""
    max_permissions: int = 64
    """Per allocation."""
    max_channels: int = 64
    """Per allocation."""
    bandwidth_bps: int = 8_000_000
    """Per allocation, both directions together, in bits per second; 0 means no limit."""
    bandwidth_burst: float = 1.0
    """Bucket depth in seconds of `bandwidth_bps`."""
    allow_peers: tuple[str, ...] = ()
    """Networks allowed despite the special-purpose deny-list ("127.0.0.1/32" for tests)."""
    deny_peers: tuple[str, ...] = ()
    """Networks refused in addition to the special-purpose deny-list."""
    families: tuple[int, ...] = (FAMILY_IPV4,)
    """Address families the glue can relay from (1 = IPv4, 2 = IPv6)."""
    # Used by the glue only (relay/server.py):
    relay_host6: str = ""
    """IPv6 address relayed sockets bind for IPv6 allocations (with 2 in `families`)."""
    min_port: int = 0
    max_port: int = 0
    """Port range of relayed sockets; 0 and 0 let the kernel choose."""

    def policy(self) -> PeerPolicy:
        return PeerPolicy.from_strings(self.allow_peers, self.deny_peers)


# --- events -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RelayRequested:
    """Bind a relayed UDP socket of `family`, then call `relay_opened(socket, address)`.

    `even_port`: the port must be even. `reserve_socket`: also bind the next
    (odd) port and keep it as socket `reserve_socket` for a later Allocate
    with a RESERVATION-TOKEN (RFC 8656 section 7.2). `reserved`: socket
    `socket` is such a kept socket; report its address, bind nothing.
    """

    socket: int
    family: int
    even_port: bool = False
    reserve_socket: int | None = None
    reserved: bool = False


@dataclass(frozen=True, slots=True)
class RelayClosed:
    """The allocation behind relayed socket `socket` is gone: close that socket."""

    socket: int


Event = RelayRequested | RelayClosed


# --- state ------------------------------------------------------------------


class Channel:
    __slots__ = ("expires", "number", "peer")

    def __init__(self, number: int, peer: Address, expires: float) -> None:
        self.number = number
        self.peer = peer
        self.expires = expires


class ChannelRoute:
    """ChannelData from one client on one channel: send its data to `peer` from `socket`.

    Holds while `now < until` (the channel's expiry, section 12). `metered` is
    the allocation whose token bucket each packet is charged to
    (`TurnCore.take_tokens`), None when the relay has no bandwidth limit.
    """

    __slots__ = ("metered", "peer", "socket", "until")

    def __init__(
        self, peer: Address, socket: int, until: float, metered: Allocation | None
    ) -> None:
        self.peer = peer
        self.socket = socket
        self.until = until
        self.metered = metered


class PeerRoute:
    """A datagram from one peer address: to `client` on socket `socket` as ChannelData `number`.

    Holds while `now < until` (the channel's expiry); `metered` as in ChannelRoute.
    """

    __slots__ = ("client", "metered", "number", "socket", "until")

    def __init__(
        self, number: int, client: Address, socket: int, until: float, metered: Allocation | None
    ) -> None:
        self.number = number
        self.client = client
        self.socket = socket
        self.until = until
        self.metered = metered


class Allocation:
    """One allocation (section 2.2): a relayed socket serving one client 5-tuple."""

    __slots__ = (
        "channels",
        "client",
        "client_socket",
        "credential_expiry",
        "expires",
        "family",
        "key",
        "last_fill",
        "peer_channels",
        "permissions",
        "relayed",
        "reserve_socket",
        "response",
        "socket",
        "stream",
        "tokens",
        "transaction_id",
        "username",
    )

    def __init__(
        self,
        socket: int,
        client_socket: int,
        client: Address,
        stream: bool,
        username: str,
        key: bytes,
        family: int,
        expires: float,
        transaction_id: bytes,
        tokens: float,
        now: float,
        credential_expiry: float,
    ) -> None:
        self.socket = socket
        self.client_socket = client_socket
        self.client = client
        self.stream = stream
        self.username = username
        self.key = key
        self.family = family
        self.expires = expires
        self.credential_expiry = credential_expiry
        """When the username it was created with expired (unix seconds)."""
        self.transaction_id = transaction_id
        self.relayed: Address | None = None
        self.reserve_socket: int | None = None
        self.response: bytes | None = None
        self.permissions: dict[str, float] = {}
        self.channels: dict[int, Channel] = {}
        self.peer_channels: dict[Address, Channel] = {}
        self.tokens = tokens
        self.last_fill = now


@dataclass(slots=True)
class _Request:
    """A request being answered: who asked, and the key to sign the answer with."""

    message: StunMessage
    client: Address
    socket: int
    key: bytes | None = None
    username: str = ""
    user: str = ""
    expiry: float = 0.0
    """The credentials' expiry (unix seconds) in the request's username."""
    extra: list[Attribute] = field(default_factory=list)


class _Refusal(Exception):
    """Answer the request being handled with error `code`; count `refuse.<reason>`."""

    def __init__(self, code: int, reason: str, signed: bool = True) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.signed = signed


# Timer kinds in the heap.
_ALLOCATION = 0
_PERMISSION = 1
_CHANNEL = 2
_RESERVATION = 3

RESERVATION_LIFETIME = 30.0  # RFC 8656 section 7.2: "a bit longer than ... 30 seconds"
MAX_RESERVATIONS = 256


@dataclass(slots=True)
class _Reservation:
    socket: int
    family: int
    expires: float


class TurnCore:
    """A TURN server with no I/O. See the module docstring for the contract."""

    def __init__(
        self,
        secret: bytes,
        rng: random.Random,
        now: float,
        config: RelayConfig | None = None,
        *,
        routes: bool = True,
    ) -> None:
        """`routes=False` publishes no routes: every packet goes through `receive`."""
        if not secret:
            raise ValueError("a relay secret must not be empty")
        self.config = config or RelayConfig()
        self.counters: Counter[str] = Counter()
        self._secret = secret
        self._rng = rng
        self._policy = self.config.policy()
        self._nonce_key = rng.randbytes(16)
        self._realm_key = self.config.realm.encode()
        self._out: list[Output] = []
        self._events: deque[Event] = deque()
        self._next_socket = 1
        self._endpoints: dict[int, bool] = {0: False}
        self._by_client: dict[tuple[int, Address], Allocation] = {}
        self._by_socket: dict[int, Allocation] = {}
        self._per_user: Counter[str] = Counter()
        self._per_source: Counter[str] = Counter()
        """Allocations of each client source (no entry at zero)."""
        self._timers: list[tuple[float, int, int, int, object]] = []
        self._timer_seq = 0
        self._keys: dict[str, bytes] = {}
        self._reservations: dict[bytes, _Reservation] = {}
        self._rate = self.config.bandwidth_bps / 8.0
        self._depth = max(self._rate * self.config.bandwidth_burst, 65536.0)
        self._routing = routes
        self._tid_pool = b""
        self._tid_at = 0
        self._channel_routes: dict[int, dict[Address, dict[int, ChannelRoute]]] = {0: {}}
        self._peer_routes: dict[int, dict[Address, PeerRoute]] = {}

    # --- sockets ------------------------------------------------------------

    def open_endpoint(self, stream: bool) -> int:
        """A socket id for a client-facing socket: a UDP listener, or one TCP connection."""
        socket = self._new_socket()
        self._endpoints[socket] = stream
        if not stream:
            self._channel_routes[socket] = {}
        return socket

    def close_endpoint(self, socket: int, now: float) -> None:
        """A TCP connection ended (or a listener closed): its allocations go with it."""
        self._endpoints.pop(socket, None)
        for key in [k for k in self._by_client if k[0] == socket]:
            self._delete(self._by_client[key], "closed")
        routes = self._channel_routes.pop(socket, None)
        if routes is not None:
            routes.clear()

    def relay_opened(self, socket: int, relayed: Address, now: float) -> bool:
        """The glue bound relayed socket `socket` at `relayed`; False if nobody wants it now."""
        allocation = self._by_socket.get(socket)
        if allocation is None or allocation.relayed is not None:
            return False
        allocation.relayed = relayed
        self._peer_routes[socket] = {}
        lifetime = allocation.expires
        allocation.expires = now + lifetime
        self._push_timer(allocation.expires, _ALLOCATION, socket, None)
        self.counters["allocations.created"] += 1
        token = None
        if allocation.reserve_socket is not None:
            token = self._rng.randbytes(8)
            expires = now + RESERVATION_LIFETIME
            self._reservations[token] = _Reservation(
                allocation.reserve_socket, allocation.family, expires
            )
            self._push_timer(expires, _RESERVATION, allocation.reserve_socket, token)
            allocation.reserve_socket = None
        allocation.response = self._encode_allocate_success(allocation, _seconds(lifetime), token)
        self._out.append((allocation.response, allocation.client, allocation.client_socket))
        return True

    def relay_failed(self, socket: int, now: float) -> None:
        """The glue could not bind a relayed socket: the Allocate fails with 508."""
        allocation = self._by_socket.get(socket)
        if allocation is None or allocation.relayed is not None:
            return
        message = serialize_stun(
            ALLOCATE,
            ERROR,
            allocation.transaction_id,
            [(ERROR_CODE, (508, REASONS[508]))],
            allocation.key,
        )
        self._out.append((message, allocation.client, allocation.client_socket))
        self.counters["refuse.relay_failed"] += 1
        self._forget(allocation)

    # --- the driving API ----------------------------------------------------

    def receive(self, data: bytes, addr: Address, now: float, socket: int = 0) -> None:
        """A datagram (or one framed TCP message) `data` from `addr` on socket `socket`."""
        allocation = self._by_socket.get(socket)
        if allocation is not None:
            self._from_peer(allocation, data, addr, now)
            return
        if socket not in self._endpoints:
            self.counters["drop.unknown_socket"] += 1
            return
        if not data:
            self.counters["drop.truncated"] += 1
            return
        first = data[0]
        try:
            if 0x40 <= first < 0x80:
                self._from_client_channel(data, (socket, addr), now)
            elif first < 0x40:
                self._from_client_stun(data, addr, socket, now)
            else:
                self.counters["drop.malformed"] += 1
        except WireError as exc:
            self.counters[f"drop.{exc.reason}"] += 1

    def datagrams_to_send(self, now: float) -> list[Output]:
        out = self._out
        self._out = []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def handle_timer(self, now: float) -> None:
        """Expire allocations, permissions and channels whose time has come."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, kind, socket, key = heapq.heappop(timers)
            if kind == _RESERVATION:
                assert isinstance(key, bytes)
                if self._reservations.pop(key, None) is not None:
                    self._events.append(RelayClosed(socket))
                continue
            allocation = self._by_socket.get(socket)
            if allocation is None:
                continue
            if kind == _ALLOCATION:
                if allocation.relayed is None:
                    self.relay_failed(socket, now)
                elif allocation.expires <= now:
                    self._delete(allocation, "expired")
                else:
                    self._push_timer(allocation.expires, _ALLOCATION, socket, None)
            elif kind == _PERMISSION:
                assert isinstance(key, str)
                expires = allocation.permissions.get(key)
                if expires is None:
                    continue
                if expires <= now:
                    del allocation.permissions[key]
                    self._unroute(allocation)
                else:
                    self._push_timer(expires, _PERMISSION, socket, key)
            else:
                assert isinstance(key, int)
                channel = allocation.channels.get(key)
                if channel is None:
                    continue
                release = channel.expires + self.config.channel_cooldown
                if release <= now:
                    del allocation.channels[key]
                    del allocation.peer_channels[channel.peer]
                    self._unroute(allocation)
                else:
                    self._push_timer(release, _CHANNEL, socket, key)
        live = len(self._by_socket) * (1 + self.config.max_permissions + self.config.max_channels)
        if len(timers) > 2 * live + 1024:
            self._rebuild_timers(now)

    # --- routes (module docstring) --------------------------------------------

    def channel_routes(self, socket: int) -> dict[Address, dict[int, ChannelRoute]]:
        """ChannelData routes of client-facing UDP socket `socket`: client address, channel.

        The same dict for the socket's life (changed in place), so the glue may
        keep it; empty for a socket that is not a UDP endpoint.
        """
        return self._channel_routes.get(socket, {})

    def peer_routes(self, socket: int) -> dict[Address, PeerRoute]:
        """Routes of relayed socket `socket` by peer address, once `relay_opened` took it."""
        return self._peer_routes.get(socket, {})

    def count_relayed(
        self, to_peer: int, to_peer_bytes: int, to_client: int, to_client_bytes: int
    ) -> None:
        """Packets and bytes the glue relayed on routes (added up per read, not per packet)."""
        counters = self.counters
        if to_peer:
            counters["relayed.packets.to_peer"] += to_peer
            counters["relayed.bytes.to_peer"] += to_peer_bytes
        if to_client:
            counters["relayed.packets.to_client"] += to_client
            counters["relayed.bytes.to_client"] += to_client_bytes

    def _unroute(self, allocation: Allocation) -> None:
        """Something about `allocation` changed: none of its routes may be used any more."""
        clients = self._channel_routes.get(allocation.client_socket)
        if clients is not None:
            clients.pop(allocation.client, None)
        peers = self._peer_routes.get(allocation.socket)
        if peers is not None:
            peers.clear()

    # --- introspection (tests, metrics) ---------------------------------------

    @property
    def allocation_count(self) -> int:
        return sum(1 for a in self._by_socket.values() if a.relayed is not None)

    def allocation_for(self, addr: Address, socket: int = 0) -> Allocation | None:
        return self._by_client.get((socket, addr))

    # --- peers to clients (section 11.3, 12.6) ----------------------------------

    def _from_peer(self, allocation: Allocation, data: bytes, addr: Address, now: float) -> None:
        channel = allocation.peer_channels.get(addr)
        if channel is None or channel.expires <= now:
            # No live channel from this address: the permission decides (section 9).
            channel = None
            expires = allocation.permissions.get(addr[0])
            if expires is None or expires <= now:
                self.counters["drop.no_permission"] += 1
                return
        if channel is not None and not allocation.stream and self._routing:
            self._peer_routes[allocation.socket][addr] = PeerRoute(
                channel.number,
                allocation.client,
                allocation.client_socket,
                channel.expires,
                allocation if self._rate else None,
            )
        if not self.take_tokens(allocation, len(data), now):
            return
        if channel is not None:
            header = CHANNEL_HEADER.pack(channel.number, len(data))
            pad = -len(data) % 4
            message = header + data + bytes(pad) if allocation.stream and pad else header + data
        else:
            message = data_indication(addr, data, self._transaction_id())
        self._out.append((message, allocation.client, allocation.client_socket))
        counters = self.counters
        counters["relayed.packets.to_client"] += 1
        counters["relayed.bytes.to_client"] += len(data)

    # --- clients to peers (section 11.2, 12.5) ----------------------------------

    def _from_client_channel(self, data: bytes, client: tuple[int, Address], now: float) -> None:
        if len(data) < 4:
            raise WireError("truncated", "ChannelData shorter than its header")
        number, length = CHANNEL_HEADER.unpack_from(data)
        if len(data) < 4 + length:
            raise WireError("truncated", "ChannelData shorter than its length field")
        allocation = self._by_client.get(client)
        if allocation is None or allocation.relayed is None:
            self.counters["drop.no_allocation"] += 1
            return
        channel = allocation.channels.get(number)
        if channel is None or channel.expires <= now:
            self.counters["drop.no_channel"] += 1
            return
        # A live binding is enough (section 12.6 checks nothing else): it
        # stands for its peer's permission (module docstring).
        peer = channel.peer
        if not allocation.stream and self._routing:
            routes = self._channel_routes.get(client[0])
            if routes is not None:
                routes.setdefault(allocation.client, {})[number] = ChannelRoute(
                    peer, allocation.socket, channel.expires, allocation if self._rate else None
                )
        if not self.take_tokens(allocation, length, now):
            return
        payload = data[4 : 4 + length] if len(data) != 4 + length else data[4:]
        self._out.append((payload, peer, allocation.socket))
        counters = self.counters
        counters["relayed.packets.to_peer"] += 1
        counters["relayed.bytes.to_peer"] += length

    def _send_indication(
        self, message: StunMessage, client: Address, socket: int, now: float
    ) -> None:
        allocation = self._by_client.get((socket, client))
        if allocation is None or allocation.relayed is None:
            self.counters["drop.no_allocation"] += 1
            return
        raw_peer = message.get(XOR_PEER_ADDRESS)
        payload = message.get(DATA_ATTR)
        if raw_peer is None or payload is None:
            self.counters["drop.malformed"] += 1
            return
        if message.has_unknown_required():
            self.counters["drop.unknown_attribute"] += 1
            return
        peer = decode_xor_address(raw_peer, message.transaction_id)
        if not self._permitted(allocation, peer, now):
            refused = not self._policy.permits_host(peer[0])
            self.counters["drop.peer_refused" if refused else "drop.no_permission"] += 1
            return
        if not self.take_tokens(allocation, len(payload), now):
            return
        self._out.append((payload, peer, allocation.socket))
        self.counters["relayed.packets.to_peer"] += 1
        self.counters["relayed.bytes.to_peer"] += len(payload)

    @staticmethod
    def _permitted(allocation: Allocation, peer: Address, now: float) -> bool:
        """A permission for `peer`'s IP (section 9), or a live channel bound to `peer` itself."""
        expires = allocation.permissions.get(peer[0])
        if expires is not None and expires > now:
            return True
        channel = allocation.peer_channels.get(peer)
        return channel is not None and channel.expires > now

    def take_tokens(self, allocation: Allocation, size: int, now: float) -> bool:
        """Token bucket per allocation (bytes); False, counted, when over the bandwidth.

        Public for the glue's routes (`route.metered`): the same bucket, packet by packet.
        """
        rate = self._rate
        if not rate:
            return True
        tokens = allocation.tokens + (now - allocation.last_fill) * rate
        allocation.last_fill = now
        if tokens > self._depth:
            tokens = self._depth
        if tokens < size:
            allocation.tokens = tokens
            self.counters["drop.bandwidth"] += 1
            return False
        allocation.tokens = tokens - size
        return True

    # --- STUN requests ------------------------------------------------------

    def _from_client_stun(self, data: bytes, client: Address, socket: int, now: float) -> None:
        message = parse_stun(data)
        if message.cls == INDICATION:
            if message.method == SEND:
                self._send_indication(message, client, socket, now)
            else:
                self.counters["drop.indication"] += 1
            return
        if message.cls != REQUEST:
            self.counters["drop.not_request"] += 1
            return
        request = _Request(message, client, socket)
        try:
            self._handle_request(request, now)
        except _Refusal as refusal:
            self.counters[f"refuse.{refusal.reason}"] += 1
            attributes: list[Attribute] = [(ERROR_CODE, (refusal.code, REASONS[refusal.code]))]
            attributes += request.extra
            self._reply(request, ERROR, attributes, signed=refusal.signed)
        except WireError as exc:
            # A request whose attributes do not parse: 400 (RFC 8489 section 6.3.1.1).
            self.counters[f"drop.{exc.reason}"] += 1
            self.counters["refuse.bad_request"] += 1
            self._reply(request, ERROR, [(ERROR_CODE, (400, REASONS[400]))], signed=True)

    def _handle_request(self, request: _Request, now: float) -> None:
        message = request.message
        method = message.method
        if method == BINDING:
            self.counters["requests.binding"] += 1
            self._reply(request, SUCCESS, [(XOR_MAPPED_ADDRESS, _plain(request.client))])
            return
        if method not in (ALLOCATE, REFRESH, CREATE_PERMISSION, CHANNEL_BIND):
            raise _Refusal(400, "bad_request", signed=False)
        allocation = self._by_client.get((request.socket, request.client))
        self._authenticate(request, allocation, now)
        unknown = message.unknown_required()
        if unknown:
            request.extra = [(UNKNOWN_ATTRIBUTES, unknown)]
            raise _Refusal(420, "unknown_attribute")
        if method == ALLOCATE:
            self._allocate(request, allocation, now)
            return
        if allocation is None or allocation.relayed is None:
            raise _Refusal(437, "allocation_mismatch")
        if allocation.username != request.username:
            raise _Refusal(441, "wrong_credentials")
        if method == REFRESH:
            self._refresh(request, allocation, now)
        elif method == CREATE_PERMISSION:
            self._create_permission(request, allocation, now)
        else:
            self._channel_bind(request, allocation, now)

    def _authenticate(self, request: _Request, allocation: Allocation | None, now: float) -> None:
        """Long-term credentials, RFC 8489 section 9.2.4, steps in order.

        The username of the 5-tuple's `allocation` is checked with the key
        cached at its Allocate, whatever its expiry; any other username must
        be well formed and unexpired (module docstring).
        """
        message = request.message
        if message.get(MESSAGE_INTEGRITY) is None:
            self._challenge(request, now)
            raise _Refusal(401, "unauthenticated", signed=False)
        raw_username = message.get(USERNAME)
        raw_realm = message.get(REALM)
        raw_nonce = message.get(NONCE)
        if raw_username is None or raw_realm is None or raw_nonce is None:
            raise _Refusal(400, "bad_request", signed=False)
        username = decode_text(raw_username, MAX_USERNAME_BYTES)
        decode_text(raw_realm, MAX_REALM_BYTES)
        if len(raw_nonce) > MAX_NONCE_BYTES or not self._nonce_valid(
            raw_nonce, request.client, now
        ):
            self._challenge(request, now)
            raise _Refusal(438, "stale_nonce", signed=False)
        if allocation is not None and username == allocation.username:
            key = allocation.key
            expiry = allocation.credential_expiry
        else:
            try:
                expiry, _ = parse_username(username)
            except CredentialError:
                self._challenge(request, now)
                raise _Refusal(401, "bad_credentials", signed=False) from None
            if expiry <= now:
                self._challenge(request, now)
                raise _Refusal(401, "expired_credentials", signed=False)
            key = self._key_for(username)
        if raw_realm != self._realm_key or not check_integrity(message, key):
            self._challenge(request, now)
            raise _Refusal(401, "bad_credentials", signed=False)
        if expiry <= now:
            self.counters["requests.past_expiry"] += 1
        request.key = key
        request.username = username
        request.user = username.partition(":")[2]
        request.expiry = expiry

    def _challenge(self, request: _Request, now: float) -> None:
        request.extra = [(REALM, self.config.realm), (NONCE, self._make_nonce(request.client, now))]

    def _allocate(self, request: _Request, allocation: Allocation | None, now: float) -> None:
        """Section 7.2, steps in order."""
        message = request.message
        config = self.config
        if allocation is not None:
            if allocation.transaction_id != message.transaction_id:
                raise _Refusal(437, "allocation_mismatch")
            if allocation.response is not None:  # a retransmission: the same answer
                self._out.append((allocation.response, request.client, request.socket))
            return
        raw_transport = message.get(REQUESTED_TRANSPORT)
        if raw_transport is None:
            raise _Refusal(400, "bad_request")
        if decode_transport(raw_transport) != TRANSPORT_UDP:
            raise _Refusal(442, "transport")
        raw_token = message.get(RESERVATION_TOKEN)
        raw_even = message.get(EVEN_PORT)
        raw_family = message.get(REQUESTED_ADDRESS_FAMILY)
        if raw_token is not None and (raw_even is not None or raw_family is not None):
            raise _Refusal(400, "bad_request")  # section 7.2 steps 5 and 6
        if raw_even is not None and len(raw_even) < 1:
            raise _Refusal(400, "bad_request")
        family = FAMILY_IPV4 if raw_family is None else decode_family(raw_family)
        if family not in (FAMILY_IPV4, FAMILY_IPV6):
            raise _Refusal(440, "family")
        if family not in config.families:
            raise _Refusal(440, "family")
        _ = message.get(DONT_FRAGMENT)  # accepted; the relayed socket leaves DF to the kernel
        if self._per_user[request.user] >= config.max_allocations_per_user:
            raise _Refusal(486, "quota_user")
        source = source_of(str(request.client[0]))
        if self._per_source[source] >= config.max_allocations_per_source:
            raise _Refusal(486, "quota_source")
        if len(self._by_socket) >= config.max_allocations:
            raise _Refusal(508, "quota_total")
        lifetime = config.default_lifetime
        raw_lifetime = message.get(LIFETIME)
        if raw_lifetime is not None:
            lifetime = max(min(float(decode_u32(raw_lifetime)), config.max_lifetime), lifetime)
        ends_by = request.expiry + config.max_past_expiry
        lifetime = min(lifetime, config.max_lifetime, ends_by - now)  # ends_by > now
        reserve_socket: int | None = None
        if raw_token is not None:
            reservation = self._reservations.pop(raw_token, None)
            if reservation is None or reservation.expires <= now:
                raise _Refusal(508, "reservation")
            socket = reservation.socket
            family = reservation.family
            event = RelayRequested(socket, family, reserved=True)
        else:
            socket = self._new_socket()
            reserve = raw_even is not None and bool(raw_even[0] & 0x80)
            if reserve and len(self._reservations) >= MAX_RESERVATIONS:
                raise _Refusal(508, "reservation")
            reserve_socket = self._new_socket() if reserve else None
            event = RelayRequested(socket, family, raw_even is not None, reserve_socket)
        assert request.key is not None
        allocation = Allocation(
            socket,
            request.socket,
            request.client,
            self._endpoints.get(request.socket, False),
            request.username,
            request.key,
            family,
            lifetime,  # relative until the relayed socket is open (relay_opened)
            message.transaction_id,
            self._depth,
            now,
            request.expiry,
        )
        allocation.reserve_socket = reserve_socket
        self._by_client[(request.socket, request.client)] = allocation
        self._by_socket[socket] = allocation
        self._per_user[request.user] += 1
        self._per_source[source] += 1
        self._push_timer(now + config.pending_timeout, _ALLOCATION, socket, None)
        self._events.append(event)

    def _encode_allocate_success(
        self, allocation: Allocation, lifetime: int, token: bytes | None
    ) -> bytes:
        assert allocation.relayed is not None
        attributes: list[Attribute] = [
            (XOR_RELAYED_ADDRESS, allocation.relayed),
            (LIFETIME, lifetime),
            (XOR_MAPPED_ADDRESS, _plain(allocation.client)),
        ]
        if token is not None:
            attributes.append((RESERVATION_TOKEN, token))
        attributes.append((SOFTWARE, self.config.software))
        return serialize_stun(
            ALLOCATE,
            SUCCESS,
            allocation.transaction_id,
            attributes,
            allocation.key,
            fingerprint=True,
        )

    def _refresh(self, request: _Request, allocation: Allocation, now: float) -> None:
        """Section 7.3."""
        message = request.message
        raw_family = message.get(REQUESTED_ADDRESS_FAMILY)
        if raw_family is not None and decode_family(raw_family) != allocation.family:
            raise _Refusal(443, "family")
        raw_lifetime = message.get(LIFETIME)
        requested = (
            self.config.default_lifetime
            if raw_lifetime is None
            else float(decode_u32(raw_lifetime))
        )
        if requested == 0:
            self._reply(request, SUCCESS, [(LIFETIME, 0)])
            self._delete(allocation, "deleted")
            return
        ends_by = allocation.credential_expiry + self.config.max_past_expiry
        lifetime = min(requested, self.config.max_lifetime, ends_by - now)
        if lifetime <= 0:  # past `max_past_expiry`, before the timer has deleted it
            self._delete(allocation, "expired")
            raise _Refusal(437, "allocation_mismatch")
        allocation.expires = now + lifetime
        self._unroute(allocation)
        self.counters["requests.refresh"] += 1
        self._reply(request, SUCCESS, [(LIFETIME, _seconds(lifetime))])

    def _peer_addresses(self, request: _Request, allocation: Allocation) -> list[Address]:
        message = request.message
        raws = message.get_all(XOR_PEER_ADDRESS)
        if not raws:
            raise _Refusal(400, "bad_request")
        peers = [decode_xor_address(raw, message.transaction_id) for raw in raws]
        if any(family_of(peer) != allocation.family for peer in peers):
            raise _Refusal(443, "family")
        if not all(self._policy.permits_host(peer[0]) for peer in peers):
            raise _Refusal(403, "peer_address")
        return peers

    def _create_permission(self, request: _Request, allocation: Allocation, now: float) -> None:
        """Section 9.2: all the addresses are installed, or none."""
        peers = self._peer_addresses(request, allocation)
        hosts = {_host_key(peer[0]) for peer in peers}
        new = hosts - allocation.permissions.keys()
        if len(allocation.permissions) + len(new) > self.config.max_permissions:
            raise _Refusal(508, "quota_permissions")
        for host in hosts:
            self._permit(allocation, host, now)
        self.counters["requests.create_permission"] += 1
        self._reply(request, SUCCESS, [])

    def _permit(self, allocation: Allocation, host: str, now: float) -> None:
        expires = now + self.config.permission_lifetime
        if host not in allocation.permissions:
            self._push_timer(expires, _PERMISSION, allocation.socket, host)
        allocation.permissions[host] = expires
        self._unroute(allocation)

    def _channel_bind(self, request: _Request, allocation: Allocation, now: float) -> None:
        """Section 11.2, and the rebinding rules of section 12."""
        message = request.message
        raw_number = message.get(CHANNEL_NUMBER)
        if raw_number is None or len(message.get_all(XOR_PEER_ADDRESS)) != 1:
            raise _Refusal(400, "bad_request")
        number = decode_channel_number(raw_number)
        if not MIN_CHANNEL <= number <= MAX_CHANNEL:
            raise _Refusal(400, "bad_request")
        (peer,) = self._peer_addresses(request, allocation)
        peer = (_host_key(peer[0]), peer[1])
        channel = allocation.channels.get(number)
        bound = allocation.peer_channels.get(peer)
        if channel is not None and channel.peer != peer:
            raise _Refusal(400, "channel_conflict")
        if bound is not None and bound.number != number:
            raise _Refusal(400, "channel_conflict")
        if channel is None:
            if len(allocation.channels) >= self.config.max_channels:
                raise _Refusal(508, "quota_channels")
            channel = Channel(number, peer, now + self.config.channel_lifetime)
            allocation.channels[number] = channel
            allocation.peer_channels[peer] = channel
            self._push_timer(
                channel.expires + self.config.channel_cooldown, _CHANNEL, allocation.socket, number
            )
        else:
            channel.expires = now + self.config.channel_lifetime
        self._permit(allocation, peer[0], now)  # and unroutes
        self.counters["requests.channel_bind"] += 1
        self._reply(request, SUCCESS, [])

    # --- answers, nonces, keys ----------------------------------------------

    def _reply(
        self, request: _Request, cls: int, attributes: list[Attribute], signed: bool = True
    ) -> None:
        message = request.message
        key = request.key if signed else None
        data = serialize_stun(
            message.method,
            cls,
            message.transaction_id,
            attributes,
            key,
            fingerprint=message.get(FINGERPRINT) is not None or key is not None,
        )
        self._out.append((data, request.client, request.socket))

    def _make_nonce(self, client: Address, now: float) -> bytes:
        expiry = f"{int(now + self.config.nonce_lifetime):x}"
        return f"{expiry}.{self._nonce_mac(expiry, client)}".encode()

    def _nonce_mac(self, expiry: str, client: Address) -> str:
        mac = hmac.new(self._nonce_key, f"{expiry}|{client[0]}".encode(), hashlib.sha1)
        return base64.urlsafe_b64encode(mac.digest()[:12]).decode()

    def _nonce_valid(self, nonce: bytes, client: Address, now: float) -> bool:
        try:
            text = nonce.decode("ascii")
        except UnicodeDecodeError:
            return False
        expiry, sep, mac = text.partition(".")
        if not sep or not expiry or len(expiry) > 12:
            return False
        try:
            when = int(expiry, 16)
        except ValueError:
            return False
        expected = self._nonce_mac(expiry, client)
        return hmac.compare_digest(mac, expected) and when > now

    def _key_for(self, username: str) -> bytes:
        """The long-term key MD5(username:realm:password) (RFC 8489 section 9.2.2)."""
        key = self._keys.get(username)
        if key is None:
            password = password_for(self._secret, username)
            text = f"{username}:{self.config.realm}:{password}".encode()
            key = hashlib.md5(text, usedforsecurity=False).digest()
            if len(self._keys) >= 4096:
                self._keys.clear()
            self._keys[username] = key
        return key

    # --- bookkeeping --------------------------------------------------------

    def _transaction_id(self) -> bytes:
        """A Data indication's 12 random bytes, from a pool drawn 4 KiB at a time.

        `rng` is the glue's SystemRandom: one draw per indication was one
        getrandom() system call per relayed packet.
        """
        at = self._tid_at
        if at + 12 > len(self._tid_pool):
            self._tid_pool = self._rng.randbytes(12 * 341)
            at = 0
        self._tid_at = at + 12
        return self._tid_pool[at : at + 12]

    def _new_socket(self) -> int:
        socket = self._next_socket
        self._next_socket += 1
        return socket

    def _push_timer(self, when: float, kind: int, socket: int, key: object) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, kind, socket, key))

    def _rebuild_timers(self, now: float) -> None:
        """Drop stale heap entries: one entry per live allocation, permission, channel."""
        self._timers = []
        for token, reservation in self._reservations.items():
            self._push_timer(reservation.expires, _RESERVATION, reservation.socket, token)
        for socket, allocation in self._by_socket.items():
            if allocation.relayed is None:
                self._push_timer(now + self.config.pending_timeout, _ALLOCATION, socket, None)
                continue
            self._push_timer(allocation.expires, _ALLOCATION, socket, None)
            for host, expires in allocation.permissions.items():
                self._push_timer(expires, _PERMISSION, socket, host)
            for number, channel in allocation.channels.items():
                release = channel.expires + self.config.channel_cooldown
                self._push_timer(release, _CHANNEL, socket, number)

    def _delete(self, allocation: Allocation, why: str) -> None:
        self.counters[f"allocations.{why}"] += 1
        self._forget(allocation)

    def _forget(self, allocation: Allocation) -> None:
        self._unroute(allocation)
        self._peer_routes.pop(allocation.socket, None)
        self._by_client.pop((allocation.client_socket, allocation.client), None)
        self._by_socket.pop(allocation.socket, None)
        user = allocation.username.partition(":")[2]
        self._per_user[user] -= 1
        if self._per_user[user] <= 0:
            del self._per_user[user]
        source = source_of(str(allocation.client[0]))
        self._per_source[source] -= 1
        if self._per_source[source] <= 0:
            del self._per_source[source]
        self._events.append(RelayClosed(allocation.socket))


def _seconds(lifetime: float) -> int:
    """A LIFETIME attribute's value: whole seconds, at least 1 for a live allocation."""
    return max(int(lifetime), 1)


def _plain(address: Address) -> Address:
    """An address without an IPv6 zone (`fe80::1%eth0`), which STUN cannot carry."""
    return (address[0].split("%", 1)[0], address[1])


def _host_key(host: str) -> str:
    """The text form the glue's sockets report for `host`, so permissions match by IP."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host
