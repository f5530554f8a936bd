"""Persistent, authenticated node-to-node links (docs/protocol.md, "Node links").

A node forwards a signal to the peer's home node, and tells the home nodes of
a layer's members when one of its clients joins or leaves, over one
WebSocket per pair of nodes at `/v1/node`. Either side may open it; both
directions carry frames once it is up. Each side proves it holds the DHT key
behind its node id by signing the other side's nonce bound to the other side's
id, so a link's node id is as good as a DHT node id (node id = H(public key)).

Nodes are trusted for availability, not integrity: what travels over a link
is checked by the receiver (presence records carry the client's signature;
SDP inside signals carries the peers' own, see the peer protocol).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from dht.identity import Identity, verify_signature
from dht.ids import node_id_for

log = logging.getLogger(__name__)

LINK_PATH = "/v1/node"
LINK_CONTEXT = b"pagemesh-link/1\0"
HANDSHAKE_TIMEOUT = 5.0
MAX_LINK_FRAME = 256 * 1024

FrameHandler = Callable[[bytes, dict[str, Any]], Awaitable[None]]
"""(remote node id, frame) -> None; frames are JSON objects with a `type`."""


class LinkError(Exception):
    """A link could not be opened or authenticated; the message says why."""


def link_message(nonce: bytes, node_id: bytes) -> bytes:
    return LINK_CONTEXT + nonce + node_id


def _prove(identity: Identity, nonce_hex: Any, node_id: bytes) -> dict[str, str]:
    nonce = bytes.fromhex(nonce_hex)
    return {
        "key": identity.public_key.hex(),
        "sig": base64.b64encode(identity.sign(link_message(nonce, node_id))).decode(),
    }


def _check_proof(frame: dict[str, Any], nonce: bytes, own_id: bytes) -> bytes:
    """The remote node id a proof establishes; LinkError when it does not verify."""
    try:
        key = bytes.fromhex(frame["key"])
        sig = base64.b64decode(frame["sig"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise LinkError("malformed link proof") from None
    if len(key) != 32 or not verify_signature(key, link_message(nonce, own_id), sig):
        raise LinkError("link proof does not verify")
    return node_id_for(key)


async def _receive_json(ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse) -> Any:
    msg = await asyncio.wait_for(ws.receive(), HANDSHAKE_TIMEOUT)
    if msg.type is not aiohttp.WSMsgType.TEXT:
        raise LinkError(f"link closed during the handshake ({msg.type.name})")
    try:
        return json.loads(msg.data)
    except ValueError:
        raise LinkError("link handshake frame is not JSON") from None


class Link:
    """One authenticated WebSocket to another node."""

    def __init__(
        self,
        remote_id: bytes,
        ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    ) -> None:
        self.remote_id = remote_id
        self.ws = ws

    @property
    def closed(self) -> bool:
        return self.ws.closed

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(frame, separators=(",", ":")))


class LinkPool:
    """The links of one node: opens them on demand, accepts them, and reads them.

    At most one link per remote node is used for sending; if both sides open
    one at once, each keeps reading both, and the newer replaces the older
    for sending.
    """

    def __init__(self, identity: Identity, on_frame: FrameHandler) -> None:
        self.identity = identity
        self.node_id = node_id_for(identity.public_key)
        self._on_frame = on_frame
        self._links: dict[bytes, Link] = {}
        self._opening: dict[bytes, asyncio.Task[Link]] = {}
        self._readers: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None
        self.frames_in = 0
        self.frames_out = 0

    def __len__(self) -> int:
        return sum(1 for link in self._links.values() if not link.closed)

    async def send(self, node_id: bytes, url: str, frame: dict[str, Any]) -> None:
        """Send `frame` to node `node_id` at `url`, opening a link first if needed."""
        link = self._links.get(node_id)
        if link is None or link.closed:
            task = self._opening.get(node_id)
            if task is None:
                task = asyncio.create_task(self._open(node_id, url))
                self._opening[node_id] = task
                task.add_done_callback(lambda _t: self._opening.pop(node_id, None))
            link = await asyncio.shield(task)
        try:
            await link.send(frame)
        except (ConnectionError, RuntimeError) as exc:
            raise LinkError(f"link to {node_id.hex()[:12]} failed: {exc}") from None
        self.frames_out += 1

    async def _open(self, node_id: bytes, url: str) -> Link:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        try:
            ws = await self._http.ws_connect(
                url.rstrip("/") + LINK_PATH,
                timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                max_msg_size=MAX_LINK_FRAME,
                compress=0,
                heartbeat=30.0,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise LinkError(f"cannot reach node {node_id.hex()[:12]} at {url}: {exc}") from None
        try:
            challenge = await _receive_json(ws)
            our_nonce = os.urandom(32)
            proof = _prove(self.identity, challenge.get("nonce"), node_id)
            await ws.send_str(json.dumps({"type": "hello", "nonce": our_nonce.hex(), **proof}))
            welcome = await _receive_json(ws)
            remote = _check_proof(welcome, our_nonce, self.node_id)
            if remote != node_id:
                raise LinkError(f"node at {url} is not {node_id.hex()[:12]}")
        except (LinkError, TimeoutError, ValueError, AttributeError, TypeError) as exc:
            await ws.close()
            raise LinkError(f"link handshake with {url} failed: {exc}") from None
        link = Link(node_id, ws)
        self._adopt(link)
        return link

    async def accept(self, request: web.Request) -> web.WebSocketResponse:
        """The `/v1/node` handler: authenticate the caller, then read its frames."""
        ws = web.WebSocketResponse(max_msg_size=MAX_LINK_FRAME, compress=False, heartbeat=30.0)
        await ws.prepare(request)
        nonce = os.urandom(32)
        try:
            await ws.send_str(json.dumps({"type": "challenge", "nonce": nonce.hex()}))
            hello = await _receive_json(ws)
            remote = _check_proof(hello, nonce, self.node_id)
            await ws.send_str(json.dumps(_prove(self.identity, hello.get("nonce"), remote)))
        except (LinkError, TimeoutError, ValueError, AttributeError, TypeError) as exc:
            log.info("refused a node link: %s", exc)
            await ws.close(code=1008, message=b"link authentication failed")
            return ws
        link = Link(remote, ws)
        self._links[remote] = link
        await self._read(link)
        return ws

    def _adopt(self, link: Link) -> None:
        self._links[link.remote_id] = link
        task = asyncio.create_task(self._read(link))
        self._readers.add(task)
        task.add_done_callback(self._readers.discard)

    async def _read(self, link: Link) -> None:
        async for msg in link.ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            try:
                frame = json.loads(msg.data)
            except ValueError:
                log.warning("dropped a non-JSON frame from node %s", link.remote_id.hex()[:12])
                continue
            if not isinstance(frame, dict):
                continue
            self.frames_in += 1
            try:
                await self._on_frame(link.remote_id, frame)
            except Exception:  # one bad frame must not end a link that carries many peers
                log.exception("error handling a link frame from %s", link.remote_id.hex()[:12])
        if self._links.get(link.remote_id) is link:
            del self._links[link.remote_id]

    async def close(self) -> None:
        for task in list(self._opening.values()):
            task.cancel()
        for link in list(self._links.values()):
            with contextlib.suppress(Exception):
                await link.ws.close()
        for task in list(self._readers):
            task.cancel()
        if self._readers:
            await asyncio.gather(*self._readers, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
