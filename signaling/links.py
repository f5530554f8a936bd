"""Persistent, authenticated node-to-node links (docs/protocol.md, "Node links").

A node forwards a signal to the peer's home node, and tells the home nodes of
a layer's members when one of its clients joins or leaves, over one
WebSocket per pair of nodes at `/v1/node`. Either side may open it; both
directions carry frames once it is up.

Only a node may open a link, and a node is more than a key (anyone has as
many keys as they like): the connector signs the acceptor's nonce with the
DHT key behind its node id, *and* its DHT node must answer an identify
(`pm_identify`, docs/protocol.md 1.6) from the address the link came from,
at the DHT port it names. So a link's node id is a node id some reachable DHT
node proved. The acceptor proves its key back; the connector checks it is the
node it meant to reach (the id from a presence record).

Nodes are trusted for availability, not integrity: what travels over a link
is typed (`signaling.protocol.LINK`) and checked by the receiver, and a link
may only speak for clients homed at the node at its other end (presence and
signals carry the client's own signed presence record).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from dht.identity import Identity, verify_signature
from dht.ids import node_id_for

from . import trust
from .admission import Admission, AdmissionLimits, source_of
from .protocol import (
    HANDSHAKE,
    MAX_LINK_FRAME,
    FrameError,
    LinkChallenge,
    LinkFrame,
    LinkHello,
    LinkWelcome,
    parse_link_frame,
    serialize,
)

log = logging.getLogger(__name__)

LINK_PATH = "/v1/node"
LINK_CONTEXT = b"pagemesh-link/1\0"
HANDSHAKE_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0
LINKS_PER_NODE = 2
"""Links kept open to one remote node: both sides may open one at once; more is abuse."""
COOLDOWN_MIN, COOLDOWN_MAX = 10.0, 600.0
"""A host that could not be linked to is not dialled again for this long (doubling)."""
MAX_COOLDOWNS = 4096

FrameHandler = Callable[[bytes, LinkFrame], Awaitable[None]]
"""(remote node id, typed frame) -> None."""
NodeVerifier = Callable[[bytes, tuple[str, int]], Awaitable[bool]]
"""(node id, DHT address) -> whether that node proves its id there."""
RemoteAddress = Callable[[web.Request], str]
"""The address a request comes from (behind a trusted proxy, the one it forwards for)."""


class LinkError(Exception):
    """A link could not be opened or authenticated; the message says why."""


def link_message(nonce: bytes, node_id: bytes) -> bytes:
    return LINK_CONTEXT + nonce + node_id


def _check_proof(key: bytes, sig: bytes, nonce: bytes, own_id: bytes) -> bytes:
    """The remote node id a proof establishes; LinkError when it does not verify."""
    if not verify_signature(key, link_message(nonce, own_id), sig):
        raise LinkError("link proof does not verify")
    return node_id_for(key)


async def _receive(ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse) -> object:
    msg = await asyncio.wait_for(ws.receive(), HANDSHAKE_TIMEOUT)
    if msg.type is not aiohttp.WSMsgType.TEXT:
        raise LinkError(f"link closed during the handshake ({msg.type.name})")
    try:
        return HANDSHAKE.parse(msg.data, 4096)
    except FrameError as exc:
        raise LinkError(f"bad handshake frame: {exc.message}") from None


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

    async def send(self, frame: LinkFrame) -> None:
        await self.ws.send_str(serialize(frame))


class LinkPool:
    """The links of one node: opens them on demand, accepts them, and reads them.

    At most one link per remote node is used for sending; if both sides open
    one at once, each keeps reading both, and the newer replaces the older
    for sending.
    """

    def __init__(
        self,
        identity: Identity,
        on_frame: FrameHandler,
        dht_port: int,
        verify_node: NodeVerifier,
        limits: AdmissionLimits,
        remote_address: RemoteAddress,
        local_host: str = "",
    ) -> None:
        """`local_host`: the address this node's DHT listens on; links go out from it, so
        that the other side finds the DHT node where the link comes from (a host with
        several addresses would otherwise pick one by route)."""
        self.identity = identity
        self.node_id = node_id_for(identity.public_key)
        self.dht_port = dht_port
        self.local_host = "" if local_host in ("", "0.0.0.0", "::") else local_host
        self._on_frame = on_frame
        self._verify_node = verify_node
        self._remote_address = remote_address
        self.admission = Admission(limits)
        self._links: dict[bytes, Link] = {}
        """The link used for sending to each remote node (the newest)."""
        self._open_links: dict[bytes, list[Link]] = {}
        """Every link open to each remote node, oldest first (at most LINKS_PER_NODE)."""
        self._opening: dict[bytes, asyncio.Task[Link]] = {}
        self._dialing: dict[str, asyncio.Lock] = {}
        self._cooldown: dict[str, tuple[float, float]] = {}
        """host:port -> (not before, backoff): places we failed to link to. Presence
        records name home URLs, and anyone can publish a presence: without this a
        stranger could make a node dial any place over and over."""
        self._readers: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None
        self.frames_in = 0
        self.frames_out = 0
        self.drops: dict[str, int] = {}
        """Frames refused from other nodes, by error code."""
        self.refused: dict[str, int] = {}
        """Links refused, by reason."""

    def __len__(self) -> int:
        return sum(1 for link in self._links.values() if not link.closed)

    async def send(self, node_id: bytes, url: str, frame: LinkFrame) -> None:
        """Send `frame` to node `node_id` at `url`, opening a link first if needed."""
        link = self._links.get(node_id)
        if link is None or link.closed:
            task = self._opening.get(node_id)
            if task is None:
                self._check_cooldown(urlsplit(url).netloc)
                task = asyncio.create_task(self._open(node_id, url))
                self._opening[node_id] = task
                task.add_done_callback(lambda _t: self._opening.pop(node_id, None))
            link = await asyncio.shield(task)
        await self._send_on(link, frame)

    async def reply(self, node_id: bytes, frame: LinkFrame) -> bool:
        """Send on the open link to `node_id`, if there is one (answers go back the same way)."""
        link = self._links.get(node_id)
        if link is None or link.closed:
            return False
        await self._send_on(link, frame)
        return True

    async def _send_on(self, link: Link, frame: LinkFrame) -> None:
        try:
            await link.send(frame)
        except (ConnectionError, RuntimeError) as exc:
            raise LinkError(f"link to {link.remote_id.hex()[:12]} failed: {exc}") from None
        self.frames_out += 1

    async def _open(self, node_id: bytes, url: str) -> Link:
        """Dial, one dial per host at a time, and a place that failed not again for a
        while: forty presences naming forty node ids at one place cost it one dial."""
        parts = urlsplit(url)
        host = parts.hostname or url
        lock = self._dialing.setdefault(host, asyncio.Lock())
        try:
            async with lock:
                return await self._dial_once(node_id, url, parts.netloc)
        finally:
            if not lock.locked() and self._dialing.get(host) is lock:
                del self._dialing[host]

    def _check_cooldown(self, place: str) -> None:
        not_before, _ = self._cooldown.get(place, (0.0, 0.0))
        if not_before > time.monotonic():
            self._count(self.refused, "cooldown")
            raise LinkError(f"{place} was unreachable; not dialled again yet")

    async def _dial_once(self, node_id: bytes, url: str, place: str) -> Link:
        self._check_cooldown(place)
        try:
            link = await self._dial(node_id, url)
        except LinkError:
            _, backoff = self._cooldown.pop(place, (0.0, COOLDOWN_MIN / 2))
            backoff = min(COOLDOWN_MAX, backoff * 2)
            self._cooldown[place] = (time.monotonic() + backoff, backoff)
            if len(self._cooldown) > MAX_COOLDOWNS:
                del self._cooldown[next(iter(self._cooldown))]
            raise
        self._cooldown.pop(place, None)
        return link

    async def _dial(self, node_id: bytes, url: str) -> Link:
        if self._http is None:
            local = (self.local_host, 0) if self.local_host else None
            # Other nodes' certificates are checked as reachability probes check them
            # (signaling/trust.py): a node whose probes pass can be linked to.
            connector = aiohttp.TCPConnector(local_addr=local, ssl=trust.node_tls_context())
            self._http = aiohttp.ClientSession(connector=connector)
        try:
            ws = await asyncio.wait_for(
                self._http.ws_connect(
                    url.rstrip("/") + LINK_PATH,
                    timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                    max_msg_size=MAX_LINK_FRAME,
                    compress=0,
                    heartbeat=30.0,
                ),
                CONNECT_TIMEOUT,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise LinkError(f"cannot reach node {node_id.hex()[:12]} at {url}: {exc}") from None
        try:
            challenge = await _receive(ws)
            if not isinstance(challenge, LinkChallenge):
                raise LinkError("expected a challenge")
            our_nonce = os.urandom(32)
            sig = self.identity.sign(link_message(challenge.nonce, node_id))
            hello = LinkHello(self.identity.public_key, sig, our_nonce, self.dht_port)
            await ws.send_str(serialize(hello))
            welcome = await _receive(ws)
            if not isinstance(welcome, LinkWelcome):
                raise LinkError("expected a welcome")
            remote = _check_proof(welcome.key, welcome.sig, our_nonce, self.node_id)
            if remote != node_id:
                raise LinkError(f"node at {url} is not {node_id.hex()[:12]}")
        except (LinkError, TimeoutError) as exc:
            await ws.close()
            raise LinkError(f"link handshake with {url} failed: {exc}") from None
        link = Link(node_id, ws)
        self._adopt(link)
        return link

    async def accept(self, request: web.Request) -> web.StreamResponse:
        """The `/v1/node` handler: admit, authenticate and verify the caller, then read."""
        address = self._remote_address(request)
        source = source_of(address)
        refusal = self.admission.admit(source, time.time())
        if refusal is not None:
            self._count(self.refused, "admission")
            return web.Response(status=429, text=refusal)
        settled = False
        try:
            ws = web.WebSocketResponse(max_msg_size=MAX_LINK_FRAME, compress=False, heartbeat=30.0)
            await ws.prepare(request)
            try:
                remote = await self._authenticate(ws, address)
            except (LinkError, TimeoutError) as exc:
                log.info("refused a node link from %s: %s", source, exc)
                self._count(self.refused, str(exc).split(":")[0][:40])
                await ws.close(code=1008, message=b"link authentication failed")
                return ws
            self.admission.settled(source)
            settled = True
            link = Link(remote, ws)
            self._keep(link)
            await self._read(link)
            return ws
        finally:
            if not settled:
                self.admission.settled(source)
            self.admission.closed(source)

    async def _authenticate(self, ws: web.WebSocketResponse, address: str) -> bytes:
        nonce = os.urandom(32)
        await ws.send_str(serialize(LinkChallenge(nonce)))
        hello = await _receive(ws)
        if not isinstance(hello, LinkHello):
            raise LinkError("expected a hello")
        remote = _check_proof(hello.key, hello.sig, nonce, self.node_id)
        if not await self._verify_node(remote, (address, hello.dht_port)):
            raise LinkError(f"not a reachable node: no DHT node {remote.hex()[:12]} at {address}")
        welcome = LinkWelcome(
            self.identity.public_key, self.identity.sign(link_message(hello.nonce, remote))
        )
        await ws.send_str(serialize(welcome))
        return remote

    def _keep(self, link: Link) -> None:
        """The newest link to a node sends; older ones beyond LINKS_PER_NODE are closed."""
        self._links[link.remote_id] = link
        kept = self._open_links.setdefault(link.remote_id, [])
        kept.append(link)
        while len(kept) > LINKS_PER_NODE:
            oldest = kept.pop(0)
            self._count(self.refused, "superseded")
            task = asyncio.create_task(self._close(oldest))
            self._readers.add(task)  # owned: cancelled on close like the readers
            task.add_done_callback(self._readers.discard)

    async def _close(self, link: Link) -> None:
        with contextlib.suppress(Exception):
            await link.ws.close()

    def _adopt(self, link: Link) -> None:
        self._keep(link)
        task = asyncio.create_task(self._read(link))
        self._readers.add(task)
        task.add_done_callback(self._readers.discard)

    async def _read(self, link: Link) -> None:
        async for msg in link.ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            try:
                frame = parse_link_frame(msg.data)
            except FrameError as exc:
                self._count(self.drops, exc.code.value)
                continue
            self.frames_in += 1
            try:
                await self._on_frame(link.remote_id, frame)
            except Exception:  # one bad frame must not end a link that carries many peers
                log.exception("error handling a link frame from %s", link.remote_id.hex()[:12])
        if self._links.get(link.remote_id) is link:
            del self._links[link.remote_id]
        kept = self._open_links.get(link.remote_id, [])
        if link in kept:
            kept.remove(link)
        if not kept:
            self._open_links.pop(link.remote_id, None)

    def _count(self, table: dict[str, int], reason: str) -> None:
        table[reason] = table.get(reason, 0) + 1

    async def close(self) -> None:
        for opening in list(self._opening.values()):
            opening.cancel()
        # Every link kept to each node (up to LINKS_PER_NODE), not only the newest that
        # sends, and all at once: one remote slow to answer the close waits alone.
        links = [link for kept in self._open_links.values() for link in kept]
        links += [link for link in self._links.values() if link not in links]
        await asyncio.gather(*(self._close(link) for link in links))
        for reader in list(self._readers):
            reader.cancel()
        if self._readers:
            await asyncio.gather(*self._readers, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
