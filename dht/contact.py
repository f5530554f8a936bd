"""A routing contact: a node's id (as bytes, and as an int for XOR) and its address.

In a module of its own so that it stays interpreted when `dht/` is compiled
(dht/compiled.py): the simulator subclasses it (`SimContact`), and a compiled
class refuses both that and `slots=True`, which keeps 10^7 contacts small.
`dht.routing` re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .ids import to_int

A = TypeVar("A")


@dataclass(frozen=True, slots=True)
class Contact(Generic[A]):
    """A node we can reach: its id (as bytes and as an int for XOR) and its address."""

    node_id: bytes
    addr: A
    num: int = field(compare=False, repr=False, default=-1)

    @classmethod
    def make(cls, node_id: bytes, addr: A) -> Contact[A]:
        return cls(node_id, addr, to_int(node_id))
