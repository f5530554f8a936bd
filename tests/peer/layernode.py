"""A stand-in for one signaling node's client API with layers, for the clients' tests.

`LayerNode` speaks docs/protocol.md section 3 over a real WebSocket on loopback
(port 0), with the typed frames of `signaling.protocol`, and keeps its rooms
as plain dicts: layers of `layer_size`, a join by layer, beside a friend or
where there is a seat, a join while seated moves (peer-left to the old layer,
peer-joined to the new), `layers` with exact counts, `layer-full` and
`unknown-peer`, and signals routed within a layer only. Presence is signed
as a real node asks for it (3.3) and checked. There is no DHT: the clients'
layer handling is tested against the protocol, not against the node's
placement or estimates. It serves the browser client (`/`, `/web/...`) too.

It is not a node: one process, no node links, no limits beyond what a test
needs, exact numbers where a node estimates.

Offers before seated (2.5.3), scripted: with `early`, a first join's sign request
names the members of its layer (or `name_in_sign`, whatever they are: the node may
lie), `name_later` are named after the signature in a `members` frame, and the
client's signals to members named to it are routed (the member hears `peer-joined`
first, as from a real node). `move_on` seats it in another layer after all (the
check moved it on), and named members outside it hear `peer-left`. `hold_joined`,
when set, holds the `joined` until the test sets it, so what a client does before
`joined` is seen in order, not by timing.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import WSMsgType, web
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

import signaling
from signaling.protocol import (
    MAX_LAYER_COUNTS,
    Challenge,
    ClientFrame,
    ErrorCode,
    FrameError,
    Hello,
    HomeNode,
    IceServerList,
    IceServers,
    Join,
    Joined,
    LayerCount,
    LayerList,
    Layers,
    Leave,
    Left,
    Member,
    MemberList,
    Members,
    PeerJoined,
    PeerLeft,
    Ping,
    Pong,
    ServerFrame,
    Signal,
    SignalFrom,
    Signed,
    SignRequest,
    Welcome,
    error,
    hello_message,
    layer_key,
    parse_client_frame,
    presence_payload,
    presence_value,
    serialize,
)

WEB = Path(signaling.__file__).parent / "web"
MAX_FRAME = 64 * 1024


@dataclass
class Client:
    ws: web.WebSocketResponse
    key: bytes = b""
    signs: dict[str, asyncio.Future[bytes]] = field(default_factory=dict)
    joining: bool = False


class LayerNode:
    """See the module docstring. `await LayerNode.start(layer_size=2)`, `await node.stop()`."""

    def __init__(self, layer_size: int) -> None:
        self.layer_size = layer_size
        self.node_id = os.urandom(20)
        self.url = ""
        self.seats: dict[bytes, dict[bytes, int]] = {}
        """room -> member key -> the layer it sits in."""
        self.clients: dict[bytes, Client] = {}
        self.received: list[ClientFrame] = []
        """Every frame the clients sent, in order (tests read what went on the wire)."""
        self._runner: web.AppRunner | None = None
        self._sign_counter = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.early = False
        self.name_in_sign: list[bytes] | None = None
        self.name_later: list[bytes] = []
        self.hold_joined: asyncio.Event | None = None
        self.move_on: int | None = None
        """A first join named members of its first layer, then is seated in this one."""
        self.offering: dict[bytes, tuple[bytes, int, set[bytes]]] = {}
        """Joiner -> (room, layer, members named to it) while its first join is under way."""

    @classmethod
    async def start(cls, layer_size: int = 2) -> LayerNode:
        node = cls(layer_size)
        app = web.Application()
        app.router.add_get("/v1/ws", node._serve)
        app.router.add_get("/", node._index)
        app.router.add_static("/web", WEB)
        node._runner = web.AppRunner(app)
        await node._runner.setup()
        site = web.TCPSite(node._runner, "127.0.0.1", 0)
        await site.start()
        port = node._runner.addresses[0][1]
        node.url = f"ws://127.0.0.1:{port}"
        return node

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for client in list(self.clients.values()):
            await client.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- what tests read ----------------------------------------------------------------

    def layer_of(self, room: bytes, key: bytes) -> int | None:
        return self.seats.get(room, {}).get(key)

    def in_layer(self, room: bytes, layer: int) -> list[bytes]:
        return [k for k, at in self.seats.get(room, {}).items() if at == layer]

    def layers(self, room: bytes) -> int:
        seated = self.seats.get(room, {})
        return max(seated.values(), default=-1) + 1

    # --- the WebSocket ------------------------------------------------------------------

    async def _index(self, _request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB / "index.html")

    async def _serve(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        client = Client(ws)
        nonce = os.urandom(32)
        await self._send(client, Challenge(1, nonce, self.node_id))
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                try:
                    frame = parse_client_frame(msg.data, MAX_FRAME)
                except FrameError as exc:
                    await self._send(client, error(exc.code, exc.message, exc.ref))
                    continue
                self.received.append(frame)
                if not client.key:
                    await self._hello(client, frame, nonce)
                else:
                    self._spawn(self._handle(client, frame))
        finally:
            if self.clients.get(client.key) is client:
                del self.clients[client.key]
                for room in [r for r, seated in self.seats.items() if client.key in seated]:
                    await self._unseat(room, client.key)
        return ws

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, client: Client, frame: ServerFrame) -> None:
        if not client.ws.closed:
            await client.ws.send_str(serialize(frame))

    async def _hello(self, client: Client, frame: ClientFrame, nonce: bytes) -> None:
        if not isinstance(frame, Hello):
            await self._send(client, error(ErrorCode.NOT_AUTHENTICATED, "hello first"))
            return
        try:
            VerifyKey(frame.key).verify(hello_message(nonce, self.node_id), frame.sig)
        except BadSignatureError:
            await self._send(client, error(ErrorCode.BAD_SIGNATURE, "bad hello"))
            return
        client.key = frame.key
        self.clients[frame.key] = client
        await self._send(client, Welcome(frame.key, self.url, (), 60.0))

    async def _handle(self, client: Client, frame: ClientFrame) -> None:
        if isinstance(frame, Join):
            await self._join(client, frame)
        elif isinstance(frame, Signed):
            waiter = client.signs.pop(str(frame.id), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(frame.sig)
        elif isinstance(frame, Layers):
            await self._layers(client, frame)
        elif isinstance(frame, Leave):
            await self._unseat(frame.room, client.key)
            await self._send(client, Left(frame.room, frame.id))
        elif isinstance(frame, Members):
            layer = self.layer_of(frame.room, client.key)
            if layer is None:
                await self._send(client, error(ErrorCode.NOT_IN_ROOM, "not seated", frame.id))
                return
            others = self._members(frame.room, layer, client.key)
            total = len(others) + 1
            await self._send(client, MemberList(frame.room, layer, others, total, frame.id))
        elif isinstance(frame, Signal):
            await self._signal(client, frame)
        elif isinstance(frame, IceServers):
            await self._send(client, IceServerList((), frame.id))
        elif isinstance(frame, Ping):
            await self._send(client, Pong(frame.id))

    # --- rooms --------------------------------------------------------------------------

    async def _join(self, client: Client, join: Join) -> None:
        """Seat as docs/protocol.md 3.2 says: a layer asked for, else a friend's, else the
        first with a seat; seated already and asking elsewhere, a move."""
        if client.joining:
            await self._send(client, error(ErrorCode.RATE_LIMITED, "one join at a time", join.id))
            return
        client.joining = True
        try:
            room, key = join.room, client.key
            current = self.layer_of(room, key)
            layer = join.layer
            if join.friend is not None and layer is None:
                layer = self.layer_of(room, join.friend)
                if layer is None:
                    frame = error(ErrorCode.UNKNOWN_PEER, "no such member in that room", join.id)
                    await self._send(client, frame)
                    return
            if layer is None:
                layer = current if current is not None else self._first_with_a_seat(room)
            if layer != current and len(self.in_layer(room, layer)) >= self.layer_size:
                await self._send(client, error(ErrorCode.LAYER_FULL, "no seat there", join.id))
                return
            if layer != current:
                named = None
                if self.early and current is None:
                    named = (
                        self.name_in_sign
                        if self.name_in_sign is not None
                        else [k for k in self.in_layer(room, layer) if k != key]
                    )
                if not await self._signed(client, room, layer, named):
                    frame = error(ErrorCode.BAD_SIGNATURE, "presence not signed", join.id)
                    await self._send(client, frame)
                    return
                if named is not None and self.move_on is not None:
                    # the check moved the newcomer on (2.3): seated elsewhere, signed again
                    layer = self.move_on
                    if not await self._signed(client, room, layer):
                        frame = error(ErrorCode.BAD_SIGNATURE, "presence not signed", join.id)
                        await self._send(client, frame)
                        return
                if current is not None:
                    await self._unseat(room, key)
                self.seats.setdefault(room, {})[key] = layer
                joined = PeerJoined(room, layer, key, self.node_id, self.url)
                for other in self.in_layer(room, layer):
                    if other != key:
                        await self._send(self.clients[other], joined)
            if self.hold_joined is not None:
                await self.hold_joined.wait()
            offered = self.offering.pop(key, None)
            for member in offered[2] if offered is not None else ():
                if member in self.clients and self.layer_of(room, member) != layer:
                    await self._send(self.clients[member], PeerLeft(room, offered[1], key))
            others = self._members(room, layer, key)
            total = len(self.seats[room])
            answer = Joined(room, layer, others, total, (), join.id, self.layers(room))
            await self._send(client, answer)
        finally:
            client.joining = False

    def _first_with_a_seat(self, room: bytes) -> int:
        layer = 0
        while len(self.in_layer(room, layer)) >= self.layer_size:
            layer += 1
        return layer

    def _members(self, room: bytes, layer: int, but: bytes) -> tuple[Member, ...]:
        return tuple(
            Member(k, self.node_id, self.url) for k in self.in_layer(room, layer) if k != but
        )

    async def _signed(
        self, client: Client, room: bytes, layer: int, named: list[bytes] | None = None
    ) -> bool:
        """Ask the client to sign its presence in `layer` (3.3) and check the signature;
        `named`: the members its sign request names (2.5.3), then `name_later` too."""
        self._sign_counter += 1
        request = f"sign-{self._sign_counter}"
        home = HomeNode(self.node_id, self.url)
        seq, expires = int(time.time() * 1000), int(time.time() + 60)
        value = presence_value(room, layer, home).decode()
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        client.signs[request] = waiter
        key = layer_key(room, layer)
        members = None if named is None else tuple(self._member(k) for k in named)
        ask = SignRequest(
            request, room, layer, key, seq, expires, value, self.node_id, self.url, members
        )
        await self._send(client, ask)
        try:
            sig = await asyncio.wait_for(waiter, 5.0)
            payload = presence_payload(client.key, room, layer, home, seq, expires)
            VerifyKey(client.key).verify(payload, sig)
        except (TimeoutError, BadSignatureError):
            return False
        finally:
            client.signs.pop(request, None)
        if named is not None:
            self.offering[client.key] = (room, layer, set(named))
            if self.name_later:
                later = [*named, *self.name_later]
                self.offering[client.key][2].update(self.name_later)
                frame = MemberList(room, layer, tuple(self._member(k) for k in later), 0)
                await self._send(client, frame)
        return True

    def _member(self, key: bytes) -> Member:
        return Member(key, self.node_id, self.url)

    async def _unseat(self, room: bytes, key: bytes) -> None:
        layer = self.seats.get(room, {}).pop(key, None)
        if layer is None:
            return
        for other in self.in_layer(room, layer):
            await self._send(self.clients[other], PeerLeft(room, layer, key))

    async def _layers(self, client: Client, request: Layers) -> None:
        layer = self.layer_of(request.room, client.key)
        if layer is None:
            await self._send(client, error(ErrorCode.NOT_IN_ROOM, "not seated", request.id))
            return
        seated = self.seats[request.room]
        others = sorted({at for at in seated.values() if at != layer})
        listed = sorted([layer, *others[: MAX_LAYER_COUNTS - 1]])
        counts = tuple(LayerCount(i, len(self.in_layer(request.room, i))) for i in listed)
        total, layers = len(seated), self.layers(request.room)
        await self._send(client, LayerList(request.room, layer, layers, total, counts, request.id))

    async def _signal(self, client: Client, frame: Signal) -> None:
        """Within the sender's layer only (3.2); anyone else is an `unknown-peer`."""
        mine = self.layer_of(frame.room, client.key)
        theirs = self.layer_of(frame.room, frame.to)
        target = self.clients.get(frame.to)
        offering = self.offering.get(client.key)
        if offering is not None and target is not None:
            room, layer, named = offering
            if room == frame.room and frame.to in named:
                # the member hears of the joiner first, as from a real node (2.5.3)
                joined = PeerJoined(room, layer, client.key, self.node_id, self.url)
                await self._send(target, joined)
                await self._send(target, SignalFrom(client.key, frame.payload, frame.room))
                return
        answering = self.offering.get(frame.to)
        if answering is not None and target is not None:
            room, layer, named = answering
            if room == frame.room and client.key in named:
                await self._send(target, SignalFrom(client.key, frame.payload, frame.room))
                return
        if mine is None or mine != theirs or target is None:
            await self._send(client, error(ErrorCode.UNKNOWN_PEER, "not in your layer", frame.id))
            return
        await self._send(target, SignalFrom(client.key, frame.payload, frame.room))
