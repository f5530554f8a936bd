"""Sybil nodes: real cores whose answers about one target are lies.

An attacker is a `DHTCore` that proves its id honestly (it has to, to enter
routing tables) but, for requests about anything, answers find_node and
find_records with its fellow attackers closest to the key and no records,
and acknowledges stores it throws away. It cannot forge honest records: it
does not hold their publishers' keys. Attackers get their ids by grinding
keys, as a real attacker must (ids are hashes of public keys).
"""

from __future__ import annotations

import random
from itertools import count

from dht.core import DHTCore
from dht.ids import to_int
from dht.records import Refusal
from dht.wire import (
    Address,
    FindNode,
    FindRecords,
    FindRecordsReply,
    NodesReply,
    Request,
    StoreRecords,
    StoreRecordsReply,
    WireContact,
)

from .overlay import SimIdentity


class SybilCore(DHTCore):
    """A lying node; `allies` (shared by all attackers) are the wire contacts it points to."""

    allies: list[WireContact] = []

    def _answer(self, msg_id: bytes, request: Request, addr: Address, now: float) -> None:
        if isinstance(request, FindNode | FindRecords):
            target = to_int(request.target if isinstance(request, FindNode) else request.key)
            allies = sorted(
                (a for a in self.allies if a.node_id != self.node_id),
                key=lambda a: to_int(a.node_id) ^ target,
            )[: self.config.k]
            reply = (
                NodesReply(tuple(allies))
                if isinstance(request, FindNode)
                else FindRecordsReply(tuple(allies), (), False)
            )
            self._reply(msg_id, reply, addr)
            return
        if isinstance(request, StoreRecords):
            statuses = tuple(int(Refusal.STORED) for _ in request.records)
            self._reply(msg_id, StoreRecordsReply(statuses), addr)
            return
        super()._answer(msg_id, request, addr, now)

    def _reply(self, msg_id: bytes, reply: object, addr: Address) -> None:
        from dht.core import Message

        self._outbox.append((Message(False, msg_id, reply), addr))  # type: ignore[arg-type]


def grind_identity(
    target: bytes, within: int, rng: random.Random, max_tries: int = 10_000_000
) -> tuple[SimIdentity, int]:
    """A key whose id is closer than `within` (XOR) to `target`; returns it and the tries."""
    goal = to_int(target)
    for tries in count(1):
        identity = SimIdentity.from_seed(rng.randbytes(32))
        if to_int(identity.node_id) ^ goal < within:
            return identity, tries
        if tries >= max_tries:
            break
    raise RuntimeError(f"no id within {within:#x} of the target after {max_tries} tries")


__all__ = ["SybilCore", "grind_identity"]
