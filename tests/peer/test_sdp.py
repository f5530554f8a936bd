"""Signed descriptions over a real aiortc offer: altered fingerprints and replays are refused."""

from __future__ import annotations

import contextlib
import re

import pytest
from aiortc import RTCPeerConnection
from hypothesis import given
from hypothesis import strategies as st

from dht.identity import Identity, verify_signature
from peer.sdp import (
    DescriptionRejected,
    ReplayGuard,
    fingerprints,
    parse_description,
    sign_description,
    verify_description,
)

ROOM = bytes(range(20))
ALICE = Identity.from_seed(b"a" * 32)
BOB = Identity.from_seed(b"b" * 32)
NOW = 1_800_000_000.0


@pytest.fixture
async def offer_sdp() -> str:
    pc = RTCPeerConnection()
    pc.createDataChannel("control")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def signed(sdp: str, nonce: bytes = b"n" * 16, now: float = NOW) -> dict[str, object]:
    desc = sign_description(
        "offer", sdp, ROOM, ALICE.public_key, BOB.public_key, nonce, now, ALICE.sign
    )
    return desc.to_json()


def check(data: dict[str, object], guard: ReplayGuard | None = None, now: float = NOW) -> None:
    desc = parse_description(data)
    verify_description(
        desc, ROOM, ALICE.public_key, BOB.public_key, now, verify_signature, guard or ReplayGuard()
    )


async def test_a_real_offer_verifies(offer_sdp: str) -> None:
    assert fingerprints(offer_sdp) and fingerprints(offer_sdp)[0].startswith("sha-256 ")
    check(signed(offer_sdp))


async def test_a_rewritten_fingerprint_is_refused(offer_sdp: str) -> None:
    data = signed(offer_sdp)
    swapped = re.sub(
        r"(a=fingerprint:sha-256 )([0-9A-F:]+)", lambda m: m.group(1) + "AA:" * 31 + "AA", offer_sdp
    )
    assert swapped != offer_sdp
    with pytest.raises(DescriptionRejected, match="fingerprint"):
        check({**data, "sdp": swapped})


async def test_other_rewrites_of_the_sdp_do_not_matter(offer_sdp: str) -> None:
    """Only what binds keys is signed: a node re-ordering candidates is harmless."""
    data = signed(offer_sdp)
    check({**data, "sdp": offer_sdp.replace("a=mid:0", "a=mid:0\r\na=x-note:hi")})


async def test_replay_wrong_pair_and_expiry_are_refused(offer_sdp: str) -> None:
    guard = ReplayGuard()
    data = signed(offer_sdp)
    check(data, guard)
    with pytest.raises(DescriptionRejected, match="replayed"):
        check(data, guard)
    with pytest.raises(DescriptionRejected, match="expired"):
        check(signed(offer_sdp, nonce=b"m" * 16), now=NOW + 61)
    with pytest.raises(DescriptionRejected, match="another room"):
        check({**signed(offer_sdp, nonce=b"o" * 16), "to": ALICE.public_key.hex()})
    with pytest.raises(DescriptionRejected, match="signature"):
        forged = sign_description(
            "offer", offer_sdp, ROOM, ALICE.public_key, BOB.public_key, b"p" * 16, NOW, BOB.sign
        )
        check(forged.to_json())


@given(
    st.dictionaries(
        st.sampled_from(["kind", "sdp", "room", "from", "to", "nonce", "expires", "sig"]),
        st.one_of(st.text(max_size=40), st.integers(), st.none()),
    )
)
def test_parse_only_raises_description_rejected(data: dict[str, object]) -> None:
    with contextlib.suppress(DescriptionRejected):
        parse_description(data)
