"""The page's device delegations (web/js/device.js) are Python's (peer/device.py), byte for
byte: the known answer of tests/peer/device_vectors.json, the same error codes for the
same bad bytes, and each side reads what the other issued."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from dht.identity import verify_signature
from peer.device import (
    DelegationError,
    Devices,
    check_delegation,
    issue_delegation,
    issue_revocation,
    parse_delegation,
    parse_revocation,
    serialize_delegation,
    serialize_revocation,
)
from tests.signaling.conftest import NodeFactory

from .conftest import PageFactory

VECTORS = json.loads((Path(__file__).parents[1] / "peer" / "device_vectors.json").read_text())

MODULES = """async () => {
    const m = {};
    for (const name of ['bytes', 'device', 'identityfile']) {
        Object.assign(m, await import(`/web/js/${name}.js`));
    }
    window.m = m;
}"""

ISSUE = """async ([seed, device, now, lifetime, label]) => {
    const m = window.m;
    const pair = await m.keyPairFromSeed(m.fromHex(seed));
    const identity = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey));
    const d = await m.issueDelegation(pair, identity, m.fromHex(device), now, lifetime, label);
    return m.hex(m.serializeDelegation(d));
}"""

CODE = """async ([data, member, now]) => {
    const m = window.m;
    try {
        const d = member === null ? m.parseDelegation(m.fromHex(data))
            : await m.checkDelegation(m.fromHex(data), member, now);
        return ['ok', d.identity, d.device, d.notBefore, d.expires, d.label];
    } catch (e) {
        return ['error', e.code ?? String(e)];
    }
}"""


@pytest.fixture
async def page(signaling_mesh: NodeFactory, open_page: PageFactory) -> Any:
    (node,) = await signaling_mesh(1)
    page = await open_page(node, "devices")
    await page.evaluate(MODULES)
    return page


async def test_the_page_issues_the_known_answer(page: Any) -> None:
    device = bytes(SigningKey(bytes.fromhex(VECTORS["device_seed"])).verify_key)
    got = await page.evaluate(
        ISSUE,
        [
            VECTORS["identity_seed"],
            device.hex(),
            VECTORS["now"],
            VECTORS["lifetime"],
            VECTORS["label"],
        ],
    )
    assert got == VECTORS["delegation"]
    ok = await page.evaluate(CODE, [got, device.hex(), VECTORS["now"] + 1])
    assert ok[0] == "ok" and ok[5] == VECTORS["label"]


async def test_the_page_refuses_what_python_refuses_with_the_same_code(page: Any) -> None:
    for case in VECTORS["parse_errors"]:
        assert await page.evaluate(CODE, [case["hex"], None, 0]) == ["error", case["code"]], case
    for case in VECTORS["check_errors"]:
        got = await page.evaluate(CODE, [case["hex"], case["member"], case["now"]])
        assert got == ["error", case["code"]], case


async def test_each_reads_what_the_other_issued(page: Any) -> None:
    identity = SigningKey(bytes(range(100, 132)))
    device = bytes(SigningKey(bytes(range(1, 33))).verify_key)
    now = 1_800_000_000_000
    ours = issue_delegation(
        lambda m: identity.sign(m).signature, bytes(identity.verify_key), device, now, 3600_000,
        "téléphone 📱",
    )  # fmt: skip
    got = await page.evaluate(CODE, [serialize_delegation(ours).hex(), device.hex(), now])
    assert got == ["ok", ours.identity.hex(), device.hex(), now, now + 3600_000, "téléphone 📱"]
    theirs = await page.evaluate(
        ISSUE, [bytes(identity).hex(), device.hex(), now, 3600_000, "téléphone 📱"]
    )
    assert bytes.fromhex(theirs) == serialize_delegation(ours)  # Ed25519 is deterministic


BLOB = st.one_of(
    st.binary(max_size=220),
    st.builds(
        lambda ident, dev, nb, ex, label, sig: (
            b"pmd1"
            + ident
            + dev
            + nb.to_bytes(8, "big")
            + ex.to_bytes(8, "big")
            + bytes([len(label)])
            + label
            + sig
        ),
        st.sampled_from([b"\x01" * 32, b"\x02" * 32]),
        st.sampled_from([b"\x01" * 32, b"\x02" * 32]),
        st.integers(0, (1 << 64) - 1) | st.integers(0, 1 << 54),
        st.integers(0, (1 << 64) - 1) | st.integers(0, 1 << 54),
        st.binary(max_size=66) | st.text(max_size=30).map(lambda t: t.encode("utf-8", "replace")),
        st.binary(min_size=64, max_size=64),
    ),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(BLOB, min_size=20, max_size=20))
async def test_random_bytes_get_the_same_verdict(page: Any, blobs: list[bytes]) -> None:
    """Whatever the bytes, the page and Python agree: the same fields, or the same code."""
    want: list[list[object]] = []
    for data in blobs:
        try:
            d = parse_delegation(data)
            want.append(["ok", d.identity.hex(), d.device.hex(), d.not_before, d.expires, d.label])
        except DelegationError as error:
            want.append(["error", error.code])
    got = await page.evaluate(
        f"async (blobs) => Promise.all(blobs.map((b) => ({CODE})([b, null, 0])))",
        [b.hex() for b in blobs],
    )
    assert got == want


async def test_the_page_revokes_as_python_does(page: Any) -> None:
    device = bytes(SigningKey(bytes.fromhex(VECTORS["device_seed"])).verify_key)
    got = await page.evaluate(
        """async ([seed, device, at]) => {
            const m = window.m;
            const pair = await m.keyPairFromSeed(m.fromHex(seed));
            const identity = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey));
            return m.hex(m.serializeRevocation(
                await m.issueRevocation(pair, identity, m.fromHex(device), at)));
        }""",
        [VECTORS["identity_seed"], device.hex(), VECTORS["now"] + 1000],
    )
    assert got == VECTORS["revocation"]
    read = """async (data) => {
        try {
            const r = await window.m.parseRevocation(window.m.fromHex(data));
            return ['ok', r.identity, r.device, r.revokedAt];
        } catch (e) { return ['error', e.code ?? String(e)]; }
    }"""
    ok = await page.evaluate(read, got)
    assert ok == ["ok", VECTORS["delegation"][8:72], device.hex(), VECTORS["now"] + 1000]
    for case in VECTORS["revocation_errors"]:
        assert await page.evaluate(read, case["hex"]) == ["error", case["code"]], case


POOL = [SigningKey(bytes([i + 1]) * 32) for i in range(4)]
POOL_KEYS = [bytes(k.verify_key) for k in POOL]
AT = 1_800_000_000_000


def _blob(step: tuple[str, int, int, int]) -> tuple[str, str, str]:
    """A step as the wire carries it: (frame kind, the sending member, the cert hex)."""
    what, signer, named, device = step
    key, d = POOL[signer], POOL_KEYS[device]
    if what == "forget":
        return ("forget", d.hex(), "")
    if what in {"delegate", "claim"}:
        own = issue_delegation(
            lambda m: key.sign(m).signature, POOL_KEYS[signer], d, AT, 3600_000, f"d{device}"
        )
        data = serialize_delegation(own)
        if what == "claim":
            data = data[:4] + POOL_KEYS[named] + data[36:]
        return ("device", d.hex(), data.hex())
    r = serialize_revocation(
        issue_revocation(lambda m: key.sign(m).signature, POOL_KEYS[signer], d, AT)
    )
    if what == "forge-revoke":
        r = r[:4] + POOL_KEYS[named] + r[36:]
    return ("revoke", POOL_KEYS[signer].hex(), r.hex())  # the sender: the signer's link


def _python_book(steps: list[tuple[str, str, str]]) -> list[str]:
    devices = Devices(max_devices=3, max_revocations=3)
    for kind, member, cert in steps:
        try:
            if kind == "forget":
                devices.forget(bytes.fromhex(member))
            elif kind == "device":
                d = check_delegation(
                    bytes.fromhex(cert), bytes.fromhex(member), AT + 1, verify_signature
                )
                if not devices.revoked(d.identity, d.device):
                    devices.add(d)
            else:
                r = parse_revocation(bytes.fromhex(cert), verify_signature)
                devices.revoke(r, bytes.fromhex(member))
        except DelegationError:
            pass
    return [devices.person_of(k, AT + 1).hex() for k in POOL_KEYS]


BOOK = """async ([steps, keys, at]) => {
    const m = window.m;
    const devices = new m.Devices(3, 3);
    for (const [kind, member, cert] of steps) {
        try {
            if (kind === 'forget') devices.forget(member);
            else if (kind === 'device') {
                const d = await m.checkDelegation(m.fromHex(cert), member, at + 1);
                if (!devices.revoked(d.identity, d.device)) devices.add(d);
            } else devices.revoke(await m.parseRevocation(m.fromHex(cert)), member);
        } catch (e) { if (!(e instanceof m.DelegationError)) throw e; }
    }
    return keys.map((k) => devices.personOf(k, at + 1));
}"""

# (what, signer, named identity, device): three keys, so that steps collide; the device
# is never the signer nor the identity named (no reader would take those)
STEP = st.builds(
    lambda what, signer, shift, other: (
        what,
        signer,
        (signer + shift + other) % 3,
        (signer + shift) % 3,
    ),
    st.sampled_from(["delegate", "claim", "revoke", "forge-revoke", "forget"]),
    st.integers(0, 2),
    st.integers(1, 2),
    st.integers(1, 2),
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(STEP, min_size=2, max_size=25))
async def test_the_books_of_devices_agree(
    page: Any, steps: list[tuple[str, int, int, int]]
) -> None:
    """The same frames in the same order leave Python's and the page's books showing every
    key as the same person (the same checks, bounds and evictions)."""
    wire = [_blob(s) for s in steps]
    got = await page.evaluate(BOOK, [wire, [k.hex() for k in POOL_KEYS], AT])
    assert got == _python_book(wire)


FLOOD = """async ([real, junk, phone, thief, identity, device]) => {
    const m = window.m;
    const devices = new m.Devices(8, 8);
    devices.revoke(await m.parseRevocation(m.fromHex(real)), phone);
    for (const j of junk) devices.revoke(await m.parseRevocation(m.fromHex(j)), thief);
    return [devices.revoked(identity, device), devices.revokedPairs.size];
}"""


async def test_the_page_keeps_a_revocation_a_member_floods_against(page: Any) -> None:
    """As tests/peer/test_device.py: the thief's own flood of made-up revocations pushes
    out its own, not Ana's that came before its device (the same book in both)."""
    ana, laptop = POOL[0], POOL_KEYS[1]

    def revocation(signer: SigningKey, device: bytes) -> str:
        sign = signer.sign
        made = issue_revocation(lambda m: sign(m).signature, bytes(signer.verify_key), device, AT)
        return serialize_revocation(made).hex()

    real = revocation(ana, laptop)
    junk = [revocation(SigningKey(bytes([i + 9]) * 32), laptop) for i in range(40)]
    args = [real, junk, POOL_KEYS[2].hex(), laptop.hex(), POOL_KEYS[0].hex(), laptop.hex()]
    assert await page.evaluate(FLOOD, args) == [True, 8]
    python = Devices(max_revocations=8)
    python.revoke(parse_revocation(bytes.fromhex(real), verify_signature), POOL_KEYS[2])
    for j in junk:
        python.revoke(parse_revocation(bytes.fromhex(j), verify_signature), laptop)
    assert python.revoked(POOL_KEYS[0], laptop)
