"""TurnCore on virtual time: allocations, lifetimes, permissions, channels, quotas, security."""

from __future__ import annotations

import dataclasses

import pytest

from relay import wire
from relay.core import RelayConfig
from relay.credentials import mint_credentials

from .turn import CLIENT, PEER, PEER2, SECRET, Harness, TurnClient, error_code

CLIENT2 = ("198.51.100.21", 40001)


@pytest.fixture
def h() -> Harness:
    return Harness()


def bound(h: Harness, client: TurnClient, number: int = 0x4000, peer=PEER) -> None:
    response = h.ask(client, client.channel_bind(number, peer))
    assert response.cls == wire.SUCCESS, error_code(response)


def permitted(h: Harness, client: TurnClient, *peers) -> None:
    response = h.ask(client, client.create_permission(*(peers or (PEER,))))
    assert response.cls == wire.SUCCESS, error_code(response)


# --- STUN Binding and authentication ------------------------------------------


def test_binding_answers_the_mapped_address(h: Harness) -> None:
    client = h.client()
    response = h.ask(client, client.request(wire.BINDING, sign=False))
    assert response.cls == wire.SUCCESS
    raw = response.get(wire.XOR_MAPPED_ADDRESS)
    assert raw is not None
    assert wire.decode_xor_address(raw, response.transaction_id) == CLIENT


def test_unauthenticated_allocate_gets_401_with_realm_and_nonce(h: Harness) -> None:
    client = h.client()
    response = h.ask(client, client.allocate())
    assert error_code(response) == 401
    assert response.get(wire.REALM) == b"pagemesh"
    assert response.get(wire.NONCE)
    assert h.core.counters["refuse.unauthenticated"] == 1
    assert h.core.allocation_count == 0


def test_allocate_with_credentials(h: Harness) -> None:
    client = h.client()
    response = h.allocated(client)
    assert wire.check_integrity(response, client.key)
    assert h.relayed_address(response) in h.relayed.values()
    raw = response.get(wire.LIFETIME)
    assert raw is not None and wire.decode_u32(raw) == 600
    assert h.core.allocation_count == 1


def test_wrong_secret_gets_401(h: Harness) -> None:
    username, password = mint_credentials(b"not-the-secret", "mallory", 3600, h.now)
    client = TurnClient(username, password)
    h.login(client)
    response = h.ask(client, client.allocate())
    assert error_code(response) == 401
    assert h.core.counters["refuse.bad_credentials"] == 1
    assert h.core.allocation_count == 0


def test_expired_credentials_get_401(h: Harness) -> None:
    username, password = mint_credentials(SECRET, "late", 60, h.now - 120)
    client = TurnClient(username, password)
    h.login(client)
    response = h.ask(client, client.allocate())
    assert error_code(response) == 401
    assert h.core.counters["refuse.expired_credentials"] == 1


def test_malformed_username_gets_401(h: Harness) -> None:
    client = TurnClient("no-expiry-here", "x")
    h.login(client)
    assert error_code(h.ask(client, client.allocate())) == 401


def test_stale_nonce_gets_438_and_a_fresh_nonce() -> None:
    h = Harness(RelayConfig())
    client = h.client()
    h.login(client)
    old = client.nonce
    h.advance(h.core.config.nonce_lifetime + 1)
    response = h.ask(client, client.allocate())
    assert error_code(response) == 438
    assert client.nonce != old
    assert h.ask(client, client.allocate()).cls == wire.SUCCESS


def test_forged_nonce_gets_438(h: Harness) -> None:
    client = h.client()
    client.nonce = b"ffffffff.forged"
    assert error_code(h.ask(client, client.allocate())) == 438


def test_nonce_is_bound_to_the_client_address(h: Harness) -> None:
    client = h.client()
    h.login(client, CLIENT)
    assert error_code(h.ask(client, client.allocate(), CLIENT2)) == 438


