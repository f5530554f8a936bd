"""A node's Ed25519 identity and where it lives on disk.

The seed is kept as 32 raw bytes in a file of mode 0600; it never appears in
logs or in `repr`.
"""

from __future__ import annotations

import os
from pathlib import Path

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from .ids import node_id_for

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
SEED_BYTES = 32


class Identity:
    """An Ed25519 key pair and the node id derived from it."""

    __slots__ = ("_signing_key", "node_id", "public_key")

    def __init__(self, signing_key: SigningKey) -> None:
        self._signing_key = signing_key
        self.public_key: bytes = bytes(signing_key.verify_key)
        self.node_id: bytes = node_id_for(self.public_key)

    @classmethod
    def generate(cls) -> Identity:
        return cls(SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"an Ed25519 seed has {SEED_BYTES} bytes, got {len(seed)}")
        return cls(SigningKey(seed))

    @classmethod
    def load_or_create(cls, path: Path) -> Identity:
        """Load the key at `path`, or create it there with mode 0600."""
        return cls.from_seed(load_or_create_seed(path))

    def sign(self, message: bytes) -> bytes:
        return self._signing_key.sign(message).signature

    def __repr__(self) -> str:
        return f"Identity(node_id={self.node_id.hex()})"


def load_or_create_seed(path: Path) -> bytes:
    """The 32-byte Ed25519 seed at `path`, created there on first use.

    The file is created with mode 0600 (never readable by others, not even for
    an instant) and tightened to 0600 if someone loosened it. Shared by nodes
    (their DHT key) and peers (their identity).
    """
    try:
        seed = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        seed = os.urandom(SEED_BYTES)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(seed)
        return seed
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    if len(seed) != SEED_BYTES:
        raise ValueError(f"{path} is not a {SEED_BYTES}-byte Ed25519 seed")
    return seed


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when `signature` is a valid Ed25519 signature of `message` by `public_key`."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        VerifyKey(public_key).verify(message, signature)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True
