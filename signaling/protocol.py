"""The client API's wire format: JSON frames over one WebSocket at /v1/ws.

This module is the contract a client needs (docs/protocol.md, "Client API"):
the frames a client sends, parsed into typed messages by `parse_client_frame`;
the frames a node sends, built by `server_frame`; the hello and presence
signatures; and, re-exported from `signaling.rooms`, the room key derivation.
Python peers import only this module of the signaling package.

Every defect in a client frame raises `FrameError` with an `ErrorCode` and a
precise message; anything else escaping `parse_client_frame` is a bug (the
fuzz tests check that). Unknown fields are ignored, so newer clients can add
some; unknown frame types are an error.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from dht.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, verify_signature
from dht.ids import ID_BYTES
from dht.records import signed_payload

from .rooms import (
    MAX_LAYER,
    ROOM_KEY_BYTES,
    HomeNode,
    Presence,
    RoomError,
    Scope,
    canonical_url,
    layer_key,
    parse_presence,
    presence_value,
    room_key,
)

__all__ = [
    "MAX_LAYER",
    "PROTOCOL_VERSION",
    "ROOM_KEY_BYTES",
    "ErrorCode",
    "FrameError",
    "HomeNode",
    "Presence",
    "RoomError",
    "Scope",
    "canonical_url",
    "hello_message",
    "layer_key",
    "parse_client_frame",
    "parse_presence",
    "presence_payload",
    "presence_value",
    "room_key",
    "server_frame",
    "verify_signature",
]

PROTOCOL_VERSION = 1
NONCE_BYTES = 32
MAX_ID_LENGTH = 64
MAX_NAME_LENGTH = 64
HELLO_CONTEXT = b"pagemesh-hello/1\0"


class ErrorCode(StrEnum):
    """The `code` of an error frame. The values are on the wire."""

    BAD_JSON = "bad-json"
    BAD_FRAME = "bad-frame"
    UNKNOWN_TYPE = "unknown-type"
    BAD_FIELD = "bad-field"
    TOO_LARGE = "too-large"
    RATE_LIMITED = "rate-limited"
    NOT_AUTHENTICATED = "not-authenticated"
    BAD_SIGNATURE = "bad-signature"
    TOO_MANY_ROOMS = "too-many-rooms"
    TOO_MANY_PEERS = "too-many-peers"
    NOT_IN_ROOM = "not-in-room"
    UNKNOWN_PEER = "unknown-peer"
    UNAVAILABLE = "unavailable"
    IDLE = "idle"
    REPLACED = "replaced"
    ABUSE = "abuse"


class FrameError(ValueError):
    """A client frame that breaks the protocol; the node answers with an error frame."""

    def __init__(self, code: ErrorCode, message: str, ref: str | int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


# --- client frames ------------------------------------------------------------

RequestId = str | int | None


@dataclass(frozen=True, slots=True)
class Hello:
    key: bytes
    sig: bytes
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Join:
    room: bytes
    layer: int | None = None
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Signed:
    """The client's signature over a presence record the node asked it to sign."""

    id: str | int
    sig: bytes


@dataclass(frozen=True, slots=True)
class Leave:
    room: bytes
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Members:
    room: bytes
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Signal:
    to: bytes
    payload: Any
    room: bytes | None = None
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class IceServers:
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Ping:
    id: RequestId = None


ClientFrame = Hello | Join | Signed | Leave | Members | Signal | IceServers | Ping

# Field readers: each takes the raw JSON value and returns the typed one, or
# raises ValueError with the reason (turned into BAD_FIELD with the name).
Reader = Callable[[Any], Any]


def _hex(size: int) -> Reader:
    def read(value: Any) -> bytes:
        if not isinstance(value, str) or len(value) != 2 * size:
            raise ValueError(f"expected {2 * size} hex digits")
        return bytes.fromhex(value)

    return read


def _base64(size: int) -> Reader:
    def read(value: Any) -> bytes:
        if not isinstance(value, str) or len(value) > 4 * size:
            raise ValueError(f"expected base64 of {size} bytes")
        try:
            raw = base64.b64decode(value, validate=True)
        except binascii.Error:
            raise ValueError(f"expected base64 of {size} bytes") from None
        if len(raw) != size:
            raise ValueError(f"expected base64 of {size} bytes")
        return raw

    return read