def test_integrity_without_username_is_400(h: Harness) -> None:
    client = h.client()
    message = wire.serialize_stun(
        wire.ALLOCATE, wire.REQUEST, b"x" * 12, [(wire.REQUESTED_TRANSPORT, 17 << 24)], b"k" * 16
    )
    assert error_code(h.ask(client, message)) == 400


def test_other_username_on_the_allocation_gets_441(h: Harness) -> None:
    alice = h.client("alice")
    h.allocated(alice)
    bob = h.client("bob")
    bob.nonce = alice.nonce
    assert error_code(h.ask(bob, bob.refresh())) == 441


# --- credentials that expire under a live allocation ---------------------------
# draft-uberti-behave-turn-rest-00 section 4.2: the timestamp is checked on
# Allocate; other requests only need the allocation's own username (RFC 8656
# section 5), as coturn does (the key cached at the session's first request).


def expired_after_allocating(h: Harness, ttl: float = 60.0) -> TurnClient:
    """A client whose credentials expire `ttl` s after it allocated; the clock is past that."""
    client = h.client(ttl=ttl)
    h.allocated(client, lifetime=3600)
    h.advance(ttl + 1)
    return client


def test_requests_on_an_allocation_outlive_its_credentials(h: Harness) -> None:
    client = expired_after_allocating(h)
    socket = h.socket_of()
    response = h.ask(client, client.refresh(600))
    assert response.cls == wire.SUCCESS, error_code(response)
    assert wire.check_integrity(response, client.key)
    raw = response.get(wire.LIFETIME)
    assert raw is not None and wire.decode_u32(raw) == 600
    permitted(h, client, PEER2)
    bound(h, client, 0x4000, PEER)
    assert h.feed(client.send(PEER2, b"indication")) == [(b"indication", PEER2, socket)]
    assert h.feed(wire.serialize_channel_data(0x4000, b"channel")) == [(b"channel", PEER, socket)]
    assert h.core.counters["refuse.expired_credentials"] == 0
    # Still alive an hour past the expiry while refreshed, and deletable by its holder.
    for _ in range(6):
        h.advance(590)
        assert h.ask(client, client.refresh(600)).cls == wire.SUCCESS
    assert h.ask(client, client.refresh(0)).cls == wire.SUCCESS
    assert h.core.allocation_count == 0


def test_expired_username_cannot_allocate(h: Harness) -> None:
    client = expired_after_allocating(h)
    other = ("198.51.100.22", 40002)
    elsewhere = TurnClient(client.username, client.password)  # the same credentials
    h.login(elsewhere, other)
    response = h.ask(elsewhere, elsewhere.allocate(), other)
    assert error_code(response) == 401
    assert response.get(wire.REALM) == b"pagemesh" and response.get(wire.NONCE)
    assert h.core.counters["refuse.expired_credentials"] == 1
    # Nor on its own 5-tuple once the allocation is gone.
    assert h.ask(client, client.refresh(0)).cls == wire.SUCCESS
    assert error_code(h.ask(client, client.allocate())) == 401
    assert h.core.counters["refuse.expired_credentials"] == 2
    assert h.core.allocation_count == 0


def test_other_username_on_an_expired_allocation_gets_441_or_401(h: Harness) -> None:
    alice = expired_after_allocating(h)
    bob = h.client("bob")
    bob.nonce = alice.nonce
    assert error_code(h.ask(bob, bob.refresh())) == 441
    assert error_code(h.ask(bob, bob.channel_bind(0x4000, PEER))) == 441
    # Another username must pass authentication on its own, expiry included.
    late = h.client("alice", ttl=10)
    late.nonce = alice.nonce
    h.advance(11)
    assert error_code(h.ask(late, late.refresh())) == 401
    assert h.core.counters["refuse.wrong_credentials"] == 2
    assert h.core.counters["refuse.expired_credentials"] == 1


def test_allocation_username_with_a_wrong_password_gets_401(h: Harness) -> None:
    alice = expired_after_allocating(h)
    forger = TurnClient(alice.username, "guessed")
    forger.nonce = alice.nonce
    response = h.ask(forger, forger.refresh())
    assert error_code(response) == 401
    assert not wire.check_integrity(response, alice.key)
    assert h.core.counters["refuse.bad_credentials"] == 1
    unsigned = alice.request(wire.REFRESH, sign=False)
    assert error_code(h.ask(alice, unsigned)) == 401


