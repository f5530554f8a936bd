"""The signaling wire formats as data: every frame of `/v1/ws` and `/v1/node`.

This module is the contract a client or node needs (docs/protocol.md,
sections 3 and 4). Each frame is a frozen dataclass; a table maps its wire
`type` to the class and each field to a `Field` that reads (checks) and
writes the JSON value. Three codecs use the tables:

- `CLIENT` (client -> node on `/v1/ws`): `parse_client_frame` on the node,
  `serialize(frame)` in clients;
- `SERVER` (node -> client on `/v1/ws`): `serialize(frame)` on the node,
  `parse_server_frame` in clients;
- `LINK` (node <-> node on `/v1/node`, after the link handshake).

One parse and one serialise per direction. Every defect in a frame raises
`FrameError` with an `ErrorCode` and a precise message; anything else
escaping a parser is a bug (tests/signaling/test_frames.py fuzzes all three).
Unknown fields are ignored, so newer peers can add some; unknown frame types
are an error. It also holds what clients sign (hello, presence) and, from
`signaling.rooms`, the room key derivation, and the project's one rate rule
(`TokenBucket`, which peers apply to what members send them). Python peers
import only this module of the signaling package.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from dht.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, load_or_create_seed, verify_signature
from dht.ids import ID_BYTES
from dht.ratelimit import TokenBucket
from dht.records import MAX_EXPIRES_AT, MAX_SEQ, Record, signed_payload

from .rooms import (
    MAX_LAYER,
    ROOM_KEY_BYTES,
    HomeNode,
    Presence,
    RoomError,
    Scope,
    canonical_url,
    is_node_url,
    layer_key,
    parse_presence,
    presence_value,
    room_key,
)

__all__ = [
    "MAX_LAYER",
    "MIN_CLIENT_VERSION",
    "PROTOCOL_VERSION",
    "ROOM_KEY_BYTES",
    "ErrorCode",
    "FrameError",
    "HomeNode",
    "Presence",
    "Record",
    "RoomError",
    "Scope",
    "TokenBucket",
    "canonical_url",
    "hello_message",
    "is_node_url",
    "layer_key",
    "load_or_create_seed",
    "parse_client_frame",
    "parse_link_frame",
    "parse_presence",
    "parse_server_frame",
    "presence_payload",
    "presence_value",
    "room_key",
    "serialize",
    "signed_payload",
    "verify_signature",
]

PROTOCOL_VERSION = 2
"""The client API's version this code speaks (docs/protocol.md 3.1): the challenge's
`version`, the hello's and the welcome's `v`. Version 2 added `v` to hello and welcome."""
MIN_CLIENT_VERSION = 1
"""The oldest client a node can still serve; `SessionLimits.min_client_version` may ask more."""
UNVERSIONED = 1
"""The version of a hello without `v`: a client from before versions were announced."""
MAX_VERSION = 2**31 - 1
NONCE_BYTES = 32
MAX_ID_LENGTH = 64
MAX_NAME_LENGTH = 64
MAX_URL_LENGTH = 300
MAX_MESSAGE_LENGTH = 500
MAX_NODES = 32
"""Node URLs in a welcome or moving frame."""
MAX_MEMBERS = 4096
"""Members in one joined or members frame (a full layer is 24 by default)."""
MAX_ICE_SERVERS = 16
MAX_SERVER_FRAME = 1 << 20
"""What a client reads from its node at most (the node's own frames, members lists included)."""
MAX_LINK_FRAME = 256 * 1024
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
    LAYER_FULL = "layer-full"
    TOO_OLD = "too-old"
    BAD_RECORD = "bad-record"
    """A put-record the DHT's rules refuse (docs/protocol.md 7.3); the message names the rule."""


class FrameError(ValueError):
    """A frame that breaks the protocol: its code, a precise message, the request id if any."""

    def __init__(self, code: ErrorCode, message: str, ref: str | int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


RequestId = str | int | None


def encoded_size(text: str | bytes, limit: int) -> int:
    """The size of `text` in UTF-8 bytes (exact up to `limit`; a str of at most limit / 4
    characters cannot exceed it, so short frames are not encoded just to be measured)."""
    if isinstance(text, bytes | bytearray) or len(text) * 4 <= limit:
        return len(text)
    return len(text.encode())


# --- field types: read (check) a JSON value, write one --------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass(frozen=True, slots=True)
class FieldType:
    """How one field travels: `read` raises ValueError with the reason, `write` never fails."""

    read: Callable[[Any], Any]
    write: Callable[[Any], Any] = lambda value: value


def _hex(size: int) -> FieldType:
    def read(value: Any) -> bytes:
        if not isinstance(value, str) or len(value) != 2 * size:
            raise ValueError(f"expected {2 * size} hex digits")
        return bytes.fromhex(value)

    return FieldType(read, bytes.hex)


def _base64(size: int) -> FieldType:
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

    return FieldType(read, b64)


def _integer(low: int, high: int) -> FieldType:
    def read(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"expected an integer in {low}..{high}")
        return value

    return FieldType(read)


def _text(limit: int) -> FieldType:
    def read(value: Any) -> str:
        if not isinstance(value, str) or len(value) > limit:
            raise ValueError(f"expected a string of at most {limit} characters")
        return value

    return FieldType(read)


def _url_list(limit: int) -> FieldType:
    def read(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or len(value) > limit:
            raise ValueError(f"expected a list of at most {limit} URLs")
        return tuple(dict.fromkeys(_node_url(v) for v in value))  # deduplicated, order kept

    return FieldType(read, list)


def _node_url(value: Any) -> str:
    if not isinstance(value, str) or not is_node_url(value):
        raise ValueError(f"expected a ws:// or wss:// URL of at most {MAX_URL_LENGTH} characters")
    return value


def _request_id(value: Any) -> str | int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("expected a string or an integer")
    if isinstance(value, str) and len(value) > MAX_ID_LENGTH:
        raise ValueError(f"at most {MAX_ID_LENGTH} characters")
    if isinstance(value, int) and not 0 <= value < 2**53:
        raise ValueError("expected an integer in 0..2^53")
    return value


def _payload(value: Any) -> Any:
    if not isinstance(value, dict | str):
        raise ValueError("expected an object or a string")
    return value


def _error_code(value: Any) -> ErrorCode | str:
    if not isinstance(value, str) or len(value) > MAX_ID_LENGTH:
        raise ValueError("expected an error code")
    try:
        return ErrorCode(value)
    except ValueError:
        return value  # a newer node's code: shown, not understood


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e6:
        raise ValueError("expected a number of seconds")
    return float(value)


ROOM = _hex(ROOM_KEY_BYTES)
KEY = _hex(PUBLIC_KEY_BYTES)
NODE_ID = _hex(ID_BYTES)
NONCE = _hex(NONCE_BYTES)
SIG = _base64(SIGNATURE_BYTES)
LAYER = _integer(0, MAX_LAYER)
UINT53 = _integer(0, 2**53 - 1)
PORT = _integer(1, 65535)
VERSION = _integer(1, MAX_VERSION)
REQUEST_ID = FieldType(_request_id)
NAME = _text(MAX_NAME_LENGTH)
MESSAGE = _text(MAX_MESSAGE_LENGTH)
URL = FieldType(_node_url)
URLS = _url_list(MAX_NODES)
PAYLOAD = FieldType(_payload)
ERROR_CODE = FieldType(_error_code, str)
SECONDS = FieldType(_seconds)


# --- values inside frames -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    """A member of a layer as the node tells it: key, home node id, home node URL."""

    key: bytes
    node: bytes
    url: str


def _read_member(value: Any) -> Member:
    if not isinstance(value, dict):
        raise ValueError("a member is an object")
    return Member(
        KEY.read(value.get("key")), NODE_ID.read(value.get("node")), URL.read(value.get("url"))
    )


def _write_member(member: Member) -> dict[str, str]:
    return {"key": member.key.hex(), "node": member.node.hex(), "url": member.url}


def _members(value: Any) -> tuple[Member, ...]:
    if not isinstance(value, list) or len(value) > MAX_MEMBERS:
        raise ValueError(f"expected a list of at most {MAX_MEMBERS} members")
    return tuple(_read_member(v) for v in value)


MEMBERS = FieldType(_members, lambda members: [_write_member(m) for m in members])


@dataclass(frozen=True, slots=True)
class IceServer:
    """One entry of RTCConfiguration.iceServers: STUN, or TURN with REST credentials."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"urls": list(self.urls)}
        if self.username is not None:
            entry["username"] = self.username
            entry["credential"] = self.credential
        return entry

    @property
    def expires_at(self) -> int | None:
        """When REST credentials stop working (`expiry:peer` usernames), if this has any."""
        if self.username is None:
            return None
        head = self.username.partition(":")[0]
        return int(head) if head.isdigit() and len(head) < 16 else None


def _ice_server(value: Any) -> IceServer:
    if not isinstance(value, dict):
        raise ValueError("an ICE server is an object")
    urls = value.get("urls")
    if isinstance(urls, str):
        urls = [urls]
    if not isinstance(urls, list) or not 0 < len(urls) <= 8:
        raise ValueError("an ICE server has 1..8 urls")
    for url in urls:
        if (
            not isinstance(url, str)
            or len(url) > MAX_URL_LENGTH
            or not url.startswith(("stun:", "stuns:", "turn:", "turns:"))
        ):
            raise ValueError("ICE server URLs are stun:, stuns:, turn: or turns:")
    username, credential = value.get("username"), value.get("credential")
    for text in (username, credential):
        if text is not None and (not isinstance(text, str) or len(text) > 256):
            raise ValueError("ICE credentials are strings of at most 256 characters")
    return IceServer(tuple(urls), username, credential)


def _ice_servers(value: Any) -> tuple[IceServer, ...]:
    if not isinstance(value, list) or len(value) > MAX_ICE_SERVERS:
        raise ValueError(f"expected a list of at most {MAX_ICE_SERVERS} ICE servers")
    return tuple(_ice_server(v) for v in value)


ICE_SERVERS = FieldType(_ice_servers, lambda servers: [s.to_json() for s in servers])


def _read_record(value: Any) -> Record:
    """A DHT record as JSON: [key hex, publisher hex, seq, expires, value b64, sig b64]."""
    if not isinstance(value, list) or len(value) != 6:
        raise ValueError("a record is a list of 6 fields")
    key, publisher = NODE_ID.read(value[0]), KEY.read(value[1])
    seq, expires = value[2], value[3]
    for number, limit in ((seq, MAX_SEQ), (expires, MAX_EXPIRES_AT)):
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= limit:
            raise ValueError("record seq and expiry are integers in range")
    if not isinstance(value[4], str) or len(value[4]) > 4096:
        raise ValueError("a record value is base64 of at most 3 KiB")
    try:
        data = base64.b64decode(value[4], validate=True)
    except binascii.Error:
        raise ValueError("a record value is base64") from None
    return Record(key, publisher, seq, expires, data, SIG.read(value[5]))


def _write_record(record: Record) -> list[Any]:
    return [
        record.key.hex(),
        record.publisher.hex(),
        record.seq,
        record.expires_at,
        b64(record.value),
        b64(record.signature),
    ]


RECORD = FieldType(_read_record, _write_record)


# --- the frame tables -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    """The attribute; the wire name is the same unless `wire` says otherwise."""
    type: FieldType
    wire: str = ""

    @property
    def key(self) -> str:
        return self.wire or self.name


class Codec:
    """One direction's frames: wire type -> (class, fields), one parse, one serialise."""

    def __init__(self, name: str, frames: Iterable[tuple[type, tuple[Field, ...]]]) -> None:
        self.name = name
        self._by_type: dict[str, tuple[type, tuple[Field, ...], frozenset[str]]] = {}
        self._by_class: dict[type, tuple[str, tuple[Field, ...]]] = {}
        for cls, fields in frames:
            kind: str = cls.TYPE  # type: ignore[attr-defined]
            required = frozenset(
                f.name
                for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            )
            assert required <= {f.name for f in fields}, cls
            self._by_type[kind] = (cls, fields, required)
            self._by_class[cls] = (kind, fields)

    def parse(self, text: str | bytes, max_bytes: int) -> Any:
        """Parse one frame, checking its size (in UTF-8 bytes), JSON, type and every field."""
        if encoded_size(text, max_bytes) > max_bytes:
            raise FrameError(ErrorCode.TOO_LARGE, f"frame larger than {max_bytes} bytes")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise FrameError(ErrorCode.BAD_JSON, f"not JSON: {str(exc)[:100]}") from None
        if not isinstance(data, dict):
            raise FrameError(ErrorCode.BAD_FRAME, "a frame is a JSON object")
        ref = data.get("id")
        if isinstance(ref, bool) or not isinstance(ref, str | int) or len(str(ref)) > MAX_ID_LENGTH:
            ref = None
        kind = data.get("type")
        if not isinstance(kind, str):
            raise FrameError(ErrorCode.BAD_FRAME, "a frame has a string field 'type'", ref)
        spec = self._by_type.get(kind)
        if spec is None:
            raise FrameError(ErrorCode.UNKNOWN_TYPE, f"unknown frame type {kind[:40]!r}", ref)
        cls, fields, required = spec
        values = {}
        for field in fields:
            raw = data.get(field.key)
            if raw is None:
                if field.name in required:
                    raise FrameError(
                        ErrorCode.BAD_FIELD, f"{kind}: missing field {field.key!r}", ref
                    )
                continue
            try:
                values[field.name] = field.type.read(raw)
            except (ValueError, TypeError) as exc:
                raise FrameError(ErrorCode.BAD_FIELD, f"{kind}.{field.key}: {exc}", ref) from None
        return cls(**values)

    def serialize(self, frame: Any) -> str:
        kind, fields = self._by_class[type(frame)]
        body: dict[str, Any] = {"type": kind}
        for field in fields:
            value = getattr(frame, field.name)
            if value is not None:
                body[field.key] = field.type.write(value)
        # Non-ASCII stays UTF-8: escaping it would make a frame up to 3x its size in
        # transit (a client's 64 KiB of "é" became 300 KB on a node link).
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)

    def types(self) -> list[str]:
        return list(self._by_type)


# --- client -> node (/v1/ws) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    TYPE: ClassVar[str] = "hello"
    key: bytes
    sig: bytes
    name: str | None = None
    version: int | None = None
    """The protocol version the client speaks (`v`); None is UNVERSIONED."""


@dataclass(frozen=True, slots=True)
class Join:
    """Sit in `room`: in `layer` when given, else beside `friend` (a member's key) when
    given, else where the node places newcomers (docs/protocol.md 3.1). A join while
    seated in `room` moves the client to the layer asked for."""

    TYPE: ClassVar[str] = "join"
    room: bytes
    layer: int | None = None
    id: RequestId = None
    friend: bytes | None = None


@dataclass(frozen=True, slots=True)
class Signed:
    """The client's signature over a presence record the node asked it to sign."""

    TYPE: ClassVar[str] = "signed"
    id: str | int
    sig: bytes


@dataclass(frozen=True, slots=True)
class Leave:
    TYPE: ClassVar[str] = "leave"
    room: bytes
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Members:
    TYPE: ClassVar[str] = "members"
    room: bytes
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Signal:
    """To a member of one of the sender's layers; `room` says which (section 3.2)."""

    TYPE: ClassVar[str] = "signal"
    to: bytes
    payload: Any
    room: bytes
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class IceServers:
    TYPE: ClassVar[str] = "ice-servers"
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Ping:
    TYPE: ClassVar[str] = "ping"
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Layers:
    """Ask for the room-wide picture: layers, people, and a few layers' counts."""

    TYPE: ClassVar[str] = "layers"
    room: bytes
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class PutRecord:
    """Store an opaque signed record in the DHT (docs/protocol.md 7.3): the node checks it
    as any DHT node would (1.4) and publishes it; it learns nothing of what it says."""

    TYPE: ClassVar[str] = "put-record"
    record: Record
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class GetRecord:
    """Read the record `publisher` stored under `key` (docs/protocol.md 7.3)."""

    TYPE: ClassVar[str] = "get-record"
    key: bytes
    publisher: bytes
    id: RequestId = None


ClientFrame = (
    Hello
    | Join
    | Signed
    | Leave
    | Members
    | Signal
    | IceServers
    | Ping
    | Layers
    | PutRecord
    | GetRecord
)

CLIENT = Codec(
    "client",
    [
        (
            Hello,
            (
                Field("key", KEY),
                Field("sig", SIG),
                Field("name", NAME),
                Field("version", VERSION, "v"),
            ),
        ),
        (
            Join,
            (
                Field("room", ROOM),
                Field("layer", LAYER),
                Field("friend", KEY),
                Field("id", REQUEST_ID),
            ),
        ),
        (Signed, (Field("id", REQUEST_ID), Field("sig", SIG))),
        (Leave, (Field("room", ROOM), Field("id", REQUEST_ID))),
        (Members, (Field("room", ROOM), Field("id", REQUEST_ID))),
        (
            Signal,
            (
                Field("to", KEY),
                Field("payload", PAYLOAD),
                Field("room", ROOM),
                Field("id", REQUEST_ID),
            ),
        ),
        (IceServers, (Field("id", REQUEST_ID),)),
        (Ping, (Field("id", REQUEST_ID),)),
        (Layers, (Field("room", ROOM), Field("id", REQUEST_ID))),
        (PutRecord, (Field("record", RECORD), Field("id", REQUEST_ID))),
        (
            GetRecord,
            (Field("key", NODE_ID), Field("publisher", KEY), Field("id", REQUEST_ID)),
        ),
    ],
)


def parse_client_frame(text: str | bytes, max_bytes: int) -> ClientFrame:
    frame: ClientFrame = CLIENT.parse(text, max_bytes)
    return frame


# --- node -> client (/v1/ws) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Challenge:
    TYPE: ClassVar[str] = "challenge"
    version: int
    nonce: bytes
    node: bytes


@dataclass(frozen=True, slots=True)
class Welcome:
    TYPE: ClassVar[str] = "welcome"
    key: bytes
    url: str
    nodes: tuple[str, ...] = ()
    idle: float | None = None
    """The node's idle timeout: a client sends a ping at least every idle / 3 seconds."""
    version: int | None = None
    """The protocol version the node speaks (`v`); absent from version 1 nodes."""
    ice_servers: tuple[IceServer, ...] | None = None
    """The STUN/TURN servers the node hands this client, as `ice-servers` would answer
    (5.0, "Connections made ahead"): a client can gather before its first join is
    answered without asking. None from older nodes (absent), which a client asks."""


@dataclass(frozen=True, slots=True)
class Joined:
    """Seated in `layer`; `total` people in about `layers` layers (estimates, section 3.1)."""

    TYPE: ClassVar[str] = "joined"
    room: bytes
    layer: int
    members: tuple[Member, ...]
    total: int
    ice_servers: tuple[IceServer, ...] = ()
    id: RequestId = None
    layers: int = 1


@dataclass(frozen=True, slots=True)
class Left:
    TYPE: ClassVar[str] = "left"
    room: bytes
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class MemberList:
    TYPE: ClassVar[str] = "members"
    room: bytes
    layer: int
    members: tuple[Member, ...]
    total: int
    id: RequestId = None


MAX_LAYER_COUNTS = 16


@dataclass(frozen=True, slots=True)
class LayerCount:
    layer: int
    count: int


def _layer_counts(value: Any) -> tuple[LayerCount, ...]:
    if not isinstance(value, list) or len(value) > MAX_LAYER_COUNTS:
        raise ValueError(f"expected a list of at most {MAX_LAYER_COUNTS} [layer, count] pairs")
    counts = []
    for pair in value:
        if not isinstance(pair, list) or len(pair) != 2:
            raise ValueError("a layer count is a [layer, count] pair")
        counts.append(LayerCount(LAYER.read(pair[0]), UINT53.read(pair[1])))
    return tuple(counts)


LAYER_COUNTS = FieldType(_layer_counts, lambda counts: [[c.layer, c.count] for c in counts])


@dataclass(frozen=True, slots=True)
class LayerList:
    """The answer to `layers`: the caller's layer, the room-wide estimates, and the
    member counts of a few layers (its own and others it may move to)."""

    TYPE: ClassVar[str] = "layers"
    room: bytes
    layer: int
    layers: int
    total: int
    counts: tuple[LayerCount, ...] = ()
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class SignalFrom:
    """A signal from `sender`, a member of the receiver's layer in `room`."""

    TYPE: ClassVar[str] = "signal"
    sender: bytes
    payload: Any
    room: bytes


@dataclass(frozen=True, slots=True)
class IceServerList:
    TYPE: ClassVar[str] = "ice-servers"
    servers: tuple[IceServer, ...]
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Pong:
    TYPE: ClassVar[str] = "pong"
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class SignRequest:
    """The node asks the client to sign its presence record (section 3.3)."""

    TYPE: ClassVar[str] = "sign"
    id: str | int
    room: bytes
    layer: int
    key: bytes
    seq: int
    expires: int
    value: str
    node: bytes
    url: str
    members: tuple[Member, ...] | None = None
    """For a join under way (docs/protocol.md 2.5.3): the members the node's placement
    read proved in `layer`, whom the client may signal once it has signed; absent from
    renewals and from nodes without the rule."""


@dataclass(frozen=True, slots=True)
class PeerJoined:
    TYPE: ClassVar[str] = "peer-joined"
    room: bytes
    layer: int
    key: bytes
    node: bytes
    url: str

    @property
    def member(self) -> Member:
        return Member(self.key, self.node, self.url)


@dataclass(frozen=True, slots=True)
class PeerLeft:
    TYPE: ClassVar[str] = "peer-left"
    room: bytes
    layer: int
    key: bytes


@dataclass(frozen=True, slots=True)
class Moving:
    TYPE: ClassVar[str] = "moving"
    nodes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    TYPE: ClassVar[str] = "error"
    code: ErrorCode | str
    message: str
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class RecordStored:
    """The answer to put-record: how many DHT nodes took it (0: none could be reached)."""

    TYPE: ClassVar[str] = "record-stored"
    key: bytes
    stored: int
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class RecordFound:
    """The answer to get-record: the newest valid record, or none."""

    TYPE: ClassVar[str] = "record"
    key: bytes
    record: Record | None = None
    id: RequestId = None


ServerFrame = (
    Challenge
    | Welcome
    | Joined
    | Left
    | MemberList
    | LayerList
    | SignalFrom
    | IceServerList
    | Pong
    | SignRequest
    | PeerJoined
    | PeerLeft
    | Moving
    | ErrorFrame
    | RecordStored
    | RecordFound
)

SERVER = Codec(
    "server",
    [
        (Challenge, (Field("version", UINT53), Field("nonce", NONCE), Field("node", NODE_ID))),
        (
            Welcome,
            (
                Field("key", KEY),
                Field("url", URL),
                Field("nodes", URLS),
                Field("idle", SECONDS),
                Field("version", VERSION, "v"),
                Field("ice_servers", ICE_SERVERS),
            ),
        ),
        (
            Joined,
            (
                Field("room", ROOM),
                Field("layer", LAYER),
                Field("members", MEMBERS),
                Field("total", UINT53),
                Field("ice_servers", ICE_SERVERS),
                Field("id", REQUEST_ID),
                Field("layers", UINT53),
            ),
        ),
        (
            LayerList,
            (
                Field("room", ROOM),
                Field("layer", LAYER),
                Field("layers", UINT53),
                Field("total", UINT53),
                Field("counts", LAYER_COUNTS),
                Field("id", REQUEST_ID),
            ),
        ),
        (Left, (Field("room", ROOM), Field("id", REQUEST_ID))),
        (
            MemberList,
            (
                Field("room", ROOM),
                Field("layer", LAYER),
                Field("members", MEMBERS),
                Field("total", UINT53),
                Field("id", REQUEST_ID),
            ),
        ),
        (
            SignalFrom,
            (Field("sender", KEY, "from"), Field("payload", PAYLOAD), Field("room", ROOM)),
        ),
        (IceServerList, (Field("servers", ICE_SERVERS), Field("id", REQUEST_ID))),
        (Pong, (Field("id", REQUEST_ID),)),
        (
            SignRequest,
            (
                Field("id", REQUEST_ID),
                Field("room", ROOM),
                Field("layer", LAYER),
                Field("key", NODE_ID),
                Field("seq", _integer(0, MAX_SEQ)),
                Field("expires", _integer(0, MAX_EXPIRES_AT)),
                Field("value", _text(1000)),
                Field("node", NODE_ID),
                Field("url", URL),
                Field("members", MEMBERS),
            ),
        ),
        (
            PeerJoined,
            (
                Field("room", ROOM),
                Field("layer", LAYER),
                Field("key", KEY),
                Field("node", NODE_ID),
                Field("url", URL),
            ),
        ),
        (PeerLeft, (Field("room", ROOM), Field("layer", LAYER), Field("key", KEY))),
        (Moving, (Field("nodes", URLS),)),
        (
            RecordStored,
            (Field("key", NODE_ID), Field("stored", UINT53), Field("id", REQUEST_ID)),
        ),
        (
            RecordFound,
            (Field("key", NODE_ID), Field("record", RECORD), Field("id", REQUEST_ID)),
        ),
        (
            ErrorFrame,
            (Field("code", ERROR_CODE), Field("message", MESSAGE), Field("id", REQUEST_ID)),
        ),
    ],
)


def parse_server_frame(text: str | bytes, max_bytes: int = MAX_SERVER_FRAME) -> ServerFrame:
    frame: ServerFrame = SERVER.parse(text, max_bytes)
    return frame


def error(code: ErrorCode, message: str, ref: RequestId = None) -> ErrorFrame:
    return ErrorFrame(code, message[:MAX_MESSAGE_LENGTH], ref)


# --- node <-> node (/v1/node, after the handshake) -------------------------------


@dataclass(frozen=True, slots=True)
class LinkChallenge:
    TYPE: ClassVar[str] = "challenge"
    nonce: bytes


@dataclass(frozen=True, slots=True)
class LinkHello:
    """The connector proves its DHT key and says where its DHT node answers (section 4)."""

    TYPE: ClassVar[str] = "hello"
    key: bytes
    sig: bytes
    nonce: bytes
    dht_port: int
    """The connector's DHT node answers here, at the address the link comes from."""


@dataclass(frozen=True, slots=True)
class LinkWelcome:
    TYPE: ClassVar[str] = "welcome"
    key: bytes
    sig: bytes


@dataclass(frozen=True, slots=True)
class LinkSignal:
    """A signal from a client homed at the sending node; `presence` is its seat, signed."""

    TYPE: ClassVar[str] = "signal"
    sender: bytes
    to: bytes
    payload: Any
    presence: Record
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class LinkSignalError:
    TYPE: ClassVar[str] = "signal-error"
    sender: bytes
    to: bytes
    message: str
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class LinkPresence:
    TYPE: ClassVar[str] = "presence"
    record: Record


@dataclass(frozen=True, slots=True)
class LinkAbsence:
    TYPE: ClassVar[str] = "absence"
    room: bytes
    layer: int
    peer: bytes
    seq: int
    expires: int


LinkFrame = LinkSignal | LinkSignalError | LinkPresence | LinkAbsence
HandshakeFrame = LinkChallenge | LinkHello | LinkWelcome

LINK = Codec(
    "link",
    [
        (
            LinkSignal,
            (
                Field("sender", KEY, "from"),
                Field("to", KEY),
                Field("payload", PAYLOAD),
                Field("presence", RECORD),
                Field("id", REQUEST_ID),
            ),
        ),
        (
            LinkSignalError,
            (
                Field("sender", KEY, "from"),
                Field("to", KEY),
                Field("message", MESSAGE),
                Field("id", REQUEST_ID),
            ),
        ),
        (LinkPresence, (Field("record", RECORD),)),
        (
            LinkAbsence,
            (
                Field("room", ROOM),
                Field("layer", LAYER),
                Field("peer", KEY),
                Field("seq", _integer(0, MAX_SEQ)),
                Field("expires", _integer(0, MAX_EXPIRES_AT)),
            ),
        ),
    ],
)

HANDSHAKE = Codec(
    "link handshake",
    [
        (LinkChallenge, (Field("nonce", NONCE),)),
        (
            LinkHello,
            (
                Field("key", KEY),
                Field("sig", SIG),
                Field("nonce", NONCE),
                Field("dht_port", PORT),
            ),
        ),
        (LinkWelcome, (Field("key", KEY), Field("sig", SIG))),
    ],
)


def parse_link_frame(text: str | bytes, max_bytes: int = MAX_LINK_FRAME) -> LinkFrame:
    frame: LinkFrame = LINK.parse(text, max_bytes)
    return frame


_CODECS: dict[type, Codec] = {}
for _codec in (CLIENT, SERVER, LINK, HANDSHAKE):
    for _cls in _codec._by_class:
        _CODECS[_cls] = _codec


def serialize(frame: Any) -> str:
    """Any frame of this module as its JSON text."""
    return _CODECS[type(frame)].serialize(frame)


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
