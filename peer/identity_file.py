"""A person's identity in a passphrase-encrypted file that moves between clients.

One JSON file carries the 32-byte Ed25519 seed (and optionally the display
name and, from version 2, the contacts: docs/protocol.md 7), encrypted under a
key derived from a passphrase. The Python peer and
the browser (signaling/web/js/identityfile.js) read and write the same bytes,
so one key can follow a person across nodes, browsers and the CLI.
docs/identity.md is the format's contract; this module follows it field by
field.

The construction uses only what WebCrypto offers natively, so the browser needs
no hand-written cryptography:

- PBKDF2-HMAC-SHA256 (RFC 8018 section 5.2) turns the passphrase (UTF-8 of its
  NFC form) and a 16-byte random salt into a 32-byte key. The iteration count
  is a field of the file: 600,000 by default (OWASP's 2023 figure for
  PBKDF2-HMAC-SHA256); an import refuses fewer than 100,000 (a weak file) and
  more than 10,000,000 (a file that would hold the CPU for many seconds).
- AES-256-GCM (NIST SP 800-38D) with a 12-byte random nonce encrypts the seed
  and the name. Every other field is bound as associated data, so changing the
  iteration count, salt or public key fails the tag like a wrong passphrase.

Two kinds of errors, as in h11: `IdentityFileError` (with a `code`) for
anything wrong with a file or its passphrase, and `ValueError` for a caller's
misuse on export (a seed that is not 32 bytes, an empty passphrase). Whatever
the bytes, any other exception out of `parse_identity_file` or
`import_identity` is a bug; tests/peer/test_identity_file.py fuzzes for it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import re
import struct
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nacl.signing import SigningKey

MARKER = "pagemesh-identity"
"""The field whose value is the format's version; it names the file's kind."""
VERSION = 1
"""What a file without contacts is written as (every reader since the first reads it)."""
CONTACTS_VERSION = 2
"""What a file with contacts is written as: the contents are the seed, then a JSON object."""
VERSIONS = (VERSION, CONTACTS_VERSION)
KDF = "pbkdf2-sha256"
DEFAULT_ITERATIONS = 600_000
MIN_ITERATIONS = 100_000
MAX_ITERATIONS = 10_000_000
SEED_BYTES = 32
PUBLIC_KEY_BYTES = 32
SALT_BYTES = 16
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
MAX_NAME_BYTES = 256
"""UTF-8 bytes of a display name: the protocol's 64 characters at 4 bytes each."""
MAX_FILE_BYTES = 1 << 20
"""The largest file either reader looks at; a version 1 file is under 700 bytes, one
with the most contacts (`MAX_CONTACTS` of the largest) under 1 MiB."""
MAX_CONTACTS = 1000
MAX_PETNAME = 64
"""Characters of a petname (the protocol's name length)."""
MAX_PAGE_BYTES = 1024

FIELDS = ("pagemesh-identity", "kdf", "iter", "salt", "nonce", "ct", "pub")
"""The fields of version 1, in the order writers put them. Readers refuse others."""

_PUB_HEX = re.compile(r"[0-9a-f]{64}")
_MIN_CT = SEED_BYTES + TAG_BYTES
_MAX_CT = SEED_BYTES + MAX_NAME_BYTES + TAG_BYTES
_MAX_CT_2 = MAX_FILE_BYTES * 3 // 4 - 512
"""Version 2: what base64 of the largest file can hold, less the other fields."""
_HEX = re.compile(r"[0-9a-f]*")