def test_stale_nonce_still_gets_438_after_the_credentials_expired() -> None:
    h = Harness(RelayConfig())  # nonces last 600 s
    client = expired_after_allocating(h, ttl=60)
    h.advance(600)
    assert error_code(h.ask(client, client.refresh(3600))) == 438
    response = h.ask(client, client.refresh(3600))
    assert response.cls == wire.SUCCESS, error_code(response)


def test_refresh_after_expiry_keeps_the_lifetime_cap(h: Harness) -> None:
    client = expired_after_allocating(h)
    raw = h.ask(client, client.refresh(86400)).get(wire.LIFETIME)
    assert raw is not None and wire.decode_u32(raw) == 3600


def test_allocation_ends_max_past_expiry_after_its_credentials() -> None:
    h = Harness(RelayConfig(nonce_lifetime=86400.0, max_past_expiry=5000.0))
    client = h.client(ttl=100)  # expires at T0 + 100: the allocation ends by T0 + 5100
    h.allocated(client, lifetime=3600)

    def refreshed() -> int:
        response = h.ask(client, client.refresh(3600))
        assert response.cls == wire.SUCCESS, error_code(response)
        raw = response.get(wire.LIFETIME)
        assert raw is not None
        return wire.decode_u32(raw)

    assert refreshed() == 3600
    h.advance(3599)
    assert refreshed() == 1501  # up to the cap, not a full hour
    h.advance(1500)
    assert refreshed() == 1
    h.advance(0.5)
    assert h.core.allocation_count == 1
    h.advance(1)
    assert h.core.allocation_count == 0
    assert h.core.counters["allocations.expired"] == 1


def test_max_past_expiry_zero_ends_allocations_with_their_credentials() -> None:
    h = Harness(RelayConfig(nonce_lifetime=86400.0, max_past_expiry=0.0))
    client = h.client(ttl=100)
    raw = h.allocated(client, lifetime=3600).get(wire.LIFETIME)
    assert raw is not None and wire.decode_u32(raw) == 100
    h.now += 101  # a Refresh that arrives before the relay's timer has run
    assert error_code(h.ask(client, client.refresh(3600))) == 437
    assert h.core.allocation_count == 0
    assert h.core.counters["allocations.expired"] == 1


# --- Allocate rules ----------------------------------------------------------


def test_allocate_retransmission_gets_the_same_answer(h: Harness) -> None:
    client = h.client()
    h.login(client)
    tid = client.tid()
    first = h.feed(client.allocate(tid=tid))
    again = h.feed(client.allocate(tid=tid))
    assert first[0][0] == again[0][0]
    assert h.core.allocation_count == 1


def test_second_allocate_on_the_same_5_tuple_is_437(h: Harness) -> None:
    client = h.client()
    h.allocated(client)
    assert error_code(h.ask(client, client.allocate())) == 437


def test_requested_lifetime_of_a_day_is_granted_at_the_cap(h: Harness) -> None:
    client = h.client()
    response = h.allocated(client, lifetime=86400)
    raw = response.get(wire.LIFETIME)
    assert raw is not None and wire.decode_u32(raw) == 3600
    h.advance(3599)
    assert h.core.allocation_count == 1
    h.advance(2)
    assert h.core.allocation_count == 0
    assert h.closed == list(h.relayed)


def test_short_requested_lifetime_gets_the_default(h: Harness) -> None:
    response = h.allocated(h.client(), lifetime=30)
    raw = response.get(wire.LIFETIME)
    assert raw is not None and wire.decode_u32(raw) == 600


