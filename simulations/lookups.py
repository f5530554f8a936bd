"""Measured lookups: launch find_node / get_records on the overlay and score them."""

from __future__ import annotations

from dataclasses import dataclass

from dht.compiled import mypyc_attr
from dht.core import Event, LookupCompleted, RecordsFound
from dht.ids import to_int

from .observe import HopCounter
from .oracle import IdSpace
from .overlay import Overlay, SimNode


@dataclass
class LookupSample:
    started: float
    """Simulated seconds since the start."""
    latency: float
    hops: int | None
    queries: int
    success: bool
    """find_node: the closest live node was found; get: at least one record came back."""
    overlap: float
    """find_node: share of the true k closest live nodes among the k returned."""
    records: int = 0
    floor: float | None = None
    """Round trips along the query chain to the contact the lookup ended on
    (`simulations.observe`): no lookup learning from answers ends sooner."""


@mypyc_attr(allow_interpreted_subclasses=True)
class LookupProbe:
    """Launches lookups whose outcome is compared with the oracle's truth."""

    def __init__(self, overlay: Overlay, epoch: float, k: int) -> None:
        self.overlay = overlay
        self.epoch = epoch
        self.k = k
        self.hops = HopCounter(lambda: overlay.now)
        overlay.observers.append(self.hops)
        self.samples: list[LookupSample] = []
        self.space: IdSpace | None = None
        """Set by the caller to the live population before scoring find_node lookups."""

    def find(self, node: SimNode, target: bytes) -> None:
        started = self.overlay.now
        self.hops.track(node.addr, target)

        def done(origin: SimNode, event: Event) -> None:
            assert isinstance(event, LookupCompleted)
            closest = event.contacts[0].addr if event.contacts else None
            hops, floor = self.hops.finish_with_floor(origin.addr, target, closest)
            truth = self._truth(target, origin)
            found = {c.node_id for c in event.contacts}
            success = bool(truth) and truth[0] in found
            overlap = len(found.intersection(truth)) / len(truth) if truth else 0.0
            self.samples.append(
                LookupSample(
                    started - self.epoch,
                    self.overlay.now - started,
                    hops,
                    event.queries,
                    success,
                    overlap,
                    floor=floor,
                )
            )

        self.overlay.find_node(node, target, done)

    def get(self, node: SimNode, key: bytes, expected: int = 1) -> None:
        """A record read; success when at least `expected` records came back."""
        started = self.overlay.now
        self.hops.track(node.addr, key)

        def done(origin: SimNode, event: Event) -> None:
            assert isinstance(event, RecordsFound)
            hops, floor = self.hops.finish_with_floor(origin.addr, key, None)
            got = len(event.records)
            self.samples.append(
                LookupSample(
                    started - self.epoch,
                    self.overlay.now - started,
                    hops,
                    event.queries,
                    got >= expected,
                    0.0,
                    got,
                    floor,
                )
            )

        self.overlay.get_records(node, key, done)

    def _truth(self, target: bytes, origin: SimNode) -> list[bytes]:
        if self.space is None:
            return []
        nodes = self.overlay.nodes
        # The truth is among live nodes; the space may hold a few that died since.
        indices = self.space.closest(to_int(target), self.k * 2)
        live = [nodes[i] for i in indices if nodes[i].alive and nodes[i] is not origin]
        return [n.node_id for n in live[: self.k]]


__all__ = ["LookupProbe", "LookupSample"]
