"""A minimal TURN client (message builders) and a harness that drives a TurnCore by hand."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from relay import wire
from relay.core import RelayClosed, RelayConfig, RelayRequested, TurnCore
from relay.credentials import mint_credentials
from relay.wire import Address, Attribute, StunMessage

SECRET = b"test-secret"
REALM = "pagemesh"
T0 = 1_700_000_000.0
CLIENT: Address = ("198.51.100.20", 40000)
PEER: Address = ("93.184.216.34", 5000)
PEER2: Address = ("93.184.216.35", 5001)


class TurnClient:
    """Builds a client's requests; signs them once it knows the nonce (after a 401)."""

    def __init__(self, username: str, password: str, realm: str = REALM, seed: int = 1) -> None:
        self.username = username
        self.password = password
        self.realm = realm
        self.nonce: bytes | None = None
        self.rng = random.Random(seed)

    @property
    def key(self) -> bytes:
        text = f"{self.username}:{self.realm}:{self.password}".encode()
        return hashlib.md5(text).digest()

    def tid(self) -> bytes:
        return self.rng.randbytes(12)

    def request(
        self,
        method: int,
        attributes: list[Attribute] | None = None,
        transaction_id: bytes | None = None,
        sign: bool = True,
    ) -> bytes:
        attrs = list(attributes or [])
        key = None
        if sign and self.nonce is not None:
            attrs += [
                (wire.USERNAME, self.username),
                (wire.REALM, self.realm),
                (wire.NONCE, self.nonce),
            ]
            key = self.key
        return wire.serialize_stun(
            method, wire.REQUEST, transaction_id or self.tid(), attrs, key, fingerprint=True
        )

    def learn(self, response: StunMessage) -> None:
        nonce = response.get(wire.NONCE)
        if nonce is not None:
            self.nonce = nonce

    def allocate(self, lifetime: int | None = None, tid: bytes | None = None) -> bytes:
        attrs: list[Attribute] = [(wire.REQUESTED_TRANSPORT, bytes([17, 0, 0, 0]))]
        if lifetime is not None:
            attrs.append((wire.LIFETIME, lifetime))
        return self.request(wire.ALLOCATE, attrs, tid)

    def refresh(self, lifetime: int | None = None) -> bytes:
        attrs: list[Attribute] = [] if lifetime is None else [(wire.LIFETIME, lifetime)]
        return self.request(wire.REFRESH, attrs)

    def create_permission(self, *peers: Address) -> bytes:
        return self.request(wire.CREATE_PERMISSION, [(wire.XOR_PEER_ADDRESS, p) for p in peers])

    def channel_bind(self, number: int, peer: Address) -> bytes:
        attrs: list[Attribute] = [
            (wire.CHANNEL_NUMBER, bytes([number >> 8, number & 0xFF, 0, 0])),
            (wire.XOR_PEER_ADDRESS, peer),
        ]
        return self.request(wire.CHANNEL_BIND, attrs)

    def send(self, peer: Address, payload: bytes) -> bytes:
        return wire.serialize_stun(
            wire.SEND,
            wire.INDICATION,
            self.tid(),
            [(wire.XOR_PEER_ADDRESS, peer), (wire.DATA_ATTR, payload)],
        )


def error_code(message: StunMessage) -> int | None:
    raw = message.get(wire.ERROR_CODE)
    if raw is None:
        return None
    return raw[2] * 100 + raw[3]


@dataclass
class Harness:
    """A TurnCore on a hand-moved clock whose relayed sockets open at once."""

    # Nonces that outlive the tests' clock jumps; test_core.py checks staleness on its own.
    config: RelayConfig = field(default_factory=lambda: RelayConfig(nonce_lifetime=86400.0))
    now: float = T0
    core: TurnCore = field(init=False)
    relayed: dict[int, Address] = field(default_factory=dict)
    closed: list[int] = field(default_factory=list)
    next_port: int = 50000

    def __post_init__(self) -> None:
        self.core = TurnCore(SECRET, random.Random(7), self.now, self.config)

    def client(
        self, peer: str = "alice", ttl: float = 3600.0, secret: bytes = SECRET
    ) -> TurnClient:
        username, password = mint_credentials(secret, peer, ttl, self.now)
        return TurnClient(username, password)

    def feed(
        self, data: bytes, addr: Address = CLIENT, socket: int = 0
    ) -> list[tuple[bytes, Address, int]]:
        """Deliver `data`, open any relayed socket asked for, return what the core sends."""
        self.core.receive(data, addr, self.now, socket)
        return self.drain()

    def drain(self) -> list[tuple[bytes, Address, int]]:
        while (event := self.core.next_event()) is not None:
            if isinstance(event, RelayRequested):
                self.next_port += 2
                address = ("192.0.2.10", self.next_port)
                self.relayed[event.socket] = address
                self.core.relay_opened(event.socket, address, self.now)
            elif isinstance(event, RelayClosed):
                self.closed.append(event.socket)
        return self.core.datagrams_to_send(self.now)

    def ask(
        self, client: TurnClient, data: bytes, addr: Address = CLIENT, socket: int = 0
    ) -> StunMessage:
        """Send a request and return the one response."""
        out = self.feed(data, addr, socket)
        assert len(out) == 1, out
        response = wire.parse_stun(out[0][0])
        assert out[0][1] == addr and out[0][2] == socket
        client.learn(response)
        return response

    def login(self, client: TurnClient, addr: Address = CLIENT) -> None:
        """The first unauthenticated Allocate, for the nonce."""
        response = self.ask(client, client.allocate(), addr)
        assert error_code(response) == 401

    def allocated(
        self, client: TurnClient, addr: Address = CLIENT, lifetime: int | None = None
    ) -> StunMessage:
        if client.nonce is None:
            self.login(client, addr)
        response = self.ask(client, client.allocate(lifetime), addr)
        assert response.cls == wire.SUCCESS, error_code(response)
        return response

    def advance(self, seconds: float) -> list[tuple[bytes, Address, int]]:
        """Move the clock, firing every timer due on the way (bounded)."""
        target = self.now + seconds
        for _ in range(10_000):
            when = self.core.get_timer()
            if when is None or when > target:
                break
            self.now = max(self.now, when)
            self.core.handle_timer(self.now)
        else:
            raise AssertionError("timer loop did not settle")
        self.now = target
        return self.drain()

    def relayed_address(self, response: StunMessage) -> Address:
        raw = response.get(wire.XOR_RELAYED_ADDRESS)
        assert raw is not None
        return wire.decode_xor_address(raw, response.transaction_id)

    def socket_of(self, addr: Address = CLIENT) -> int:
        allocation = self.core.allocation_for(addr)
        assert allocation is not None
        return allocation.socket