def test_missing_requested_transport_is_400_and_tcp_is_442(h: Harness) -> None:
    client = h.client()
    h.login(client)
    assert error_code(h.ask(client, client.request(wire.ALLOCATE, []))) == 400
    tcp = client.request(wire.ALLOCATE, [(wire.REQUESTED_TRANSPORT, bytes([6, 0, 0, 0]))])
    assert error_code(h.ask(client, tcp)) == 442


def test_ipv6_relay_is_440_unless_configured(h: Harness) -> None:
    client = h.client()
    h.login(client)
    attrs = [
        (wire.REQUESTED_TRANSPORT, bytes([17, 0, 0, 0])),
        (wire.REQUESTED_ADDRESS_FAMILY, bytes([2, 0, 0, 0])),
    ]
    assert error_code(h.ask(client, client.request(wire.ALLOCATE, attrs))) == 440


def test_unknown_comprehension_required_attribute_is_420(h: Harness) -> None:
    client = h.client()
    h.login(client)
    attrs = [(wire.REQUESTED_TRANSPORT, bytes([17, 0, 0, 0])), (0x7FFF, b"??")]
    response = h.ask(client, client.request(wire.ALLOCATE, attrs))
    assert error_code(response) == 420
    assert response.get(wire.UNKNOWN_ATTRIBUTES) == b"\x7f\xff"


def test_allocation_quota_per_user_plus_one_is_486(h: Harness) -> None:
    limit = h.core.config.max_allocations_per_user
    for i in range(limit):
        h.allocated(h.client("alice"), ("198.51.100.30", 41000 + i))
    client = h.client("alice")
    h.login(client, ("198.51.100.30", 42000))
    assert error_code(h.ask(client, client.allocate(), ("198.51.100.30", 42000))) == 486
    # Another user is not affected, and a freed slot is usable again.
    h.allocated(h.client("bob"), ("198.51.100.31", 41000))
    first = TurnClient(*mint_credentials(SECRET, "alice", 3600, h.now))
    h.login(first, ("198.51.100.30", 41000))
    assert h.ask(first, first.refresh(0), ("198.51.100.30", 41000)).cls == wire.SUCCESS
    assert h.ask(client, client.allocate(), ("198.51.100.30", 42000)).cls == wire.SUCCESS


def test_many_keys_from_one_address_cannot_take_every_allocation() -> None:
    """A stranger mints credentials for as many keys as it likes (one signaling hello
    each): the per-user quota alone lets one address hold every allocation. Per source
    (an IPv4 address, or an IPv6 /64) there is a cap of its own."""
    h = Harness(RelayConfig(max_allocations=100, max_allocations_per_source=4))
    for i in range(4):
        h.allocated(h.client(f"key{i}"), ("198.51.100.50", 1000 + i))
    client = h.client("key-fresh")
    h.login(client, ("198.51.100.50", 2000))
    assert error_code(h.ask(client, client.allocate(), ("198.51.100.50", 2000))) == 486
    assert h.core.counters["refuse.quota_source"] == 1
    # Another address is not affected; the same /64 is one source.
    h.allocated(h.client("other"), ("198.51.100.51", 1000))
    for i in range(4):
        h.allocated(h.client(f"v6-{i}"), (f"2001:db8:1:2::{i + 1}", 1000))
    client6 = h.client("v6-fresh")
    h.login(client6, ("2001:db8:1:2:ffff::9", 1000))
    assert error_code(h.ask(client6, client6.allocate(), ("2001:db8:1:2:ffff::9", 1000))) == 486
    # A freed allocation gives the source its slot back.
    first = TurnClient(*mint_credentials(SECRET, "key0", 3600, h.now))
    h.login(first, ("198.51.100.50", 1000))
    assert h.ask(first, first.refresh(0), ("198.51.100.50", 1000)).cls == wire.SUCCESS
    assert h.ask(client, client.allocate(), ("198.51.100.50", 2000)).cls == wire.SUCCESS


def test_total_allocation_quota_is_508() -> None:
    h = Harness(RelayConfig(max_allocations=2))
    h.allocated(h.client("a"), ("198.51.100.40", 1))
    h.allocated(h.client("b"), ("198.51.100.40", 2))
    client = h.client("c")
    h.login(client, ("198.51.100.40", 3))
    assert error_code(h.ask(client, client.allocate(), ("198.51.100.40", 3))) == 508
    assert h.core.counters["refuse.quota_total"] == 1


