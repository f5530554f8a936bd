"""Rooms: page URLs to room keys, layers, and presence records (docs/protocol.md, "Rooms").

Everything here is pure and shared with clients: a client computes its room
key locally, so a node only ever sees the hash, never the URL.

- `canonical_url` turns what a browser shows into one string per page
  (scheme and host lower-cased, IDNA, default port dropped, dot segments
  resolved, unreserved percent-escapes decoded, fragment and tracking
  parameters removed, the remaining query kept in its order).
- `room_key` hashes it; a private room mixes in a secret.
- A room is split into layers of bounded size; layer i lives at its own DHT
  key `layer_key(room, i)`, so a hot page spreads over many neighbourhoods.
- A `Presence` is what a client signs to say "I am in this layer, reachable
  through this home node, until then"; it travels as a `dht.records.Record`
  whose publisher is the client's own key.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass
from enum import Enum

from yarl import URL

from dht.identity import PUBLIC_KEY_BYTES
from dht.ids import ID_BYTES, node_id_for
from dht.records import Record

ROOM_KEY_BYTES = ID_BYTES
MAX_URL_LENGTH = 8192
MAX_LAYER = 65535

_ROOM_DOMAIN = b"pagemesh/room\0"
_PRIVATE_ROOM_DOMAIN = b"pagemesh/private-room\0"
_LAYER_DOMAIN = b"pagemesh/layer\0"
_SEAT_OF_DOMAIN = b"pagemesh/seat-of\0"
_DEFAULT_PORTS = {"http": 80, "https": 443}

TRACKING_PARAMETERS = frozenset(
    {
        "fbclid",
        "gclid",
        "dclid",
        "gbraid",
        "wbraid",
        "msclkid",
        "yclid",
        "twclid",
        "igshid",
        "mc_cid",
        "mc_eid",
        "_ga",
        "_gl",
        "_hsenc",
        "_hsmi",
        "mkt_tok",
        "oly_anon_id",
        "oly_enc_id",
        "vero_id",
    }
)
"""Query parameters that only track the visitor; `utm_*` is removed by prefix too."""

_TRACKING_PREFIXES = ("utm_",)
_HOST = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*|[0-9a-f:.]+")  # after IDNA; IPv6 unbracketed
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_UNRESERVED = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
# Characters a path or a query may carry raw (RFC 3986 3.3, 3.4; docs/protocol.md 2.1):
# an escape of one of them is decoded, except those that would change how the component
# splits ("/" in a path; "&", "=" and "+" in a query), as the browser's rooms.js does.
_PATH_SAFE = frozenset(_UNRESERVED + b"!$&'()*+,;=:@")
_QUERY_SAFE = frozenset(_UNRESERVED + b"!$'()*,;:@/?")


class Scope(Enum):
    """What a room covers: one page, or every page of a site (its origin)."""

    PAGE = "page"
    SITE = "site"


class RoomError(ValueError):
    """A URL (or room parameter) that cannot name a room; the message says why."""


def canonical_url(url: str, scope: Scope | str = Scope.PAGE) -> str:
    """The one string every client derives for the page at `url` (rules in docs/protocol.md)."""
    scope = Scope(scope)
    if len(url) > MAX_URL_LENGTH:
        raise RoomError(f"URL longer than {MAX_URL_LENGTH} characters")
    try:
        parsed = URL(_as_a_browser_writes(url.strip()))
        host = parsed.raw_host
        scheme = parsed.scheme.lower()
        port = parsed.explicit_port
    except (ValueError, TypeError, UnicodeError) as exc:
        raise RoomError(f"not a valid URL: {exc}") from None
    if scheme not in _DEFAULT_PORTS:
        raise RoomError(f"only http and https pages have rooms, not {scheme or 'no scheme'!r}")
    if not host:
        raise RoomError("the URL has no host")
    host = host.lower().rstrip(".")
    if not _HOST.fullmatch(host):
        raise RoomError(f"not a valid URL: bad host {host!r}")
    host = _whatwg_ipv4(host)
    if ":" in host:
        host = f"[{host}]"
    origin = f"{scheme}://{host}"
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        origin += f":{port}"
    if scope is Scope.SITE:
        return origin + "/"
    path = _normalise_escapes(parsed.raw_path or "/", _PATH_SAFE)
    query = _strip_tracking(parsed.raw_query_string)
    return origin + path + (f"?{query}" if query else "")


def _as_a_browser_writes(url: str) -> str:
    """`url` as a browser's URL parser reads an http(s) URL (WHATWG URL): a backslash
    before the query is a "/" (`https://e.com\\a\\b` is `https://e.com/a/b`), and a
    space in the query is `%20`, not the `+` of a form. Both twins then see one URL."""
    end = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
    head, rest = url[:end].replace("\\", "/"), url[end:]
    query, mark, fragment = rest.partition("#")
    return head + query.replace(" ", "%20") + mark + fragment


def _whatwg_ipv4(host: str) -> str:
    """A host that ends in a number is an IPv4 address, written in dotted decimal, as a
    browser's URL parser reads it (WHATWG URL, "IPv4 parser"): `0x7f000001`, `127.1`
    and `0177.0.0.1` are all `127.0.0.1`. Any other host is returned as it is."""
    if ":" in host:
        return host  # IPv6
    parts = host.split(".")
    last = parts[-1]
    hexadecimal = last[:2] == "0x" and all(c in "0123456789abcdef" for c in last[2:])
    if not (last.isdigit() or hexadecimal):
        return host  # a domain
    if len(parts) > 4:
        raise RoomError(f"not a valid URL: bad IPv4 host {host!r}")
    numbers = []
    for part in parts:
        if part[:2] == "0x":
            digits, base = part[2:], 16
        elif len(part) > 1 and part[0] == "0":
            digits, base = part[1:], 8
        else:
            digits, base = part, 10
        try:
            numbers.append(int(digits, base) if digits else 0)
        except ValueError:
            raise RoomError(f"not a valid URL: bad IPv4 host {host!r}") from None
    if any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        raise RoomError(f"not a valid URL: bad IPv4 host {host!r}")
    address = numbers[-1] + sum(n << (8 * (3 - i)) for i, n in enumerate(numbers[:-1]))
    return ".".join(str((address >> shift) & 255) for shift in (24, 16, 8, 0))


def _strip_tracking(raw_query: str) -> str:
    kept = []
    for part in raw_query.split("&"):
        if not part:
            continue
        normal = _normalise_escapes(part, _QUERY_SAFE)  # judged by its name decoded
        name = normal.split("=", 1)[0].lower()
        if name in TRACKING_PARAMETERS or name.startswith(_TRACKING_PREFIXES):
            continue
        kept.append(normal)
    return "&".join(kept)


def _normalise_escapes(text: str, safe: frozenset[int]) -> str:
    """RFC 3986 section 6.2.2: decode escapes of the characters `safe` for the component,
    upper-case the rest."""

    def fix(match: re.Match[str]) -> str:
        byte = int(match.group(0)[1:], 16)
        return chr(byte) if byte in safe else match.group(0).upper()

    return _PERCENT.sub(fix, text)


def room_key(canonical: str, secret: bytes | None = None) -> bytes:
    """H(canonical URL), or for a private room H(canonical URL, secret); 20 bytes."""
    data = canonical.encode()
    if secret is None:
        return hashlib.sha256(_ROOM_DOMAIN + data).digest()[:ROOM_KEY_BYTES]
    if not secret:
        raise RoomError("a private room's secret must not be empty")
    # Length-prefix the URL so (url, secret) pairs cannot collide by shifting bytes.
    framed = len(data).to_bytes(4, "big") + data + secret
    return hashlib.sha256(_PRIVATE_ROOM_DOMAIN + framed).digest()[:ROOM_KEY_BYTES]


def layer_key(room: bytes, layer: int) -> bytes:
    """The DHT key of layer `layer` of `room`: H(room, layer)."""
    if len(room) != ROOM_KEY_BYTES:
        raise RoomError(f"a room key is {ROOM_KEY_BYTES} bytes")
    if not 0 <= layer <= MAX_LAYER:
        raise RoomError(f"a layer is in 0..{MAX_LAYER}")
    return hashlib.sha256(_LAYER_DOMAIN + room + layer.to_bytes(2, "big")).digest()[:ID_BYTES]


def seat_of_key(room: bytes, peer: bytes) -> bytes:
    """The DHT key where a member's home node says which layer of `room` it sits in."""
    return hashlib.sha256(_SEAT_OF_DOMAIN + room + peer).digest()[:ID_BYTES]