def _request_id(value: Any) -> str | int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("expected a string or an integer")
    if isinstance(value, str) and len(value) > MAX_ID_LENGTH:
        raise ValueError(f"at most {MAX_ID_LENGTH} characters")
    if isinstance(value, int) and not 0 <= value < 2**53:
        raise ValueError("expected an integer in 0..2^53")
    return value


def _layer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LAYER:
        raise ValueError(f"expected an integer in 0..{MAX_LAYER}")
    return value


def _name(value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"expected a string of at most {MAX_NAME_LENGTH} characters")
    return value


def _payload(value: Any) -> Any:
    if not isinstance(value, dict | str):
        raise ValueError("expected an object or a string")
    return value


_ROOM = _hex(ROOM_KEY_BYTES)
_KEY = _hex(PUBLIC_KEY_BYTES)
_SIG = _base64(SIGNATURE_BYTES)

# type -> (message class, {field: (reader, required)})
FRAMES: dict[str, tuple[type, dict[str, tuple[Reader, bool]]]] = {
    "hello": (Hello, {"key": (_KEY, True), "sig": (_SIG, True), "name": (_name, False)}),
    "join": (Join, {"room": (_ROOM, True), "layer": (_layer, False), "id": (_request_id, False)}),
    "signed": (Signed, {"id": (_request_id, True), "sig": (_SIG, True)}),
    "leave": (Leave, {"room": (_ROOM, True), "id": (_request_id, False)}),
    "members": (Members, {"room": (_ROOM, True), "id": (_request_id, False)}),
    "signal": (
        Signal,
        {
            "to": (_KEY, True),
            "payload": (_payload, True),
            "room": (_ROOM, False),
            "id": (_request_id, False),
        },
    ),
    "ice-servers": (IceServers, {"id": (_request_id, False)}),
    "ping": (Ping, {"id": (_request_id, False)}),
}


def parse_client_frame(text: str | bytes, max_bytes: int) -> ClientFrame:
    """Parse one client frame, checking its size, JSON, type and every field."""
    if len(text) > max_bytes:
        raise FrameError(ErrorCode.TOO_LARGE, f"frame larger than {max_bytes} bytes")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise FrameError(ErrorCode.BAD_JSON, f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise FrameError(ErrorCode.BAD_FRAME, "a frame is a JSON object")
    ref = data.get("id")
    if isinstance(ref, bool) or not isinstance(ref, str | int) or len(str(ref)) > MAX_ID_LENGTH:
        ref = None
    kind = data.get("type")
    if not isinstance(kind, str):
        raise FrameError(ErrorCode.BAD_FRAME, "a frame has a string field 'type'", ref)
    spec = FRAMES.get(kind)
    if spec is None:
        raise FrameError(ErrorCode.UNKNOWN_TYPE, f"unknown frame type {kind[:40]!r}", ref)
    cls, fields = spec
    values = {}
    for name, (reader, required) in fields.items():
        if name not in data or data[name] is None:
            if required:
                raise FrameError(ErrorCode.BAD_FIELD, f"{kind}: missing field {name!r}", ref)
            continue
        try:
            values[name] = reader(data[name])
        except ValueError as exc:
            raise FrameError(ErrorCode.BAD_FIELD, f"{kind}.{name}: {exc}", ref) from None
    frame: ClientFrame = cls(**values)
    return frame


# --- node frames --------------------------------------------------------------


def server_frame(kind: str, **fields: Any) -> str:
    """A node-to-client frame as JSON text; bytes fields become hex."""
    body = {"type": kind}
    for name, value in fields.items():
        if value is None:
            continue
        body[name] = value.hex() if isinstance(value, bytes) else value
    return json.dumps(body, separators=(",", ":"))


def error_frame(code: ErrorCode, message: str, ref: RequestId = None) -> str:
    return server_frame("error", code=code.value, message=message, id=ref)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- what clients sign --------------------------------------------------------


def hello_message(nonce: bytes, node_id: bytes) -> bytes:
    """What a client signs to prove its key: the node's nonce bound to the node's id."""
    if len(nonce) != NONCE_BYTES or len(node_id) != ID_BYTES:
        raise ValueError("a hello binds a 32-byte nonce and a 20-byte node id")
    return HELLO_CONTEXT + nonce + node_id


def presence_payload(
    peer: bytes, room: bytes, layer: int, home: HomeNode, seq: int, expires_at: int
) -> bytes:
    """The bytes a client signs for its presence: a DHT record's signed payload."""
    return signed_payload(
        layer_key(room, layer), peer, seq, expires_at, presence_value(room, layer, home)
    )