def test_relay_socket_failure_is_508() -> None:
    h = Harness()
    client = h.client()
    h.login(client)
    h.core.receive(client.allocate(), CLIENT, h.now)
    event = h.core.next_event()
    assert event is not None
    h.core.relay_failed(event.socket, h.now)
    (out,) = h.core.datagrams_to_send(h.now)
    assert error_code(wire.parse_stun(out[0])) == 508
    assert h.core.allocation_for(CLIENT) is None


def test_pending_allocation_times_out() -> None:
    h = Harness()
    client = h.client()
    h.login(client)
    h.core.receive(client.allocate(), CLIENT, h.now)
    event = h.core.next_event()
    assert event is not None
    h.now += 11
    h.core.handle_timer(h.now)
    (out,) = h.core.datagrams_to_send(h.now)
    assert error_code(wire.parse_stun(out[0])) == 508
    assert not h.core.relay_opened(event.socket, ("192.0.2.1", 1), h.now)


# --- Refresh -----------------------------------------------------------------


def test_refresh_extends_and_zero_deletes(h: Harness) -> None:
    client = h.client()
    h.allocated(client)
    h.advance(500)
    response = h.ask(client, client.refresh(1000))
    raw = response.get(wire.LIFETIME)
    assert raw is not None and wire.decode_u32(raw) == 1000
    h.advance(900)
    assert h.core.allocation_count == 1
    response = h.ask(client, client.refresh(0))
    assert response.cls == wire.SUCCESS
    assert h.core.allocation_count == 0
    assert len(h.closed) == 1
    assert error_code(h.ask(client, client.refresh())) == 437


def test_refresh_above_the_cap_gets_the_cap(h: Harness) -> None:
    client = h.client()
    h.allocated(client)
    raw = h.ask(client, client.refresh(86400)).get(wire.LIFETIME)
    assert raw is not None and wire.decode_u32(raw) == 3600


def test_allocation_expires_without_refresh(h: Harness) -> None:
    client = h.client()
    h.allocated(client)
    h.advance(599)
    assert h.core.allocation_count == 1
    h.advance(2)
    assert h.core.allocation_count == 0
    assert h.core.counters["allocations.expired"] == 1


# --- permissions and relaying ---------------------------------------------------


def test_send_and_data_indications_through_a_permission(h: Harness) -> None:
    client = h.client()
    h.allocated(client)
    socket = h.socket_of()
    assert h.feed(client.send(PEER, b"early")) == []
    assert h.core.counters["drop.no_permission"] == 1
    permitted(h, client)
    assert h.feed(client.send(PEER, b"hello")) == [(b"hello", PEER, socket)]
    (out,) = h.feed(b"answer", PEER, socket)
    data, addr, via = out
    assert (addr, via) == (CLIENT, 0)
    message = wire.parse_stun(data)
    assert (message.method, message.cls) == (wire.DATA, wire.INDICATION)
    assert message.get(wire.DATA_ATTR) == b"answer"
    raw = message.get(wire.XOR_PEER_ADDRESS)
    assert raw is not None and wire.decode_xor_address(raw, message.transaction_id) == PEER
    # The permission is per IP address: any port of the peer may answer.
    assert len(h.feed(b"other port", (PEER[0], 9999), socket)) == 1
    assert h.feed(b"stranger", PEER2, socket) == []


def test_permission_expires_after_300_s_and_refreshes(h: Harness) -> None:
    client = h.client()
    h.allocated(client, lifetime=3600)
    socket = h.socket_of()
    permitted(h, client)
    h.advance(200)
    permitted(h, client)  # refresh
    h.advance(250)
    assert len(h.feed(b"still", PEER, socket)) == 1
    h.advance(51)
    assert h.feed(b"late", PEER, socket) == []
    assert h.feed(client.send(PEER, b"late")) == []
    assert h.core.allocation_for(CLIENT).permissions == {}  # type: ignore[union-attr]


