"""The signaling node: rooms over the DHT, the client WebSocket API, signal routing.

`SignalingNode.start(config, dht_config)` runs a DHT node and an aiohttp
server with these routes:

- `/v1/ws`: clients (protocol in `signaling.protocol`, state in
  `signaling.session`; this module is the glue that executes their requests)
- `/v1/node`: other nodes (`signaling.links`)
- `/healthz`, `/metrics`, and `/` (the browser client's place)
- `/embed.js` and `/widget`: the chat a site embeds (`signaling.widget`); nothing
  else may be framed

A client's presence in a layer is a DHT record it signs itself. The node asks
for a fresh signature every `refresh` seconds while the client stays
connected and stores the record at the layer's key; when the client leaves or
the node dies, the record lapses within one `presence_ttl`. The node reads
the layers its clients sit in on the same period, and hears directly from
other home nodes when their clients join or leave, and pushes `peer-joined` /
`peer-left` frames so clients never poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import random
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from aiohttp import WSMsgType, web
from prometheus_client.registry import Collector
from yarl import URL

from dht.core import LocalProtocolError, RecordsHeld
from dht.identity import verify_signature
from dht.ids import key_for
from dht.node import DHTNode
from dht.options import ConfigError
from dht.ratelimit import SourceRateLimiter
from dht.records import Record, Refusal, check_record
from relay.credentials import load_secret, mint_credentials

from . import metrics as node_metrics
from . import seeds
from .admission import Admission, client_address, in_networks, proxy_networks, source_of
from .config import NodeConfig
from .health import HealthFacts, assess
from .layers import (
    CheckHome,
    Forward,
    JoinFinished,
    PublishRecord,
    Push,
    ReadKey,
    ReplyNode,
    RoomCore,
    TellNode,
)
from .links import LINK_PATH, LinkError, LinkPool
from .modules import with_preloads
from .protocol import (
    PROTOCOL_VERSION,
    ErrorCode,
    ErrorFrame,
    GetRecord,
    HomeNode,
    IceServer,
    IceServerList,
    IceServers,
    Join,
    Layers,
    Leave,
    LinkFrame,
    Members,
    Moving,
    PutRecord,
    RecordFound,
    RecordStored,
    ServerFrame,
    Signal,
    Signed,
    Welcome,
    error,
    serialize,
)
from .reachability import NodeReachability, reachability_reasons
from .rooms import is_node_url
from .seed_fetch import fetch_contact
from .seeds import DHT_PATH, SeedUrl
from .session import (
    CLOSE_GOING_AWAY,
    CLOSE_POLICY,
    CLOSE_REPLACED,
    Authenticated,
    ClientSession,
    SessionEvent,
)
from .static import CACHE_CONTROL, StaticFiles, etag_of, not_modified
from .tls import ServerTls, TlsError
from .widget import (
    EMBED_HEADERS,
    EMBED_PATH,
    WIDGET_PATH,
    forbid_framing,
    frame_ancestors,
    widget_headers,
    widget_page,
)

log = logging.getLogger(__name__)

TURN_SCHEMES = ("turn:", "turns:")

NODE_DIRECTORY = key_for("pagemesh/nodes")
"""DHT key under which every node publishes its URL, so clients and nodes find others."""
MAX_MOVING_NODES = 8
MAX_LAYER_SCAN = 64
WEB_DIR = Path(__file__).parent / "web"
WEB_HEADERS = {
    # The page talks to this node and to other nodes (fail-over), loads nothing from elsewhere.
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self' ws: wss: blob:; img-src 'self' blob: data:; "
        "media-src blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
}


def _page(request: web.Request, body: bytes, headers: dict[str, str]) -> web.Response:
    """A page from memory, revalidated on every load (signaling/static.py)."""
    etag = etag_of(body)
    validators = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if not_modified(request, etag):
        return web.Response(status=304, headers={**headers, **validators})
    return web.Response(
        body=body,
        headers={**headers, **validators, "Content-Type": "text/html; charset=utf-8"},
    )


@dataclass(slots=True)
class Client:
    ws: web.WebSocketResponse
    session: ClientSession
    key: bytes = b""
    name: str | None = None
    local_host: str = ""
    """The address of this node the connection reached (where its relay is, too)."""
    remote_host: str = ""
    """The client's address (behind a trusted proxy, the one the proxy forwards)."""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    source: str = ""
    """Where the connection comes from (an IPv4 address or an IPv6 /64), for admission."""
    settled: bool = False
    """Admission no longer counts this connection as waiting for its hello."""
    timer: asyncio.TimerHandle | None = None
    """The session's one timer: a WebSocket PING to a quiet client, or the idle close."""
    transport: asyncio.BaseTransport | None = None
    dropped: bool = False
    """Its connection was aborted for not reading (`SessionLimits.send_timeout`)."""


