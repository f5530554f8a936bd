"""STUN/TURN wire format: STUN messages (RFC 8489), TURN attributes and ChannelData (RFC 8656).

Attribute values are packed and unpacked with aioice's STUN codec
(`aioice.stun`: the address, error-code and integer packers, MESSAGE-INTEGRITY
and FINGERPRINT). Its `parse_message` does not fit a server that faces the
internet, so the message layer is ours: it keeps every attribute in order (a
CreatePermission may carry several XOR-PEER-ADDRESS), reports unknown
comprehension-required attributes (a 420 needs them), checks the magic cookie,
the length field and each attribute length before use, and raises only
`WireError`. aioice raises `struct.error` on a short LIFETIME, for instance.

Over TCP, messages are framed by their own length (`StreamFramer`):
20 + length for STUN, 4 + length padded to a multiple of 4 for ChannelData
(RFC 8656 section 12.5).
"""

from __future__ import annotations

import functools
import hmac
import struct
from dataclasses import dataclass
from typing import Any

from aioice import stun

Address = tuple[str, int]

HEADER_BYTES = stun.HEADER_LENGTH
COOKIE = stun.COOKIE
MAX_STUN_BYTES = HEADER_BYTES + 0xFFFC
MAX_CHANNEL_DATA_BYTES = 4 + 0xFFFF + 3
MAX_ATTRIBUTES = 64
MAX_USERNAME_BYTES = 513  # RFC 8489 section 14.3
MAX_REALM_BYTES = 763  # RFC 8489 section 14.9
MAX_NONCE_BYTES = 763  # RFC 8489 section 14.10

# Methods (RFC 8489 section 18.2, RFC 8656 section 17).
BINDING = 0x001
ALLOCATE = 0x003
REFRESH = 0x004
SEND = 0x006
DATA = 0x007
CREATE_PERMISSION = 0x008
CHANNEL_BIND = 0x009

# Classes, as aioice encodes them (the C1/C0 bits in place).
REQUEST = int(stun.Class.REQUEST)
INDICATION = int(stun.Class.INDICATION)
SUCCESS = int(stun.Class.RESPONSE)
ERROR = int(stun.Class.ERROR)

# Attributes (RFC 8489 section 18.3, RFC 8656 section 18).
MAPPED_ADDRESS = 0x0001
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
UNKNOWN_ATTRIBUTES = 0x000A
CHANNEL_NUMBER = 0x000C
LIFETIME = 0x000D
BANDWIDTH = 0x0010  # RFC 5766 drafts; some clients still send it
XOR_PEER_ADDRESS = 0x0012
DATA_ATTR = 0x0013
REALM = 0x0014
NONCE = 0x0015
XOR_RELAYED_ADDRESS = 0x0016
REQUESTED_ADDRESS_FAMILY = 0x0017
EVEN_PORT = 0x0018
REQUESTED_TRANSPORT = 0x0019
DONT_FRAGMENT = 0x001A
XOR_MAPPED_ADDRESS = 0x0020
RESERVATION_TOKEN = 0x0022
PRIORITY = 0x0024
USE_CANDIDATE = 0x0025
SOFTWARE = 0x8022
FINGERPRINT = 0x8028

# Comprehension-required attributes (type < 0x8000) this server understands;
# any other one in a request earns a 420 (RFC 8489 section 7.3.1).
UNDERSTOOD = frozenset(
    {
        MAPPED_ADDRESS,
        USERNAME,
        MESSAGE_INTEGRITY,
        ERROR_CODE,
        UNKNOWN_ATTRIBUTES,
        CHANNEL_NUMBER,
        LIFETIME,
        BANDWIDTH,
        XOR_PEER_ADDRESS,
        DATA_ATTR,
        REALM,
        NONCE,
        XOR_RELAYED_ADDRESS,
        REQUESTED_ADDRESS_FAMILY,
        EVEN_PORT,
        REQUESTED_TRANSPORT,
        DONT_FRAGMENT,
        XOR_MAPPED_ADDRESS,
        RESERVATION_TOKEN,
        PRIORITY,
        USE_CANDIDATE,
    }
)

FAMILY_IPV4 = 0x01
FAMILY_IPV6 = 0x02
TRANSPORT_UDP = 17
MIN_CHANNEL = 0x4000
MAX_CHANNEL = 0x7FFF
"""RFC 8656 section 12 narrows channels to 0x4000-0x4FFF, RFC 5766 allowed up to 0x7FFF and
coturn's clients still pick from that range, so it is accepted."""

