"""The signaling node: rooms over the DHT, the client WebSocket API, signal routing.

`SignalingNode.start(config, dht_config)` runs a DHT node and an aiohttp
server with these routes:

- `/v1/ws`: clients (protocol in `signaling.protocol`, state in
  `signaling.session`; this module is the glue that executes their requests)
- `/v1/node`: other nodes (`signaling.links`)
- `/healthz`, `/metrics`, and `/` (the browser client's place)

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
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiohttp import WSMsgType, web
from prometheus_client.registry import Collector

from dht.identity import verify_signature
from dht.ids import key_for
from dht.node import DHTNode
from dht.records import Record, Refusal, check_record
from relay.credentials import load_secret, mint_credentials

from . import metrics as node_metrics
from .admission import Admission, source_of
from .config import NodeConfig
from .links import LINK_PATH, LinkError, LinkPool
from .protocol import (
    ErrorCode,
    ErrorFrame,
    HomeNode,
    IceServer,
    IceServerList,
    IceServers,
    Join,
    Joined,
    Leave,
    Left,
    LinkAbsence,
    LinkFrame,
    LinkPresence,
    LinkSignal,
    LinkSignalError,
    Member,
    MemberList,
    Members,
    Moving,
    PeerJoined,
    PeerLeft,
    Presence,
    RoomError,
    ServerFrame,
    Signal,
    SignalFrom,
    Signed,
    SignRequest,
    Welcome,
    error,
    layer_key,
    parse_presence,
    presence_value,
    serialize,
)
from .rooms import choose_layer, estimate_total, is_node_url
from .session import (
    CLOSE_GOING_AWAY,
    CLOSE_REPLACED,
    Authenticated,
    ClientSession,
    SessionEvent,
)

log = logging.getLogger(__name__)

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


@dataclass(slots=True)
class Membership:
    """One client's seat in one room."""

    room: bytes
    layer: int
    seq: int = 0
    record: Record | None = None


@dataclass(slots=True)
class Client:
    ws: web.WebSocketResponse
    session: ClientSession
    key: bytes = b""
    name: str | None = None
    rooms: dict[bytes, Membership] = field(default_factory=dict)
    pending: dict[str | int, asyncio.Future[bytes]] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    sign_counter: int = 0
    source: str = ""
    """Where the connection comes from (an IPv4 address or an IPv6 /64), for admission."""
    settled: bool = False
    """Admission no longer counts this connection as waiting for its hello."""
    joining: bool = False
    """A join of this connection is being carried out (one at a time)."""


@dataclass(slots=True)
class LayerView:
    """What this node knows of one layer its clients sit in."""

    room: bytes
    layer: int
    members: dict[bytes, Presence] = field(default_factory=dict)
    departed: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    """peer -> (seq, expires_at) of a presence that has left: older records are ignored."""
    local: set[bytes] = field(default_factory=set)