def test_create_permission_with_several_peers_is_atomic(h: Harness) -> None:
    client = h.client()
    h.allocated(client)
    response = h.ask(client, client.create_permission(PEER, ("10.0.0.1", 1)))
    assert error_code(response) == 403
    assert h.core.allocation_for(CLIENT).permissions == {}  # type: ignore[union-attr]
    permitted(h, client, PEER, PEER2)
    assert set(h.core.allocation_for(CLIENT).permissions) == {PEER[0], PEER2[0]}  # type: ignore[union-attr]


def test_permission_quota_is_508() -> None:
    h = Harness(RelayConfig(max_permissions=2))
    client = h.client()
    h.allocated(client)
    permitted(h, client, PEER, PEER2)
    permitted(h, client, PEER)  # a refresh is not a new one
    assert error_code(h.ask(client, client.create_permission(("93.184.216.99", 1)))) == 508


def test_create_permission_without_allocation_is_437(h: Harness) -> None:
    client = h.client()
    h.login(client)
    assert error_code(h.ask(client, client.create_permission(PEER))) == 437


def test_create_permission_without_peer_is_400(h: Harness) -> None:
    client = h.client()
    h.allocated(client)
    assert error_code(h.ask(client, client.request(wire.CREATE_PERMISSION, []))) == 400


def test_ipv6_peer_on_ipv4_allocation_is_443(h: Harness) -> None:
    client = h.client()
    h.allocated(client)
    response = h.ask(client, client.create_permission(("2606:4700::1111", 1)))
    assert error_code(response) == 443


REFUSED_PEERS = [
    "127.0.0.1",
    "0.0.0.0",
    "::1",
    "::",
    "10.0.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "::ffff:127.0.0.1",
    "64:ff9b::7f00:1",
    "fe80::1",
    "100.64.0.1",
    "172.16.5.4",
    "224.0.0.1",
    "255.255.255.255",
    "192.0.2.1",
    "198.18.0.1",
    "fc00::1",
    "ff02::1",
    "2001:db8::1",
]


@pytest.mark.parametrize("host", REFUSED_PEERS)
def test_special_purpose_peers_are_refused_and_nothing_is_sent(host: str) -> None:
    family = wire.FAMILY_IPV6 if ":" in host else wire.FAMILY_IPV4
    h = Harness(RelayConfig(families=(wire.FAMILY_IPV4, wire.FAMILY_IPV6)))
    client = h.client()
    h.login(client)
    attrs = [
        (wire.REQUESTED_TRANSPORT, bytes([17, 0, 0, 0])),
        (wire.REQUESTED_ADDRESS_FAMILY, bytes([family, 0, 0, 0])),
    ]
    assert h.ask(client, client.request(wire.ALLOCATE, attrs)).cls == wire.SUCCESS
    peer = (host, 5000)
    assert error_code(h.ask(client, client.create_permission(peer))) == 403
    assert error_code(h.ask(client, client.channel_bind(0x4000, peer))) == 403
    assert h.feed(client.send(peer, b"x")) == []
    assert h.core.counters["drop.peer_refused"] == 1
    assert h.core.counters["refuse.peer_address"] == 2
    assert h.core.counters["relayed.packets.to_peer"] == 0


def test_allow_list_opens_loopback() -> None:
    h = Harness(RelayConfig(allow_peers=("127.0.0.1/32",)))
    client = h.client()
    h.allocated(client)
    permitted(h, client, ("127.0.0.1", 3480))
    assert error_code(h.ask(client, client.create_permission(("127.0.0.2", 1)))) == 403


# --- channels ------------------------------------------------------------------


