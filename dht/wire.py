"""The DHT wire format: rpcudp framing, msgpack bodies, a table of message types.

A datagram is `flag (1 byte) | message id (20 bytes) | msgpack body`, the
framing of the `rpcudp` package under the stock `kademlia` package. A request
body is `[name, args]`; a response body is whatever the RPC returns. The four
stock RPCs (`ping`, `store`, `find_node`, `find_value`, plus `stun`) keep the
stock shapes so a stock `kademlia.network.Server` can use our mesh; the
`pm_*` RPCs carry signed records, prove node ids and check reachability.
docs/protocol.md is the contract.

Parsing is pure and checks every length and type before use. A defect raises
`WireError` whose `reason` is a short code used as a drop counter label; any
other exception escaping `parse_*` is a bug (tests/dht/test_wire_fuzz.py).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
from msgpack.exceptions import UnpackException

from .identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES
from .ids import ID_BYTES
from .records import MAX_EXPIRES_AT, MAX_SEQ, Record

REQUEST_FLAG = 0x00
RESPONSE_FLAG = 0x01
MSG_ID_BYTES = 20
HEADER_BYTES = 1 + MSG_ID_BYTES

MAX_DATAGRAM = 8192
"""Largest datagram accepted; rpcudp refuses to send a request body over 8 KiB."""

RESPONSE_BUDGET = 1200
"""Paginated `pm_*` replies stay under this many bytes so they cross any path MTU unfragmented."""

MAX_CONTACTS = 32
MAX_RECORDS_PER_MESSAGE = 64
MAX_PLAIN_VALUE_BYTES = 1000
MAX_RECORD_VALUE_BYTES = 2048
"""A signed record's value: room seat lists name up to a layer's members in one record."""
MAX_HOST_CHARS = 64
NONCE_BYTES = 16
MAX_REASON_CHARS = 100
MAX_URL_CHARS = 256
"""The URL a `pm_reach` asks to be dialled at (docs/protocol.md 1.9)."""
CLIENT_ID = bytes(ID_BYTES)
"""The sender id of a DHT client's requests: served, never added to a routing table."""


