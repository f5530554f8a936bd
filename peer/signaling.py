"""A client of one signaling node's WebSocket API (docs/protocol.md, "Client API").

`SignalingClient.connect(url, signing_key)` proves the key (hello), then
offers `join` (in a layer, beside a friend's key, or a move when seated),
`leave`, `members`, `layers`, `signal`, `ice_servers` and `ping` as
coroutines, and pushes what the node says unasked (`PeerJoined`,
`PeerLeft`, `SignalFrom`, `Moving`, `ErrorFrame`, then `Closed`) to
`events()`. Frames both ways are the typed frames of `signaling.protocol`:
one parse, one serialise; a frame from the node that does not parse is a
counted `BadNodeFrame` event, never an exception.

It keeps the connection alive: a `ping` at least every third of the node's
idle timeout (its `welcome` says how long), so an idle client is never
dropped. When the node asks for a presence signature (`sign`), the client
checks that the record is for a room it joined, at this node, with a bounded
expiry, before signing it: a node cannot make it sign anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from ssl import SSLContext
from typing import Any

import aiohttp
from nacl.signing import SigningKey

from signaling.protocol import (
    MAX_SERVER_FRAME,
    PROTOCOL_VERSION,
    Challenge,
    ClientFrame,
    ErrorCode,
    ErrorFrame,
    FrameError,
    GetRecord,
    Hello,
    HomeNode,
    IceServer,
    IceServerList,
    IceServers,
    Join,
    Joined,
    LayerCount,
    LayerList,
    Layers,
    Leave,
    Member,
    MemberList,
    Members,
    Moving,
    PeerJoined,
    PeerLeft,
    Ping,
    PutRecord,
    Record,
    RecordFound,
    RecordStored,
    ServerFrame,
    Signal,
    SignalFrom,
    Signed,
    SignRequest,
    Welcome,
    hello_message,
    layer_key,
    parse_server_frame,
    presence_payload,
    presence_value,
    serialize,
)

__all__ = [
    "BadNodeFrame",
    "Closed",
    "ErrorFrame",
    "Joined",
    "LayerCount",
    "LayerList",
    "Member",
    "Moving",
    "Named",
    "PeerJoined",
    "PeerLeft",
    "SignalFrom",
    "SignalingClient",
    "SignalingError",
    "SignalingEvent",
]

MAX_PRESENCE_TTL = 3600
MAX_EVENTS = 10_000
DEFAULT_IDLE = 60.0
"""The idle timeout assumed of a node whose welcome does not say."""


class SignalingError(Exception):
    """The node refused a request (an error frame) or the connection failed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class BadNodeFrame:
    """The node sent what this client refuses: a frame that does not parse, or a
    request to sign something that is not ours to sign."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Named:
    """A join under way named these members of `layer` (its `sign` request's `members`,
    or a `members` frame without an id), after we signed its seat: they may be offered
    to before `joined` (docs/protocol.md 2.5.3). Every member named so far."""

    room: bytes
    layer: int
    members: tuple[Member, ...]


@dataclass(frozen=True, slots=True)
class Closed:
    code: int | None
    reason: str


SignalingEvent = (
    PeerJoined | PeerLeft | SignalFrom | Moving | ErrorFrame | BadNodeFrame | Named | Closed
)


class SignalingClient:
    """One authenticated WebSocket to a signaling node."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._http = http
        self._ws = ws
        self.signing_key: SigningKey
        self.key = b""
        self.node_id = b""
        self.node_url = ""
        self.nodes: tuple[str, ...] = ()
        """Other nodes the node named in its welcome (for fail-over)."""
        self.idle_timeout = DEFAULT_IDLE
        self.node_version = 0
        """The protocol version the node speaks (its challenge's, and welcome's `v`)."""
        self.welcome_ice_servers: tuple[IceServer, ...] | None = None
        """The STUN/TURN servers the welcome handed out (5.0); None from older nodes."""
        self.rooms: dict[bytes, int] = {}
        self._joining: set[bytes] = set()
        self._join_turn = asyncio.Lock()
        """One join at a time: a node refuses a join while the previous one is answered."""
        self._waiters: dict[str | int, asyncio.Future[ServerFrame]] = {}
        self._events: asyncio.Queue[SignalingEvent] = asyncio.Queue(MAX_EVENTS)
        self._next_id = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped_events = 0
        self.bad_frames = 0
        self.unasked_members = 0
        """`members` frames without an id for no join of ours under way (dropped)."""
        self.tell_named = False
        """Whether members a join names before `joined` are told as `Named` events (the
        Peer's early offers, 2.5.3); off, a client sees the events it always did."""
        self._signed_join: dict[bytes, int] = {}
        """Room -> the layer whose seat we signed for a join under way (2.5.3)."""

    @classmethod
    async def connect(
        cls,
        url: str,
        signing_key: SigningKey,
        name: str | None = None,
        within: float = 10.0,
        ssl: SSLContext | bool = True,
    ) -> SignalingClient:
        """Open `url` (the node's base URL, ws://host:port or wss://) and prove `signing_key`.
        `ssl`: the context that checks a wss:// node's certificate (default: the system's)."""
        http = aiohttp.ClientSession()
        try:
            ws = await http.ws_connect(
                url.rstrip("/") + "/v1/ws",
                timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                max_msg_size=MAX_SERVER_FRAME,
                ssl=ssl,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            await http.close()
            raise SignalingError("unreachable", f"cannot reach {url}: {exc}") from None
        client = cls(http, ws)
        client.signing_key = signing_key
        client.key = bytes(signing_key.verify_key)
        try:
            await asyncio.wait_for(client._hello(name), within)
        except BaseException:
            await client.close()
            raise
        client._tasks = [
            asyncio.create_task(client._read()),
            asyncio.create_task(client._keepalive()),
        ]
        return client

    async def _hello(self, name: str | None) -> None:
        challenge = await self._receive_one()
        if not isinstance(challenge, Challenge):
            raise SignalingError("bad-frame", f"expected a challenge, got {challenge!r:.100}")
        self.node_id = challenge.node
        self.node_version = challenge.version
        signature = self.signing_key.sign(hello_message(challenge.nonce, self.node_id)).signature
        await self._send(Hello(self.key, signature, name, PROTOCOL_VERSION))
        welcome = await self._receive_one()
        if isinstance(welcome, ErrorFrame) and welcome.code == ErrorCode.TOO_OLD:
            # Asking this node again cannot help, an upgrade can (docs/protocol.md 3.1).
            raise SignalingError(str(welcome.code), f"{welcome.message}: upgrade pagemesh")
        if isinstance(welcome, ErrorFrame):
            raise SignalingError(str(welcome.code), welcome.message)
        if not isinstance(welcome, Welcome):
            raise SignalingError("bad-frame", f"expected a welcome, got {welcome!r:.100}")
        self.node_url = welcome.url
        self.nodes = welcome.nodes
        self.welcome_ice_servers = welcome.ice_servers
        if welcome.version is not None:
            self.node_version = welcome.version
        if welcome.idle is not None:
            self.idle_timeout = welcome.idle

    async def _receive_one(self) -> ServerFrame:
        msg = await self._ws.receive()
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise SignalingError("closed", f"connection closed ({msg.type.name} {msg.extra})")
        try:
            return parse_server_frame(msg.data)
        except FrameError as exc:
            raise SignalingError(exc.code.value, exc.message) from None

    async def _send(self, frame: ClientFrame) -> None:
        try:
            await self._ws.send_str(serialize(frame))
        except (ConnectionError, RuntimeError) as exc:
            raise SignalingError("closed", f"cannot send to the node: {exc}") from None

    # --- requests --------------------------------------------------------------------

    async def request(self, frame: ClientFrame, within: float = 10.0) -> ServerFrame:
        """Send `frame` with a fresh id; return the node's reply with that id."""
        self._next_id += 1
        request_id = self._next_id
        waiter: asyncio.Future[ServerFrame] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = waiter
        try:
            await self._send(_with_id(frame, request_id))
            reply = await asyncio.wait_for(waiter, within)
        finally:
            self._waiters.pop(request_id, None)
        if isinstance(reply, ErrorFrame):
            raise SignalingError(str(reply.code), reply.message)
        return reply

    async def join(
        self, room: bytes, layer: int | None = None, friend: bytes | None = None
    ) -> Joined:
        """Sit in `room`: in `layer`, else beside `friend` (a member's key), else where the
        node places us. Seated already, this moves us (docs/protocol.md 3.2). Joins
        wait for each other's answers (3.5: a node refuses one sent meanwhile)."""
        async with self._join_turn:
            self._joining.add(room)
            try:
                reply = await self.request(Join(room, layer, friend=friend))
            finally:
                self._joining.discard(room)
                self._signed_join.pop(room, None)
        if not isinstance(reply, Joined):
            raise SignalingError("bad-frame", "join answered with something else")
        self.rooms[room] = reply.layer
        return reply

    async def leave(self, room: bytes) -> None:
        self.rooms.pop(room, None)
        await self.request(Leave(room))

    async def members(self, room: bytes) -> tuple[Member, ...]:
        reply = await self.request(Members(room))
        if not isinstance(reply, MemberList):
            raise SignalingError("bad-frame", "members answered with something else")
        return reply.members

    async def layers(self, room: bytes) -> LayerList:
        """The room-wide picture: our layer, the estimated layers and people, and the
        member counts of a few layers."""
        reply = await self.request(Layers(room))
        if not isinstance(reply, LayerList):
            raise SignalingError("bad-frame", "layers answered with something else")
        return reply

    async def ice_servers(self) -> tuple[IceServer, ...]:
        reply = await self.request(IceServers())
        if not isinstance(reply, IceServerList):
            raise SignalingError("bad-frame", "ice-servers answered with something else")
        return reply.servers

    async def ping(self) -> float:
        started = time.perf_counter()
        await self.request(Ping())
        return time.perf_counter() - started

    async def put_record(self, record: Record, within: float = 20.0) -> int:
        """Store an opaque signed record through the node (docs/protocol.md 7.3); how many
        DHT nodes took it. `bad-record`, `rate-limited`, `unavailable` are SignalingErrors."""
        reply = await self.request(PutRecord(record), within)
        if not isinstance(reply, RecordStored):
            raise SignalingError("bad-frame", "put-record answered with something else")
        return reply.stored

    async def get_record(self, key: bytes, publisher: bytes, within: float = 20.0) -> Record | None:
        """The newest record `publisher` stored under `key`, or None (7.3)."""
        reply = await self.request(GetRecord(key, publisher), within)
        if not isinstance(reply, RecordFound) or reply.key != key:
            raise SignalingError("bad-frame", "get-record answered with something else")
        return reply.record

    async def signal(self, to: bytes, payload: Any, room: bytes) -> None:
        """Send a signal to a member of our layer in `room`; a delivery failure arrives
        later as an ErrorFrame event (`unknown-peer`, `unavailable`)."""
        await self._send(Signal(to, payload, room))

    async def send_raw(self, text: str) -> None:
        await self._ws.send_str(text)

    # --- what the node says unasked ------------------------------------------------

    async def events(self) -> AsyncIterator[SignalingEvent]:
        while True:
            event = await self._events.get()
            yield event
            if isinstance(event, Closed):
                return

    async def next_event(self, within: float = 10.0) -> SignalingEvent:
        return await asyncio.wait_for(self._events.get(), within)

    def _push(self, event: SignalingEvent) -> None:
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped_events += 1

    async def _keepalive(self) -> None:
        """A ping at least every third of the node's idle timeout (docs/protocol.md 3.5)."""
        period = max(0.2, self.idle_timeout / 3)
        with contextlib.suppress(SignalingError):
            while not self._ws.closed:
                await asyncio.sleep(period)
                await self._send(Ping())

    async def _read(self) -> None:
        reason = ""
        try:
            async for msg in self._ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    frame = parse_server_frame(msg.data)
                except FrameError as exc:
                    self.bad_frames += 1
                    self._push(BadNodeFrame(exc.code.value, exc.message))
                    continue
                await self._dispatch(frame)
        except (aiohttp.ClientError, ConnectionError) as exc:
            reason = str(exc)
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(SignalingError("closed", "connection to the node closed"))
        self._push(Closed(self._ws.close_code, reason or "connection closed"))

    async def _dispatch(self, frame: ServerFrame) -> None:
        if isinstance(frame, SignRequest):
            await self._sign(frame)
            return
        ref = getattr(frame, "id", None)
        waiter = self._waiters.get(ref) if ref is not None else None
        if waiter is not None and not waiter.done():
            waiter.set_result(frame)
        elif isinstance(frame, PeerJoined | PeerLeft | SignalFrom | Moving | ErrorFrame):
            self._push(frame)
        elif isinstance(frame, MemberList) and ref is None:
            # members proven after the sign request (2.5.3): only for a join of ours
            # under way whose seat in that layer we signed
            if self._signed_join.get(frame.room) == frame.layer and frame.room in self._joining:
                if self.tell_named:
                    self._push(Named(frame.room, frame.layer, frame.members))
            else:
                self.unasked_members += 1

    async def _sign(self, frame: SignRequest) -> None:
        """Sign a presence record the node asks for, after checking it is ours to sign."""
        room, layer = frame.room, frame.layer
        home = HomeNode(self.node_id, frame.url)
        acceptable = (
            (room in self._joining or self.rooms.get(room) == layer)
            and frame.node == self.node_id
            and frame.value.encode() == presence_value(room, layer, home)
            and frame.key == layer_key(room, layer)
            and frame.expires <= time.time() + MAX_PRESENCE_TTL
        )
        if not acceptable:
            self._push(BadNodeFrame("refused-sign", "the node asked to sign a foreign record"))
            return
        payload = presence_payload(self.key, room, layer, home, frame.seq, frame.expires)
        signature = self.signing_key.sign(payload).signature
        with contextlib.suppress(SignalingError):
            await self._send(Signed(frame.id, signature))
        if frame.members is not None and room in self._joining:  # a join under way (2.5.3)
            self._signed_join[room] = layer
            if self.tell_named:
                self._push(Named(room, layer, frame.members))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._ws.close()
        await self._http.close()

    async def __aenter__(self) -> SignalingClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._ws.closed


def _with_id(frame: ClientFrame, request_id: int) -> ClientFrame:
    return dataclasses.replace(frame, id=request_id)  # type: ignore[arg-type]  # Hello has no id