class EmbeddedRelay(Protocol):
    """A TURN relay running in the node's process (started by whoever starts the node:
    signaling imports nothing of the relay but its credentials, see docs/architecture.md)."""

    secret: bytes
    urls: list[str]
    """stun: and turn: URLs at which clients reach it."""
    collector: Collector

    async def stop(self) -> None: ...


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
        self.layers: dict[tuple[bytes, int], LayerView] = {}
        self.admission = Admission(config.admission)
        self.links = LinkPool(
            self.identity,
            self._on_link_frame,
            dht.address[1],
            dht.verify_node,
            config.link_admission,
            self.remote_address,
            dht.address[0],
        )
        self.metrics = node_metrics.NodeMetrics(self)
        self.known_nodes: list[str] = []
        self.url = ""
        self._relay_secret = relay.secret if relay else load_secret(config.ice.secret_file)
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rng = random.Random()
        self._stopping = False

    # --- life cycle ------------------------------------------------------------

    @classmethod
    async def start(
        cls, config: NodeConfig, dht_config: Any = None, relay: EmbeddedRelay | None = None
    ) -> SignalingNode:
        bootstrap = [_address(text) for text in config.bootstrap]
        data_dir = Path(config.data_dir) if config.data_dir else None
        dht = await DHTNode.start(
            config.dht_host or config.host,
            config.dht_port,
            data_dir,
            bootstrap=bootstrap,
            config=dht_config,
        )
        node = cls(config, dht, relay)
        try:
            await node._serve()
        except BaseException:
            dht.abort()
            if relay is not None:
                await relay.stop()
            raise
        return node

    async def _serve(self) -> None:
        app = web.Application()
        app.add_routes(
            [
                web.get("/v1/ws", self._client_handler),
                web.get(LINK_PATH, self.links.accept),
                web.get("/healthz", self._healthz),
                web.get("/metrics", self.metrics.handler),
                web.get("/", self._index),
                web.static("/web", WEB_DIR, append_version=False),
            ]
        )
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        host, port = site._server.sockets[0].getsockname()[:2]  # type: ignore[union-attr]
        self.port = port
        bracketed = f"[{host}]" if ":" in host else host
        self.url = self.config.public_url or f"ws://{bracketed}:{port}"
        self.home = HomeNode(self.node_id, self.url)
        self._spawn(self._refresh_loop())
        self._spawn(self._prune_loop())
        await self._update_directory()  # so the first welcome can already name other nodes
        self._spawn(self._directory_loop())
        log.info(
            "signaling node %s serving %s (DHT %s:%d, %d contacts)",
            self.node_id.hex()[:12],
            self.url,
            *self.dht.address,
            len(self.dht.core.table),
        )

    async def stop(self, moving: bool = True) -> None:
        """Graceful: tell each client where else to go (`moving`), close, save the DHT."""
        self._stopping = True
        others = [url for url in self.known_nodes if url != self.url][:MAX_MOVING_NODES]
        clients = list(self.clients.values())
        for client in clients:
            with contextlib.suppress(Exception):
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

    async def _healthz(self, _request: web.Request) -> web.Response:
        body = {
            "status": "ok",
            "node": self.node_id.hex(),
            "url": self.url,
            "dht_peers": len(self.dht.core.table),
            "clients": len(self.clients),
            "links": len(self.links),
            "layers": len(self.layers),
        }
        return web.json_response(body)

    async def _index(self, _request: web.Request) -> web.StreamResponse:
        # The browser client: plain modules under /web/, no build step, nothing from elsewhere.
        return web.FileResponse(WEB_DIR / "index.html", headers=WEB_HEADERS)

    # --- clients -------------------------------------------------------------------

    def remote_address(self, request: web.Request) -> str:
        """The address a request comes from; behind a trusted proxy, the one it forwards."""
        address = request.remote or ""
        if address in self.config.trusted_proxies:
            forwarded = request.headers.get("X-Forwarded-For", "").split(",")[-1].strip()
            with contextlib.suppress(ValueError):
                address = str(ipaddress.ip_address(forwarded))
        return address

    async def _client_handler(self, request: web.Request) -> web.StreamResponse:
        limits = self.config.limits
        source = source_of(self.remote_address(request))
        refusal = self.admission.admit(source, _now())
        if refusal is not None:
            # Before the upgrade: a flood from one address costs an accept and a few bytes.
            self.metrics.refused.labels("admission").inc()
            return web.Response(status=429, text=refusal, headers={"Retry-After": "1"})
        client: Client | None = None
        try:
            # aiohttp's own cap is far above ours, so an oversized frame gets our typed
            # error and the connection stays usable; past 4x it is closed (1009).
            ws = web.WebSocketResponse(max_msg_size=4 * limits.max_frame_bytes, compress=False)
            await ws.prepare(request)
            if len(self.clients) >= self.config.max_clients or self._stopping:
                await ws.send_str(serialize(error(ErrorCode.UNAVAILABLE, "node full or stopping")))
                await ws.close(code=1013, message=b"try another node")
                return ws
            session = ClientSession(self.node_id, os.urandom(32), limits, verify_signature, _now())
            client = Client(ws, session, source=source)
            self.metrics.connections.inc()
            return await self._serve_client(client)
        finally:
            if client is None or not client.settled:
                self.admission.settled(source)
            self.admission.closed(source)

    async def _serve_client(self, client: Client) -> web.WebSocketResponse:
        ws, session = client.ws, client.session
        idle = self._spawn(self._watch_idle(client), client.tasks)
        try:
            await self._flush(client)
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                session.receive(msg.data, _now())
                await self._drain(client)
                if session.close_reason is not None:
                    break
        finally:
            idle.cancel()
            await self._disconnect(client)
        return ws

    async def _watch_idle(self, client: Client) -> None:
        session = client.session
        while (deadline := session.get_timer()) is not None:
            await asyncio.sleep(max(0.0, deadline - _now()))
            session.handle_timer(_now())
            if session.close_reason is not None:
                await self._flush(client)
                return

    async def _drain(self, client: Client) -> None:
        while (event := client.session.next_event()) is not None:
            try:
                await self._handle(client, event)
            except Exception:  # a handler bug must not take the connection down
                log.exception("error handling a client frame")
                client.session.error(ErrorCode.UNAVAILABLE, "internal error", None, _now())
        await self._flush(client)

    async def _flush(self, client: Client) -> None:
        session = client.session
        for frame in session.frames_to_send():
            if isinstance(frame, ErrorFrame):
                self.metrics.errors.labels(str(frame.code)).inc()
            with contextlib.suppress(ConnectionError, RuntimeError):
                await client.ws.send_str(serialize(frame))
        if session.close_reason is not None and not client.ws.closed:
            code, reason = session.close_reason
            await client.ws.close(code=code, message=reason.encode()[:120])

    async def _send(self, client: Client, frame: ServerFrame) -> None:
        client.session.send(frame)
        await self._flush(client)

    async def _handle(self, client: Client, event: SessionEvent) -> None:
        if isinstance(event, Authenticated):
            await self._authenticated(client, event)
        elif isinstance(event, Join):
            if client.joining:  # each join reads the DHT: one at a time per connection
                client.session.error(
                    ErrorCode.RATE_LIMITED,
                    "one join at a time; wait for the answer",
                    event.id,
                    _now(),
                )
                if event.room not in client.rooms:  # the session reserved it for this join
                    client.session.rooms.discard(event.room)
            else:
                client.joining = True
                self._spawn(self._join(client, event), client.tasks)
        elif isinstance(event, Signed):
            waiter = client.pending.pop(event.id, None)
            if waiter is None or waiter.done():
                client.session.error(
                    ErrorCode.BAD_FIELD, "no signature was asked with that id", event.id, _now()
                )
            else:
                waiter.set_result(event.sig)
        elif isinstance(event, Leave):
            await self._leave(client, event.room, announce=True)
            client.session.send(Left(event.room, event.id))
        elif isinstance(event, Members):
            self._spawn(self._members(client, event), client.tasks)
        elif isinstance(event, Signal):
            await self._signal(client, event)
        elif isinstance(event, IceServers):
            client.session.send(IceServerList(self.ice_servers(client.key), event.id))

    async def _authenticated(self, client: Client, event: Authenticated) -> None:
        client.key, client.name = event.key, event.name
        client.settled = True
        self.admission.settled(client.source)
        previous = self.clients.get(event.key)
        if previous is not None:
            # The newcomer proved the key too, so it is the same person reconnecting.
            previous.session.send(error(ErrorCode.REPLACED, "replaced by a newer connection"))
            previous.session.close(CLOSE_REPLACED, "replaced by a newer connection")
            await self._flush(previous)
            await self._disconnect(previous)
        self.clients[event.key] = client
        others = tuple(url for url in self.known_nodes if url != self.url)[:MAX_MOVING_NODES]
        idle = self.config.limits.idle_timeout
        client.session.send(Welcome(event.key, self.url, others, idle))

    async def _disconnect(self, client: Client) -> None:
        if self.clients.get(client.key) is client:
            del self.clients[client.key]
        for task in list(client.tasks):
            if task is not asyncio.current_task():
                task.cancel()
        for room in list(client.rooms):
            await self._leave(client, room, announce=not self._stopping)
        for waiter in client.pending.values():
            waiter.cancel()
        client.pending.clear()

    # --- rooms -----------------------------------------------------------------------

    async def _join(self, client: Client, join: Join) -> None:
        try:
            await self._seat_client(client, join)
        finally:
            client.joining = False

    async def _seat_client(self, client: Client, join: Join) -> None:
        started = time.perf_counter()
        current = client.rooms.get(join.room)
        seated = current is not None and join.layer in (None, current.layer)
        try:
            if current is not None and seated:
                layer = current.layer
                members, total = await self._read_layer(join.room, layer)
            else:
                if current is not None:
                    await self._leave(client, join.room, announce=True)
                layer, members, total = await self._pick_layer(join.room, join.layer)
            view = self._view(join.room, layer)
            for presence in members:  # known before the seat, so the join is announced to them
                await self._learn_and_tell(view, presence, client.key)
            if not seated:
                await self._take_seat(client, view)
        except (ConnectionError, TimeoutError) as exc:
            self._join_failed(client, join.room)
            await self._send(client, error(ErrorCode.UNAVAILABLE, f"join failed: {exc}", join.id))
            return
        except _Refused as exc:
            self._join_failed(client, join.room)
            await self._send(client, error(exc.code, exc.message, join.id))
            return
        peers = tuple(_member(p) for p in view.members.values() if p.peer != client.key)
        self.metrics.joins.inc()
        self.metrics.join_seconds.observe(time.perf_counter() - started)
        total = max(total, len(view.members))
        ice = self.ice_servers(client.key)
        await self._send(client, Joined(join.room, layer, peers, total, ice, join.id))

    async def _pick_layer(self, room: bytes, wanted: int | None) -> tuple[int, list[Presence], int]:
        """The layer a join goes to, its members, and an estimate of the room's size."""
        size = self.config.layer_size
        counts: list[int] = []
        layers: list[list[Presence]] = []
        batch = max(1, self.config.layer_scan_batch)
        chosen = 0
        while len(counts) < MAX_LAYER_SCAN:
            start = len(counts)
            reads = await asyncio.gather(
                *(self._read_layer(room, i) for i in range(start, start + batch))
            )
            for members, _ in reads:
                counts.append(len(members))
                layers.append(members)
            chosen = choose_layer(counts, size)
            if chosen < len(counts):
                break
        else:
            raise _Refused(ErrorCode.UNAVAILABLE, "room full")
        total = estimate_total(counts, size) + 1  # the newcomer counts too
        if wanted is None:
            return chosen, layers[chosen], total
        if wanted < len(layers):
            return wanted, layers[wanted], total
        members, _ = await self._read_layer(room, wanted)
        return wanted, members, total + len(members)

    async def _read_layer(self, room: bytes, layer: int) -> tuple[list[Presence], int]:
        records = await self.dht.get_records(layer_key(room, layer))
        members = []
        for record in records:
            try:
                presence = parse_presence(record)
            except RoomError:
                continue  # somebody stored junk under the key; readers skip it
            if presence.room == room and presence.layer == layer:
                members.append(presence)
        return members, len(members)

    async def _take_seat(self, client: Client, view: LayerView) -> None:
        """Have the client sign its presence, store it, and tell the layer."""
        membership = Membership(view.room, view.layer)
        record = await self._signed_presence(client, membership)
        client.rooms[view.room] = membership
        client.session.rooms.add(view.room)
        view.local.add(client.key)
        presence = parse_presence(record)
        view.departed.pop(client.key, None)
        await self._announce_joined(view, presence, record)
        view.members[client.key] = presence
        await self._store(record)

    async def _signed_presence(self, client: Client, membership: Membership) -> Record:
        """Ask the client to sign a fresh presence record for `membership`; check it."""
        now = _now()
        seq = max(membership.seq + 1, int(now * 1000))
        expires_at = int(now + self.config.presence_ttl)
        key = layer_key(membership.room, membership.layer)
        value = presence_value(membership.room, membership.layer, self.home)
        client.sign_counter += 1
        request_id = f"sign-{client.sign_counter}"
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        client.pending[request_id] = waiter
        await self._send(
            client,
            SignRequest(
                request_id,
                membership.room,
                membership.layer,
                key,
                seq,
                expires_at,
                value.decode(),
                self.node_id,
                self.url,
            ),
        )
        try:
            sig = await asyncio.wait_for(waiter, self.config.sign_timeout)
        except TimeoutError:
            raise _Refused(ErrorCode.BAD_SIGNATURE, "presence was not signed in time") from None
        finally:
            client.pending.pop(request_id, None)
        record = Record(key, client.key, seq, expires_at, value, sig)
        verdict = check_record(record, _now(), self.dht.core.config.records, verify_signature)
        if verdict is not Refusal.STORED:
            raise _Refused(
                ErrorCode.BAD_SIGNATURE, f"presence record refused: {verdict.name.lower()}"
            )
        membership.seq, membership.record = seq, record
        return record

    async def _store(self, record: Record) -> None:
        try:
            await self.dht.publish(record)
        except (ConnectionError, RuntimeError) as exc:
            log.warning("could not store a presence record: %s", exc)

    async def _leave(self, client: Client, room: bytes, announce: bool) -> None:
        membership = client.rooms.pop(room, None)
        client.session.rooms.discard(room)
        if membership is None:
            return
        view = self.layers.get((room, membership.layer))
        if view is None:
            return
        view.local.discard(client.key)
        presence = view.members.pop(client.key, None)
        expires = presence.expires_at if presence else int(_now() + self.config.presence_ttl)
        view.departed[client.key] = (membership.seq, expires)
        if announce:
            await self._announce_left(view, client.key, membership.seq, expires)
        if not view.local and self.layers.get((room, membership.layer)) is view:
            del self.layers[(room, membership.layer)]

    async def _members(self, client: Client, request: Members) -> None:
        membership = client.rooms.get(request.room)
        if membership is None:
            await self._send(
                client, error(ErrorCode.NOT_IN_ROOM, "not joined to that room", request.id)
            )
            return
        try:
            await self._refresh_view(request.room, membership.layer)
        except (ConnectionError, TimeoutError) as exc:
            await self._send(client, error(ErrorCode.UNAVAILABLE, f"members: {exc}", request.id))
            return
        view = self.layers.get((request.room, membership.layer))
        members = list(view.members.values()) if view else []
        others = tuple(_member(p) for p in members if p.peer != client.key)
        await self._send(
            client, MemberList(request.room, membership.layer, others, len(members), request.id)
        )

    def _join_failed(self, client: Client, room: bytes) -> None:
        if room not in client.rooms:
            client.session.rooms.discard(room)
        for where, view in list(self.layers.items()):
            if not view.local:
                del self.layers[where]

    def _view(self, room: bytes, layer: int) -> LayerView:
        view = self.layers.get((room, layer))
        if view is None:
            view = self.layers[(room, layer)] = LayerView(room, layer)
        return view

    def _learn(self, view: LayerView, presence: Presence) -> bool:
        """Take a presence into a view; True when it is news (a member we did not know)."""
        gone = view.departed.get(presence.peer)
        if gone is not None and presence.seq <= gone[0]:
            return False
        view.departed.pop(presence.peer, None)
        known = view.members.get(presence.peer)
        if known is not None and known.seq >= presence.seq:
            return False
        if known is None and len(view.members) >= self.config.view_cap:
            self.metrics.link_drops.labels("view_full").inc()  # a layer is bounded here too
            return False
        view.members[presence.peer] = presence
        return known is None

    # --- presence events ---------------------------------------------------------------

    async def _learn_and_tell(self, view: LayerView, presence: Presence, *skip: bytes) -> None:
        """Take a presence into a view; when it is news, the clients seated here hear it
        (`peer-joined`), whichever source it came from: a DHT read, a join's read, a home
        node's announcement or a signal's presence."""
        if self._learn(view, presence):
            await self._push_to_layer(view, self._joined_frame(presence), presence.peer, *skip)

    async def _push_to_layer(self, view: LayerView, frame: ServerFrame, *skip: bytes) -> None:
        for key in list(view.local):
            client = self.clients.get(key)
            if client is not None and key not in skip:
                await self._send(client, frame)

    def _joined_frame(self, presence: Presence) -> PeerJoined:
        home = presence.home
        return PeerJoined(presence.room, presence.layer, presence.peer, home.node_id, home.url)

    def _left_frame(self, view: LayerView, peer: bytes) -> PeerLeft:
        return PeerLeft(view.room, view.layer, peer)

    async def _member_left(self, view: LayerView, peer: bytes) -> None:
        """A remote member is gone (lapsed or announced): forget it, tell the layer."""
        del view.members[peer]
        await self._push_to_layer(view, self._left_frame(view, peer))

    async def _announce_joined(self, view: LayerView, presence: Presence, record: Record) -> None:
        await self._push_to_layer(view, self._joined_frame(presence), presence.peer)
        await self._tell_home_nodes(view, LinkPresence(record))

    async def _announce_left(self, view: LayerView, peer: bytes, seq: int, expires: int) -> None:
        await self._push_to_layer(view, self._left_frame(view, peer))
        await self._tell_home_nodes(view, LinkAbsence(view.room, view.layer, peer, seq, expires))

    async def _tell_home_nodes(self, view: LayerView, frame: LinkFrame) -> None:
        """Tell the layer's other home nodes, in the background: a slow or dead home node
        must not hold up the client whose join or leave this is."""
        homes = {p.home for p in view.members.values() if p.home.node_id != self.node_id}
        for home in homes:
            self._spawn(self._send_link(home, frame))

    async def _send_link(self, home: HomeNode, frame: LinkFrame) -> bool:
        try:
            await self.links.send(home.node_id, home.url, frame)
        except LinkError as exc:
            log.info("%s", exc)
            self.metrics.link_failures.inc()
            return False
        return True

    async def _refresh_view(self, room: bytes, layer: int) -> None:
        """Re-read a layer from the DHT; push what changed to the clients in it."""
        members, _ = await self._read_layer(room, layer)
        view = self.layers.get((room, layer))
        if view is None:
            return
        now = _now()
        seen = set()
        for presence in members:
            seen.add(presence.peer)
            await self._learn_and_tell(view, presence)
        for peer, presence in list(view.members.items()):
            if peer in view.local:
                continue
            if peer not in seen and presence.expires_at <= now + 1:
                await self._member_left(view, peer)
        for peer, (_, expires) in list(view.departed.items()):
            if expires <= now:
                del view.departed[peer]

    async def _expire_members(self) -> None:
        """Members whose record lapsed unrefreshed are gone, even between reads."""
        now = _now()
        for view in list(self.layers.values()):
            for peer, presence in list(view.members.items()):
                if peer not in view.local and presence.expires_at <= now:
                    await self._member_left(view, peer)

    async def _prune_loop(self) -> None:
        """Forget admission buckets that have refilled (bounded memory without a flood)."""
        while True:
            await asyncio.sleep(30.0)
            self.admission.prune(_now())
            self.links.admission.prune(_now())

    async def _refresh_loop(self) -> None:
        period = self.config.refresh
        while True:
            await asyncio.sleep(period * self._rng.uniform(0.9, 1.1))
            await self._expire_members()
            for client in list(self.clients.values()):
                for membership in list(client.rooms.values()):
                    self._spawn(self._renew(client, membership), client.tasks)
            for room, layer in list(self.layers):
                self._spawn(self._refresh_view_logged(room, layer))

    async def _refresh_view_logged(self, room: bytes, layer: int) -> None:
        try:
            await self._refresh_view(room, layer)
        except (ConnectionError, TimeoutError) as exc:
            log.info("layer refresh failed: %s", exc)

    async def _renew(self, client: Client, membership: Membership) -> None:
        try:
            record = await self._signed_presence(client, membership)
        except _Refused as exc:
            log.info("client %s did not renew its presence: %s", client.key.hex()[:12], exc.message)
            return
        view = self.layers.get((membership.room, membership.layer))
        if view is not None and client.key in view.members:
            view.members[client.key] = parse_presence(record)
        await self._store(record)

    # --- signals -------------------------------------------------------------------------

    async def _signal(self, client: Client, signal: Signal) -> None:
        """Route a signal within the sender's layer of `signal.room`, and nowhere else.

        Who may signal whom (docs/protocol.md, 3.2): both ends seated in the same
        room and layer, as this node sees it (its own clients, and remote members
        it learned from the DHT or their home nodes). Anyone else, whatever keys
        they hold, is an `unknown-peer`.
        """
        membership = client.rooms.get(signal.room)
        view = self.layers.get((signal.room, membership.layer)) if membership else None
        target = view.members.get(signal.to) if view is not None else None
        if (
            membership is None
            or membership.record is None
            or view is None
            or target is None
            or signal.to == client.key
        ):
            self._unknown_peer(client, signal.id)
            return
        if target.home.node_id == self.node_id:
            local = self.clients.get(signal.to)
            if local is None or signal.to not in view.local:
                self._unknown_peer(client, signal.id)
                return
            await self._send(local, SignalFrom(client.key, signal.payload, signal.room))
            self.metrics.signals.labels("local").inc()
            return
        frame = LinkSignal(client.key, signal.to, signal.payload, membership.record, signal.id)
        self._spawn(self._forward(client, target.home, frame), client.tasks)

    async def _forward(self, client: Client, home: HomeNode, frame: LinkSignal) -> None:
        """A signal to the target's home node, in the background (a slow home node must not
        stall the sender's other frames); the sender hears if it could not be sent."""
        if await self._send_link(home, frame):
            self.metrics.signals.labels("remote").inc()
        else:
            client.session.error(
                ErrorCode.UNAVAILABLE, "the peer's node is unreachable", frame.id, _now()
            )
            await self._flush(client)

    def _unknown_peer(self, client: Client, ref: str | int | None) -> None:
        self.metrics.signals.labels("refused").inc()
        client.session.error(ErrorCode.UNKNOWN_PEER, "no such peer in your layer", ref, _now())

    # --- node links ------------------------------------------------------------------------

    async def _on_link_frame(self, remote: bytes, frame: LinkFrame) -> None:
        if isinstance(frame, LinkSignal):
            await self._link_signal(remote, frame)
        elif isinstance(frame, LinkSignalError):
            await self._link_signal_error(remote, frame)
        elif isinstance(frame, LinkPresence):
            await self._link_presence(remote, frame)
        else:
            await self._link_absence(remote, frame)

    def _presence_from(self, remote: bytes, record: Record) -> Presence | None:
        """A presence record a node sent: valid, and of a client homed at that node."""
        verdict = check_record(record, _now(), self.dht.core.config.records, verify_signature)
        if verdict is not Refusal.STORED:
            self._link_drop("bad_record")
            return None
        try:
            presence = parse_presence(record)
        except RoomError:
            self._link_drop("not_presence")
            return None
        if presence.home.node_id != remote:
            self._link_drop("foreign_client")  # a node speaks only for its own clients
            return None
        return presence

    async def _link_signal(self, remote: bytes, frame: LinkSignal) -> None:
        """A signal from a client of `remote`: delivered only within its layer."""
        presence = self._presence_from(remote, frame.presence)
        if presence is None or presence.peer != frame.sender:
            if presence is not None:
                self._link_drop("foreign_client")
            return
        view = self.layers.get((presence.room, presence.layer))
        target = self.clients.get(frame.to)
        if view is None or target is None or frame.to not in view.local:
            message = "the peer is not in that layer here"
            with contextlib.suppress(LinkError):
                await self.links.reply(
                    remote, LinkSignalError(frame.sender, frame.to, message, frame.id)
                )
            self.metrics.signals.labels("refused").inc()
            return
        await self._learn_and_tell(view, presence)  # a member we may not have heard of yet
        seat = view.members.get(frame.sender)
        if seat is None or seat.home.node_id != remote:
            self._link_drop("departed")  # the seat of a member that has left, or moved
            return
        self.metrics.signals.labels("delivered").inc()
        await self._send(target, SignalFrom(frame.sender, frame.payload, presence.room))

    async def _link_signal_error(self, remote: bytes, frame: LinkSignalError) -> None:
        """The peer a client signalled is not at `remote`: tell the client, if `remote` is
        where that peer was homed (a node answers only for its own clients)."""
        client = self.clients.get(frame.sender)
        if client is None:
            return
        for membership in client.rooms.values():
            view = self.layers.get((membership.room, membership.layer))
            known = view.members.get(frame.to) if view is not None else None
            if known is not None and known.home.node_id == remote:
                await self._send(client, error(ErrorCode.UNKNOWN_PEER, frame.message, frame.id))
                return
        self._link_drop("foreign_client")

    async def _link_presence(self, remote: bytes, frame: LinkPresence) -> None:
        presence = self._presence_from(remote, frame.record)
        if presence is None:
            return
        view = self.layers.get((presence.room, presence.layer))
        if view is not None:
            await self._learn_and_tell(view, presence)

    async def _link_absence(self, remote: bytes, frame: LinkAbsence) -> None:
        view = self.layers.get((frame.room, frame.layer))
        if view is None:
            return
        known = view.members.get(frame.peer)
        if known is None or known.home.node_id != remote or known.seq > frame.seq:
            if known is not None and known.home.node_id != remote:
                self._link_drop("foreign_client")
            return
        view.departed[frame.peer] = (frame.seq, frame.expires)
        await self._member_left(view, frame.peer)

    def _link_drop(self, reason: str) -> None:
        self.metrics.link_drops.labels(reason).inc()

    # --- ICE servers and the node directory -------------------------------------------------

    def ice_servers(self, peer: bytes) -> tuple[IceServer, ...]:
        """STUN servers, and TURN with credentials minted for `peer` (docs/protocol.md 3.2)."""
        ice = self.config.ice
        relay_urls = self.relay.urls if self.relay is not None else []
        stun_urls = (*ice.stun_urls, *(u for u in relay_urls if u.startswith("stun:")))
        turn_urls = (*ice.turn_urls, *(u for u in relay_urls if u.startswith("turn:")))
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
            entry: dict[str, Any] = {"v": 1, "url": self.url}
            if self.relay is not None:  # the node advertises its relay with itself
                entry["relays"] = [u for u in self.relay.urls if u.startswith("turn:")]
            value = json.dumps(entry, separators=(",", ":")).encode()
            await self.dht.put_record(NODE_DIRECTORY, value, ttl=self.config.directory_ttl)
            records = await self.dht.get_records(NODE_DIRECTORY)
            self.known_nodes = _directory_urls(records)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            log.info("node directory update failed: %s", exc)


class _Refused(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _now() -> float:
    return time.time()


def _member(presence: Presence) -> Member:
    return Member(presence.peer, presence.home.node_id, presence.home.url)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def _directory_urls(records: Iterable[Record]) -> list[str]:
    urls = []
    for record in sorted(records, key=lambda r: -r.expires_at):
        try:
            url = json.loads(record.value)["url"]
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(url, str) and is_node_url(url):
            urls.append(url)
    return urls
