"""Signed session descriptions: a node that alters or replays an offer is caught.

An SDP offer or answer travels through signaling nodes, which are trusted for
availability only. The sender signs what matters for security: the DTLS
certificate fingerprints in the SDP (the keys the data channels will be
encrypted to), the room, both peers' keys, a nonce and an expiry. The
receiver checks all of it before it applies the remote description, so a
node that swaps the fingerprint (a man in the middle) or replays an old offer
is refused (docs/protocol.md, "Signed descriptions").

A `relink` ("please offer me a new link") is signed the same way, with kind
"relink" and no SDP: a node cannot forge one for a member, nor replay one.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SDP_CONTEXT = b"pagemesh-sdp/1\0"
MAX_SDP_BYTES = 16_384
MAX_LIFETIME = 120
NONCE_BYTES = 16
RELINK = "relink"
KINDS = ("offer", "answer", RELINK)
_FINGERPRINT = re.compile(r"^a=fingerprint:(\S+) ([0-9A-Fa-f:]+)\s*$", re.MULTILINE)

Signer = Callable[[bytes], bytes]
Verifier = Callable[[bytes, bytes, bytes], bool]


class DescriptionRejected(ValueError):
    """A remote description that must not be applied; the message says why."""


def fingerprints(sdp: str) -> list[str]:
    """The DTLS fingerprints of an SDP, normalised ("sha-256 AB:CD:..."), sorted."""
    found = {f"{algo.lower()} {value.upper()}" for algo, value in _FINGERPRINT.findall(sdp)}
    return sorted(found)


@dataclass(frozen=True, slots=True)
class SignedDescription:
    kind: str
    """"offer", "answer", or "relink" (no SDP)."""
    sdp: str
    room: bytes
    sender: bytes
    receiver: bytes
    nonce: bytes
    expires: int
    signature: bytes = b""

    def signed_bytes(self) -> bytes:
        fields = [
            self.kind,
            self.room.hex(),
            self.sender.hex(),
            self.receiver.hex(),
            fingerprints(self.sdp),
            self.nonce.hex(),
            self.expires,
        ]
        return SDP_CONTEXT + json.dumps(fields, separators=(",", ":")).encode()

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "sdp": self.sdp,
            "room": self.room.hex(),
            "from": self.sender.hex(),
            "to": self.receiver.hex(),
            "nonce": self.nonce.hex(),
            "expires": self.expires,
            "sig": self.signature.hex(),
        }


def sign_description(
    kind: str,
    sdp: str,
    room: bytes,
    sender: bytes,
    receiver: bytes,
    nonce: bytes,
    now: float,
    sign: Signer,
    lifetime: int = 60,
) -> SignedDescription:
    if kind == RELINK:
        if sdp:
            raise ValueError("a relink carries no SDP")
    elif not fingerprints(sdp):
        raise ValueError("an SDP without a DTLS fingerprint cannot be bound to a key")
    unsigned = SignedDescription(kind, sdp, room, sender, receiver, nonce, int(now) + lifetime)
    return SignedDescription(
        kind, sdp, room, sender, receiver, nonce, unsigned.expires, sign(unsigned.signed_bytes())
    )


def parse_description(data: Any) -> SignedDescription:
    """Read a signed description from a signal payload; DescriptionRejected on defects."""
    try:
        desc = SignedDescription(
            data["kind"],
            data["sdp"],
            bytes.fromhex(data["room"]),
            bytes.fromhex(data["from"]),
            bytes.fromhex(data["to"]),
            bytes.fromhex(data["nonce"]),
            data["expires"],
            bytes.fromhex(data["sig"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise DescriptionRejected("malformed signed description") from None
    if desc.kind not in KINDS or not isinstance(desc.sdp, str):
        raise DescriptionRejected("kind must be offer, answer or relink, sdp a string")
    if len(desc.sdp) > MAX_SDP_BYTES or len(desc.nonce) != NONCE_BYTES:
        raise DescriptionRejected("sdp too large or nonce of the wrong size")
    if not isinstance(desc.expires, int) or isinstance(desc.expires, bool):
        raise DescriptionRejected("expires must be an integer")
    return desc


class ReplayGuard:
    """Nonces seen, kept until their description would have expired anyway (bounded)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[bytes, int] = OrderedDict()

    def check_and_remember(self, nonce: bytes, expires: int, now: float) -> None:
        while self._seen and (
            next(iter(self._seen.values())) <= now or len(self._seen) > self.capacity
        ):
            self._seen.popitem(last=False)
        if nonce in self._seen:
            raise DescriptionRejected("replayed description (nonce already seen)")
        self._seen[nonce] = expires


def verify_description(
    desc: SignedDescription,
    room: bytes,
    sender: bytes,
    me: bytes,
    now: float,
    verify: Verifier,
    replays: ReplayGuard,
) -> None:
    """Check a description before applying it; DescriptionRejected says what is wrong."""
    if desc.room != room or desc.sender != sender or desc.receiver != me:
        raise DescriptionRejected("description is for another room or pair of peers")
    if desc.expires <= now:
        raise DescriptionRejected("description expired")
    if desc.expires > now + MAX_LIFETIME:
        raise DescriptionRejected("description lives too long")
    if desc.kind == RELINK:
        if desc.sdp:
            raise DescriptionRejected("a relink carries no SDP")
    elif not fingerprints(desc.sdp):
        raise DescriptionRejected("description has no DTLS fingerprint")
    if not verify(sender, desc.signed_bytes(), desc.signature):
        raise DescriptionRejected("signature does not cover this SDP's fingerprint")
    replays.check_and_remember(desc.nonce, desc.expires, now)
