"""A node's Prometheus metrics, on a registry of its own (several nodes may share a process)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .reachability import GAUGE_CHECKS

if TYPE_CHECKING:
    from .node import SignalingNode


class _DHTCollector(Collector):
    """The DHT core's counters (RPCs by kind, drops by reason) read at scrape time."""

    def __init__(self, node: SignalingNode) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        core = self.node.dht.core
        events = CounterMetricFamily(
            "pagemesh_dht_events", "DHT core counters: rpc.*, drop.* and others", labels=["event"]
        )
        for name, value in sorted(core.counters.items()):
            events.add_metric([name], value)
        yield events
        yield GaugeMetricFamily(
            "pagemesh_dht_contacts", "contacts in the routing table", len(core.table)
        )
        yield GaugeMetricFamily("pagemesh_dht_records", "records held", len(core.records))
        links = self.node.links
        malformed = CounterMetricFamily(
            "pagemesh_link_frames_malformed",
            "frames from other nodes that did not parse, by error code",
            labels=["code"],
        )
        for code, count in sorted(links.drops.items()):
            malformed.add_metric([code], count)
        yield malformed
        refused = CounterMetricFamily(
            "pagemesh_links_refused", "node links refused, by reason", labels=["reason"]
        )
        for reason, count in sorted(links.refused.items()):
            refused.add_metric([reason], count)
        yield refused
        rooms = CounterMetricFamily(
            "pagemesh_room_events",
            "room core counters: join.*, signal.* (local, remote, delivered, refused), "
            "link.drop.* (frames from other nodes refused after parsing), read.*, home.*",
            labels=["event"],
        )
        for name, value in sorted(self.node.rooms.counters.items()):
            rooms.add_metric([name], value)
        yield rooms


class NodeMetrics:
    def __init__(self, node: SignalingNode) -> None:
        self.registry = registry = CollectorRegistry()
        self.connections = Counter(
            "pagemesh_client_connections",
            "client WebSocket connections accepted",
            registry=registry,
        )
        clients = Gauge("pagemesh_clients", "authenticated clients connected", registry=registry)
        clients.set_function(lambda: len(node.clients))
        layers = Gauge(
            "pagemesh_layers", "room layers with clients on this node", registry=registry
        )
        layers.set_function(lambda: len(node.rooms.views))
        links = Gauge("pagemesh_node_links", "open links to other nodes", registry=registry)
        links.set_function(lambda: len(node.links))
        reachable = Gauge(
            "pagemesh_reachable",
            "whether other nodes reach this node unasked, by check (dht: its UDP port, "
            "url: its advertised URL, url_tls: whether they verify its certificate): "
            "1 yes, 0 no, -1 not known (docs/operations.md)",
            ["check"],
            registry=registry,
        )
        for check in GAUGE_CHECKS:
            reachable.labels(check).set_function(functools.partial(node.reach.gauge, check))
        client = Gauge(
            "pagemesh_dht_client",
            "1 while the node runs as a DHT client (found unreachable): it asks, holds no "
            "records and is in no routing table",
            registry=registry,
        )
        client.set_function(lambda: float(node.dht.core.client))
        self.joins = Counter("pagemesh_joins", "room joins completed", registry=registry)
        self.client_records = Counter(
            "pagemesh_client_records",
            "opaque records clients stored or read through this node (put, get)",
            ["op"],
            registry=registry,
        )
        self.join_seconds = Histogram(
            "pagemesh_join_seconds",
            "join latency at the node (layer scan, presence signature, store)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )
        self.errors = Counter(
            "pagemesh_client_errors", "error frames sent to clients", ["code"], registry=registry
        )
        self.link_failures = Counter(
            "pagemesh_link_failures",
            "node links that could not be opened or used",
            registry=registry,
        )
        self.refused = Counter(
            "pagemesh_connections_refused",
            "client connections refused before the WebSocket upgrade, or closed waiting for"
            " their hello to make room for a newer one (hello-wait), by reason",
            ["reason"],
            registry=registry,
        )
        self.http_refused = Counter(
            "pagemesh_http_refused",
            "plain HTTP requests refused (429) for coming too fast from one address"
            " ([node] http_per_second, http_burst)",
            registry=registry,
        )
        self.metrics_refused = Counter(
            "pagemesh_metrics_refused",
            "requests for /metrics from clients outside [node] metrics_from (answered 403)",
            registry=registry,
        )
        registry.register(_DHTCollector(node))
        if node.relay is not None:
            registry.register(node.relay.collector)

    async def handler(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})
