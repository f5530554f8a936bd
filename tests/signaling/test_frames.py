"""The typed frames of signaling/protocol.py: every codec parses any input into a frame
or a FrameError (nothing else escapes), and every frame survives serialise -> parse."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dht.records import Record
from signaling.protocol import (
    CLIENT,
    HANDSHAKE,
    LINK,
    MAX_LINK_FRAME,
    SERVER,
    Codec,
    ErrorCode,
    FrameError,
    IceServer,
    Joined,
    LinkSignal,
    Member,
    Moving,
    Welcome,
    encoded_size,
    parse_server_frame,
    serialize,
)

CODECS = [CLIENT, SERVER, LINK, HANDSHAKE]

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def frame_like(codec: Codec) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with one of the codec's types and fields of any JSON value."""
    return st.builds(
        lambda kind, fields: {"type": kind, **fields},
        st.sampled_from(codec.types()),
        st.dictionaries(
            st.sampled_from(
                [
                    "room",
                    "key",
                    "sig",
                    "to",
                    "from",
                    "payload",
                    "id",
                    "layer",
                    "members",
                    "nodes",
                    "url",
                    "record",
                    "presence",
                    "nonce",
                    "node",
                    "seq",
                    "expires",
                    "value",
                    "code",
                    "message",
                    "servers",
                    "ice_servers",
                    "total",
                    "idle",
                    "dht_port",
                    "version",
                    "peer",
                    "name",
                ]
            ),
            JSON,
            max_size=8,
        ),
    )


def parses_or_refuses(codec: Codec, text: str | bytes) -> None:
    try:
        frame = codec.parse(text, 65536)
    except FrameError as exc:
        assert isinstance(exc.code, ErrorCode) and exc.message
        return
    again = codec.parse(serialize(frame), 1 << 20)
    assert again == frame


@settings(max_examples=300)
@given(codec=st.sampled_from(CODECS), text=st.text(max_size=300) | st.binary(max_size=300))
def test_any_text_is_a_frame_or_a_frame_error(codec: Codec, text: str | bytes) -> None:
    parses_or_refuses(codec, text)


@settings(max_examples=600)
@given(data=st.data())
def test_any_object_of_a_known_type_is_a_frame_or_a_frame_error(data: st.DataObject) -> None:
    codec = data.draw(st.sampled_from(CODECS))
    parses_or_refuses(codec, json.dumps(data.draw(frame_like(codec))))


def test_deep_nesting_and_oversize_are_frame_errors() -> None:
    cases = [
        ("[" * 200_000, 1 << 20, ErrorCode.BAD_JSON),  # RecursionError inside json.loads
        ("[" * 200_000, 65536, ErrorCode.TOO_LARGE),
        # Deeper than any Python's json recursion limit (3.13 parses 5000 levels; 3.11 not).
        ('{"type":"ping","id":' + "[" * 100_000 + "]" * 100_000 + "}", 1 << 20, ErrorCode.BAD_JSON),
    ]
    for codec in CODECS:
        for text, limit, code in cases:
            try:
                codec.parse(text, limit)
            except FrameError as exc:
                assert exc.code is code, (codec.name, code)
            else:
                raise AssertionError(f"{codec.name} took {text[:20]}...")


def test_sizes_are_counted_in_utf8_bytes() -> None:
    assert encoded_size("é" * 100, 300) == 200  # may be over: measured
    assert encoded_size("é" * 100, 100_000) == 100  # short: cannot be over, not encoded
    assert encoded_size(b"\xc3\xa9" * 10, 10) == 20
    frame = json.dumps({"type": "ping", "id": "é" * 20}, ensure_ascii=False)
    assert len(frame) == 46 and len(frame.encode()) == 66
    try:
        CLIENT.parse(frame, 64)
    except FrameError as exc:
        assert exc.code is ErrorCode.TOO_LARGE
    else:
        raise AssertionError("46 characters of a 66-byte frame passed a 64-byte limit")


def test_non_ascii_travels_as_utf8() -> None:
    assert serialize(Welcome(b"\x01" * 32, "ws://127.0.0.1:1", (), 60.0)).isascii()
    record = Record(bytes(20), b"\x02" * 32, 1, 2, b"v", b"\x03" * 64)
    link = serialize(LinkSignal(b"\x01" * 32, b"\x02" * 32, "é" * 1000, record))
    assert "é" * 1000 in link and len(link.encode()) < MAX_LINK_FRAME


def test_server_frames_round_trip_with_their_values() -> None:
    frame = Joined(
        bytes(20),
        3,
        (Member(b"\x01" * 32, b"\x02" * 20, "wss://node.example/pm"),),
        7,
        (IceServer(("stun:h:3478",)), IceServer(("turn:h:3478",), "1700000000:ab", "pw")),
        "j1",
    )
    assert parse_server_frame(serialize(frame)) == frame
    assert frame.ice_servers[1].expires_at == 1_700_000_000
    assert frame.ice_servers[0].expires_at is None


def test_node_lists_are_deduplicated_and_urls_checked() -> None:
    moving = parse_server_frame('{"type":"moving","nodes":["ws://a:1","ws://a:1","ws://b:2"]}')
    assert moving == Moving(("ws://a:1", "ws://b:2"))
    for bad in ("http://a:1", "ws://u:p@a:1", "ws://a:1?x", "ws://a b:1"):
        try:
            parse_server_frame(json.dumps({"type": "moving", "nodes": [bad]}))
        except FrameError as exc:
            assert exc.code is ErrorCode.BAD_FIELD
        else:
            raise AssertionError(bad)
