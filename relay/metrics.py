"""Prometheus metrics of a relay, read from the core's counters at scrape time.

Nothing is counted twice: the core keeps plain counters (cheap on the
packet path) and this collector turns them into Prometheus families when
`/metrics` is scraped. Each `RelayMetrics` has its own registry, so several
relays (tests, a node with an embedded relay) never collide; a node can
`registry.register(RelayCollector(core))` into its own registry instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Counted(Protocol):
    @property
    def counters(self) -> dict[str, int]: ...

    @property
    def allocation_count(self) -> int: ...


class RelayCollector(Collector):
    """Prometheus families from a TurnCore (or anything with `counters`, `allocation_count`)."""

    def __init__(self, core: Callable[[], _Counted | None]) -> None:
        self._core = core

    def collect(self) -> Iterator[Metric]:
        core = self._core()
        counters: dict[str, int] = dict(core.counters) if core is not None else {}
        allocations = GaugeMetricFamily("pagemesh_relay_allocations", "Allocations currently open")
        allocations.add_metric([], core.allocation_count if core is not None else 0)
        yield allocations
        packets = CounterMetricFamily(
            "pagemesh_relay_packets", "Packets relayed", labels=["direction"]
        )
        volume = CounterMetricFamily("pagemesh_relay_bytes", "Bytes relayed", labels=["direction"])
        for direction in ("to_peer", "to_client"):
            packets.add_metric([direction], counters.get(f"relayed.packets.{direction}", 0))
            volume.add_metric([direction], counters.get(f"relayed.bytes.{direction}", 0))
        yield packets
        yield volume
        refusals = CounterMetricFamily(
            "pagemesh_relay_refusals", "Requests refused, by reason", labels=["reason"]
        )
        drops = CounterMetricFamily(
            "pagemesh_relay_drops", "Messages dropped, by reason", labels=["reason"]
        )
        lifecycle = CounterMetricFamily(
            "pagemesh_relay_allocation_events", "Allocations created and ended", labels=["event"]
        )
        for name, value in sorted(counters.items()):
            kind, _, reason = name.partition(".")
            if kind == "refuse":
                refusals.add_metric([reason], value)
            elif kind == "drop":
                drops.add_metric([reason], value)
            elif kind == "allocations":
                lifecycle.add_metric([reason], value)
        yield refusals
        yield drops
        yield lifecycle


class RelayMetrics:
    """A registry holding one relay's collector; `render()` is the `/metrics` body."""

    def __init__(self, core: Callable[[], _Counted | None]) -> None:
        self.collector = RelayCollector(core)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)