def test_channel_data_both_ways(h: Harness) -> None:
    client = h.client()
    h.allocated(client)
    socket = h.socket_of()
    bound(h, client)
    assert h.feed(wire.serialize_channel_data(0x4000, b"up")) == [(b"up", PEER, socket)]
    assert h.feed(b"down", PEER, socket) == [(b"\x40\x00\x00\x04down", CLIENT, 0)]
    assert h.feed(wire.serialize_channel_data(0x4001, b"x")) == []
    assert h.core.counters["drop.no_channel"] == 1
    assert h.core.counters["relayed.bytes.to_peer"] == 2


def test_channel_data_padding_over_udp_is_ignored(h: Harness) -> None:
    client = h.client()
    h.allocated(client)
    bound(h, client)
    out = h.feed(b"\x40\x00\x00\x01z\x00\x00\x00")
    assert out[0][0] == b"z"


def test_truncated_channel_data_is_dropped(h: Harness) -> None:
    client = h.client()
    h.allocated(client)
    bound(h, client)
    assert h.feed(b"\x40\x00\x00\x09abc") == []
    assert h.core.counters["drop.truncated"] == 1


def test_channel_rebinding_rules(h: Harness) -> None:
    client = h.client()
    h.allocated(client, lifetime=3600)
    bound(h, client, 0x4000, PEER)
    # The same pair refreshes; the number to another peer, or the peer to another number, is 400.
    bound(h, client, 0x4000, PEER)
    assert error_code(h.ask(client, client.channel_bind(0x4000, PEER2))) == 400
    assert error_code(h.ask(client, client.channel_bind(0x4001, PEER))) == 400
    assert error_code(h.ask(client, client.channel_bind(0x3FFF, PEER2))) == 400
    assert error_code(h.ask(client, client.channel_bind(0x8000, PEER2))) == 400
    bound(h, client, 0x4001, PEER2)


def test_channel_expires_then_stays_reserved_for_300_s(h: Harness) -> None:
    client = h.client()
    h.allocated(client, lifetime=3600)
    socket = h.socket_of()
    bound(h, client, 0x4000, PEER)
    h.advance(290)
    permitted(h, client)  # keep the permission alive; the channel is not refreshed
    h.advance(290)
    permitted(h, client)
    h.advance(21)  # 601 s: the channel has expired
    assert h.feed(wire.serialize_channel_data(0x4000, b"x")) == []
    (out,) = h.feed(b"down", PEER, socket)
    assert wire.parse_stun(out[0]).method == wire.DATA  # a Data indication, not ChannelData
    assert error_code(h.ask(client, client.channel_bind(0x4000, PEER2))) == 400
    h.advance(300)
    bound(h, client, 0x4000, PEER2)


def test_channel_rebound_to_its_peer_during_cooldown(h: Harness) -> None:
    client = h.client()
    h.allocated(client, lifetime=3600)
    bound(h, client, 0x4000, PEER)
    h.advance(650)
    bound(h, client, 0x4000, PEER)
    assert len(h.feed(wire.serialize_channel_data(0x4000, b"again"))) == 1


def test_bound_channel_relays_past_the_permission_lifetime(h: Harness) -> None:
    # aioice 0.13 never sends CreatePermission and rebinds its channels every
    # 500 s; its link must not go dark between 300 s and 500 s after a bind.
    client = h.client()
    h.allocated(client, lifetime=3600)
    socket = h.socket_of()
    bound(h, client, 0x4000, PEER)
    up = wire.serialize_channel_data(0x4000, b"up")
    start = h.now
    for at in (301, 400, 499):
        h.advance(start + at - h.now)
        assert h.feed(up) == [(b"up", PEER, socket)], at
        assert h.feed(b"down", PEER, socket) == [(b"\x40\x00\x00\x04down", CLIENT, 0)], at
        assert h.feed(client.send(PEER, b"send")) == [(b"send", PEER, socket)], at
    # The binding covers its own peer address, not the rest of that host.
    other_port = (PEER[0], PEER[1] + 1)
    assert h.feed(b"other port", other_port, socket) == []
    assert h.feed(client.send(other_port, b"x")) == []
    assert h.core.counters["drop.no_permission"] == 2
    bound(h, client, 0x4000, PEER)  # aioice rebinds after 500 s, on its next send
    h.advance(599)
    assert len(h.feed(up)) == 1 and len(h.feed(b"down", PEER, socket)) == 1
    h.advance(2)  # the binding has expired, and with it the permission it gave
    assert h.feed(up) == []
    assert h.feed(b"down", PEER, socket) == []