_HEADER = struct.Struct("!HHI12s")
_TLV = struct.Struct("!HH")
CHANNEL_HEADER = struct.Struct("!HH")
"""ChannelData's header: channel number, length of the application data (section 12.4)."""
_U32 = struct.Struct("!I")
_XOR_IPV4 = struct.Struct("!HHI")  # reserved and family, X-Port, X-Address
_XOR_HIGH = COOKIE >> 16


class WireError(ValueError):
    """Bytes that break the wire format. `reason` names the drop counter (`drop.<reason>`)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class StunMessage:
    """A parsed STUN message.

    `attributes` holds (type, value) in wire order, up to and including
    MESSAGE-INTEGRITY; attributes after it are unauthenticated and dropped,
    except FINGERPRINT, which the parser checks (RFC 8489 section 14.5).
    `integrity_data` is the part of the message MESSAGE-INTEGRITY covers.
    """

    method: int
    cls: int
    transaction_id: bytes
    attributes: tuple[tuple[int, bytes], ...]
    integrity_data: bytes | None = None

    def get(self, attr_type: int) -> bytes | None:
        for kind, value in self.attributes:
            if kind == attr_type:
                return value
        return None

    def get_all(self, attr_type: int) -> list[bytes]:
        return [value for kind, value in self.attributes if kind == attr_type]

    def has_unknown_required(self) -> bool:
        """Whether `unknown_required()` has any (without building it: the Send path)."""
        for kind, _ in self.attributes:  # noqa: SIM110 (a loop: no generator per message)
            if kind < 0x8000 and kind not in UNDERSTOOD:
                return True
        return False

    def unknown_required(self) -> list[int]:
        """Comprehension-required attribute types this server does not understand."""
        return sorted({k for k, _ in self.attributes if k < 0x8000 and k not in UNDERSTOOD})


def is_stun(data: bytes) -> bool:
    """The first two bits of a STUN message are zero; ChannelData starts with 0b01 (0x40-0x7F)."""
    return len(data) > 0 and data[0] < 0x40


def parse_stun(data: bytes) -> StunMessage:
    """Parse one STUN message that fills `data` exactly; WireError on any defect."""
    if len(data) < HEADER_BYTES:
        raise WireError("truncated", "STUN message shorter than its 20-byte header")
    message_type, length, cookie, transaction_id = _HEADER.unpack_from(data)
    if message_type & 0xC000:
        raise WireError("malformed", "STUN message type has its top two bits set")
    if cookie != COOKIE:
        raise WireError("malformed", "STUN magic cookie missing (RFC 3489 messages are refused)")
    if length % 4:
        raise WireError("malformed", "STUN message length is not a multiple of 4")
    if len(data) != HEADER_BYTES + length:
        raise WireError("truncated", "STUN message length does not match the datagram")
    attributes: list[tuple[int, bytes]] = []
    integrity_data: bytes | None = None
    pos = HEADER_BYTES
    end = len(data)
    count = 0
    unpack_tlv = _TLV.unpack_from
    while pos < end:
        count += 1
        if count > MAX_ATTRIBUTES:
            raise WireError("malformed", "too many STUN attributes")
        if end - pos < 4:
            raise WireError("truncated", "STUN attribute header cut short")
        attr_type, attr_len = unpack_tlv(data, pos)
        start = pos + 4
        stop = start + attr_len
        if stop > end:
            raise WireError("truncated", "STUN attribute runs past the message")
        value = data[start:stop]
        if attr_type == FINGERPRINT:
            if attr_len != 4 or stop != end:
                raise WireError("malformed", "FINGERPRINT is not a final 4-byte attribute")
            if _U32.unpack(value)[0] != stun.message_fingerprint(data[:pos]):
                raise WireError("malformed", "STUN fingerprint does not match")
        elif integrity_data is None:
            attributes.append((attr_type, value))
            if attr_type == MESSAGE_INTEGRITY:
                if attr_len != 20:
                    raise WireError("malformed", "MESSAGE-INTEGRITY is not 20 bytes")
                integrity_data = data[:pos]
        pos = stop + (-attr_len & 3)  # padding to a multiple of 4 (RFC 8489 section 14)
    if pos != end:
        raise WireError("truncated", "STUN attribute padding runs past the message")
    return StunMessage(
        message_type & 0x3EEF,
        message_type & 0x0110,
        transaction_id,
        tuple(attributes),
        integrity_data,
    )


def check_integrity(message: StunMessage, key: bytes) -> bool:
    """MESSAGE-INTEGRITY (HMAC-SHA1) of `message` under `key` (RFC 8489 section 14.5)."""
    value = message.get(MESSAGE_INTEGRITY)
    if value is None or message.integrity_data is None:
        return False
    return hmac.compare_digest(value, stun.message_integrity(message.integrity_data, key))


# --- attribute values -------------------------------------------------------


def decode_xor_address(value: bytes, transaction_id: bytes) -> Address:
    if len(value) == 8 and value[1] == FAMILY_IPV4:
        return _xor_ipv4(value)
    try:
        return stun.unpack_xor_address(value, transaction_id)
    except (ValueError, struct.error) as exc:
        raise WireError("malformed", f"bad XOR address: {exc}") from None


@functools.lru_cache(maxsize=4096)
def _xor_ipv4(value: bytes) -> Address:
    """An IPv4 XOR address: XORed with the cookie alone, so the same value always means
    the same address, and a Send indication's peer is decoded once. Without aioice's
    byte-by-byte XOR and ipaddress; the same text (tested against aioice)."""
    _, port, ip = _XOR_IPV4.unpack(value)
    ip ^= COOKIE
    return (f"{ip >> 24}.{ip >> 16 & 0xFF}.{ip >> 8 & 0xFF}.{ip & 0xFF}", port ^ _XOR_HIGH)


def decode_u32(value: bytes) -> int:
    if len(value) != 4:
        raise WireError("malformed", "a 32-bit attribute is not 4 bytes")
    return int(_U32.unpack(value)[0])


def decode_text(value: bytes, limit: int) -> str:
    if len(value) > limit:
        raise WireError("malformed", "text attribute too long")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("malformed", "text attribute is not UTF-8") from None


def decode_channel_number(value: bytes) -> int:
    if len(value) != 4:
        raise WireError("malformed", "CHANNEL-NUMBER is not 4 bytes")
    return (value[0] << 8) | value[1]


def decode_family(value: bytes) -> int:
    if len(value) != 4:
        raise WireError("malformed", "REQUESTED-ADDRESS-FAMILY is not 4 bytes")
    return value[0]


def decode_transport(value: bytes) -> int:
    if len(value) != 4:
        raise WireError("malformed", "REQUESTED-TRANSPORT is not 4 bytes")
    return value[0]


def family_of(address: Address) -> int:
    return FAMILY_IPV6 if ":" in address[0] else FAMILY_IPV4


# --- building messages ------------------------------------------------------

Attribute = tuple[int, Any]
"""(type, value) where value is bytes (raw), int (32-bit), str (UTF-8), an Address
(for the XOR-*-ADDRESS types) or (code, reason) for ERROR-CODE."""

_XOR_ADDRESS_TYPES = frozenset({XOR_PEER_ADDRESS, XOR_RELAYED_ADDRESS, XOR_MAPPED_ADDRESS})


def _pack_value(attr_type: int, value: Any, transaction_id: bytes) -> bytes:
    if attr_type in _XOR_ADDRESS_TYPES:
        return stun.pack_xor_address(value, transaction_id)
    if attr_type == ERROR_CODE:
        return stun.pack_error_code(value)
    if attr_type == UNKNOWN_ATTRIBUTES:
        return b"".join(struct.pack("!H", t) for t in value)
    if isinstance(value, bool):
        raise TypeError("no boolean attributes")
    if isinstance(value, int):
        return stun.pack_unsigned(value)
    if isinstance(value, str):
        return stun.pack_string(value)
    return bytes(value)


def serialize_stun(
    method: int,
    cls: int,
    transaction_id: bytes,
    attributes: list[Attribute],
    integrity_key: bytes | None = None,
    fingerprint: bool = False,
) -> bytes:
    """A STUN message; MESSAGE-INTEGRITY with `integrity_key`, then FINGERPRINT if asked."""
    body = bytearray()
    for attr_type, value in attributes:
        packed = _pack_value(attr_type, value, transaction_id)
        body += _TLV.pack(attr_type, len(packed)) + packed + bytes(stun.padding_length(len(packed)))
    message = _HEADER.pack(method | cls, len(body), COOKIE, transaction_id) + bytes(body)
    if integrity_key is not None:
        mac = stun.message_integrity(message, integrity_key)
        message = (
            stun.set_body_length(message, len(body) + 24) + _TLV.pack(MESSAGE_INTEGRITY, 20) + mac
        )
    if fingerprint:
        crc = stun.message_fingerprint(message)
        message = stun.set_body_length(message, len(message) - HEADER_BYTES + 8)
        message += _TLV.pack(FINGERPRINT, 4) + _U32.pack(crc)
    return message


def xor_address_bytes(address: Address, transaction_id: bytes) -> bytes:
    """XOR-PEER-ADDRESS value without aioice's byte-by-byte loop (the Data indication path)."""
    host, port = address
    if ":" in host:
        import ipaddress  # only on the rarer IPv6 path

        raw = ipaddress.IPv6Address(host).packed
        mask = _U32.pack(COOKIE) + transaction_id
        xored = bytes(a ^ b for a, b in zip(raw, mask, strict=True))
        return struct.pack("!BBH", 0, FAMILY_IPV6, port ^ _XOR_HIGH) + xored
    parts = host.split(".")
    ip = (int(parts[0]) << 24) | (int(parts[1]) << 16) | (int(parts[2]) << 8) | int(parts[3])
    return struct.pack("!BBHI", 0, FAMILY_IPV4, port ^ _XOR_HIGH, ip ^ COOKIE)


