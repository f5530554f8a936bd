"""Kademlia DHT of the signaling nodes: signed multi-value records, stock-kademlia compatible wire.

The protocol core (`dht.core.DHTCore`) does no I/O; `dht.node.DHTNode` runs it
on an asyncio UDP socket. This package imports nothing else of pagemesh.
"""

from .core import DHTConfig, DHTCore, LocalProtocolError
from .identity import Identity
from .ids import key_for, node_id_for
from .records import Record, RecordLimits, Refusal

__all__ = [
    "DHTConfig",
    "DHTCore",
    "Identity",
    "LocalProtocolError",
    "Record",
    "RecordLimits",
    "Refusal",
    "key_for",
    "node_id_for",
]