def test_channel_bind_installs_a_permission(h: Harness) -> None:
    client = h.client()
    h.allocated(client)
    bound(h, client)
    assert len(h.feed(client.send(PEER, b"via send"))) == 1


def test_channel_quota_is_508() -> None:
    h = Harness(RelayConfig(max_channels=1))
    client = h.client()
    h.allocated(client)
    bound(h, client, 0x4000, PEER)
    assert error_code(h.ask(client, client.channel_bind(0x4001, PEER2))) == 508


# --- bandwidth -----------------------------------------------------------------


def test_bandwidth_is_enforced_per_allocation() -> None:
    config = RelayConfig(bandwidth_bps=800_000, bandwidth_burst=0.1)  # 100 kB/s, 64 KiB bucket
    h = Harness(config)
    client = h.client()
    h.allocated(client)
    bound(h, client)
    packet = wire.serialize_channel_data(0x4000, bytes(1000))
    sent = sum(len(h.feed(packet)) for _ in range(200))
    assert sent == 65  # the bucket's depth
    assert h.core.counters["drop.bandwidth"] == 135
    h.advance(0.5)  # 50 kB of new tokens
    sent = sum(len(h.feed(packet)) for _ in range(200))
    assert sent == 50


def test_zero_bandwidth_means_unlimited() -> None:
    h = Harness(dataclasses.replace(RelayConfig(), bandwidth_bps=0))
    client = h.client()
    h.allocated(client)
    bound(h, client)
    packet = wire.serialize_channel_data(0x4000, bytes(1200))
    assert sum(len(h.feed(packet)) for _ in range(1000)) == 1000


# --- sockets -------------------------------------------------------------------


def test_tcp_endpoint_pads_channel_data_and_close_deletes(h: Harness) -> None:
    endpoint = h.core.open_endpoint(stream=True)
    client = h.client()
    response = h.ask(client, client.allocate(), CLIENT, endpoint)
    assert error_code(response) == 401
    assert h.ask(client, client.allocate(), CLIENT, endpoint).cls == wire.SUCCESS
    assert h.ask(client, client.channel_bind(0x4000, PEER), CLIENT, endpoint).cls == wire.SUCCESS
    socket = h.core.allocation_for(CLIENT, endpoint).socket  # type: ignore[union-attr]
    assert h.feed(b"abcde", PEER, socket) == [
        (b"\x40\x00\x00\x05abcde\x00\x00\x00", CLIENT, endpoint)
    ]
    h.core.close_endpoint(endpoint, h.now)
    h.drain()
    assert h.core.allocation_count == 0
    assert h.closed == [socket]


def test_unknown_socket_and_junk_are_counted(h: Harness) -> None:
    h.core.receive(b"\x00" * 20, CLIENT, h.now, socket=999)
    h.core.receive(b"", CLIENT, h.now)
    h.core.receive(b"\xff\xff", CLIENT, h.now)
    h.core.receive(b"\x00\x01\x00\x00", CLIENT, h.now)
    assert h.core.datagrams_to_send(h.now) == []
    assert h.core.counters["drop.unknown_socket"] == 1
    assert h.core.counters["drop.malformed"] == 1
    assert h.core.counters["drop.truncated"] == 2


def test_timers_stay_bounded_under_churn(h: Harness) -> None:
    client = h.client()
    h.login(client)
    for _ in range(300):
        assert h.ask(client, client.allocate()).cls == wire.SUCCESS
        assert h.ask(client, client.create_permission(PEER)).cls == wire.SUCCESS
        assert h.ask(client, client.refresh(0)).cls == wire.SUCCESS
        h.advance(1)
    assert len(h.core._timers) < 2000
    h.advance(4000)
    assert h.core.get_timer() is None
