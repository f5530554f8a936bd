"""Kademlia DHT of the signaling nodes: signed multi-value records, stock-kademlia compatible wire.

The protocol core (`dht.core.DHTCore`) does no I/O; `dht.node.DHTNode` runs it
on an asyncio UDP socket. This package imports nothing else of pagemesh.
With PAGEMESH_COMPILED=1 its hot modules are the mypyc-compiled ones
(dht/compiled.py), built first if missing or older than the sources.
"""

from . import compiled

_build = compiled.requested()
if _build is not None:
    compiled.use_compiled("dht", __path__, _build)

# Imported after the compiled modules (if asked for) have their place in __path__.

from .core import DHTConfig, DHTCore, LocalProtocolError  # noqa: E402
from .identity import Identity  # noqa: E402
from .ids import key_for, node_id_for  # noqa: E402
from .records import Record, RecordLimits, Refusal  # noqa: E402

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