class IdentityFileError(ValueError):
    """A file that is not a readable identity file for this passphrase.

    `code` names the defect (the JS module throws the same codes):
    `too-large`, `not-identity-file`, `unsupported-version`, `unsupported-kdf`,
    `iterations-out-of-range`, `wrong-passphrase`, `public-key-mismatch`,
    `bad-contents`.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class IdentityFile:
    """The fields of an identity file, decoded and checked, not yet decrypted."""

    iterations: int
    salt: bytes
    nonce: bytes
    ciphertext: bytes
    """AES-256-GCM output: the encrypted contents, then the 16-byte tag."""
    public_key: bytes
    kdf: str = KDF
    version: int = VERSION


class ImportedIdentity(NamedTuple):
    """What an identity file holds: the 32-byte seed and the name (None: no name)."""

    seed: bytes
    name: str | None


@dataclass(frozen=True, slots=True)
class FileContact:
    """A contact as an identity file carries it (docs/identity.md, version 2)."""

    key: bytes
    petname: str
    x: bytes | None = None
    """The X25519 key of their contact card, with `sig` its Ed25519 signature."""
    sig: bytes | None = None
    room: bytes | None = None
    page: str | None = None


@dataclass(frozen=True, slots=True)
class IdentityContents:
    """Everything an identity file holds."""

    seed: bytes
    name: str | None
    contacts: tuple[FileContact, ...] = ()


# --- the file's bytes -----------------------------------------------------------


def parse_identity_file(data: bytes, min_iterations: int = MIN_ITERATIONS) -> IdentityFile:
    """The fields of an identity file, or `IdentityFileError` naming the first defect.

    Reads no more than `MAX_FILE_BYTES`. `min_iterations` lowers the floor for
    tests only; the ceiling `MAX_ITERATIONS` always holds.
    """
    if len(data) > MAX_FILE_BYTES:
        raise IdentityFileError("too-large", f"an identity file has at most {MAX_FILE_BYTES} bytes")
    obj = _json_object(data)
    if MARKER not in obj:
        raise IdentityFileError("not-identity-file", f'not an identity file (no "{MARKER}" field)')
    version = obj[MARKER]
    if version not in VERSIONS or isinstance(version, bool):
        raise IdentityFileError(
            "unsupported-version", f"unsupported identity file version {_show(version)}"
        )
    for field in FIELDS:
        if field not in obj:
            raise IdentityFileError("not-identity-file", f'not an identity file (no "{field}")')
    extra = sorted(set(obj) - set(FIELDS))
    if extra:
        raise IdentityFileError(
            "not-identity-file", f"not an identity file (unknown field {_show(extra[0])})"
        )
    if obj["kdf"] != KDF:
        raise IdentityFileError("unsupported-kdf", f"unsupported kdf {_show(obj['kdf'])}")
    iterations = _iterations(obj["iter"], min_iterations)
    salt = _base64_field(obj, "salt", SALT_BYTES)
    nonce = _base64_field(obj, "nonce", NONCE_BYTES)
    ciphertext = _base64_field(obj, "ct")
    most = _MAX_CT if version == VERSION else _MAX_CT_2
    if not _MIN_CT <= len(ciphertext) <= most:
        raise IdentityFileError("not-identity-file", f'"ct" must hold {_MIN_CT} to {most} bytes')
    return IdentityFile(
        iterations, salt, nonce, ciphertext, _public_key(obj["pub"]), version=int(version)
    )


def serialize_identity_file(file: IdentityFile) -> bytes:
    """The file's bytes: JSON, fields in `FIELDS` order, indented by 2, one final newline.

    JSON.stringify(obj, null, 2) in the browser writes the same bytes.
    """
    obj = {
        MARKER: file.version,
        "kdf": file.kdf,
        "iter": file.iterations,
        "salt": base64.b64encode(file.salt).decode(),
        "nonce": base64.b64encode(file.nonce).decode(),
        "ct": base64.b64encode(file.ciphertext).decode(),
        "pub": file.public_key.hex(),
    }
    return (json.dumps(obj, indent=2) + "\n").encode()


def associated_data(file: IdentityFile) -> bytes:
    """What AES-GCM authenticates besides the ciphertext (docs/identity.md, "Associated data")."""
    kdf = file.kdf.encode()
    return b"".join(
        [
            MARKER.encode(),
            struct.pack(">BB", file.version, len(kdf)),
            kdf,
            struct.pack(">I", file.iterations),
            file.salt,
            file.public_key,
        ]
    )


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        # utf-8-sig: one leading BOM is allowed, as the browser's TextDecoder drops it.
        text = data.decode("utf-8-sig")
        obj = json.loads(text, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise IdentityFileError("not-identity-file", "not an identity file (not JSON)") from exc
    if not isinstance(obj, dict):
        raise IdentityFileError("not-identity-file", "not an identity file (not a JSON object)")
    return obj


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; the browser's JSON.parse refuses them too.
    raise ValueError(f"{name} is not JSON")


def _iterations(value: Any, min_iterations: int) -> int:
    # An integral JSON number: JSON.parse reads 600000.0 as 600000, so Python does too.
    # A number too big for a double is infinite in the browser and out of range in both.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, float) and math.isinf(value):
        pass
    elif not isinstance(value, int) or isinstance(value, bool):
        raise IdentityFileError("not-identity-file", '"iter" must be an integer')
    if not min_iterations <= value <= MAX_ITERATIONS:
        raise IdentityFileError(
            "iterations-out-of-range",
            f"iterations {_show(value)} out of range ({min_iterations} to {MAX_ITERATIONS})",
        )
    return int(value)


def _base64_field(obj: dict[str, Any], field: str, size: int | None = None) -> bytes:
    value = obj[field]
    if not isinstance(value, str):
        raise IdentityFileError("not-identity-file", f'"{field}" must be base64')
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise IdentityFileError("not-identity-file", f'"{field}" must be base64') from exc
    # Canonical only (padding, no stray bits): one file has one spelling in both readers.
    if base64.b64encode(raw).decode() != value:
        raise IdentityFileError("not-identity-file", f'"{field}" must be base64')
    if size is not None and len(raw) != size:
        raise IdentityFileError("not-identity-file", f'"{field}" must hold {size} bytes')
    return raw


def _public_key(value: Any) -> bytes:
    if not isinstance(value, str) or not _PUB_HEX.fullmatch(value):
        raise IdentityFileError(
            "not-identity-file", f'"pub" must be {2 * PUBLIC_KEY_BYTES} lowercase hex digits'
        )
    return bytes.fromhex(value)


def _show(value: Any) -> str:
    # A value from the file, quoted and cut short for an error message.
    text = json.dumps(value) if isinstance(value, str | int | float | bool | None) else "?"
    return text if len(text) <= 40 else text[:37] + "..."


# --- export and import ----------------------------------------------------------------


def export_identity(
    seed: bytes,
    passphrase: str,
    name: str | None = None,
    *,
    contacts: tuple[FileContact, ...] | list[FileContact] = (),
    iterations: int = DEFAULT_ITERATIONS,
    rng: Callable[[int], bytes] = os.urandom,
) -> bytes:
    """An identity file holding `seed` (and `name`, and `contacts`), encrypted under
    `passphrase`: version 1 without contacts, version 2 with them.

    An empty `name` is stored as no name. `iterations` below `MIN_ITERATIONS`
    are for tests (such a file imports only with a lowered `min_iterations`);
    `rng` gives the salt, then the nonce.
    """
    if not isinstance(seed, bytes | bytearray) or len(seed) != SEED_BYTES:
        raise ValueError(f"an Ed25519 seed has {SEED_BYTES} bytes")
    if not passphrase:
        raise ValueError("an empty passphrase protects nothing")
    if not 1 <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"iterations must be 1 to {MAX_ITERATIONS}")
    version = CONTACTS_VERSION if contacts else VERSION
    if contacts:
        contents = bytes(seed) + _contents_json(name, tuple(contacts))
    else:
        contents = bytes(seed) + _name_bytes(name)
    salt, nonce = rng(SALT_BYTES), rng(NONCE_BYTES)
    header = IdentityFile(
        iterations=iterations,
        salt=salt,
        nonce=nonce,
        ciphertext=b"",
        public_key=bytes(SigningKey(bytes(seed)).verify_key),
        version=version,
    )
    key = _derive_key(_passphrase_bytes(passphrase), salt, iterations)
    ciphertext = AESGCM(key).encrypt(nonce, contents, associated_data(header))
    return serialize_identity_file(
        IdentityFile(
            iterations=iterations,
            salt=salt,
            nonce=nonce,
            ciphertext=ciphertext,
            public_key=header.public_key,
            version=version,
        )
    )


def import_identity(
    data: bytes, passphrase: str, *, min_iterations: int = MIN_ITERATIONS
) -> ImportedIdentity:
    """The (seed, name) an identity file holds, or `IdentityFileError`.

    The seed's public key is checked against the file's `pub`. `min_iterations`
    lowers the floor for tests only. `read_identity` gives the contacts too.
    """
    contents = read_identity(data, passphrase, min_iterations=min_iterations)
    return ImportedIdentity(contents.seed, contents.name)


def read_identity(
    data: bytes, passphrase: str, *, min_iterations: int = MIN_ITERATIONS
) -> IdentityContents:
    """All an identity file holds (seed, name, contacts), or `IdentityFileError`."""
    file = parse_identity_file(data, min_iterations)
    try:
        secret = _passphrase_bytes(passphrase)
    except ValueError as exc:
        raise IdentityFileError("wrong-passphrase", str(exc)) from exc
    key = _derive_key(secret, file.salt, file.iterations)
    try:
        contents = AESGCM(key).decrypt(file.nonce, file.ciphertext, associated_data(file))
    except InvalidTag as exc:
        raise IdentityFileError(
            "wrong-passphrase", "wrong passphrase (or the file was altered)"
        ) from exc
    seed, name = contents[:SEED_BYTES], contents[SEED_BYTES:]
    if bytes(SigningKey(seed).verify_key) != file.public_key:
        raise IdentityFileError(
            "public-key-mismatch", "the file's public key is not the one its seed gives"
        )
    if file.version == CONTACTS_VERSION:
        return _parse_contents_json(seed, name)
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IdentityFileError("bad-contents", "the stored name is not UTF-8") from exc
    return IdentityContents(seed, text or None)


# --- version 2: the seed, then a JSON object ---------------------------------------------


def _contents_json(name: str | None, contacts: tuple[FileContact, ...]) -> bytes:
    """`{"name"?, "contacts": [...]}`, compact, keys in this order: the bytes
    JSON.stringify gives in the browser (docs/identity.md, version 2)."""
    raw_name = _name_bytes(name)  # checks the name as version 1 does
    if len(contacts) > MAX_CONTACTS:
        raise ValueError(f"at most {MAX_CONTACTS} contacts")
    body: dict[str, Any] = {}
    if raw_name:
        body["name"] = name
    body["contacts"] = [_contact_json(c) for c in contacts]
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _contact_json(contact: FileContact) -> dict[str, str]:
    _check_contact(contact, ValueError)
    entry = {"key": contact.key.hex(), "petname": contact.petname}
    if contact.x is not None and contact.sig is not None:
        entry["x"] = contact.x.hex()
        entry["sig"] = base64.b64encode(contact.sig).decode()
    if contact.room is not None:
        entry["room"] = contact.room.hex()
        if contact.page is not None:
            entry["page"] = contact.page
    return entry


def _check_contact(contact: FileContact, error: Callable[[str], Exception]) -> None:
    if len(contact.key) != PUBLIC_KEY_BYTES:
        raise error("a contact's key is 32 bytes")
    if not 0 < len(contact.petname) <= MAX_PETNAME:
        raise error(f"a petname has 1 to {MAX_PETNAME} characters")
    if (contact.x is None) != (contact.sig is None) or (
        contact.x is not None and (len(contact.x) != 32 or len(contact.sig or b"") != 64)
    ):
        raise error("a contact card is an X25519 key of 32 bytes and a signature of 64")
    if contact.room is not None and len(contact.room) != 20:
        raise error("a room is 20 bytes")
    if contact.page is not None and len(contact.page.encode("utf-8", "replace")) > MAX_PAGE_BYTES:
        raise error(f"a page URL has at most {MAX_PAGE_BYTES} bytes")


def _bad(message: str) -> IdentityFileError:
    return IdentityFileError("bad-contents", message)


def _parse_contents_json(seed: bytes, data: bytes) -> IdentityContents:
    try:
        body = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _bad("the contents are not UTF-8 JSON") from exc
    if not isinstance(body, dict):
        raise _bad("the contents are not a JSON object")
    name = body.get("name")
    if name is not None and (
        not isinstance(name, str) or not 0 < len(name.encode("utf-8", "replace")) <= MAX_NAME_BYTES
    ):
        raise _bad(f"the name is a string of 1 to {MAX_NAME_BYTES} UTF-8 bytes")
    contacts = body.get("contacts")
    if not isinstance(contacts, list) or len(contacts) > MAX_CONTACTS:
        raise _bad(f"the contacts are a list of at most {MAX_CONTACTS}")
    return IdentityContents(seed, name, tuple(_parse_contact(c) for c in contacts))


def _hex_bytes(entry: dict[str, Any], field: str, size: int) -> bytes | None:
    value = entry.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 2 * size or not _HEX.fullmatch(value):
        raise _bad(f'a contact\'s "{field}" is {2 * size} lowercase hex digits')
    return bytes.fromhex(value)


def _parse_contact(entry: Any) -> FileContact:
    if not isinstance(entry, dict):
        raise _bad("a contact is a JSON object")
    key = _hex_bytes(entry, "key", PUBLIC_KEY_BYTES)
    petname, page, sig = entry.get("petname"), entry.get("page"), entry.get("sig")
    if key is None or not isinstance(petname, str):
        raise _bad('a contact has a "key" and a "petname"')
    if page is not None and not isinstance(page, str):
        raise _bad('a contact\'s "page" is a string')
    raw_sig = None
    if sig is not None:
        if not isinstance(sig, str) or len(sig) != 88:
            raise _bad('a contact\'s "sig" is base64 of 64 bytes')
        try:
            raw_sig = base64.b64decode(sig, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _bad('a contact\'s "sig" is base64 of 64 bytes') from exc
    contact = FileContact(
        key, petname, _hex_bytes(entry, "x", 32), raw_sig, _hex_bytes(entry, "room", 20), page
    )
    _check_contact(contact, _bad)
    return contact


def _name_bytes(name: str | None) -> bytes:
    if name is None:
        return b""
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("the name is not valid Unicode (a lone surrogate)") from exc
    if len(raw) > MAX_NAME_BYTES:
        raise ValueError(f"a name has at most {MAX_NAME_BYTES} UTF-8 bytes")
    return raw


def _passphrase_bytes(passphrase: str) -> bytes:
    # NFC: the same words typed on two systems give the same bytes (macOS input may
    # compose differently). A lone surrogate cannot be UTF-8; the browser refuses it too.
    try:
        return unicodedata.normalize("NFC", passphrase).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("the passphrase is not valid Unicode (a lone surrogate)") from exc


def _derive_key(passphrase: bytes, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", passphrase, salt, iterations, KEY_BYTES)


# --- files on disk ---------------------------------------------------------------


def write_identity_file(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write an exported identity to `path` with mode 0600 (never readable by others).

    Refuses to replace an existing file (`FileExistsError`) unless `overwrite`:
    a file there may be another key's only copy. With `overwrite` the new file
    replaces the old one whole (written beside it, then renamed).
    """
    if not overwrite:
        _write_new(path, data)
        return
    temporary = path.with_name(f".{path.name}.{os.urandom(4).hex()}.tmp")
    try:
        _write_new(temporary, data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def read_identity_file(path: Path) -> bytes:
    """The bytes of an identity file at `path`, or `IdentityFileError` when too large.

    Reads at most one byte past `MAX_FILE_BYTES`, whatever the file's size.
    """
    with path.open("rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise IdentityFileError("too-large", f"an identity file has at most {MAX_FILE_BYTES} bytes")
    return data
