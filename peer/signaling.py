"""A client of one signaling node's WebSocket API (docs/protocol.md, "Client API").

`SignalingClient.connect(url, signing_key)` proves the key (hello), then
offers `join`, `leave`, `members`, `signal`, `ice_servers` and `ping` as
coroutines, and pushes what the node says unasked (`peer-joined`,
`peer-left`, `signal`, `moving`, errors) to `events()`. When the node asks
for a presence signature (`sign`), the client checks that the record is for a
room it joined, at this node, with a bounded expiry, before signing it: a
node cannot make it sign anything else.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from nacl.signing import SigningKey

from signaling.protocol import (
    HomeNode,
    hello_message,
    layer_key,
    presence_payload,
    presence_value,
)

MAX_PRESENCE_TTL = 3600
MAX_EVENTS = 10_000


class SignalingError(Exception):
    """The node refused a request (an error frame) or the connection failed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Member:
    key: bytes
    node: bytes
    url: str


@dataclass(frozen=True, slots=True)
class Joined:
    room: bytes
    layer: int
    members: list[Member]
    total: int
    ice_servers: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class PeerJoined:
    room: bytes
    layer: int
    member: Member


@dataclass(frozen=True, slots=True)
class PeerLeft:
    room: bytes
    layer: int
    key: bytes


@dataclass(frozen=True, slots=True)
class SignalReceived:
    sender: bytes
    payload: Any
    room: bytes | None


@dataclass(frozen=True, slots=True)
class NodeError:
    code: str
    message: str
    ref: str | int | None


@dataclass(frozen=True, slots=True)
class Moving:
    nodes: list[str]


@dataclass(frozen=True, slots=True)
class Closed:
    code: int | None
    reason: str


SignalingEvent = PeerJoined | PeerLeft | SignalReceived | NodeError | Moving | Closed


def _member(data: dict[str, Any]) -> Member:
    return Member(bytes.fromhex(data["key"]), bytes.fromhex(data["node"]), str(data["url"]))


