"""Device delegations (docs/protocol.md 5.3): the attacker's cases first, the known
answer both clients share (device_vectors.json), then the parser under hypothesis."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from dht.identity import verify_signature
from peer.device import (
    CLOCK_SKEW_MS,
    MAX_BYTES,
    MAX_LIFETIME_MS,
    MIN_BYTES,
    Delegation,
    DelegationError,
    Devices,
    check_delegation,
    issue_delegation,
    issue_revocation,
    parse_delegation,
    parse_revocation,
    people,
    serialize_delegation,
    serialize_revocation,
)

VECTORS = json.loads((Path(__file__).parent / "device_vectors.json").read_text())
NOW = VECTORS["now"]
ANA = SigningKey(bytes.fromhex(VECTORS["identity_seed"]))
LAPTOP = SigningKey(bytes.fromhex(VECTORS["device_seed"]))
MALLORY = SigningKey(bytes.fromhex(VECTORS["stranger_seed"]))
ANA_KEY, LAPTOP_KEY, MALLORY_KEY = (bytes(k.verify_key) for k in (ANA, LAPTOP, MALLORY))
HOUR = 3600 * 1000


def signer(key: SigningKey):  # type: ignore[no-untyped-def]
    return lambda message: key.sign(message).signature


def issue(identity: SigningKey = ANA, device: bytes = LAPTOP_KEY, **kw: object) -> bytes:
    d = issue_delegation(signer(identity), bytes(identity.verify_key), device, NOW, **kw)  # type: ignore[arg-type]
    return serialize_delegation(d)


def check(data: bytes, member: bytes = LAPTOP_KEY, now: int = NOW + 1) -> Delegation:
    return check_delegation(data, member, now, verify_signature)


# --- what a stranger or a thief may try ------------------------------------------------


def test_a_stranger_cannot_claim_someone_elses_identity() -> None:
    # Mallory signs a delegation naming Ana's identity key for Mallory's own device key.
    own = issue_delegation(signer(MALLORY), MALLORY_KEY, LAPTOP_KEY, NOW, HOUR)
    claim = Delegation(ANA_KEY, MALLORY_KEY, own.not_before, own.expires, "", own.signature)
    with pytest.raises(DelegationError) as refused:
        check(serialize_delegation(claim), member=MALLORY_KEY)
    assert refused.value.code == "signature"
    devices = Devices()
    assert devices.person_of(MALLORY_KEY, NOW) == MALLORY_KEY


def test_another_devices_delegation_replayed_is_not_yours() -> None:
    # Ana's laptop's delegation, sent by Mallory over Mallory's link.
    with pytest.raises(DelegationError) as refused:
        check(issue(), member=MALLORY_KEY)
    assert refused.value.code == "wrong-device"


def test_an_expired_delegation_is_refused_and_one_that_lapses_stops_counting() -> None:
    data = issue(lifetime_ms=HOUR)
    with pytest.raises(DelegationError) as refused:
        check(data, now=NOW + HOUR)
    assert refused.value.code == "expired"
    devices = Devices()
    devices.add(check(data, now=NOW + HOUR - 1))
    assert devices.person_of(LAPTOP_KEY, NOW + HOUR - 1) == ANA_KEY
    assert devices.person_of(LAPTOP_KEY, NOW + HOUR) == LAPTOP_KEY  # lapsed: its own key


def test_not_yet_valid_beyond_the_clock_skew() -> None:
    data = issue()
    assert check(data, now=NOW - CLOCK_SKEW_MS).identity == ANA_KEY
    with pytest.raises(DelegationError) as refused:
        check(data, now=NOW - CLOCK_SKEW_MS - 1)
    assert refused.value.code == "not-yet-valid"


def test_a_changed_byte_never_passes() -> None:
    data = issue(label="phone")
    for i in range(len(data)):
        for flip in (1, 0x80):
            changed = data[:i] + bytes([data[i] ^ flip]) + data[i + 1 :]
            try:
                got = check(changed)
            except DelegationError:
                continue
            pytest.fail(f"byte {i} ^ {flip} passed: {got}")


def test_no_delegation_lasts_longer_than_the_bound() -> None:
    with pytest.raises(ValueError):
        issue(lifetime_ms=MAX_LIFETIME_MS + 1)
    with pytest.raises(ValueError):
        issue(device=ANA_KEY)
    with pytest.raises(ValueError):
        issue(label="x" * 65)
    with pytest.raises(ValueError):
        issue(label="a\u202eb")


def test_the_book_is_bounded_and_groups_people() -> None:
    devices = Devices(max_devices=3)
    keys = [bytes(SigningKey(bytes([i]) * 32).verify_key) for i in range(1, 6)]
    for key in keys:
        devices.add(parse_delegation(issue(device=key)))
    assert len(devices) == 3
    assert devices.person_of(keys[0], NOW) == keys[0]  # the oldest went
    grouped = people([*keys, MALLORY_KEY], devices, NOW)
    assert grouped == {ANA_KEY: set(keys[2:]), keys[0]: {keys[0]}, keys[1]: {keys[1]},
                       MALLORY_KEY: {MALLORY_KEY}}  # fmt: skip


# --- revocations ---------------------------------------------------------------------------


def revoke(identity: SigningKey = ANA, device: bytes = LAPTOP_KEY) -> bytes:
    r = issue_revocation(signer(identity), bytes(identity.verify_key), device, NOW + 1000)
    return serialize_revocation(r)


def test_a_stranger_cannot_revoke_someone_elses_device() -> None:
    own = parse_revocation(revoke(MALLORY), verify_signature)
    forged = own.__class__(ANA_KEY, LAPTOP_KEY, own.revoked_at, own.signature)
    with pytest.raises(DelegationError) as refused:
        parse_revocation(serialize_revocation(forged), verify_signature)
    assert refused.value.code == "signature"


def test_a_revocation_takes_the_device_from_its_person_for_good() -> None:
    devices = Devices()
    devices.add(check(issue()))
    assert devices.person_of(LAPTOP_KEY, NOW + 1) == ANA_KEY
    # Mallory's revocation of her own delegation to Ana's laptop key takes nothing
    assert not devices.revoke(parse_revocation(revoke(MALLORY), verify_signature))
    assert devices.person_of(LAPTOP_KEY, NOW + 1) == ANA_KEY
    assert devices.revoke(parse_revocation(revoke(), verify_signature))
    assert devices.person_of(LAPTOP_KEY, NOW + 1) == LAPTOP_KEY
    devices.add(check(issue()))  # a later delegation of the same pair counts no more
    assert devices.person_of(LAPTOP_KEY, NOW + 1) == LAPTOP_KEY
    assert devices.revoked(ANA_KEY, LAPTOP_KEY)


def test_a_flood_of_made_up_revocations_never_pushes_out_one_that_matters() -> None:
    devices = Devices(max_revocations=8)
    devices.add(check(issue()))
    assert devices.revoke(parse_revocation(revoke(), verify_signature))
    for i in range(40):
        stranger = SigningKey(bytes([i + 1]) * 32)
        devices.revoke(parse_revocation(revoke(stranger), verify_signature))
    assert devices.revoked(ANA_KEY, LAPTOP_KEY)
    assert devices.person_of(LAPTOP_KEY, NOW + 1) == LAPTOP_KEY
    assert len(devices._revoked) == 8


def test_a_member_cannot_flush_a_revocation_that_came_before_the_device() -> None:
    """The thief of Ana's laptop key comes to a member whom Ana's revocation reached
    first (so the book never held the laptop's delegation: the revocation takes nothing
    away when it comes). On its own link it sends revocations of made-up identities,
    cheap to sign, until the book is full and more, then shows Ana's delegation again:
    it stays refused. Eviction takes the sender with the most revocations first."""
    devices = Devices(max_revocations=8)
    ana_phone = bytes(SigningKey(b"p" * 32).verify_key)
    assert not devices.revoke(parse_revocation(revoke(), verify_signature), ana_phone)
    assert devices.revoked(ANA_KEY, LAPTOP_KEY)  # the thief's delegation is refused
    for i in range(40):
        stranger = SigningKey(bytes([i + 1]) * 32)
        devices.revoke(parse_revocation(revoke(stranger), verify_signature), LAPTOP_KEY)
    assert devices.revoked(ANA_KEY, LAPTOP_KEY)
    assert len(devices._revoked) == 8
    # Revocations we issued ourselves (sender None) are never pushed out at all.
    mine = Devices(max_revocations=4)
    mine.revoke(parse_revocation(revoke(), verify_signature), None)
    for i in range(10):
        stranger = SigningKey(bytes([i + 1]) * 32)
        mine.revoke(parse_revocation(revoke(stranger), verify_signature), bytes([i]) * 32)
    assert mine.revoked(ANA_KEY, LAPTOP_KEY)


def test_revocation_known_answer_and_errors() -> None:
    assert revoke().hex() == VECTORS["revocation"]
    for case in VECTORS["revocation_errors"]:
        with pytest.raises(DelegationError) as refused:
            parse_revocation(bytes.fromhex(case["hex"]), verify_signature)
        assert refused.value.code == case["code"], case


@settings(max_examples=1000)
@given(st.binary(min_size=130, max_size=150))
def test_any_bytes_are_a_revocation_or_a_delegation_error(data: bytes) -> None:
    try:
        r = parse_revocation(b"pmr1" + data[4:], verify_signature)
    except DelegationError as error:
        assert error.code in {"revocation", "signature"}
        return
    pytest.fail(f"random bytes signed by their identity: {r}")


# --- the known answer, the same in the browser (tests/web/test_device_vectors.py) ------------


def test_known_answer() -> None:
    d = issue_delegation(
        signer(ANA), ANA_KEY, LAPTOP_KEY, NOW, VECTORS["lifetime"], VECTORS["label"]
    )
    data = serialize_delegation(d)
    assert data.hex() == VECTORS["delegation"]
    assert parse_delegation(data) == d
    assert check(data).label == "laptop · Ana"


@pytest.mark.parametrize("case", VECTORS["parse_errors"], ids=lambda c: c["code"])
def test_parse_errors(case: dict[str, str]) -> None:
    with pytest.raises(DelegationError) as refused:
        parse_delegation(bytes.fromhex(case["hex"]))
    assert refused.value.code == case["code"]


@pytest.mark.parametrize("case", VECTORS["check_errors"], ids=lambda c: c["code"])
def test_check_errors(case: dict[str, object]) -> None:
    with pytest.raises(DelegationError) as refused:
        check(bytes.fromhex(str(case["hex"])), bytes.fromhex(str(case["member"])), int(case["now"]))  # type: ignore[call-overload]
    assert refused.value.code == case["code"]


# --- the parser under hypothesis -------------------------------------------------------------


@settings(max_examples=2000)
@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_delegation_error(data: bytes) -> None:
    try:
        d = parse_delegation(data)
    except DelegationError as error:
        assert error.code
        return
    assert MIN_BYTES <= len(data) <= MAX_BYTES
    assert serialize_delegation(d) == data


@st.composite
def delegations(draw: st.DrawFn) -> bytes:
    label = draw(
        st.text(max_size=20).filter(lambda t: len(t.encode("utf-8", "surrogatepass")) <= 64)
    )
    start = draw(st.integers(0, (1 << 53) - 1 - MAX_LIFETIME_MS))
    lifetime = draw(st.integers(1, MAX_LIFETIME_MS))
    try:
        d = issue_delegation(signer(ANA), ANA_KEY, LAPTOP_KEY, start, lifetime, label)
    except ValueError:
        d = issue_delegation(signer(ANA), ANA_KEY, LAPTOP_KEY, start, lifetime, "")
    return serialize_delegation(d)


@settings(max_examples=300)
@given(delegations(), st.data())
def test_valid_delegations_round_trip_and_mutations_are_typed(
    data: bytes, draw: st.DataObject
) -> None:
    d = parse_delegation(data)
    assert serialize_delegation(d) == data
    assert check_delegation(data, LAPTOP_KEY, d.not_before, verify_signature) == d
    cut = draw.draw(st.integers(0, len(data)))
    junk = draw.draw(st.binary(max_size=8))
    mutated = data[:cut] + junk + data[cut + len(junk) :]
    try:
        got = check_delegation(mutated, LAPTOP_KEY, d.not_before, verify_signature)
    except DelegationError:
        return
    assert got == d and mutated == data


KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(4)]
PUBLIC = [bytes(k.verify_key) for k in KEYS]


@st.composite
def book_steps(draw: st.DrawFn) -> list[tuple[str, int, int, int]]:
    """Steps on a book: (what, signer, named identity, device), keys from a small pool so
    that claims, revocations and replacements collide."""
    what = st.sampled_from(["delegate", "claim", "revoke", "forge-revoke", "forget"])
    pick = st.integers(0, len(KEYS) - 1)
    return draw(st.lists(st.tuples(what, pick, pick, pick), max_size=30))


@settings(max_examples=300)
@given(book_steps())
def test_no_key_is_ever_shown_under_an_identity_that_did_not_sign_for_it(
    steps: list[tuple[str, int, int, int]],
) -> None:
    """Whatever members send, a key is under an identity only if that identity signed a
    delegation to it that the book was given and did not revoke since."""
    devices = Devices(max_devices=3, max_revocations=3)
    signed: dict[bytes, bytes] = {}  # device -> the identity of its last delegation kept
    for what, signer, named, device in steps:
        s, n, d = KEYS[signer], PUBLIC[named], PUBLIC[device]
        if what in {"delegate", "claim"} and n != d and PUBLIC[signer] != d:
            own = issue_delegation(signer_of(s), PUBLIC[signer], d, NOW, HOUR)
            sent = (
                own if what == "delegate" else Delegation(n, d, NOW, NOW + HOUR, "", own.signature)
            )
            try:
                got = check_delegation(serialize_delegation(sent), d, NOW + 1, verify_signature)
            except DelegationError:
                assert sent.identity != PUBLIC[signer]
                continue
            devices.add(got)
            signed[d] = PUBLIC[signer]  # who really signed, whatever it named
        elif what in {"revoke", "forge-revoke"} and n != d and PUBLIC[signer] != d:
            own_r = issue_revocation(signer_of(s), PUBLIC[signer], d, NOW)
            data = serialize_revocation(own_r)
            if what == "forge-revoke":
                data = data[:4] + n + data[36:]
            try:
                r = parse_revocation(data, verify_signature)
            except DelegationError:
                assert n != PUBLIC[signer]
                continue
            devices.revoke(r)
            assert r.identity == PUBLIC[signer]  # only the identity's own revocations read
        elif what == "forget":
            devices.forget(d)
            signed.pop(d, None)
        for key in PUBLIC:
            person = devices.person_of(key, NOW + 1)
            if person != key:
                assert signed.get(key) == person  # that identity signed for this key
                assert not devices.revoked(person, key)


def signer_of(key: SigningKey):  # type: ignore[no-untyped-def]
    return lambda message: key.sign(message).signature
