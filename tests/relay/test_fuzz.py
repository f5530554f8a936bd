"""Any bytes into the parser raise only WireError; any bytes into the core raise nothing."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import wire
from relay.core import RelayConfig

from .turn import CLIENT, PEER, Harness, TurnClient

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def valid_messages() -> list[bytes]:
    """One of each message a client sends, signed with a real nonce."""
    h = Harness()
    client = h.client()
    h.login(client)
    return [
        client.allocate(lifetime=600),
        client.refresh(0),
        client.create_permission(PEER, ("2606:4700::1", 7)),
        client.channel_bind(0x4000, PEER),
        client.send(PEER, b"payload"),
        client.request(wire.BINDING, sign=False),
        wire.serialize_channel_data(0x4000, b"chan", stream=True),
        client.request(
            wire.ALLOCATE,
            [(wire.REQUESTED_TRANSPORT, bytes([17, 0, 0, 0])), (wire.EVEN_PORT, b"\x80")],
        ),
    ]


VALID = valid_messages()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 6))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "length"]))
        if action == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            data = data[: draw(st.integers(0, len(data)))]
        elif action == "insert":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(max_size=12))
        elif action == "length" and len(data) >= 4:
            i = draw(st.sampled_from([2, 22, 26, 30, 34])) if len(data) > 34 else 2
            data[i : i + 2] = draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")
    return bytes(data)


inputs = st.one_of(st.binary(max_size=300), mutated())


@FUZZ
@given(inputs)
def test_parsers_raise_only_wire_error(data: bytes) -> None:
    with contextlib.suppress(wire.WireError):
        message = wire.parse_stun(data)
        for kind, value in message.attributes:
            with contextlib.suppress(wire.WireError):
                if kind in (wire.XOR_PEER_ADDRESS, wire.XOR_MAPPED_ADDRESS):
                    wire.decode_xor_address(value, message.transaction_id)
                elif kind == wire.LIFETIME:
                    wire.decode_u32(value)
                elif kind in (wire.USERNAME, wire.REALM):
                    wire.decode_text(value, 513)
    with contextlib.suppress(wire.WireError):
        wire.parse_channel_data(data)


@FUZZ
@given(st.lists(inputs, max_size=8), st.integers(1, 64))
def test_stream_framer_whole_and_byte_by_byte(chunks: list[bytes], step: int) -> None:
    stream = b"".join(chunks)
    whole: list[bytes] | None
    try:
        whole = wire.StreamFramer().feed(stream)
    except wire.WireError:
        whole = None
    framer = wire.StreamFramer()
    pieces: list[bytes] = []
    try:
        for i in range(0, len(stream), step):
            pieces += framer.feed(stream[i : i + step])
    except wire.WireError:
        assert whole is None or len(pieces) >= len(whole)
        return
    assert whole is not None and pieces == whole
    assert framer.buffered < wire.MAX_STUN_BYTES + wire.MAX_CHANNEL_DATA_BYTES


@FUZZ
@given(st.lists(st.tuples(inputs, st.sampled_from(["client", "peer", "tcp"])), max_size=12))
def test_core_never_raises(sequence: list[tuple[bytes, str]]) -> None:
    h = Harness(RelayConfig(allow_peers=("127.0.0.1/32",), nonce_lifetime=86400.0))
    tcp = h.core.open_endpoint(stream=True)
    client = h.client()
    h.allocated(client)
    assert h.ask(client, client.channel_bind(0x4000, PEER)).cls == wire.SUCCESS
    relay_socket = h.socket_of()
    for data, source in sequence:
        if source == "client":
            h.feed(data, CLIENT)
        elif source == "tcp":
            h.feed(data, CLIENT, tcp)
        else:
            h.feed(data, PEER, relay_socket)
        h.advance(7.0)
    # The core still works afterwards.
    fresh = TurnClient(client.username, client.password, seed=99)
    h.login(fresh, ("198.51.100.99", 1))
    assert h.ask(fresh, fresh.allocate(), ("198.51.100.99", 1)).cls == wire.SUCCESS
