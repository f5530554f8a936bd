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
import base64
import binascii
import contextlib
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
from .config import NodeConfig
from .links import LINK_PATH, LinkError, LinkPool
from .protocol import (
    ErrorCode,
    HomeNode,
    IceServers,
    Join,
    Leave,
    Members,
    Presence,
    RoomError,
    Signal,
    Signed,
    b64,
    error_frame,
    layer_key,
    parse_presence,
    presence_value,
    server_frame,
)
from .rooms import choose_layer, estimate_total
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
MAX_KNOWN_HOMES = 100_000
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
        self.homes: dict[bytes, HomeNode] = {}
        """Where peers in our clients' layers live: peer key -> home node."""
        self.links = LinkPool(self.identity, self._on_link_frame)
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
                    await client.ws.send_str(server_frame("moving", nodes=others))
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

    async def _client_handler(self, request: web.Request) -> web.WebSocketResponse:
        limits = self.config.limits
        # aiohttp's own cap is far above ours, so an oversized frame gets our typed
        # error and the connection stays usable; past 4x it is closed (1009).
        ws = web.WebSocketResponse(max_msg_size=4 * limits.max_frame_bytes, compress=False)
        await ws.prepare(request)
        if len(self.clients) >= self.config.max_clients or self._stopping:
            await ws.send_str(error_frame(ErrorCode.UNAVAILABLE, "node full or stopping"))
            await ws.close(code=1013, message=b"try another node")
            return ws
        session = ClientSession(self.node_id, os.urandom(32), limits, verify_signature, _now())
        client = Client(ws, session)
        self.metrics.connections.inc()
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
            if frame.startswith('{"type":"error"'):
                self.metrics.count_error(frame)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await client.ws.send_str(frame)
        if session.close_reason is not None and not client.ws.closed:
            code, reason = session.close_reason
            await client.ws.close(code=code, message=reason.encode()[:120])

    async def _send(self, client: Client, frame: str) -> None:
        client.session.send(frame)
        await self._flush(client)

    async def _handle(self, client: Client, event: SessionEvent) -> None:
        if isinstance(event, Authenticated):
            await self._authenticated(client, event)
        elif isinstance(event, Join):
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
            client.session.send(server_frame("left", room=event.room, id=event.id))
        elif isinstance(event, Members):
            self._spawn(self._members(client, event), client.tasks)
        elif isinstance(event, Signal):
            await self._signal(client, event)
        elif isinstance(event, IceServers):
            client.session.send(
                server_frame("ice-servers", id=event.id, servers=self.ice_servers(client.key))
            )

    async def _authenticated(self, client: Client, event: Authenticated) -> None:
        client.key, client.name = event.key, event.name
        previous = self.clients.get(event.key)
        if previous is not None:
            # The newcomer proved the key too, so it is the same person reconnecting.
            previous.session.send(error_frame(ErrorCode.REPLACED, "replaced by a newer connection"))
            previous.session.close(CLOSE_REPLACED, "replaced by a newer connection")
            await self._flush(previous)
            await self._disconnect(previous)
        self.clients[event.key] = client
        others = [url for url in self.known_nodes if url != self.url][:MAX_MOVING_NODES]
        client.session.send(server_frame("welcome", key=event.key, url=self.url, nodes=others))

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
                self._learn(view, presence)
            if not seated:
                await self._take_seat(client, view)
        except (ConnectionError, TimeoutError) as exc:
            self._join_failed(client, join.room)
            await self._send(
                client, error_frame(ErrorCode.UNAVAILABLE, f"join failed: {exc}", join.id)
            )
            return
        except _Refused as exc:
            self._join_failed(client, join.room)
            await self._send(client, error_frame(exc.code, exc.message, join.id))
            return
        peers = [self._member_json(p) for p in view.members.values() if p.peer != client.key]
        self.metrics.joins.inc()
        self.metrics.join_seconds.observe(time.perf_counter() - started)
        await self._send(
            client,
            server_frame(
                "joined",
                id=join.id,
                room=join.room,
                layer=layer,
                members=peers,
                total=max(total, len(view.members)),
                ice_servers=self.ice_servers(client.key),
            ),
        )

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
            server_frame(
                "sign",
                id=request_id,
                room=membership.room,
                layer=membership.layer,
                key=key,
                seq=seq,
                expires=expires_at,
                value=value.decode(),
                node=self.node_id,
                url=self.url,
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
                client, error_frame(ErrorCode.NOT_IN_ROOM, "not joined to that room", request.id)
            )
            return
        try:
            await self._refresh_view(request.room, membership.layer)
        except (ConnectionError, TimeoutError) as exc:
            await self._send(
                client, error_frame(ErrorCode.UNAVAILABLE, f"members: {exc}", request.id)
            )
            return
        view = self.layers.get((request.room, membership.layer))
        members = list(view.members.values()) if view else []
        await self._send(
            client,
            server_frame(
                "members",
                id=request.id,
                room=request.room,
                layer=membership.layer,
                members=[self._member_json(p) for p in members if p.peer != client.key],
                total=len(members),
            ),
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

    def _member_json(self, presence: Presence) -> dict[str, Any]:
        return {
            "key": presence.peer.hex(),
            "node": presence.home.node_id.hex(),
            "url": presence.home.url,
        }

    def _learn(self, view: LayerView, presence: Presence) -> bool:
        """Take a presence into a view; True when it is news (a member we did not know)."""
        gone = view.departed.get(presence.peer)
        if gone is not None and presence.seq <= gone[0]:
            return False
        view.departed.pop(presence.peer, None)
        known = view.members.get(presence.peer)
        if known is not None and known.seq >= presence.seq:
            return False
        view.members[presence.peer] = presence
        if len(self.homes) >= MAX_KNOWN_HOMES and presence.peer not in self.homes:
            del self.homes[next(iter(self.homes))]
        self.homes[presence.peer] = presence.home
        return known is None

    # --- presence events ---------------------------------------------------------------

    async def _push_to_layer(self, view: LayerView, frame: str, skip: bytes = b"") -> None:
        for key in list(view.local):
            client = self.clients.get(key)
            if client is not None and key != skip:
                await self._send(client, frame)

    def _joined_frame(self, presence: Presence) -> str:
        return server_frame(
            "peer-joined", room=presence.room, layer=presence.layer, **self._member_json(presence)
        )

    def _left_frame(self, view: LayerView, peer: bytes) -> str:
        return server_frame("peer-left", room=view.room, layer=view.layer, key=peer)

    async def _member_left(self, view: LayerView, peer: bytes) -> None:
        """A remote member is gone (lapsed or announced): forget it, tell the layer."""
        del view.members[peer]
        await self._push_to_layer(view, self._left_frame(view, peer))

    async def _announce_joined(self, view: LayerView, presence: Presence, record: Record) -> None:
        await self._push_to_layer(view, self._joined_frame(presence), skip=presence.peer)
        frame = {"type": "presence", "record": _record_json(record)}
        await self._tell_home_nodes(view, frame)

    async def _announce_left(self, view: LayerView, peer: bytes, seq: int, expires: int) -> None:
        await self._push_to_layer(view, self._left_frame(view, peer))
        frame = {
            "type": "absence",
            "room": view.room.hex(),
            "layer": view.layer,
            "peer": peer.hex(),
            "seq": seq,
            "expires": expires,
        }
        await self._tell_home_nodes(view, frame)

    async def _tell_home_nodes(self, view: LayerView, frame: dict[str, Any]) -> None:
        homes = {p.home for p in view.members.values() if p.home.node_id != self.node_id}
        await asyncio.gather(*(self._send_link(home, frame) for home in homes))

    async def _send_link(self, home: HomeNode, frame: dict[str, Any]) -> bool:
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
            if self._learn(view, presence):
                await self._push_to_layer(view, self._joined_frame(presence), skip=presence.peer)
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
        frame = {"from": client.key.hex(), "payload": signal.payload}
        if signal.room is not None:
            frame["room"] = signal.room.hex()
        target = self.clients.get(signal.to)
        if target is not None:
            await self._send(target, server_frame("signal", **frame))
            self.metrics.signals.labels("local").inc()
            return
        home = self.homes.get(signal.to)
        if home is None or home.node_id == self.node_id:
            client.session.error(
                ErrorCode.UNKNOWN_PEER, "no such peer in your rooms", signal.id, _now()
            )
            return
        link_frame = {"type": "signal", "to": signal.to.hex(), "id": signal.id, **frame}
        if await self._send_link(home, link_frame):
            self.metrics.signals.labels("remote").inc()
        else:
            client.session.error(
                ErrorCode.UNAVAILABLE, "the peer's node is unreachable", signal.id, _now()
            )

    # --- node links ------------------------------------------------------------------------

    async def _on_link_frame(self, remote: bytes, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "signal":
            await self._link_signal(remote, frame)
        elif kind == "signal-error":
            client = self.clients.get(_hex_field(frame, "from"))
            if client is not None:
                message = str(frame.get("message", "signal not delivered"))[:200]
                await self._send(
                    client, error_frame(ErrorCode.UNKNOWN_PEER, message, frame.get("id"))
                )
        elif kind == "presence":
            await self._link_presence(remote, frame)
        elif kind == "absence":
            await self._link_absence(remote, frame)
        else:
            self.metrics.link_drops.inc()

    async def _link_signal(self, remote: bytes, frame: dict[str, Any]) -> None:
        target = self.clients.get(_hex_field(frame, "to"))
        sender = _hex_field(frame, "from")
        payload = frame.get("payload")
        if len(sender) != 32 or not isinstance(payload, dict | str):
            self.metrics.link_drops.inc()
            return
        if target is None:
            reply = {
                "type": "signal-error",
                "from": frame["from"],
                "to": frame.get("to"),
                "id": frame.get("id"),
                "message": "the peer has left this node",
            }
            home = self.homes.get(sender)
            if home is not None:
                await self._send_link(home, reply)
            return
        out = {"from": sender, "payload": payload}
        room = _hex_field(frame, "room")
        if len(room) == 20:
            out["room"] = room
        self.metrics.signals.labels("delivered").inc()
        await self._send(target, server_frame("signal", **out))

    async def _link_presence(self, remote: bytes, frame: dict[str, Any]) -> None:
        record = _record_from_json(frame.get("record"))
        if (
            record is None
            or check_record(record, _now(), self.dht.core.config.records, verify_signature)
            is not Refusal.STORED
        ):
            self.metrics.link_drops.inc()
            return
        try:
            presence = parse_presence(record)
        except RoomError:
            self.metrics.link_drops.inc()
            return
        if presence.home.node_id != remote:
            self.metrics.link_drops.inc()  # a node speaks only for its own clients
            return
        view = self.layers.get((presence.room, presence.layer))
        if view is not None and self._learn(view, presence):
            await self._push_to_layer(view, self._joined_frame(presence))

    async def _link_absence(self, remote: bytes, frame: dict[str, Any]) -> None:
        room, peer = _hex_field(frame, "room"), _hex_field(frame, "peer")
        layer, seq, expires = frame.get("layer"), frame.get("seq"), frame.get("expires")
        if not (isinstance(layer, int) and isinstance(seq, int) and isinstance(expires, int)):
            self.metrics.link_drops.inc()
            return
        view = self.layers.get((room, layer))
        if view is None:
            return
        known = view.members.get(peer)
        if known is None or known.home.node_id != remote or known.seq > seq:
            return
        view.departed[peer] = (seq, expires)
        await self._member_left(view, peer)

    # --- ICE servers and the node directory -------------------------------------------------

    def ice_servers(self, peer: bytes) -> list[dict[str, Any]]:
        ice = self.config.ice
        relay_urls = self.relay.urls if self.relay is not None else []
        stun_urls = [*ice.stun_urls, *(u for u in relay_urls if u.startswith("stun:"))]
        turn_urls = [*ice.turn_urls, *(u for u in relay_urls if u.startswith("turn:"))]
        servers: list[dict[str, Any]] = []
        if stun_urls:
            servers.append({"urls": stun_urls})
        if turn_urls and self._relay_secret is not None:
            username, password = mint_credentials(
                self._relay_secret, peer.hex(), ice.credential_ttl, _now()
            )
            servers.append({"urls": turn_urls, "username": username, "credential": password})
        return servers

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


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def _hex_field(frame: dict[str, Any], name: str) -> bytes:
    value = frame.get(name)
    if not isinstance(value, str) or len(value) > 128:
        return b""
    try:
        return bytes.fromhex(value)
    except ValueError:
        return b""


def _record_json(record: Record) -> list[Any]:
    return [
        record.key.hex(),
        record.publisher.hex(),
        record.seq,
        record.expires_at,
        b64(record.value),
        b64(record.signature),
    ]


def _record_from_json(data: Any) -> Record | None:
    if not isinstance(data, list) or len(data) != 6:
        return None
    try:
        key, publisher = bytes.fromhex(data[0]), bytes.fromhex(data[1])
        seq, expires = data[2], data[3]
        value = base64.b64decode(data[4], validate=True)
        sig = base64.b64decode(data[5], validate=True)
    except (TypeError, ValueError, binascii.Error):
        return None
    if not (isinstance(seq, int) and isinstance(expires, int)):
        return None
    return Record(key, publisher, seq, expires, value, sig)


def _directory_urls(records: Iterable[Record]) -> list[str]:
    urls = []
    for record in sorted(records, key=lambda r: -r.expires_at):
        try:
            url = json.loads(record.value)["url"]
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(url, str) and url.startswith(("ws://", "wss://")) and len(url) < 300:
            urls.append(url)
    return urls
