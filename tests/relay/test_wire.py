"""The Send/Data indication path's own codecs agree with the generic ones (and aioice's)."""

from __future__ import annotations

import ipaddress

from aioice import stun
from hypothesis import given
from hypothesis import strategies as st

from relay import wire
from relay.core import RelayConfig

from .turn import PEER, Harness

ports = st.integers(0, 0xFFFF)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
transaction_ids = st.binary(min_size=12, max_size=12)


@given(st.binary(min_size=6, max_size=6), transaction_ids)
def test_ipv4_xor_addresses_decode_as_aioice_does(rest: bytes, transaction_id: bytes) -> None:
    value = b"\x00\x01" + rest
    assert wire.decode_xor_address(value, transaction_id) == stun.unpack_xor_address(
        value, transaction_id
    )


@given(st.one_of(ipv4, ipv6), ports, transaction_ids)
def test_xor_addresses_round_trip(host: str, port: int, transaction_id: bytes) -> None:
    packed = stun.pack_xor_address((host, port), transaction_id)
    decoded = wire.decode_xor_address(packed, transaction_id)
    assert decoded == (str(ipaddress.ip_address(host)), port)


@given(st.one_of(ipv4, ipv6), ports, st.binary(max_size=70), transaction_ids)
def test_data_indications_are_what_the_generic_serializer_makes(
    host: str, port: int, payload: bytes, transaction_id: bytes
) -> None:
    peer = (host, port)
    expected = wire.serialize_stun(
        wire.DATA,
        wire.INDICATION,
        transaction_id,
        [(wire.XOR_PEER_ADDRESS, peer), (wire.DATA_ATTR, payload)],
    )
    assert wire.data_indication(peer, payload, transaction_id) == expected


@given(st.lists(st.integers(0, 0xFFFF), max_size=6))
def test_has_unknown_required_agrees_with_the_list(kinds: list[int]) -> None:
    attributes = tuple((kind, b"") for kind in kinds)
    message = wire.StunMessage(wire.SEND, wire.INDICATION, bytes(12), attributes)
    assert message.has_unknown_required() == bool(message.unknown_required())


def test_data_indications_get_distinct_transaction_ids() -> None:
    h = Harness(config=RelayConfig(nonce_lifetime=86400.0, bandwidth_bps=0))
    client = h.client()
    h.allocated(client)
    assert h.ask(client, client.create_permission(PEER)).cls == wire.SUCCESS
    socket = h.socket_of()
    ids = set()
    for _ in range(1000):  # past the first pool of random bytes
        (out,) = h.feed(b"data", PEER, socket)
        ids.add(wire.parse_stun(out[0]).transaction_id)
    assert len(ids) == 1000
