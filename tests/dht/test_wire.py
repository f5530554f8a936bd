"""The DHT codec: round trips, precise errors, and fuzzing (any bytes -> message or WireError)."""

from __future__ import annotations

import contextlib
import random

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dht.core import DHTCore
from dht.identity import Identity
from dht.records import Record
from dht.wire import (
    MAX_DATAGRAM,
    FindNode,
    FindRecords,
    FindRecordsReply,
    FindValue,
    Identify,
    IdentifyReply,
    NodesReply,
    Ping,
    PingReply,
    Store,
    StoreRecords,
    StoreRecordsReply,
    StoreReply,
    Stun,
    StunReply,
    ValueReply,
    WireContact,
    WireError,
    parse_frame,
    parse_reply,
    parse_request,
    serialize_request,
    serialize_response,
)

ids = st.binary(min_size=20, max_size=20)
msg_ids = st.binary(min_size=20, max_size=20)
hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)
contacts = st.builds(WireContact, ids, hosts, st.integers(1, 65535))
plain_values = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.booleans(),
    st.floats(allow_nan=False),
    st.text(max_size=200),
    st.binary(max_size=200),
)
records = st.builds(
    Record,
    key=ids,
    publisher=st.binary(min_size=32, max_size=32),
    seq=st.integers(0, 2**63 - 1),
    expires_at=st.integers(0, 2**40),
    value=st.binary(max_size=200),
    signature=st.binary(min_size=64, max_size=64),
)
requests = st.one_of(
    st.builds(Ping, ids),
    st.just(Stun()),
    st.builds(Store, ids, ids, plain_values),
    st.builds(FindNode, ids, ids),
    st.builds(FindValue, ids, ids),
    st.builds(Identify, ids, st.binary(min_size=16, max_size=16)),
    st.builds(StoreRecords, ids, st.lists(records, max_size=4).map(tuple)),
    st.builds(FindRecords, ids, ids, st.one_of(st.just(b""), st.binary(min_size=32, max_size=32))),
)


@given(msg_ids, requests)
def test_requests_round_trip(msg_id: bytes, request: object) -> None:
    frame = parse_frame(serialize_request(msg_id, request))  # type: ignore[arg-type]
    assert frame.is_request and frame.msg_id == msg_id
    assert parse_request(frame.body) == request


def _reply_cases() -> st.SearchStrategy[tuple[object, object]]:
    return st.one_of(
        st.tuples(st.builds(Ping, ids), st.builds(PingReply, ids)),
        st.tuples(st.just(Stun()), st.builds(StunReply, hosts, st.integers(0, 65535))),
        st.tuples(st.builds(Store, ids, ids, st.just(1)), st.builds(StoreReply, st.booleans())),
        st.tuples(
            st.builds(FindNode, ids, ids),
            st.builds(NodesReply, st.lists(contacts, max_size=20).map(tuple)),
        ),
        st.tuples(st.builds(FindValue, ids, ids), st.builds(ValueReply, plain_values)),
        st.tuples(
            st.builds(Identify, ids, st.binary(min_size=16, max_size=16)),
            st.builds(
                IdentifyReply,
                st.binary(min_size=32, max_size=32),
                st.binary(min_size=64, max_size=64),
            ),
        ),
        st.tuples(
            st.builds(StoreRecords, ids, st.just(())),
            st.builds(StoreRecordsReply, st.lists(st.integers(0, 8), max_size=8).map(tuple)),
        ),
        st.tuples(
            st.builds(FindRecords, ids, ids, st.just(b"")),
            st.builds(
                FindRecordsReply,
                st.lists(contacts, max_size=5).map(tuple),
                st.lists(records, max_size=3).map(tuple),
                st.booleans(),
            ),
        ),
    )


@given(msg_ids, _reply_cases())
def test_replies_round_trip(msg_id: bytes, case: tuple[object, object]) -> None:
    request, reply = case
    frame = parse_frame(serialize_response(msg_id, reply))  # type: ignore[arg-type]
    assert not frame.is_request and frame.msg_id == msg_id
    assert parse_reply(request, frame.body) == reply  # type: ignore[arg-type]