@dataclass(frozen=True, slots=True)
class HomeNode:
    """Where a peer's signals go: a node's DHT id and its WebSocket URL."""

    node_id: bytes
    url: str


@dataclass(frozen=True, slots=True)
class Presence:
    """A member of a layer, as read from (and checked against) its signed DHT record."""

    room: bytes
    layer: int
    peer: bytes
    home: HomeNode
    expires_at: int
    seq: int

    @property
    def key(self) -> bytes:
        return layer_key(self.room, self.layer)


def presence_value(room: bytes, layer: int, home: HomeNode) -> bytes:
    """The record value a client signs for its presence (compact JSON, docs/protocol.md)."""
    body = {"v": 1, "room": room.hex(), "layer": layer, "node": home.node_id.hex(), "url": home.url}
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


MAX_NODE_URL = 300


def is_node_url(url: str) -> bool:
    """A node's base URL as clients and nodes dial it: ws:// or wss://, a host, an optional
    port and path; no user, query or fragment; printable ASCII, at most 300 characters.
    (A presence names its home node's URL; nodes dial it, so nothing else is believed.)"""
    if len(url) > MAX_NODE_URL or not url.isascii() or not url.isprintable() or " " in url:
        return False
    try:
        parsed = URL(url)
        port = parsed.port
    except ValueError:
        return False
    return (
        parsed.scheme in ("ws", "wss")
        and bool(parsed.host)
        and port is not None
        and 0 < port < 65536
        and not parsed.user
        and not parsed.password
        and not parsed.query_string
        and not parsed.fragment
    )