def data_indication(peer: Address, payload: bytes, transaction_id: bytes) -> bytes:
    """A Data indication carrying `payload` from `peer` (RFC 8656 section 11.4)."""
    if ":" in peer[0]:
        address = xor_address_bytes(peer, transaction_id)
        peer_attribute = _TLV.pack(XOR_PEER_ADDRESS, len(address)) + address
    else:
        peer_attribute = _ipv4_peer_attribute(peer)
    size = len(payload)
    pad = -size % 4
    return b"".join(
        (
            _HEADER.pack(
                DATA | INDICATION, len(peer_attribute) + 4 + size + pad, COOKIE, transaction_id
            ),
            peer_attribute,
            _TLV.pack(DATA_ATTR, size),
            payload,
            _PADDING[pad],
        )
    )


_PADDING = (b"", b"\0", b"\0\0", b"\0\0\0")


@functools.lru_cache(maxsize=4096)
def _ipv4_peer_attribute(peer: Address) -> bytes:
    """XOR-PEER-ADDRESS with its header for an IPv4 peer: XORed with the cookie alone
    (RFC 8489 section 14.2), so the same for every Data indication from that peer."""
    address = xor_address_bytes(peer, bytes(12))
    return _TLV.pack(XOR_PEER_ADDRESS, len(address)) + address