@settings(max_examples=500)
@given(st.binary(max_size=2048))
def test_any_bytes_parse_or_raise_wire_error(data: bytes) -> None:
    try:
        frame = parse_frame(data)
    except WireError as exc:
        assert exc.reason
        return
    for request in (Ping(b"\0" * 20), FindNode(b"\0" * 20, b"\0" * 20), FindRecords(b"", b"", b"")):
        with contextlib.suppress(WireError):
            parse_reply(request, frame.body)
    with contextlib.suppress(WireError):
        parse_request(frame.body)


any_msgpack = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(),
        st.text(max_size=30),
        st.binary(max_size=70),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=8), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=40,
)


@settings(max_examples=500)
@given(
    st.sampled_from(
        [
            "ping",
            "stun",
            "store",
            "find_node",
            "find_value",
            "pm_identify",
            "pm_store",
            "pm_find_records",
            "nope",
        ]
    ),
    st.lists(any_msgpack, max_size=4),
)
def test_well_framed_nonsense_is_a_wire_error(name: str, args: list[object]) -> None:
    """Valid msgpack in the right frame, but arbitrary argument shapes."""
    body = msgpack.packb([name, args], use_bin_type=True)
    with contextlib.suppress(WireError):
        parse_request(parse_frame(b"\x00" + b"m" * 20 + body).body)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(msg_ids, requests, st.data())
def test_mutated_valid_datagrams_never_escape_as_other_errors(
    msg_id: bytes, request: object, data: st.DataObject
) -> None:
    raw = bytearray(serialize_request(msg_id, request))  # type: ignore[arg-type]
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if action == "flip" and raw:
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "cut":
            del raw[pos:]
        else:
            raw.insert(pos, data.draw(st.integers(0, 255)))
    with contextlib.suppress(WireError):
        parse_request(parse_frame(bytes(raw)).body)


@pytest.fixture(scope="module")
def core() -> DHTCore:
    return DHTCore(Identity.from_seed(b"f" * 32), random.Random(0), 1e9)


@settings(max_examples=500, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=1500), st.sampled_from([b"\x00", b"\x01", b""]))
def test_the_core_drops_and_counts_any_datagram(core: DHTCore, data: bytes, flag: bytes) -> None:
    before = sum(core.counters.values())
    core.receive(flag + data, ("192.0.2.1", 1), 1e9)
    core.datagrams_to_send(1e9)
    assert sum(core.counters.values()) > before  # answered (rpc.in.*) or dropped (drop.*)


@pytest.mark.parametrize(
    ("data", "reason", "message"),
    [
        (b"\x00" * 21, "short", "datagram of 21 bytes has no body"),
        (b"\x07" + b"m" * 20 + b"\x90", "bad_flag", "unknown flag byte 0x07"),
        (b"\x00" * (MAX_DATAGRAM + 1), "oversize", "exceeds 8192"),
        (b"\x00" + b"m" * 20 + b"\xc1", "msgpack", "undecodable body"),
    ],
)
def test_frame_errors_are_precise(data: bytes, reason: str, message: str) -> None:
    with pytest.raises(WireError, match=message) as info:
        parse_frame(data)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("body", "reason", "message"),
    [
        (["ping"], "shape", r"a request body is \[name, args\]"),
        (["teleport", []], "unknown_rpc", "unknown rpc 'teleport'"),
        (["ping", [b"x"]], "bad_field", "id must be 20 bytes"),
        (["find_node", [b"a" * 20]], "bad_arity", "find_node takes 2 arguments, got 1"),
        (["store", [b"a" * 20, b"k" * 20, [1]]], "bad_field", "must be int, float, bool"),
        (["store", [b"a" * 20, b"k" * 20, "x" * 1001]], "value_too_large", "at most 1000"),
        (["pm_find_records", [b"a" * 20, b"k" * 20, b"z"]], "bad_field", "after is empty"),
    ],
)
def test_request_errors_are_precise(body: object, reason: str, message: str) -> None:
    with pytest.raises(WireError, match=message) as info:
        parse_request(body)
    assert info.value.reason == reason


def test_contacts_must_carry_ip_literals() -> None:
    with pytest.raises(WireError, match="IP address"):
        parse_reply(FindNode(b"a" * 20, b"b" * 20), [[b"c" * 20, "example.org", 80]])
    with pytest.raises(WireError, match="port"):
        parse_reply(FindNode(b"a" * 20, b"b" * 20), [[b"c" * 20, "192.0.2.1", 0]])