class WireError(ValueError):
    """A datagram that breaks the wire format. `reason` names the drop counter."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class WireContact:
    node_id: bytes
    host: str
    port: int

    def to_wire(self) -> list[object]:
        return [self.node_id, self.host, self.port]


# --- requests ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    sender_id: bytes


@dataclass(frozen=True, slots=True)
class Stun:
    pass


@dataclass(frozen=True, slots=True)
class Store:
    sender_id: bytes
    key: bytes
    value: PlainValue


@dataclass(frozen=True, slots=True)
class FindNode:
    sender_id: bytes
    target: bytes


@dataclass(frozen=True, slots=True)
class FindValue:
    sender_id: bytes
    key: bytes


@dataclass(frozen=True, slots=True)
class Identify:
    """Ask a node to prove its id: sign `nonce` and our id with the key its id derives from."""

    sender_id: bytes
    nonce: bytes


@dataclass(frozen=True, slots=True)
class StoreRecords:
    sender_id: bytes
    records: tuple[Record, ...]


@dataclass(frozen=True, slots=True)
class StoreRead:
    """Store one record and answer with the records now held under its key, as a
    `FindRecords` of the first page would (docs/protocol.md 2.5.5): the store and the
    read of that key in one round. An old node drops it unanswered (unknown rpc)."""

    sender_id: bytes
    record: Record


@dataclass(frozen=True, slots=True)
class FindRecords:
    """Closest nodes to `key` and the records under it, from publisher `after` on (a page)."""

    sender_id: bytes
    key: bytes
    after: bytes


@dataclass(frozen=True, slots=True)
class Reach:
    """Ask a node to dial this one back (docs/protocol.md 1.9): a `ReachProbe` from another
    of its sockets to this request's source address, and an HTTP GET of `url` if one is given.

    Signed by the requester over `reach_request_payload`; the signature binds the request
    to the helper it is for, and pads the request above any answer's size.
    """

    sender_id: bytes
    nonce: bytes
    url: str
    public_key: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class ReachProbe:
    """The dial-back: the nonce of a `Reach`, sent from a socket the requester never sent to.
    Never answered."""

    nonce: bytes


@dataclass(frozen=True, slots=True)
class ReachResult:
    """What a helper's HTTP probe for a `Reach` met (dht.reach.UrlOutcome; `tls`, a
    dht.reach.TlsFailure, says why a certificate was refused), sent after the probe from
    the helper's DHT socket to the request's source. Signed by the helper over
    `reach_result_payload`. Never answered."""

    nonce: bytes
    outcome: int
    tls: int
    public_key: bytes
    signature: bytes


Request = (
    Ping
    | Stun
    | Store
    | FindNode
    | FindValue
    | Identify
    | StoreRecords
    | StoreRead
    | FindRecords
    | Reach
    | ReachProbe
    | ReachResult
)
PlainValue = int | float | bool | str | bytes


# --- responses --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PingReply:
    node_id: bytes


@dataclass(frozen=True, slots=True)
class StunReply:
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class StoreReply:
    ok: bool


@dataclass(frozen=True, slots=True)
class NodesReply:
    contacts: tuple[WireContact, ...]


@dataclass(frozen=True, slots=True)
class ValueReply:
    value: PlainValue


@dataclass(frozen=True, slots=True)
class IdentifyReply:
    """`public_key` is empty when the node declines (a read-only client never joins tables)."""

    public_key: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class StoreRecordsReply:
    statuses: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class StoreReadReply:
    """`status`: the store's verdict (dht.records.Refusal); `records`: the first page of
    what the node holds under the key once it stored (none unless `status` is STORED),
    `more`: further pages to ask with `FindRecords`."""

    status: int
    records: tuple[Record, ...]
    more: bool


@dataclass(frozen=True, slots=True)
class FindRecordsReply:
    contacts: tuple[WireContact, ...]
    records: tuple[Record, ...]
    more: bool


@dataclass(frozen=True, slots=True)
class ReachReply:
    """A helper's answer: `status` (dht.reach.ReachStatus), the requester's address as the
    helper saw it, signed by the helper over `reach_reply_payload`."""

    status: int
    host: str
    port: int
    public_key: bytes
    signature: bytes


Reply = (
    PingReply
    | StunReply
    | StoreReply
    | NodesReply
    | ValueReply
    | IdentifyReply
    | StoreRecordsReply
    | StoreReadReply
    | FindRecordsReply
    | ReachReply
)


@dataclass(frozen=True, slots=True)
class Frame:
    """A datagram split into flag, message id and the decoded (still untyped) body."""

    is_request: bool
    msg_id: bytes
    body: Any


# --- field checks -----------------------------------------------------------


def _bytes(value: object, size: int, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        raise WireError("bad_field", f"{what} must be {size} bytes")
    return value


def _id(value: object, what: str = "id") -> bytes:
    return _bytes(value, ID_BYTES, what)


def _int(value: object, low: int, high: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise WireError("bad_field", f"{what} must be an integer in [{low}, {high}]")
    return value


def _plain_value(value: object) -> PlainValue:
    if not isinstance(value, int | float | bool | str | bytes):
        raise WireError("bad_field", "a stored value must be int, float, bool, str or bytes")
    size = len(value) if isinstance(value, str | bytes) else 8
    if size > MAX_PLAIN_VALUE_BYTES:
        raise WireError("value_too_large", f"a stored value is at most {MAX_PLAIN_VALUE_BYTES}")
    return value


def _list(value: object, max_items: int, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise WireError("bad_field", f"{what} must be an array")
    if len(value) > max_items:
        raise WireError("too_many", f"{what} has more than {max_items} items")
    return value


def _args(args: list[Any], count: int, name: str) -> list[Any]:
    if len(args) != count:
        raise WireError("bad_arity", f"{name} takes {count} arguments, got {len(args)}")
    return args


@functools.lru_cache(maxsize=4096)
def _is_ip_literal(host: str) -> bool:
    # Cached: lookups see the same few hundred hosts over and over, and
    # ipaddress parsing dominated the profile of a lookup.
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_contact(value: object) -> WireContact:
    """`[node id, host, port]` with an IP literal as host (as the stock package sends)."""
    item = _list(value, 3, "contact")
    if len(item) != 3:
        raise WireError("bad_field", "a contact is [id, host, port]")
    node_id, host, port = item
    if not isinstance(host, str) or len(host) > MAX_HOST_CHARS or not _is_ip_literal(host):
        raise WireError("bad_field", "a contact host is an IP address string")
    return WireContact(_id(node_id, "contact id"), host, _int(port, 1, 65535, "port"))


def parse_record(value: object) -> Record:
    item = _list(value, 6, "record")
    if len(item) != 6:
        raise WireError("bad_field", "a record is [key, publisher, seq, expires_at, value, sig]")
    key, publisher, seq, expires_at, data, signature = item
    if not isinstance(data, bytes) or len(data) > MAX_RECORD_VALUE_BYTES:
        raise WireError("bad_field", f"a record value is bytes, at most {MAX_RECORD_VALUE_BYTES}")
    return Record(
        key=_id(key, "record key"),
        publisher=_bytes(publisher, PUBLIC_KEY_BYTES, "publisher"),
        seq=_int(seq, 0, MAX_SEQ, "seq"),
        expires_at=_int(expires_at, 0, MAX_EXPIRES_AT, "expires_at"),
        value=data,
        signature=_bytes(signature, SIGNATURE_BYTES, "signature"),
    )


def _contacts(value: object) -> tuple[WireContact, ...]:
    return tuple(parse_contact(c) for c in _list(value, MAX_CONTACTS, "contacts"))


def _records(value: object) -> tuple[Record, ...]:
    return tuple(parse_record(r) for r in _list(value, MAX_RECORDS_PER_MESSAGE, "records"))


# --- the table of requests ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestType:
    name: str
    cls: type
    parse: Callable[[list[Any]], Request]
    args: Callable[[Any], list[object]]


def _parse_find_records(a: list[Any]) -> FindRecords:
    sender, key, after = _args(a, 3, "pm_find_records")
    if not isinstance(after, bytes) or len(after) not in (0, PUBLIC_KEY_BYTES):
        raise WireError("bad_field", "after is empty or a publisher key")
    return FindRecords(_id(sender), _id(key, "key"), after)


def _parse_reach(a: list[Any]) -> Reach:
    sender, nonce, url, public_key, signature = _args(a, 5, "pm_reach")
    if not isinstance(url, str) or len(url) > MAX_URL_CHARS:
        raise WireError("bad_field", f"a reach url is a string of at most {MAX_URL_CHARS}")
    return Reach(
        _id(sender),
        _bytes(nonce, NONCE_BYTES, "nonce"),
        url,
        _bytes(public_key, PUBLIC_KEY_BYTES, "public key"),
        _bytes(signature, SIGNATURE_BYTES, "signature"),
    )


def _parse_reach_result(a: list[Any]) -> ReachResult:
    nonce, outcome, tls, public_key, signature = _args(a, 5, "pm_reach_result")
    return ReachResult(
        _bytes(nonce, NONCE_BYTES, "nonce"),
        _int(outcome, 0, 255, "outcome"),
        _int(tls, 0, 255, "tls"),
        _bytes(public_key, PUBLIC_KEY_BYTES, "public key"),
        _bytes(signature, SIGNATURE_BYTES, "signature"),
    )


REQUEST_TYPES: tuple[RequestType, ...] = (
    RequestType("ping", Ping, lambda a: Ping(_id(_args(a, 1, "ping")[0])), lambda m: [m.sender_id]),
    RequestType("stun", Stun, lambda a: (_args(a, 0, "stun"), Stun())[1], lambda m: []),
    RequestType(
        "store",
        Store,
        lambda a: Store(_id(_args(a, 3, "store")[0]), _id(a[1], "key"), _plain_value(a[2])),
        lambda m: [m.sender_id, m.key, m.value],
    ),
    RequestType(
        "find_node",
        FindNode,
        lambda a: FindNode(_id(_args(a, 2, "find_node")[0]), _id(a[1], "target")),
        lambda m: [m.sender_id, m.target],
    ),
    RequestType(
        "find_value",
        FindValue,
        lambda a: FindValue(_id(_args(a, 2, "find_value")[0]), _id(a[1], "key")),
        lambda m: [m.sender_id, m.key],
    ),
    RequestType(
        "pm_identify",
        Identify,
        lambda a: Identify(_id(_args(a, 2, "pm_identify")[0]), _bytes(a[1], NONCE_BYTES, "nonce")),
        lambda m: [m.sender_id, m.nonce],
    ),
    RequestType(
        "pm_store",
        StoreRecords,
        lambda a: StoreRecords(_id(_args(a, 2, "pm_store")[0]), _records(a[1])),
        lambda m: [m.sender_id, [r.to_wire() for r in m.records]],
    ),
    RequestType(
        "pm_store_read",
        StoreRead,
        lambda a: StoreRead(_id(_args(a, 2, "pm_store_read")[0]), parse_record(a[1])),
        lambda m: [m.sender_id, m.record.to_wire()],
    ),
    RequestType(
        "pm_find_records",
        FindRecords,
        _parse_find_records,
        lambda m: [m.sender_id, m.key, m.after],
    ),
    RequestType(
        "pm_reach",
        Reach,
        _parse_reach,
        lambda m: [m.sender_id, m.nonce, m.url, m.public_key, m.signature],
    ),
    RequestType(
        "pm_reach_probe",
        ReachProbe,
        lambda a: ReachProbe(_bytes(_args(a, 1, "pm_reach_probe")[0], NONCE_BYTES, "nonce")),
        lambda m: [m.nonce],
    ),
    RequestType(
        "pm_reach_result",
        ReachResult,
        _parse_reach_result,
        lambda m: [m.nonce, m.outcome, m.tls, m.public_key, m.signature],
    ),
)
_BY_NAME = {t.name: t for t in REQUEST_TYPES}
_BY_CLASS = {t.cls: t for t in REQUEST_TYPES}


# --- frames -----------------------------------------------------------------


def parse_frame(data: bytes) -> Frame:
    """Split a datagram into flag, message id and msgpack body."""
    if len(data) > MAX_DATAGRAM:
        raise WireError("oversize", f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM}")
    if len(data) <= HEADER_BYTES:
        raise WireError("short", f"datagram of {len(data)} bytes has no body")
    flag = data[0]
    if flag not in (REQUEST_FLAG, RESPONSE_FLAG):
        raise WireError("bad_flag", f"unknown flag byte {flag:#04x}")
    try:
        body = msgpack.unpackb(data[HEADER_BYTES:], raw=False, use_list=True)
    except (ValueError, UnpackException) as exc:
        raise WireError("msgpack", f"undecodable body: {exc}") from None
    return Frame(flag == REQUEST_FLAG, bytes(data[1:HEADER_BYTES]), body)


def parse_request(body: Any) -> Request:
    """Turn a request body `[name, args]` into a typed request."""
    if not isinstance(body, list) or len(body) != 2:
        raise WireError("shape", "a request body is [name, args]")
    name, args = body
    if not isinstance(name, str) or not isinstance(args, list):
        raise WireError("shape", "a request body is [name, args]")
    request_type = _BY_NAME.get(name)
    if request_type is None:
        raise WireError("unknown_rpc", f"unknown rpc {name[:32]!r}")
    return request_type.parse(args)


def serialize_request(msg_id: bytes, request: Request) -> bytes:
    request_type = _BY_CLASS[type(request)]
    body = [request_type.name, request_type.args(request)]
    return bytes((REQUEST_FLAG,)) + msg_id + _pack(body)


def serialize_response(msg_id: bytes, reply: Reply) -> bytes:
    return bytes((RESPONSE_FLAG,)) + msg_id + _pack(_reply_body(reply))


def _pack(body: object) -> bytes:
    return bytes(msgpack.packb(body, use_bin_type=True))


def _reply_body(reply: Reply) -> object:
    match reply:
        case PingReply(node_id):
            return node_id
        case StunReply(host, port):
            return [host, port]
        case StoreReply(ok):
            return ok
        case NodesReply(contacts):
            return [c.to_wire() for c in contacts]
        case ValueReply(value):
            return {"value": value}
        case IdentifyReply(public_key, signature):
            return [public_key, signature] if public_key else None
        case StoreRecordsReply(statuses):
            return list(statuses)
        case StoreReadReply(status, records, more):
            return [status, [r.to_wire() for r in records], more]
        case FindRecordsReply(contacts, records, more):
            return [[c.to_wire() for c in contacts], [r.to_wire() for r in records], more]
        case ReachReply(status, host, port, public_key, signature):
            return [status, host, port, public_key, signature]
    raise TypeError(f"not a reply: {reply!r}")


def parse_reply(request: Request, body: Any) -> Reply:
    """Type a response body by the request it answers (rpcudp responses carry no name)."""
    match request:
        case Ping():
            return PingReply(_id(body, "node id"))
        case Stun():
            pair = _list(body, 2, "stun reply")
            if len(pair) != 2 or not isinstance(pair[0], str):
                raise WireError("shape", "a stun reply is [host, port]")
            return StunReply(pair[0][:MAX_HOST_CHARS], _int(pair[1], 0, 65535, "port"))
        case Store():
            if not isinstance(body, bool):
                raise WireError("shape", "a store reply is a boolean")
            return StoreReply(body)
        case FindNode():
            return NodesReply(_contacts(body))
        case FindValue():
            if isinstance(body, dict):
                if set(body) != {"value"}:
                    raise WireError("shape", "a value reply is {'value': v}")
                return ValueReply(_plain_value(body["value"]))
            return NodesReply(_contacts(body))
        case Identify():
            if body is None:
                return IdentifyReply(b"", b"")
            pair = _list(body, 2, "identify reply")
            if len(pair) != 2:
                raise WireError("shape", "an identify reply is [public key, signature]")
            return IdentifyReply(
                _bytes(pair[0], PUBLIC_KEY_BYTES, "public key"),
                _bytes(pair[1], SIGNATURE_BYTES, "signature"),
            )
        case StoreRecords():
            statuses = _list(body, MAX_RECORDS_PER_MESSAGE, "statuses")
            return StoreRecordsReply(tuple(_int(s, 0, 255, "status") for s in statuses))
        case StoreRead():
            triple = _list(body, 3, "store_read reply")
            if len(triple) != 3 or not isinstance(triple[2], bool):
                raise WireError("shape", "a store_read reply is [status, records, more]")
            return StoreReadReply(_int(triple[0], 0, 255, "status"), _records(triple[1]), triple[2])
        case FindRecords():
            triple = _list(body, 3, "find_records reply")
            if len(triple) != 3 or not isinstance(triple[2], bool):
                raise WireError("shape", "a find_records reply is [contacts, records, more]")
            return FindRecordsReply(_contacts(triple[0]), _records(triple[1]), triple[2])
        case Reach():
            return _parse_reach_reply(body)
    raise TypeError(f"not a request: {request!r}")


def _parse_reach_reply(body: Any) -> ReachReply:
    items = _list(body, 5, "reach reply")
    if len(items) != 5:
        raise WireError("shape", "a reach reply is [status, host, port, public key, signature]")
    status, host, port, public_key, signature = items
    if not isinstance(host, str) or len(host) > MAX_HOST_CHARS or not _is_ip_literal(host):
        raise WireError("bad_field", "a reach reply's host is an IP address string")
    return ReachReply(
        _int(status, 0, 255, "status"),
        host,
        _int(port, 1, 65535, "port"),
        _bytes(public_key, PUBLIC_KEY_BYTES, "public key"),
        _bytes(signature, SIGNATURE_BYTES, "signature"),
    )


def identify_payload(nonce: bytes, requester_id: bytes) -> bytes:
    """What a node signs to prove its id to `requester_id` (docs/protocol.md, "Identify")."""
    return b"pagemesh-identify/1\x00" + nonce + requester_id


REACH_DOMAIN = b"pagemesh-reach/1\x00"


def reach_request_payload(nonce: bytes, helper_id: bytes, url: str) -> bytes:
    """What a requester signs in a `pm_reach` to `helper_id` (docs/protocol.md 1.9)."""
    return REACH_DOMAIN + b"Q" + nonce + helper_id + url.encode("utf-8")


def reach_reply_payload(
    nonce: bytes, requester_id: bytes, status: int, host: str, port: int
) -> bytes:
    """What a helper signs in its answer to `requester_id` (docs/protocol.md 1.9)."""
    fixed = nonce + requester_id + bytes((status,)) + port.to_bytes(2, "big")
    return REACH_DOMAIN + b"A" + fixed + host.encode("ascii")


def reach_result_payload(nonce: bytes, requester_id: bytes, outcome: int, tls: int) -> bytes:
    """What a helper signs in the result of its HTTP probe for `requester_id`
    (docs/protocol.md 1.9)."""
    return REACH_DOMAIN + b"R" + nonce + requester_id + bytes((outcome, tls))