class SignalingClient:
    """One authenticated WebSocket to a signaling node."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._http = http
        self._ws = ws
        self.signing_key: SigningKey
        self.key = b""
        self.node_id = b""
        self.node_url = ""
        self.nodes: list[str] = []
        """Other nodes the node named in its welcome (for fail-over)."""
        self.rooms: dict[bytes, int] = {}
        self._joining: set[bytes] = set()
        self._waiters: dict[str | int, asyncio.Future[dict[str, Any]]] = {}
        self._events: asyncio.Queue[SignalingEvent] = asyncio.Queue(MAX_EVENTS)
        self._next_id = 0
        self._reader: asyncio.Task[None] | None = None
        self.dropped_events = 0

    @classmethod
    async def connect(
        cls, url: str, signing_key: SigningKey, name: str | None = None, within: float = 10.0
    ) -> SignalingClient:
        """Open `url` (the node's base URL, ws://host:port) and prove `signing_key`."""
        http = aiohttp.ClientSession()
        try:
            ws = await http.ws_connect(
                url.rstrip("/") + "/v1/ws", timeout=aiohttp.ClientWSTimeout(ws_close=2.0)
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
        client._reader = asyncio.create_task(client._read())
        return client

    async def _hello(self, name: str | None) -> None:
        challenge = await self._receive_raw()
        if challenge.get("type") != "challenge":
            raise SignalingError("bad-frame", f"expected a challenge, got {challenge!r:.100}")
        nonce = bytes.fromhex(challenge["nonce"])
        self.node_id = bytes.fromhex(challenge["node"])
        signature = self.signing_key.sign(hello_message(nonce, self.node_id)).signature
        hello = {
            "type": "hello",
            "key": self.key.hex(),
            "sig": base64.b64encode(signature).decode(),
        }
        if name is not None:
            hello["name"] = name
        await self._ws.send_str(json.dumps(hello))
        welcome = await self._receive_raw()
        if welcome.get("type") == "error":
            raise SignalingError(welcome.get("code", "error"), welcome.get("message", ""))
        if welcome.get("type") != "welcome":
            raise SignalingError("bad-frame", f"expected a welcome, got {welcome!r:.100}")
        self.node_url = str(welcome.get("url", ""))
        self.nodes = [str(u) for u in welcome.get("nodes", [])]

    async def _receive_raw(self) -> dict[str, Any]:
        msg = await self._ws.receive()
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise SignalingError("closed", f"connection closed ({msg.type.name} {msg.extra})")
        frame = json.loads(msg.data)
        if not isinstance(frame, dict):
            raise SignalingError("bad-frame", "a frame is a JSON object")
        return frame

    # --- requests --------------------------------------------------------------------

    async def request(self, frame: dict[str, Any], within: float = 10.0) -> dict[str, Any]:
        """Send `frame` with a fresh id; return the node's reply with that id."""
        self._next_id += 1
        request_id = self._next_id
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = waiter
        try:
            await self._ws.send_str(json.dumps({**frame, "id": request_id}))
            reply = await asyncio.wait_for(waiter, within)
        finally:
            self._waiters.pop(request_id, None)
        if reply.get("type") == "error":
            raise SignalingError(str(reply.get("code")), str(reply.get("message")))
        return reply

    async def join(self, room: bytes, layer: int | None = None) -> Joined:
        frame: dict[str, Any] = {"type": "join", "room": room.hex()}
        if layer is not None:
            frame["layer"] = layer
        self._joining.add(room)
        try:
            reply = await self.request(frame)
        finally:
            self._joining.discard(room)
        joined = Joined(
            room,
            int(reply["layer"]),
            [_member(m) for m in reply["members"]],
            int(reply["total"]),
            list(reply.get("ice_servers", [])),
        )
        self.rooms[room] = joined.layer
        return joined

    async def leave(self, room: bytes) -> None:
        await self.request({"type": "leave", "room": room.hex()})
        self.rooms.pop(room, None)

    async def members(self, room: bytes) -> list[Member]:
        reply = await self.request({"type": "members", "room": room.hex()})
        return [_member(m) for m in reply["members"]]

    async def ice_servers(self) -> list[dict[str, Any]]:
        reply = await self.request({"type": "ice-servers"})
        return list(reply["servers"])

    async def ping(self) -> float:
        started = time.perf_counter()
        await self.request({"type": "ping"})
        return time.perf_counter() - started

    async def signal(self, to: bytes, payload: Any, room: bytes | None = None) -> None:
        """Send a signal; a delivery failure arrives later as a NodeError event."""
        frame: dict[str, Any] = {"type": "signal", "to": to.hex(), "payload": payload}
        if room is not None:
            frame["room"] = room.hex()
        await self._ws.send_str(json.dumps(frame))

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

    async def _read(self) -> None:
        reason = ""
        try:
            async for msg in self._ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    frame = json.loads(msg.data)
                    await self._dispatch(frame)
                except (ValueError, KeyError, TypeError) as exc:
                    self._push(
                        NodeError("bad-frame", f"unreadable frame from the node: {exc}", None)
                    )
        except (aiohttp.ClientError, ConnectionError) as exc:
            reason = str(exc)
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(SignalingError("closed", "connection to the node closed"))
        self._push(Closed(self._ws.close_code, reason or "connection closed"))

    async def _dispatch(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        waiter = self._waiters.get(frame["id"]) if "id" in frame else None
        if waiter is not None and not waiter.done() and kind != "sign":
            waiter.set_result(frame)
        elif kind == "sign":
            await self._sign(frame)
        elif kind == "peer-joined":
            self._push(PeerJoined(bytes.fromhex(frame["room"]), frame["layer"], _member(frame)))
        elif kind == "peer-left":
            room, key = bytes.fromhex(frame["room"]), bytes.fromhex(frame["key"])
            self._push(PeerLeft(room, frame["layer"], key))
        elif kind == "signal":
            room = bytes.fromhex(frame["room"]) if "room" in frame else None
            self._push(SignalReceived(bytes.fromhex(frame["from"]), frame["payload"], room))
        elif kind == "moving":
            self._push(Moving([str(u) for u in frame.get("nodes", [])]))
        elif kind == "error":
            self._push(
                NodeError(str(frame.get("code")), str(frame.get("message")), frame.get("id"))
            )

    async def _sign(self, frame: dict[str, Any]) -> None:
        """Sign a presence record the node asks for, after checking it is ours to sign."""
        room, layer = bytes.fromhex(frame["room"]), int(frame["layer"])
        seq, expires = int(frame["seq"]), int(frame["expires"])
        home = HomeNode(self.node_id, str(frame["url"]))
        expected_value = presence_value(room, layer, home)
        acceptable = (
            (room in self._joining or self.rooms.get(room) == layer)
            and bytes.fromhex(frame["node"]) == self.node_id
            and frame["value"].encode() == expected_value
            and bytes.fromhex(frame["key"]) == layer_key(room, layer)
            and expires <= time.time() + MAX_PRESENCE_TTL
        )
        if not acceptable:
            self._push(NodeError("refused-sign", "the node asked to sign a foreign record", None))
            return
        payload = presence_payload(self.key, room, layer, home, seq, expires)
        signature = self.signing_key.sign(payload).signature
        reply = {"type": "signed", "id": frame["id"], "sig": base64.b64encode(signature).decode()}
        await self._ws.send_str(json.dumps(reply))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._ws.close()
        await self._http.close()

    async def __aenter__(self) -> SignalingClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._ws.closed
