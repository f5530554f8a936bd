"""Identity files: a seed and name survive export and import under a passphrase;
every defect of a file is an IdentityFileError with a precise code and message,
and nothing else escapes the reader, whatever the bytes (hypothesis)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import stat
import struct
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from peer.identity_file import (
    DEFAULT_ITERATIONS,
    MAX_FILE_BYTES,
    MAX_ITERATIONS,
    MAX_NAME_BYTES,
    MIN_ITERATIONS,
    IdentityFile,
    IdentityFileError,
    associated_data,
    export_identity,
    import_identity,
    parse_identity_file,
    read_identity_file,
    serialize_identity_file,
    write_identity_file,
)

FAST = 1000
"""Iterations for tests: the files import only with `min_iterations` lowered too."""
SEED = bytes(range(32))
PASSPHRASE = "correct horse battery staple"


def counting_rng() -> Callable[[int], bytes]:
    """Deterministic 'random' bytes: 0, 1, 2, ... across calls."""
    counter: Iterator[int] = iter(range(10**6))
    return lambda n: bytes(next(counter) % 256 for _ in range(n))


# A known answer: SEED, PASSPHRASE, name "Ana", FAST iterations, counting_rng.
# tests/web/test_identity_file.py checks the browser writes these same bytes.
VECTOR = (
    b'{\n  "pagemesh-identity": 1,\n  "kdf": "pbkdf2-sha256",\n  "iter": 1000,\n'
    b'  "salt": "AAECAwQFBgcICQoLDA0ODw==",\n  "nonce": "EBESExQVFhcYGRob",\n'
    b'  "ct": "HOazIGPD+6NiYDp21pA9/KU7jwA04sTgkjDBxObq/NnKJ2g8SMGo01L5T3TVJPOPlnJ8",\n'
    b'  "pub": "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"\n}\n'
)


def fast_export(seed: bytes = SEED, name: str | None = None, **kw: Any) -> bytes:
    return export_identity(seed, PASSPHRASE, name, iterations=FAST, **kw)


def fast_import(data: bytes, passphrase: str = PASSPHRASE) -> tuple[bytes, str | None]:
    return import_identity(data, passphrase, min_iterations=FAST)


def edited(data: bytes, **fields: Any) -> bytes:
    """The file with some fields replaced (a value of `...` removes the field)."""
    obj = json.loads(data)
    for name, value in fields.items():
        if value is ...:
            del obj[name]
        else:
            obj[name] = value
    return json.dumps(obj, indent=2).encode()


def sealed(
    contents: bytes, public_key: bytes, passphrase: str = PASSPHRASE, iterations: int = FAST
) -> bytes:
    """A file whose contents and `pub` are chosen freely (as a faulty writer would)."""
    header = IdentityFile(iterations, b"s" * 16, b"n" * 12, b"", public_key)
    key = hashlib.pbkdf2_hmac("sha256", passphrase.encode(), header.salt, iterations, 32)
    ct = AESGCM(key).encrypt(header.nonce, contents, associated_data(header))
    return serialize_identity_file(
        IdentityFile(iterations, header.salt, header.nonce, ct, public_key)
    )


# --- round trips ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name", [None, "Ana", "Zoë 🌍", "x" * MAX_NAME_BYTES, "\ufeffleading BOM kept"]
)
def test_round_trip_keeps_seed_and_name(name: str | None) -> None:
    seed = os.urandom(32)
    assert fast_import(fast_export(seed, name)) == (seed, name)


def test_an_empty_name_is_no_name() -> None:
    assert fast_import(fast_export(name="")) == (SEED, None)


def test_the_file_shows_the_public_key_before_decrypting() -> None:
    file = parse_identity_file(fast_export(), min_iterations=FAST)
    assert file.public_key == bytes(SigningKey(SEED).verify_key)
    assert (file.iterations, len(file.salt), len(file.nonce)) == (FAST, 16, 12)


def test_known_answer() -> None:
    assert fast_export(name="Ana", rng=counting_rng()) == VECTOR
    assert fast_import(VECTOR) == (SEED, "Ana")


def test_salt_and_nonce_are_fresh_per_export() -> None:
    a, b = (parse_identity_file(fast_export(), FAST) for _ in range(2))
    assert a.salt != b.salt and a.nonce != b.nonce and a.ciphertext != b.ciphertext


def test_default_iterations_round_trip() -> None:
    data = export_identity(SEED, PASSPHRASE, "Ana")
    assert json.loads(data)["iter"] == DEFAULT_ITERATIONS == 600_000
    assert import_identity(data, PASSPHRASE) == (SEED, "Ana")


def test_passphrase_is_compared_in_nfc() -> None:
    composed = unicodedata.normalize("NFC", "café ünïcode")
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    data = export_identity(SEED, decomposed, iterations=FAST)
    assert import_identity(data, composed, min_iterations=FAST).seed == SEED


# --- refusals ---------------------------------------------------------------------


def refusal(data: bytes, passphrase: str = PASSPHRASE, min_iterations: int = FAST) -> Any:
    with pytest.raises(IdentityFileError) as info:
        import_identity(data, passphrase, min_iterations=min_iterations)
    return info.value


def test_wrong_passphrase() -> None:
    for passphrase in ["correct horse battery stapl", "", "\ud800"]:
        err = refusal(fast_export(), passphrase)
        assert err.code == "wrong-passphrase"
    assert str(refusal(fast_export(), "nope")) == "wrong passphrase (or the file was altered)"


def test_weak_files_are_refused_by_default() -> None:
    err = refusal(export_identity(SEED, PASSPHRASE, iterations=MIN_ITERATIONS - 1), "x", 100_000)
    assert err.code == "iterations-out-of-range"
    assert str(err) == "iterations 99999 out of range (100000 to 10000000)"
    # The default floor, with no argument at all:
    with pytest.raises(IdentityFileError, match="iterations 1000 out of range"):
        import_identity(fast_export(), PASSPHRASE)


@pytest.mark.parametrize("value", [MAX_ITERATIONS + 1, 10**400, 1e400, -1e400, 0, -5, 2**32 + FAST])
def test_iteration_ceiling_is_checked_before_any_work(value: Any) -> None:
    data = json.dumps({**json.loads(fast_export()), "iter": value}).encode()
    err = refusal(data.replace(b"Infinity", b"1e400"))
    assert err.code == "iterations-out-of-range"


@pytest.mark.parametrize(
    ("data", "code", "message"),
    [
        (b"\xff\xfe", "not-identity-file", "not an identity file (not JSON)"),
        (b"{", "not-identity-file", "not an identity file (not JSON)"),
        (b'{"iter": NaN}', "not-identity-file", "not an identity file (not JSON)"),
        (b"[1]", "not-identity-file", "not an identity file (not a JSON object)"),
        (b"{}", "not-identity-file", 'not an identity file (no "pagemesh-identity" field)'),
        (b'{"pagemesh-identity": 3}', "unsupported-version", "unsupported identity file version 3"),
        (
            b'{"pagemesh-identity": true}',
            "unsupported-version",
            "unsupported identity file version true",
        ),
        (
            b'{"pagemesh-identity": "1"}',
            "unsupported-version",
            'unsupported identity file version "1"',
        ),
        (b'{"pagemesh-identity": 1}', "not-identity-file", 'not an identity file (no "kdf")'),
        (b" " * (MAX_FILE_BYTES + 1), "too-large", "an identity file has at most 1048576 bytes"),
    ],
)
def test_not_identity_files(data: bytes, code: str, message: str) -> None:
    err = refusal(data)
    assert (err.code, str(err)) == (code, message)


GOOD = fast_export(name="Ana")


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        ({"pub": ...}, "not-identity-file", 'not an identity file (no "pub")'),
        ({"comment": "hi"}, "not-identity-file", 'not an identity file (unknown field "comment")'),
        ({"kdf": "scrypt"}, "unsupported-kdf", 'unsupported kdf "scrypt"'),
        ({"iter": "1000"}, "not-identity-file", '"iter" must be an integer'),
        ({"iter": 1000.5}, "not-identity-file", '"iter" must be an integer'),
        ({"iter": True}, "not-identity-file", '"iter" must be an integer'),
        ({"salt": "AAAA"}, "not-identity-file", '"salt" must hold 16 bytes'),
        ({"salt": "AAECAwQFBgcICQoLDA0ODw"}, "not-identity-file", '"salt" must be base64'),
        ({"salt": "AAECAwQFBgcICQoLDA0ODx=="}, "not-identity-file", '"salt" must be base64'),
        ({"salt": " AAECAwQFBgcICQoLDA0ODw=="}, "not-identity-file", '"salt" must be base64'),
        ({"nonce": 12}, "not-identity-file", '"nonce" must be base64'),
        ({"nonce": "AAECAwQFBgcICQoLDA0ODw=="}, "not-identity-file", '"nonce" must hold 12 bytes'),
        ({"ct": "AAAA"}, "not-identity-file", '"ct" must hold 48 to 304 bytes'),
        ({"pub": "AB" * 32}, "not-identity-file", '"pub" must be 64 lowercase hex digits'),
        ({"pub": "ab" * 31}, "not-identity-file", '"pub" must be 64 lowercase hex digits'),
    ],
)
def test_defective_fields(change: dict[str, Any], code: str, message: str) -> None:
    err = refusal(edited(GOOD, **change))
    assert (err.code, str(err)) == (code, message)


@pytest.mark.parametrize(
    "change",
    [
        {"iter": FAST + 1},  # a cheaper or dearer count than the writer chose
        {"pub": bytes(SigningKey(bytes(32)).verify_key).hex()},  # another person's key shown
        {"salt": base64.b64encode(bytes(16)).decode()},
    ],
)
def test_the_header_is_bound_to_the_ciphertext(change: dict[str, Any]) -> None:
    assert refusal(edited(GOOD, **change)).code == "wrong-passphrase"


def test_associated_data_layout() -> None:
    file = parse_identity_file(VECTOR, FAST)
    ad = associated_data(file)
    assert ad == (
        b"pagemesh-identity\x01\x0dpbkdf2-sha256"
        + struct.pack(">I", FAST)
        + bytes(range(16))
        + file.public_key
    )
    assert len(ad) == 17 + 2 + 13 + 4 + 16 + 32


def test_public_key_mismatch() -> None:
    other = bytes(SigningKey(bytes(32)).verify_key)
    err = refusal(sealed(SEED, other))
    assert (err.code, str(err)) == (
        "public-key-mismatch",
        "the file's public key is not the one its seed gives",
    )


def test_name_that_is_not_utf8() -> None:
    err = refusal(sealed(SEED + b"\xc3", bytes(SigningKey(SEED).verify_key)))
    assert (err.code, str(err)) == ("bad-contents", "the stored name is not UTF-8")


def test_a_leading_bom_is_allowed() -> None:
    assert fast_import(b"\xef\xbb\xbf" + GOOD) == (SEED, "Ana")


@pytest.mark.parametrize(
    ("seed", "passphrase", "name", "iterations"),
    [
        (SEED[:31], PASSPHRASE, None, FAST),
        (SEED, "", None, FAST),
        (SEED, "\udc00", None, FAST),
        (SEED, PASSPHRASE, "\udc00", FAST),
        (SEED, PASSPHRASE, "x" * (MAX_NAME_BYTES + 1), FAST),
        (SEED, PASSPHRASE, None, 0),
        (SEED, PASSPHRASE, None, MAX_ITERATIONS + 1),
    ],
)
def test_export_misuse_is_a_value_error(
    seed: bytes, passphrase: str, name: str | None, iterations: int
) -> None:
    with pytest.raises(ValueError) as info:
        export_identity(seed, passphrase, name, iterations=iterations)
    assert not isinstance(info.value, IdentityFileError)


# --- files on disk -----------------------------------------------------------------


def test_written_files_are_private_and_never_clobbered(tmp_path: Path) -> None:
    path = tmp_path / "me.pagemesh-identity"
    umask = os.umask(0)  # the mode is 0600 even when the umask would allow more
    try:
        write_identity_file(path, GOOD)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        write_identity_file(path, fast_export())
    assert read_identity_file(path) == GOOD
    replacement = fast_export(name="Bo")
    write_identity_file(path, replacement, overwrite=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_identity_file(path) == replacement
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left


def test_reading_a_huge_file_stops_early(tmp_path: Path) -> None:
    path = tmp_path / "huge"
    path.write_bytes(b" " * 10**7)
    with pytest.raises(IdentityFileError, match="at most 1048576 bytes"):
        read_identity_file(path)


# --- fuzz: any input is an IdentityFileError or an identity, nothing else ---------


def assert_typed(data: bytes) -> None:
    with contextlib.suppress(IdentityFileError):
        import_identity(data, PASSPHRASE, min_iterations=1)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=MAX_FILE_BYTES + 8))
def test_fuzz_any_bytes(data: bytes) -> None:
    assert_typed(data)


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_fuzz_mutated_files(data: st.DataObject) -> None:
    raw = bytearray(GOOD)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    assert_typed(bytes(raw[:cut]))


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70).filter(lambda n: n <= 64 or n > MAX_ITERATIONS)
    | st.floats(allow_nan=False, max_value=64)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.sampled_from([*json.loads(GOOD), "x"]), JSON_VALUES), st.data())
def test_fuzz_fields(fields: dict[str, Any], data: st.DataObject) -> None:
    # Start from a good file so that most fields are well formed and the reader goes deep.
    obj = {**json.loads(GOOD), **fields}
    if data.draw(st.booleans()):
        obj["iter"] = data.draw(st.integers(1, 64))
    assert_typed(json.dumps(obj).encode())


def test_every_prefix_is_refused() -> None:
    for cut in range(len(GOOD) - 1):  # all but the final newline
        with pytest.raises(IdentityFileError):
            fast_import(GOOD[:cut])
