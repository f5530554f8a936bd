"""Ephemeral TURN credentials shared between a node and its relay (REST-style, RFC 8489 §9.2).

The node mints them for its clients; the relay checks them with the same
secret, so the two never talk about users:

    username = "<expiry unix seconds>:<peer key hex>"
    password = base64(HMAC-SHA1(secret, username))

This is the scheme coturn calls `use-auth-secret` (the TURN REST API draft).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

SECRET_ENV = "PAGEMESH_RELAY_SECRET"
MAX_USERNAME = 513  # RFC 8489 section 14.3


class CredentialError(ValueError):
    """A username that is malformed or expired; the message says which."""


def password_for(secret: bytes, username: str) -> str:
    """The long-term password the relay expects for `username`."""
    digest = hmac.new(secret, username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def mint_credentials(secret: bytes, peer: str, ttl: float, now: float) -> tuple[str, str]:
    """A (username, password) pair valid for `ttl` seconds from `now`, for `peer`."""
    if not secret:
        raise ValueError("a relay secret must not be empty")
    if ":" in peer:
        raise ValueError("a peer name must not contain ':'")
    username = f"{int(now + ttl)}:{peer}"
    return username, password_for(secret, username)


def parse_username(username: str) -> tuple[int, str]:
    """(expiry, peer) of a REST-style `username`; CredentialError if malformed.

    The expiry is not checked here: a relay checks it only when an Allocate
    creates an allocation (docs/relay.md, "Credentials").
    """
    if len(username) > MAX_USERNAME:
        raise CredentialError("username too long")
    expiry, sep, peer = username.partition(":")
    # isascii: str.isdigit() is true for '²', which int() refuses.
    if not sep or not (expiry.isascii() and expiry.isdigit()) or len(expiry) > 20 or not peer:
        raise CredentialError("username is not '<expiry>:<peer>'")
    return int(expiry), peer


def check_username(username: str, now: float) -> str:
    """The peer named by a REST-style `username`; CredentialError if malformed or expired."""
    expiry, peer = parse_username(username)
    if expiry <= now:
        raise CredentialError("credentials expired")
    return peer


def load_secret(path: str | os.PathLike[str] | None, env: str = SECRET_ENV) -> bytes | None:
    """The shared secret from a file (surrounding whitespace removed) or else `env`.

    None when neither is set. The secret is never logged.
    """
    if path:
        secret = Path(path).read_bytes().strip()
        if not secret:
            raise ValueError(f"secret file {path} is empty")
        return secret
    value = os.environ.get(env, "").strip()
    return value.encode() if value else None