def parse_presence(record: Record) -> Presence:
    """Read a presence record; RoomError when its value does not match its key.

    The caller checks the signature (the DHT did, and reads check again).
    """
    try:
        body = json.loads(record.value)
        room = bytes.fromhex(body["room"])
        layer = body["layer"]
        node_id = bytes.fromhex(body["node"])
        url = body["url"]
    except (ValueError, KeyError, TypeError) as exc:
        raise RoomError(f"not a presence record: {exc}") from None
    if (
        body.get("v") != 1
        or not isinstance(layer, int)
        or not isinstance(url, str)
        or len(node_id) != ID_BYTES
        or len(record.publisher) != PUBLIC_KEY_BYTES
    ):
        raise RoomError("not a presence record: bad field")
    if len(room) != ROOM_KEY_BYTES or layer_key(room, layer) != record.key:
        raise RoomError("presence record stored under another layer's key")
    if not is_node_url(url):
        raise RoomError("not a presence record: the home URL is not a node's")
    home = HomeNode(node_id, url)
    return Presence(room, layer, record.publisher, home, record.expires_at, record.seq)


# --- what a home node stores: one seat list per (node, layer) -------------------------

SEATS_MAGIC = b"pms1"
SEAT_OF_MAGIC = b"pml1"
SEAT_BYTES = PUBLIC_KEY_BYTES + 8
MAX_HOST_BYTES = 64
_SEATS_HEAD = struct.Struct(">4s20sHIIH")  # magic, room, layer, layers hint, total hint, port
_SEAT = struct.Struct(">32sQ")  # member key, seated since (Unix milliseconds)
_SEAT_OF = struct.Struct(">4s20s32sH")  # magic, room, member key, layer


@dataclass(frozen=True, slots=True)
class SeatList:
    """The members one home node seats in one layer, as it publishes them (docs/protocol.md,
    "Seat lists"). The record's publisher is the node itself, so only a node that holds
    its DHT key can seat anyone; `dht` is where that node answers, so readers can check
    it is a real, reachable node before they count its seats."""

    room: bytes
    layer: int
    home: HomeNode
    dht: tuple[str, int]
    seats: tuple[tuple[bytes, int], ...]
    """(member key, seated since in Unix milliseconds), in the order the node seated them."""
    layers_hint: int
    """How many layers the room has, as the publishing node estimates it."""
    total_hint: int
    expires_at: int
    seq: int

    @property
    def key(self) -> bytes:
        return layer_key(self.room, self.layer)

    def presences(self) -> list[Presence]:
        return [
            Presence(self.room, self.layer, peer, self.home, self.expires_at, self.seq)
            for peer, _ in self.seats
        ]