class EmbeddedRelay(Protocol):
    """A TURN relay running in the node's process (started by whoever starts the node:
    signaling imports nothing of the relay but its credentials, see docs/architecture.md)."""

    secret: bytes
    collector: Collector

    @property
    def urls(self) -> list[str]:
        """stun:, turn: and turns: URLs at which anyone reaches it (none while unknown)."""
        ...

    def urls_for(self, local_host: str, client_host: str) -> list[str]:
        """The URLs for a client that reached this node at `local_host` from `client_host`."""
        ...

    def reload_tls(self) -> bool: ...

    def use_public_address(self, address: str) -> None:
        """The node learned its public address from other nodes (signaling/reachability.py)."""
        ...

    @property
    def serving(self) -> bool:
        """Its listeners are open (for /healthz)."""
        ...

    @property
    def on_loopback_only(self) -> bool:
        """It listens on loopback but tells clients an address elsewhere (for /healthz)."""
        ...

    async def stop(self) -> None: ...


CLIENT_PATH = "/v1/ws"
"""Where clients open their WebSocket (docs/protocol.md 3)."""


class SignalingNode:
    """A running signaling node; create with `await SignalingNode.start(...)`."""

    def __init__(
        self, config: NodeConfig, dht: DHTNode, relay: EmbeddedRelay | None = None
    ) -> None:
        self.config = config
        self.dht = dht
        self.relay = relay
        self.identity = dht.core.identity
        self.node_id = dht.node_id
        self.clients: dict[bytes, Client] = {}
        self.rooms: RoomCore  # made in _serve, once the node's URL is known
        self._room_timer: asyncio.TimerHandle | None = None
        # The DHT refuses operations past its own bound; the room core's reads, stores
        # and checks wait for a slot instead (a crowd of joins queues, nobody hangs).
        self._dht_slots = asyncio.Semaphore(max(1, dht.core.config.max_operations // 2))
        self.admission = Admission(config.admission)
        self._hello_wait: dict[int, Client] = {}
        """Connections waiting for their hello, by id(), the longest waiting first."""
        # Record requests per source address, all its connections together (7.3).
        self._record_sources = SourceRateLimiter(
            config.records_per_source, config.record_source_burst, config.admission.max_sources
        )
        self._http_sources = SourceRateLimiter(
            config.http_per_second, config.http_burst, config.admission.max_sources
        )
        """Plain HTTP requests per source address (`_http_rate`)."""
        self._record_ops: dict[str, int] = {}
        """Record requests of each source address in flight (no entry at zero)."""
        self._proxies = proxy_networks(config.trusted_proxies)
        self._metrics_from = proxy_networks(config.metrics_from)
        self.tls: ServerTls | None = None
        """The listener's certificate when the node serves TLS itself (`tls_cert`)."""
        self.links = LinkPool(
            self.identity,
            self._on_link_frame,
            dht.address[1],
            dht.verify_node,
            config.link_admission,
            self.remote_address,
            dht.address[0],
        )
        self.reach = NodeReachability(dht)
        """Whether other nodes reach this one (dht/reach.py); learns `url` on 0.0.0.0."""
        self.metrics = node_metrics.NodeMetrics(self)
        self.known_nodes: list[str] = []
        self.url = ""
        self._link_failed_at: float | None = None
        self._link_ok_at: float | None = None
        """When a link to another node last failed and last worked (for /healthz)."""
        self._relay_secret = relay.secret if relay else load_secret(config.ice.secret_file)
        self._runner: web.AppRunner | None = None
        self._widget_html = b""
        self._index_html = b""
        self._widget_headers = widget_headers(WEB_HEADERS, frame_ancestors(config.widget_ancestors))
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rng = random.Random()
        self._stopping = False
        self._dht_home: tuple[str, int] | None = None
        """Where other nodes reach this node's DHT, as an address (set at start)."""
        self._unanswered_seeds: list[SeedUrl] = []
        """Seed URLs whose DHT contact could not be fetched at start (asked again later)."""
        self._seed_family = socket.AF_INET

    # --- life cycle ------------------------------------------------------------

    @classmethod
    async def start(
        cls, config: NodeConfig, dht_config: Any = None, relay: EmbeddedRelay | None = None
    ) -> SignalingNode:
        dht_host = config.dht_host or config.host
        family = socket.AF_INET6 if ":" in dht_host else socket.AF_INET
        bootstrap, unanswered = await _seed_addresses(config.bootstrap, family)
        data_dir = Path(config.data_dir) if config.data_dir else None
        dht = await DHTNode.start(
            dht_host,
            config.dht_port,
            data_dir,
            bootstrap=bootstrap,
            config=dht_config,
        )
        node = cls(config, dht, relay)
        node._unanswered_seeds = unanswered
        node._seed_family = family
        try:
            await node._serve()
        except BaseException:
            dht.abort()
            if relay is not None:
                await relay.stop()
            raise
        return node

    async def _serve(self) -> None:
        app = web.Application(middlewares=[self._http_rate, self.reach.middleware])
        app.add_routes(
            [
                web.get(CLIENT_PATH, self._client_handler),
                web.get(LINK_PATH, self.links.accept),
                web.get("/healthz", self._healthz),
                web.get(DHT_PATH, self._dht_contact),
                web.get("/", self._index),
                web.get(WIDGET_PATH, self._widget),
                web.get(EMBED_PATH, self._embed),
                StaticFiles(WEB_DIR, "/web", page_headers=WEB_HEADERS).route(),
            ]
        )
        if self._metrics_from:  # an empty metrics_from: no /metrics at all (404)
            app.add_routes([web.get("/metrics", self._metrics)])
        app.on_response_prepare.append(forbid_framing)
        # Both pages name every module they load (signaling/modules.py): one round trip
        # for the whole graph instead of one per level of imports.
        index = (WEB_DIR / "index.html").read_text()
        self._index_html = with_preloads(index, WEB_DIR, WEB_DIR, "/web/").encode()
        self._widget_html = with_preloads(widget_page(index), WEB_DIR, WEB_DIR, "/web/").encode()
        if self.config.tls_cert:
            self.tls = _server_tls(self.config)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        context = self.tls.context if self.tls is not None else None
        site = web.TCPSite(self._runner, self.config.host, self.config.port, ssl_context=context)
        await site.start()
        host, port = site._server.sockets[0].getsockname()[:2]  # type: ignore[union-attr]
        self.port = port
        scheme = "wss" if self.tls is not None else "ws"
        # Never ws://0.0.0.0: on a wildcard address without public_url, the address other
        # nodes see; checked by them first when checks are on (signaling/reachability.py).
        self.url = await self.reach.start(host, port, scheme, self.config.public_url)
        if self.reach.learned and self.relay is not None:
            self.relay.use_public_address(URL(self.url).host or "")
        self._dht_home = await self._resolve_dht_address()
        self.rooms = RoomCore(
            self.config.room_config(self.dht.core.config.records.max_value_bytes),
            self.identity,
            self.url,
            self._dht_address(),
            self._rng,
            verify_signature,
            self.dht.core.config.records,
            self._ice_servers_at,
        )
        self._spawn(self._prune_loop())
        await self._update_directory()  # so the first welcome can already name other nodes
        self._spawn(self._directory_loop())
        if self._unanswered_seeds:
            self._spawn(self._seed_loop())
        log.info(
            "signaling node %s serving %s (DHT %s:%d, %d contacts)",
            self.node_id.hex()[:12],
            self.url,
            *self.dht.address,
            len(self.dht.core.table),
        )

    @property
    def page_url(self) -> str:
        """Where people open the browser client: `url` as https:// (or http://)."""
        url = URL(self.url)
        return str(url.with_scheme("https" if url.scheme == "wss" else "http"))

    def reload_tls(self) -> bool:
        """SIGHUP: read the certificate files again (new handshakes only; clients that are
        connected stay). A bad pair keeps the previous one and logs why. False without TLS.
        The embedded relay's TLS listener reloads its own pair too."""
        relayed = self.relay.reload_tls() if self.relay is not None else False
        return self.tls.reload() if self.tls is not None else relayed

    async def stop(self, moving: bool = True) -> None:
        """Graceful: tell each client where else to go (`moving`), close, save the DHT."""
        self._stopping = True
        if hasattr(self, "rooms"):
            self.rooms.stopping = True
        if self._room_timer is not None:
            self._room_timer.cancel()
        others = [url for url in self.known_nodes if url != self.url][:MAX_MOVING_NODES]
        clients = list(self.clients.values())
        for client in clients:
            with contextlib.suppress(Exception):
                # A client that does not read must not hold up the shutdown (`_flush`).
                async with asyncio.timeout(self.config.limits.send_timeout):
                    if moving:
                        await client.ws.send_str(serialize(Moving(tuple(others))))
                    await client.ws.close(code=CLOSE_GOING_AWAY, message=b"node shutting down")
        await self._cancel_tasks()
        await self.links.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.relay is not None:
            await self.relay.stop()
        await self.dht.stop()

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for client in self.clients.values():
            tasks.extend(client.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro: Any, owner: set[asyncio.Task[Any]] | None = None) -> asyncio.Task[Any]:
        owner = self._tasks if owner is None else owner
        task = asyncio.create_task(coro)
        owner.add(task)
        task.add_done_callback(owner.discard)
        return task

    # --- HTTP routes -------------------------------------------------------------

    @web.middleware
    async def _http_rate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """At most `http_per_second` plain HTTP requests from one source (bursts of
        `http_burst`): past it, 429 and the connection closes, so one keep-alive connection
        cannot ask without end. WebSocket upgrades have admission instead."""
        if request.path not in (CLIENT_PATH, LINK_PATH):
            source = source_of(self.remote_address(request))
            if not self._http_sources.allow(source, _now()):
                self.metrics.http_refused.inc()
                refused = web.Response(
                    status=429,
                    text="too many requests from your address; slow down\n",
                    headers={"Retry-After": "1"},
                )
                refused.force_close()
                return refused
        response: web.StreamResponse = await handler(request)
        return response

    async def _healthz(self, _request: web.Request) -> web.Response:
        """200 when the node can serve its clients, else 503 with the reasons
        (signaling/health.py, docs/operations.md "Health")."""
        others = sum(1 for url in self.known_nodes if url != self.url)
        facts = HealthFacts(
            now=_now(),
            dht_peers=len(self.dht.core.table),
            bootstrap=bool(self.config.bootstrap),
            other_nodes=others,
            links=len(self.links),
            link_failed_at=self._link_failed_at,
            link_ok_at=self._link_ok_at,
            relay=self.relay.serving if self.relay is not None else None,
            stopping=self._stopping,
            relay_on_loopback=self.relay is not None and self.relay.on_loopback_only,
        )
        health = assess(facts)
        body: dict[str, Any] = {
            "status": "ok" if health.ok else "unavailable",
            "reasons": [str(reason) for reason in health.reasons],
            "notes": [str(note) for note in health.notes],
            "node": self.node_id.hex(),
            "url": self.url,
            "version": PACKAGE_VERSION,
            "protocol": {
                "version": PROTOCOL_VERSION,
                "oldest_served": self.config.limits.min_client_version,
            },
            "dht_peers": facts.dht_peers,
            "other_nodes": others,
            "clients": len(self.clients),
            "links": facts.links,
            "layers": len(self.rooms.views),
        }
        if facts.relay is not None:
            body["relay"] = "serving" if facts.relay else "down"
        return self._with_reachability(body, health.ok)

    async def _dht_contact(self, _request: web.Request) -> web.Response:
        """This node's DHT contact, for a node given its URL as a seed (signaling/seeds.py,
        docs/protocol.md 3.8): an empty host means the URL's host. A node others cannot
        reach (a DHT client) is no seed: 503."""
        if self.dht.core.client:
            return web.json_response({"error": "this node's DHT is not reachable"}, status=503)
        host, port = self._dht_address()
        host = "" if host in ("0.0.0.0", "::", "") else host
        body = {"id": self.node_id.hex(), "host": host, "port": port}
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    async def _seed_loop(self) -> None:
        """Ask the seed URLs that gave nothing at start again, every RETRY_INTERVAL while
        the node knows no other node (a seed that was down, or a proxy not up yet)."""
        while self._unanswered_seeds:
            await asyncio.sleep(seeds.RETRY_INTERVAL)
            if len(self.dht.core.table):
                continue  # joined through another seed or a saved table: keep them for later
            found, self._unanswered_seeds = await _seed_addresses(
                [seed.text for seed in self._unanswered_seeds], self._seed_family, attempts=1
            )
            if found:
                await self.dht.bootstrap(found)

    def _with_reachability(self, body: dict[str, Any], ok: bool) -> web.Response:
        """/healthz with the reachability checks' reasons and report added
        (signaling/reachability.py, docs/operations.md "Reachability")."""
        unreachable = reachability_reasons(self.reach)
        body["reasons"] = [*body["reasons"], *unreachable]
        body["reachability"] = self.reach.report()
        ok = ok and not unreachable
        body["status"] = "ok" if ok else "unavailable"
        return web.json_response(body, status=200 if ok else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        """Prometheus text for the clients in `metrics_from` (after `trusted_proxies`);
        403 for anyone else, counted."""
        if not in_networks(self.remote_address(request), self._metrics_from):
            self.metrics.metrics_refused.inc()
            return web.Response(status=403, text="/metrics: not from this address\n")
        return await self.metrics.handler(request)

    async def _index(self, request: web.Request) -> web.StreamResponse:
        # The browser client: plain modules under /web/, no build step, nothing from elsewhere.
        return _page(request, self._index_html, WEB_HEADERS)

    async def _widget(self, request: web.Request) -> web.StreamResponse:
        # The chat a site frames (signaling/widget.py): the page's chat markup and modules.
        return _page(request, self._widget_html, self._widget_headers)

    async def _embed(self, _request: web.Request) -> web.StreamResponse:
        # The script a site adds to its pages (docs/widget.md): any site may load it.
        return web.FileResponse(WEB_DIR / "embed.js", headers=EMBED_HEADERS)

    # --- clients -------------------------------------------------------------------

    def remote_address(self, request: web.Request) -> str:
        """The address a request comes from; behind a trusted proxy, the one it forwards."""
        forwarded = request.headers.getall("X-Forwarded-For", [])
        return client_address(request.remote or "", forwarded, self._proxies)

    async def _client_handler(self, request: web.Request) -> web.StreamResponse:
        limits = self.config.limits
        remote = self.remote_address(request)
        source = source_of(remote)
        refusal = self.admission.admit(source, _now(), self._evict_hello_wait)
        if refusal is not None:
            # Before the upgrade: a flood from one address costs an accept and a few bytes.
            self.metrics.refused.labels("admission").inc()
            return web.Response(status=429, text=refusal, headers={"Retry-After": "1"})
        client: Client | None = None
        try:
            # aiohttp's own cap is far above ours, so an oversized frame gets our typed
            # error and the connection stays usable; past 4x it is closed (1009). PINGs
            # and PONGs come to us (autoping off): they are the session's to count.
            ws = web.WebSocketResponse(
                max_msg_size=4 * limits.max_frame_bytes, compress=False, autoping=False
            )
            await ws.prepare(request)
            if len(self.clients) >= self.config.max_clients or self._stopping:
                await ws.send_str(serialize(error(ErrorCode.UNAVAILABLE, "node full or stopping")))
                await ws.close(code=1013, message=b"try another node")
                return ws
            session = ClientSession(self.node_id, os.urandom(32), limits, verify_signature, _now())
            sockname = request.transport.get_extra_info("sockname") if request.transport else None
            local = str(sockname[0]) if sockname else ""
            client = Client(ws, session, source=source, local_host=local, remote_host=remote)
            client.transport = request.transport
            self._hello_wait[id(client)] = client
            self.metrics.connections.inc()
            return await self._serve_client(client)
        finally:
            if client is None or not client.settled:
                self.admission.settled(source)
            if client is not None:
                self._hello_wait.pop(id(client), None)
            self.admission.closed(source)

    def _evict_hello_wait(self) -> bool:
        """Close the connection that has waited longest for its hello, to make room for a
        newer one (`admission.unauthenticated_total`): a stranger with many addresses
        cannot hold a node's door shut. False when none is waiting past its upgrade."""
        if not self._hello_wait:
            return False
        client = self._hello_wait.pop(next(iter(self._hello_wait)))
        client.settled = True
        self.admission.settled(client.source)
        self.metrics.refused.labels("hello-wait").inc()
        client.session.close(CLOSE_POLICY, "too many connections waiting for their hello")
        if isinstance(client.transport, asyncio.Transport):
            client.transport.abort()  # its reader ends and cleans up (`_serve_client`)
        else:
            self._spawn(self._flush(client), client.tasks)
        return True

    async def _serve_client(self, client: Client) -> web.WebSocketResponse:
        ws, session = client.ws, client.session
        try:
            await self._flush(client)
            self._arm_client_timer(client)
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    session.receive(msg.data, _now())
                elif msg.type is WSMsgType.PONG:
                    session.receive_pong(_now())
                elif msg.type is WSMsgType.PING:
                    if session.receive_ping(_now()):
                        with contextlib.suppress(ConnectionError, RuntimeError):
                            await ws.pong(msg.data)
                else:
                    continue
                await self._drain(client)
                if session.close_reason is not None:
                    break
                self._arm_client_timer(client)
        finally:
            await self._disconnect(client)
        return ws

    def _arm_client_timer(self, client: Client) -> None:
        """Re-arm the session's timer after what it was fed, as `_arm_room_timer` does. An
        armed handle due no later than the new deadline is kept (it fires, finds nothing due
        and re-arms), so a busy client costs no timer churn; the hello moves it earlier."""
        deadline = client.session.get_timer()
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + max(0.0, deadline - _now())
        if client.timer is not None:
            if client.timer.when() <= when:
                return
            client.timer.cancel()
        client.timer = loop.call_at(when, self._client_timer_due, client)

    def _client_timer_due(self, client: Client) -> None:
        client.timer = None
        session = client.session
        session.handle_timer(_now())
        if session.take_probe():  # a WebSocket PING: a hidden page answers it (session.py)
            self._spawn(self._probe(client), client.tasks)
        if session.close_reason is not None:
            self._spawn(self._flush(client), client.tasks)
        else:
            self._arm_client_timer(client)

    async def _probe(self, client: Client) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await client.ws.ping()

    async def _drain(self, client: Client) -> None:
        while (event := client.session.next_event()) is not None:
            try:
                await self._handle(client, event)
            except Exception:  # a handler bug must not take the connection down
                log.exception("error handling a client frame")
                client.session.error(ErrorCode.UNAVAILABLE, "internal error", None, _now())
        await self._flush(client)

    async def _flush(self, client: Client) -> None:
        """Send what the session has for its client. It runs in whichever task wrote to the
        client (another member's connection, a link to another node), so a client whose
        socket does not drain within `send_timeout` is dropped instead of holding it up."""
        session = client.session
        frames = session.frames_to_send()
        if client.dropped:
            return
        try:
            async with asyncio.timeout(self.config.limits.send_timeout):
                for frame in frames:
                    if isinstance(frame, ErrorFrame):
                        self.metrics.errors.labels(str(frame.code)).inc()
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await client.ws.send_str(serialize(frame))
                if session.close_reason is not None and not client.ws.closed:
                    code, reason = session.close_reason
                    await client.ws.close(code=code, message=reason.encode()[:120])
        except TimeoutError:
            client.dropped = True
            session.close(CLOSE_POLICY, "not reading")
            log.info("dropped a client whose socket did not drain")
            if client.transport is not None:
                client.transport.abort()

    async def _send(self, client: Client, frame: ServerFrame) -> None:
        client.session.send(frame)
        await self._flush(client)

    async def _handle(self, client: Client, event: SessionEvent) -> None:
        now, rooms = _now(), self.rooms
        if isinstance(event, Authenticated):
            await self._authenticated(client, event)
        elif isinstance(event, Join):
            if not rooms.join(client.key, event, now):  # each join reads the DHT
                message = "one join at a time; wait for the answer"
                client.session.error(ErrorCode.RATE_LIMITED, message, event.id, now)
                if event.room not in rooms.seated_rooms(client.key):
                    client.session.rooms.discard(event.room)  # the session reserved it
        elif isinstance(event, Signed):
            if not rooms.signed(client.key, event.id, event.sig, now):
                message = "no signature was asked with that id"
                client.session.error(ErrorCode.BAD_FIELD, message, event.id, now)
        elif isinstance(event, Leave):
            rooms.leave(client.key, event.room, event.id, now)
            client.session.rooms.discard(event.room)
        elif isinstance(event, Members):
            rooms.members(client.key, event, now)
        elif isinstance(event, Layers):
            rooms.layers(client.key, event, now)
        elif isinstance(event, Signal):
            rooms.signal(client.key, event, now)
        elif isinstance(event, IceServers):
            client.session.send(IceServerList(self.ice_servers(client.key), event.id))
        elif isinstance(event, PutRecord | GetRecord):
            refusal = self._admit_record_source(client.source, now)
            if refusal is not None:
                client.session.record_done()  # the session counted it; it never runs
                client.session.error(ErrorCode.RATE_LIMITED, refusal, event.id, now)
            else:
                source = client.source
                self._record_ops[source] = self._record_ops.get(source, 0) + 1
                task = self._spawn(self._record_op(client, event), client.tasks)
                task.add_done_callback(lambda _t: self._record_source_done(source))
        await self._run_rooms()

    def _admit_record_source(self, source: str, now: float) -> str | None:
        """Why a record request of `source` is refused, or None (docs/protocol.md 7.3):
        every connection of one address together, so many connections (or a fresh one
        for each spent burst) bring no more DHT lookups than one address's budget."""
        cap = self.config.record_ops_per_source
        if self._record_ops.get(source, 0) >= cap:
            return f"at most {cap} record requests of one address at once"
        if not self._record_sources.allow(source, now):
            return "too many record requests from this address"
        return None

    def _record_source_done(self, source: str) -> None:
        left = self._record_ops.get(source, 0) - 1
        if left > 0:
            self._record_ops[source] = left
        else:
            self._record_ops.pop(source, None)  # only addresses with requests in flight

    async def _record_op(self, client: Client, frame: PutRecord | GetRecord) -> None:
        """An opaque record for a client (docs/protocol.md 7.3): checked as any DHT node
        checks a record before anything is sent, then stored or read; the session counted
        it in `record_ops` and this answers it whatever happens."""
        session = client.session
        try:
            if isinstance(frame, PutRecord):
                await self._put_record(client, frame)
            else:
                await self._get_record(client, frame)
        finally:
            session.record_done()
            await self._flush(client)

    async def _put_record(self, client: Client, frame: PutRecord) -> None:
        record, session = frame.record, client.session
        verdict = check_record(record, _now(), self.dht.core.config.records, verify_signature)
        if verdict is not Refusal.STORED:
            message = f"record refused: {verdict.name.lower().replace('_', '-')}"
            session.error(ErrorCode.BAD_RECORD, message, frame.id, _now())
            return
        try:
            async with self._dht_slots:
                stored = await self.dht.publish(record)
        except (ConnectionError, RuntimeError, ValueError, LocalProtocolError) as exc:
            log.info("a client's record could not be stored: %s", exc)
            session.error(ErrorCode.UNAVAILABLE, "the DHT could not be reached", frame.id, _now())
            return
        self.metrics.client_records.labels("put").inc()
        session.send(RecordStored(record.key, stored, frame.id))

    async def _get_record(self, client: Client, frame: GetRecord) -> None:
        session = client.session
        try:
            async with self._dht_slots:
                records = await self.dht.get_records(frame.key)
        except (ConnectionError, TimeoutError, RuntimeError, LocalProtocolError) as exc:
            log.info("a client's record read failed: %s", exc)
            session.error(ErrorCode.UNAVAILABLE, "the DHT could not be reached", frame.id, _now())
            return
        self.metrics.client_records.labels("get").inc()
        # The DHT read validated every record; keep the asked publisher's newest.
        mine = [r for r in records if r.publisher == frame.publisher and r.key == frame.key]
        best = max(mine, key=lambda r: r.seq, default=None)
        session.send(RecordFound(frame.key, best, frame.id))

    async def _authenticated(self, client: Client, event: Authenticated) -> None:
        client.key, client.name = event.key, event.name
        client.settled = True
        self.admission.settled(client.source)
        self._hello_wait.pop(id(client), None)
        previous = self.clients.get(event.key)
        if previous is not None:
            # The newcomer proved the key too, so it is the same person reconnecting.
            previous.session.send(error(ErrorCode.REPLACED, "replaced by a newer connection"))
            previous.session.close(CLOSE_REPLACED, "replaced by a newer connection")
            await self._flush(previous)
            await self._disconnect(previous)
        self.clients[event.key] = client
        self.rooms.connect(event.key, client.source, _now())
        others = tuple(url for url in self.known_nodes if url != self.url)[:MAX_MOVING_NODES]
        idle = self.config.limits.idle_timeout
        servers = self.ice_servers(event.key)
        client.session.send(Welcome(event.key, self.url, others, idle, PROTOCOL_VERSION, servers))

    async def _disconnect(self, client: Client) -> None:
        if client.timer is not None:
            client.timer.cancel()
            client.timer = None
        if self.clients.get(client.key) is client:
            del self.clients[client.key]
            self.rooms.disconnect(client.key, _now())
        for task in list(client.tasks):
            if task is not asyncio.current_task():
                task.cancel()
        await self._run_rooms()

    # --- rooms: the core decides, the glue runs its commands ------------------------------

    async def _run_rooms(self) -> None:
        """Carry out what the room core asked for; flush the clients it wrote to."""
        touched: dict[bytes, Client] = {}
        for command in self.rooms.commands():
            if isinstance(command, Push):
                client = self.clients.get(command.client)
                if client is not None:
                    client.session.send(command.frame)
                    touched[command.client] = client
            elif isinstance(command, ReadKey):
                self._spawn(self._read(command))
            elif isinstance(command, PublishRecord):
                self._spawn(self._publish(command))
            elif isinstance(command, CheckHome):
                self._spawn(self._check_home(command))
            elif isinstance(command, TellNode):
                self._spawn(self._send_link(command.home, command.frame))
            elif isinstance(command, ReplyNode):
                self._spawn(self._reply_link(command.remote, command.frame))
            elif isinstance(command, Forward):
                self._spawn(self._forward(command))
            else:
                self._join_finished(command)
        self._arm_room_timer()
        for client in touched.values():
            await self._flush(client)

    def _join_finished(self, done: JoinFinished) -> None:
        if done.layer is None:
            client = self.clients.get(done.client)
            if client is not None and done.room not in self.rooms.seated_rooms(done.client):
                client.session.rooms.discard(done.room)  # the session reserved it for the join
            return
        self.metrics.joins.inc()
        self.metrics.join_seconds.observe(done.seconds)

    async def _read(self, command: ReadKey) -> None:
        records: list[Record] | None
        try:
            async with self._dht_slots:
                records = await self.dht.get_records(command.key, command.quorum)
        except (ConnectionError, TimeoutError, RuntimeError, LocalProtocolError) as exc:
            log.info("layer read failed: %s", exc)
            records = None
        self.rooms.read_done(command.op, records, _now())
        await self._run_rooms()

    async def _publish(self, command: PublishRecord) -> None:
        held: list[Record] | None = None
        try:
            async with self._dht_slots:
                if command.read_back:  # docs/protocol.md 2.5.5

                    def majority(event: RecordsHeld) -> None:  # 2.5.6
                        self.rooms.publish_held(command.op, list(event.held), _now())
                        self._spawn(self._run_rooms())

                    early = majority if command.early else None
                    stored = await self.dht.publish_reading_back(command.record, early)
                    ok = stored.stored > 0
                    held = list(stored.held) if stored.held is not None else None
                else:
                    ok = await self.dht.publish(command.record, command.majority) > 0
        except (ConnectionError, RuntimeError, ValueError, LocalProtocolError) as exc:
            log.warning("could not store a seat list: %s", exc)
            ok = False
        self.rooms.publish_done(command.op, ok, _now(), held)
        await self._run_rooms()

    async def _check_home(self, command: CheckHome) -> None:
        try:
            async with self._dht_slots:
                ok = await self.dht.verify_node(command.node_id, command.addr)
        except (ConnectionError, RuntimeError, ValueError, LocalProtocolError):
            ok = False
        self.rooms.home_checked(command.node_id, command.addr, ok, _now())
        await self._run_rooms()

    def _arm_room_timer(self) -> None:
        """One timer for the room core, re-armed after everything it is fed (as aioquic's
        protocol does): `call_at` on the loop's clock for the core's wall-clock deadline."""
        deadline = self.rooms.get_timer()
        if self._room_timer is not None:
            self._room_timer.cancel()
            self._room_timer = None
        if deadline is not None and not self._stopping:
            loop = asyncio.get_running_loop()
            when = loop.time() + max(0.0, deadline - _now())
            self._room_timer = loop.call_at(when, self._room_timer_due)

    def _room_timer_due(self) -> None:
        self._room_timer = None
        self.rooms.handle_timer(_now())
        self._spawn(self._run_rooms())

    async def _send_link(self, home: HomeNode, frame: LinkFrame) -> bool:
        try:
            await self.links.send(home.node_id, home.url, frame)
        except LinkError as exc:
            log.info("%s", exc)
            self.metrics.link_failures.inc()
            self._link_failed_at = _now()
            return False
        self._link_ok_at = _now()
        return True

    async def _reply_link(self, remote: bytes, frame: LinkFrame) -> None:
        with contextlib.suppress(LinkError):
            await self.links.reply(remote, frame)

    async def _forward(self, command: Forward) -> None:
        """A signal to the target's home node, in the background (a slow home node must not
        stall the sender's other frames); the sender hears if it could not be sent."""
        if await self._send_link(command.home, command.frame):
            return
        client = self.clients.get(command.client)
        if client is not None:
            message = "the peer's node is unreachable"
            client.session.error(ErrorCode.UNAVAILABLE, message, command.frame.id, _now())
            await self._flush(client)

    async def _prune_loop(self) -> None:
        """Forget admission buckets that have refilled (bounded memory without a flood)."""
        while True:
            await asyncio.sleep(30.0)
            self.admission.prune(_now())
            self.links.admission.prune(_now())
            self._http_sources.prune(_now())

    async def _on_link_frame(self, remote: bytes, frame: LinkFrame) -> None:
        self.rooms.link_frame(remote, frame, _now())
        await self._run_rooms()

    # --- ICE servers and the node directory -------------------------------------------------

    def _ice_servers_at(self, peer: bytes, _now: float) -> tuple[IceServer, ...]:
        return self.ice_servers(peer)

    def _dht_address(self) -> tuple[str, int]:
        """Where other nodes reach this node's DHT (to check the seat lists it publishes)."""
        if self._dht_home is not None:
            return self._dht_home
        host, port = self.dht.address[:2]
        if host in ("0.0.0.0", "::", ""):
            host = URL(self.url).host or host
        return host, port

    async def _resolve_dht_address(self) -> tuple[str, int]:
        """The DHT's address, or on a wildcard the URL's host as an address: other nodes
        prove a seat list's node at the address it names (docs/protocol.md 2.4), and a
        datagram's reply comes from an address, never a name (`localhost`,
        `node.example.net`): the address the reachability check's helpers saw it at,
        else the name resolved here (which a machine's own /etc/hosts may map to
        127.0.1.1: then the check's answer is what counts). A name that does not
        resolve stays, and is logged."""
        host, port = self._dht_address()
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(host)
            return host, port
        verdict = self.reach.verdict
        if verdict is not None and verdict.observed is not None:
            return verdict.observed[0], port
        wildcard = self.dht.address[0]
        family = socket.AF_INET if wildcard in ("0.0.0.0", "") else socket.AF_UNSPEC
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, family=family, type=socket.SOCK_DGRAM
            )
        except OSError as exc:
            log.warning("the DHT's host %s does not resolve (%s): other nodes cannot "
                        "prove this node's seat lists", host, exc)  # fmt: skip
            return host, port
        ipv4 = [info for info in infos if info[0] == socket.AF_INET]
        address = str((ipv4 or infos)[0][4][0])
        return address, port

    def ice_servers(self, peer: bytes) -> tuple[IceServer, ...]:
        """STUN servers, and TURN with credentials minted for `peer` (docs/protocol.md 3.2)."""
        ice = self.config.ice
        relay_urls: list[str] = []
        if self.relay is not None:
            client = self.clients.get(peer)
            relay_urls = (
                self.relay.urls_for(client.local_host, client.remote_host)
                if client is not None
                else self.relay.urls
            )
        stun_urls = (*ice.stun_urls, *(u for u in relay_urls if u.startswith("stun:")))
        turn_urls = (*ice.turn_urls, *(u for u in relay_urls if u.startswith(TURN_SCHEMES)))
        servers: list[IceServer] = []
        if stun_urls:
            servers.append(IceServer(stun_urls))
        if turn_urls and self._relay_secret is not None:
            username, password = mint_credentials(
                self._relay_secret, peer.hex(), ice.credential_ttl, _now()
            )
            servers.append(IceServer(turn_urls, username, password))
        return tuple(servers)

    async def _directory_loop(self) -> None:
        """Publish this node's URL under the directory key; read the others' URLs."""
        while True:
            await asyncio.sleep(min(self.config.directory_ttl / 2, self.config.refresh * 3))
            await self._update_directory()

    async def _update_directory(self) -> None:
        try:
            if self.dht.core.client:
                # Found unreachable: its URL would be a dead entry for everyone who reads it.
                self.known_nodes = _directory_urls(
                    await self.dht.get_records(NODE_DIRECTORY), self._rng
                )
                return
            entry: dict[str, Any] = {"v": 1, "url": self.url}
            if self.relay is not None:  # the node advertises its relay with itself
                entry["relays"] = [u for u in self.relay.urls if u.startswith(TURN_SCHEMES)]
            value = json.dumps(entry, separators=(",", ":")).encode()
            await self.dht.put_record(NODE_DIRECTORY, value, ttl=self.config.directory_ttl)
            records = await self.dht.get_records(NODE_DIRECTORY)
            self.known_nodes = _directory_urls(records, self._rng)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            log.info("node directory update failed: %s", exc)


def _now() -> float:
    return time.time()


def _package_version() -> str:
    try:
        return metadata.version("pagemesh")
    except metadata.PackageNotFoundError:  # run from a tree nobody installed
        return "unknown"


PACKAGE_VERSION = _package_version()
"""The installed pagemesh's version, for /healthz."""


def _server_tls(config: NodeConfig) -> ServerTls:
    try:
        return ServerTls(Path(config.tls_cert), Path(config.tls_key))
    except TlsError as exc:
        raise ConfigError(str(exc)) from None


async def _seed_addresses(
    entries: Iterable[str], family: socket.AddressFamily, attempts: int = seeds.FETCH_ATTEMPTS
) -> tuple[list[tuple[str, int]], list[SeedUrl]]:
    """The DHT addresses of `bootstrap` entries, a node's URL asked for its contact
    (all at once, each bounded: signaling/seeds.py); and the URLs that gave none."""
    parsed = [seeds.parse_seed(text) for text in entries]
    addresses = [seed for seed in parsed if isinstance(seed, tuple)]
    urls = [seed for seed in parsed if isinstance(seed, SeedUrl)]
    answers = await asyncio.gather(
        *(fetch_contact(url, family, attempts=attempts) for url in urls),
        return_exceptions=True,
    )
    unanswered = []
    for url, answer in zip(urls, answers, strict=True):
        if isinstance(answer, seeds.SeedError):
            log.warning("%s; asked again while no other node is known", answer)
            unanswered.append(url)
        elif isinstance(answer, BaseException):
            raise answer
        else:
            node_id, address = answer
            log.info("bootstrap %s: DHT contact %s:%d (node %s)", url.text, *address, node_id.hex())
            addresses.append(address)
    return addresses, unanswered


def _directory_urls(records: Iterable[Record], rng: random.Random) -> list[str]:
    """The node URLs of directory entries, each once, in random order. Anyone may store an
    entry with any TTL: an order by expiry put whoever chose the longest first on every
    client's `welcome.nodes` and `moving` list (the first MAX_MOVING_NODES)."""
    urls: list[str] = []
    for record in records:
        try:
            url = json.loads(record.value)["url"]
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(url, str) and is_node_url(url) and url not in urls:
            urls.append(url)
    rng.shuffle(urls)
    return urls
