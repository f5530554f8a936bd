"""160-bit identifiers: node ids, keys and the XOR metric (Kademlia paper section 2.1).

Every id is the first 160 bits of a domain-separated SHA-256. SHA-256 rather
than BLAKE2 because browsers must compute room keys with WebCrypto, which has
no BLAKE2; the domain prefix keeps a node id from ever equalling a key.
"""

from __future__ import annotations

import hashlib

ID_BYTES = 20
ID_BITS = ID_BYTES * 8

NODE_ID_DOMAIN = b"pagemesh/node-id\x00"
KEY_DOMAIN = b"pagemesh/key\x00"


def derive_id(domain: bytes, data: bytes) -> bytes:
    """The 160-bit id of `data` within `domain`."""
    return hashlib.sha256(domain + data).digest()[:ID_BYTES]


def node_id_for(public_key: bytes) -> bytes:
    """A node's id is bound to its Ed25519 public key, so it cannot be chosen freely."""
    return derive_id(NODE_ID_DOMAIN, public_key)


def key_for(name: str | bytes) -> bytes:
    """The DHT key operators use for a free-form name (`pagemesh dht put NAME ...`)."""
    data = name.encode("utf-8") if isinstance(name, str) else name
    return derive_id(KEY_DOMAIN, data)


def to_int(ident: bytes) -> int:
    return int.from_bytes(ident, "big")


def distance(a: bytes, b: bytes) -> int:
    """XOR distance between two ids."""
    return to_int(a) ^ to_int(b)


def bucket_index(own: int, other: int) -> int:
    """Index of the k-bucket holding `other`: the bit length of the distance, minus one.

    Bucket i holds ids whose distance d satisfies 2**i <= d < 2**(i+1).
    """
    return (own ^ other).bit_length() - 1


def random_id_in_bucket(own: int, index: int, bits: int) -> int:
    """An id at distance [2**index, 2**(index+1)) from `own`, given `bits` random bits."""
    low = 1 << index
    return own ^ (low | (bits & (low - 1)))