def seat_list_value(
    room: bytes,
    layer: int,
    home: HomeNode,
    dht: tuple[str, int],
    seats: list[tuple[bytes, int]] | tuple[tuple[bytes, int], ...],
    layers_hint: int,
    total_hint: int,
) -> bytes:
    """The record value of a seat list (binary: it must fit a layer's seats in one record)."""
    host, url = dht[0].encode(), home.url.encode()
    head = _SEATS_HEAD.pack(
        SEATS_MAGIC, room, layer, min(layers_hint, 2**32 - 1), min(total_hint, 2**32 - 1), dht[1]
    )
    body = b"".join(_SEAT.pack(peer, since) for peer, since in seats)
    return b"".join((head, bytes([len(host)]), host, len(url).to_bytes(2, "big"), url, body))


def seat_list_bytes(url: str, host: str, seats: int) -> int:
    """The size of a seat list's value for `seats` members (to keep it under the record limit)."""
    return _SEATS_HEAD.size + 1 + len(host.encode()) + 2 + len(url.encode()) + seats * SEAT_BYTES


def parse_seat_list(record: Record) -> SeatList:
    """Read a seat list; RoomError for anything that is not one (checked length by length)."""
    data = record.value
    if len(data) < _SEATS_HEAD.size + 3 or len(record.publisher) != PUBLIC_KEY_BYTES:
        raise RoomError("not a seat list: too short")
    magic, room, layer, layers_hint, total_hint, port = _SEATS_HEAD.unpack_from(data)
    if magic != SEATS_MAGIC:
        raise RoomError("not a seat list: bad magic")
    at = _SEATS_HEAD.size
    host_len = data[at]
    at += 1
    if host_len == 0 or host_len > MAX_HOST_BYTES or at + host_len + 2 > len(data):
        raise RoomError("not a seat list: bad host")
    host_raw = data[at : at + host_len]
    at += host_len
    url_len = int.from_bytes(data[at : at + 2], "big")
    at += 2
    if url_len > MAX_NODE_URL or at + url_len > len(data):
        raise RoomError("not a seat list: bad url")
    url_raw = data[at : at + url_len]
    at += url_len
    if (len(data) - at) % SEAT_BYTES:
        raise RoomError("not a seat list: a partial seat")
    try:
        host, url = host_raw.decode("ascii"), url_raw.decode("ascii")
    except UnicodeDecodeError:
        raise RoomError("not a seat list: non-ASCII host or url") from None
    if not host.isprintable() or " " in host or port == 0:
        raise RoomError("not a seat list: bad host")
    if not is_node_url(url):
        raise RoomError("not a seat list: the home URL is not a node's")
    if layer_key(room, layer) != record.key:
        raise RoomError("seat list stored under another layer's key")
    seats = tuple(_SEAT.unpack_from(data, offset) for offset in range(at, len(data), SEAT_BYTES))
    if len({peer for peer, _ in seats}) != len(seats):
        raise RoomError("not a seat list: a member seated twice")
    home = HomeNode(node_id_for(record.publisher), url)
    return SeatList(
        room,
        layer,
        home,
        (host, port),
        seats,
        layers_hint,
        total_hint,
        record.expires_at,
        record.seq,
    )


def seat_of_value(room: bytes, peer: bytes, layer: int) -> bytes:
    return _SEAT_OF.pack(SEAT_OF_MAGIC, room, peer, layer)


def parse_seat_of(record: Record, room: bytes, peer: bytes) -> int:
    """The layer a seat-of record names for `peer` in `room`; RoomError if it names none."""
    if len(record.value) != _SEAT_OF.size:
        raise RoomError("not a seat-of record")
    magic, their_room, their_peer, layer = _SEAT_OF.unpack(record.value)
    if magic != SEAT_OF_MAGIC or their_room != room or their_peer != peer:
        raise RoomError("not a seat-of record for this member")
    if record.key != seat_of_key(room, peer):
        raise RoomError("seat-of record stored under another key")
    return int(layer)
