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
from dataclasses import dataclass
from enum import Enum

from yarl import URL

from dht.identity import PUBLIC_KEY_BYTES
from dht.ids import ID_BYTES
from dht.records import Record

ROOM_KEY_BYTES = ID_BYTES
MAX_URL_LENGTH = 8192
MAX_LAYER = 65535

_ROOM_DOMAIN = b"pagemesh/room\0"
_PRIVATE_ROOM_DOMAIN = b"pagemesh/private-room\0"
_LAYER_DOMAIN = b"pagemesh/layer\0"
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
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


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
        parsed = URL(url.strip())
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
    if ":" in host:
        host = f"[{host}]"
    origin = f"{scheme}://{host}"
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        origin += f":{port}"
    if scope is Scope.SITE:
        return origin + "/"
    path = _normalise_escapes(parsed.raw_path or "/")
    query = _strip_tracking(parsed.raw_query_string)
    return origin + path + (f"?{query}" if query else "")


def _strip_tracking(raw_query: str) -> str:
    kept = []
    for part in raw_query.split("&"):
        if not part:
            continue
        name = part.split("=", 1)[0].lower()
        if name in TRACKING_PARAMETERS or name.startswith(_TRACKING_PREFIXES):
            continue
        kept.append(_normalise_escapes(part))
    return "&".join(kept)


def _normalise_escapes(text: str) -> str:
    """RFC 3986 section 6.2.2: decode escaped unreserved characters, upper-case the rest."""

    def fix(match: re.Match[str]) -> str:
        byte = int(match.group(0)[1:], 16)
        return chr(byte) if byte in _UNRESERVED else match.group(0).upper()

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


def choose_layer(counts: list[int], layer_size: int) -> int:
    """The first layer with room, given the member counts of layers 0..len(counts)-1.

    A layer past the scanned ones (count unknown, presumed empty) is chosen when
    all scanned layers are full.
    """
    for index, count in enumerate(counts):
        if count < layer_size:
            return index
    return len(counts)


def estimate_total(counts: list[int], layer_size: int) -> int:
    """An estimate of a room's size from the counts of the layers scanned so far.

    Layers fill in order, so every layer before the last non-empty one is
    taken as at least full (members may have left since); the count is exact
    for a room that fits in the scanned layers.
    """
    last = max((i for i, c in enumerate(counts) if c), default=-1)
    return sum(max(c, layer_size) if i < last else c for i, c in enumerate(counts[: last + 1]))


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