# --- ChannelData ------------------------------------------------------------


def parse_channel_data(data: bytes) -> tuple[int, bytes]:
    """(channel number, application data) of a ChannelData message (RFC 8656 section 12.4).

    Over UDP the datagram may carry padding after the data; it is ignored.
    """
    if len(data) < 4:
        raise WireError("truncated", "ChannelData shorter than its 4-byte header")
    channel, length = CHANNEL_HEADER.unpack_from(data)
    if not MIN_CHANNEL <= channel <= MAX_CHANNEL:
        raise WireError("malformed", "not a ChannelData channel number")
    if len(data) < 4 + length:
        raise WireError("truncated", "ChannelData shorter than its length field")
    return channel, data[4 : 4 + length]


def serialize_channel_data(channel: int, payload: bytes, stream: bool = False) -> bytes:
    """ChannelData; over a stream (TCP) padded to a multiple of 4 bytes."""
    header = CHANNEL_HEADER.pack(channel, len(payload))
    if stream and len(payload) % 4:
        return header + payload + bytes(-len(payload) % 4)
    return header + payload


class StreamFramer:
    """Splits a TCP byte stream into STUN and ChannelData messages (RFC 8656 section 12.5).

    `feed` returns the complete messages so far; it raises WireError when the
    stream cannot be a TURN stream (the connection should then be closed).
    At most one message is buffered, so memory per connection is bounded.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        messages: list[bytes] = []
        buffer = self._buffer
        pos = 0
        while len(buffer) - pos >= 4:
            first = buffer[pos]
            length = (buffer[pos + 2] << 8) | buffer[pos + 3]
            if first < 0x40:
                size = HEADER_BYTES + length
            elif first < 0x80:
                size = 4 + length + (-length % 4)
            else:
                raise WireError("malformed", "TCP stream is not STUN or ChannelData")
            if len(buffer) - pos < size:
                break
            messages.append(bytes(buffer[pos : pos + size]))
            pos += size
        if pos:
            del buffer[:pos]
        return messages

    @property
    def buffered(self) -> int:
        return len(self._buffer)
