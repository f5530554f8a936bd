"""asyncio glue: a DHTCore on a UDP socket, plus the node's data directory.

Feed the core, drain it, send, re-arm one timer (the aioquic pattern). The
data directory holds `node.key` (the Ed25519 seed, mode 0600) and
`routing.json` (known contacts), so a restarted node rejoins without a
bootstrap list.

Reachability probes the node owes others (docs/protocol.md 1.9) leave from a
second UDP socket, never the DHT's: the requester's NAT lets in whatever comes
from where it sent its request, which would prove nothing. HTTP probes go
through `url_dialer` when the application sets one (a signaling node does); what
each met goes back to its requester, signed (`DHTCore.url_dialed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path

from .core import (
    Bootstrapped,
    DHTConfig,
    DHTCore,
    DialBack,
    Event,
    LookupCompleted,
    NodeContact,
    NodeVerified,
    ReachChecked,
    RecordsFound,
    RecordsHeld,
    RecordsStored,
)
from .identity import Identity
from .reach import DialTarget, ReachVerdict, UrlProbeResult
from .records import Record
from .wire import Address

log = logging.getLogger(__name__)

UrlDialer = Callable[[DialTarget], Coroutine[object, object, UrlProbeResult]]
"""Makes one HTTP probe for another node's check and says what it met
(signaling/reachability.py's dial_url); the core tells the requester."""

KEY_FILE = "node.key"
ROUTING_FILE = "routing.json"


class _ProbeProtocol(asyncio.DatagramProtocol):
    """The probe socket only sends; whatever comes to it is nobody's business."""

    def error_received(self, exc: Exception) -> None:
        pass


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, node: DHTNode) -> None:
        self.node = node

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        # IPv6 addresses come as 4-tuples; the core's addresses are (host, port).
        self.node._datagram_received(data, addr if len(addr) == 2 else (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (a dead peer's port) surface here; the RPC timeout handles them.
        self.node.core.counters["socket.error"] += 1


class DHTNode:
    """A running DHT node. Create it with `await DHTNode.start(...)`."""

    def __init__(self, core: DHTCore, data_dir: Path | None, save_interval: float = 60.0) -> None:
        self.core = core
        self.data_dir = data_dir
        self.save_interval = save_interval
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._waiters: dict[int, asyncio.Future[Event]] = {}
        self._held: dict[int, Callable[[RecordsHeld], None]] = {}
        """Put -> who hears its `RecordsHeld` (the put's waiter hears its end)."""
        self._saver: asyncio.Task[None] | None = None
        self._probe_transport: asyncio.DatagramTransport | None = None
        self._url_dialer: UrlDialer | None = None
        self._dials: set[asyncio.Task[None]] = set()
        self.reach_listeners: list[Callable[[ReachChecked], None]] = []
        """Called with every check's result, scheduled ones included."""

    @classmethod
    async def start(
        cls,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: str | os.PathLike[str] | None = None,
        bootstrap: Iterable[Address] = (),
        config: DHTConfig | None = None,
        identity: Identity | None = None,
        rng: random.Random | None = None,
        save_interval: float = 60.0,
    ) -> DHTNode:
        """Bind, then bootstrap from `bootstrap` plus the contacts saved in `data_dir`."""
        directory = Path(data_dir) if data_dir is not None else None
        if identity is None:
            identity = (
                Identity.load_or_create(directory / KEY_FILE) if directory else Identity.generate()
            )
        core = DHTCore(identity, rng or random.Random(), time.time(), config)
        node = cls(core, directory, save_interval)
        loop = asyncio.get_running_loop()
        node._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(node), local_addr=(host, port)
        )
        node._probe_transport, _ = await loop.create_datagram_endpoint(
            _ProbeProtocol, local_addr=(host, 0)
        )
        seeds = list(dict.fromkeys([*bootstrap, *node._saved_contacts()]))
        if seeds:
            await node.bootstrap(seeds)
        if directory is not None:
            node._saver = asyncio.create_task(node._save_regularly())
        node._service()
        return node

    @property
    def address(self) -> Address:
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return (host, port)

    @property
    def node_id(self) -> bytes:
        return self.core.node_id

    @property
    def url_dialer(self) -> UrlDialer | None:
        """Makes the HTTP probes others' checks ask for; without one, URLs are declined."""
        return self._url_dialer

    @url_dialer.setter
    def url_dialer(self, dialer: UrlDialer | None) -> None:
        self._url_dialer = dialer
        self.core.dials_urls = dialer is not None

    # --- the API ------------------------------------------------------------

    async def bootstrap(self, addrs: Iterable[Address]) -> int:
        """Join through `addrs`; returns how many contacts the routing table holds."""
        event = await self._run(self.core.bootstrap(list(addrs), time.time()))
        assert isinstance(event, Bootstrapped)
        return event.contacts

    async def verify_node(self, node_id: bytes, addr: Address) -> bool:
        """True when `node_id` proves its key at `addr` (the DHT's pm_identify)."""
        event = await self._run(self.core.verify_node(node_id, addr, time.time()))
        assert isinstance(event, NodeVerified)
        return event.ok

    async def find_node(self, target: bytes) -> list[NodeContact]:
        event = await self._run(self.core.find_node(target, time.time()))
        assert isinstance(event, LookupCompleted)
        return list(event.contacts)

    async def get_records(self, key: bytes, quorum: int | None = None) -> list[Record]:
        """The live records under `key`; `quorum` as in `DHTCore.get_records`."""
        return list((await self.find_records(key, quorum)).records)

    async def find_records(self, key: bytes, quorum: int | None = None) -> RecordsFound:
        """The lookup's outcome: the live records under `key` and how many nodes it asked."""
        event = await self._run(self.core.get_records(key, time.time(), quorum))
        assert isinstance(event, RecordsFound)
        return event

    async def put_record(
        self, key: bytes, value: bytes, ttl: float = 3600.0, seq: int | None = None
    ) -> int:
        """Sign `value` with this node's key and store it; returns how many nodes took it.

        `seq` defaults to the clock in milliseconds, so a later put replaces an earlier one.
        """
        now = time.time()
        record = self.core.create_record(
            key, value, ttl, seq if seq is not None else int(now * 1000), now
        )
        return await self.publish(record)

    async def publish(self, record: Record, majority: bool = False) -> int:
        """Store a record signed elsewhere (a peer's presence); returns how many nodes took it
        (with `majority`, by the time more than half of them had: `DHTCore.put_record`)."""
        event = await self._run(self.core.put_record(record, time.time(), majority))
        assert isinstance(event, RecordsStored)
        return event.stored

    async def publish_reading_back(
        self, record: Record, early: Callable[[RecordsHeld], None] | None = None
    ) -> RecordsStored:
        """Store a record at every holder, each answering with the records it then holds
        under the key (`DHTCore.put_record(read_back=True)`, docs/protocol.md 2.5.5): the
        event, whose `held` is None when some holder did not say all it holds. `early`
        hears what a majority of them held, if that comes first (2.5.6)."""
        op = self.core.put_record(record, time.time(), read_back=True, early=early is not None)
        if early is not None:
            self._held[op] = early
        try:
            event = await self._run(op)
        finally:
            self._held.pop(op, None)
        assert isinstance(event, RecordsStored)
        return event

    async def check_reach(
        self, url: str | None = None, url_hosts: tuple[str, ...] | None = None
    ) -> ReachVerdict:
        """Ask other nodes to dial this one back (DHTCore.check_reach); the verdict."""
        event = await self._run(self.core.check_reach(time.time(), url, url_hosts))
        assert isinstance(event, ReachChecked)
        return event.verdict

    def url_probe_received(self, nonce: bytes) -> bool:
        """A helper's HTTP probe arrived (the application serves the URL): tell the core."""
        seen = self.core.url_probe_received(nonce, time.time())
        self._service()
        return seen

    async def stop(self) -> None:
        """Save the routing table and close the socket."""
        if self._saver is not None:
            self._saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._saver
        self.save()
        self.abort()

    def abort(self) -> None:
        """Close at once, saving nothing: what a crash or SIGKILL looks like to the others."""
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._probe_transport is not None:
            self._probe_transport.close()
            self._probe_transport = None
        for dial in self._dials:
            dial.cancel()
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(ConnectionAbortedError("DHT node stopped"))
        self._waiters.clear()

    # --- persistence --------------------------------------------------------

    def save(self) -> None:
        if self.data_dir is None:
            return
        contacts = [
            {"id": c.node_id.hex(), "host": c.addr[0], "port": c.addr[1]}
            for c in self.core.table.contacts()
        ]
        path = self.data_dir / ROUTING_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"version": 1, "contacts": contacts}))
        tmp.replace(path)

    def _saved_contacts(self) -> list[Address]:
        if self.data_dir is None:
            return []
        path = self.data_dir / ROUTING_FILE
        try:
            saved = json.loads(path.read_text())
            return [(str(c["host"]), int(c["port"])) for c in saved["contacts"]]
        except FileNotFoundError:
            return []
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable %s: %s", path, exc)
            return []

    async def _save_regularly(self) -> None:
        while True:
            await asyncio.sleep(self.save_interval)
            self.save()

    # --- driving the core ---------------------------------------------------

    async def _run(self, op: int) -> Event:
        waiter: asyncio.Future[Event] = self._loop.create_future()
        self._waiters[op] = waiter
        self._service()
        return await waiter

    def _datagram_received(self, data: bytes, addr: Address) -> None:
        self.core.receive(data, addr, time.time())
        self._service()

    def _dial_back(self, dial: DialBack) -> None:
        """Send a probe another node's check asked for (the core bounded how many)."""
        if self._probe_transport is None:
            return
        self._probe_transport.sendto(dial.datagram, dial.to)
        if dial.http is not None and self._url_dialer is not None:
            task = asyncio.create_task(self._dial_url(self._url_dialer, dial.http, dial.nonce))
            self._dials.add(task)
            task.add_done_callback(self._dials.discard)

    async def _dial_url(self, dialer: UrlDialer, target: DialTarget, nonce: bytes) -> None:
        result = await dialer(target)
        self.core.url_dialed(nonce, result, time.time())
        self._service()

    def _on_timer(self) -> None:
        self._timer = None
        self.core.handle_timer(time.time())
        self._service()

    def _service(self) -> None:
        core = self.core
        now = time.time()
        if self._transport is not None:
            for data, addr in core.datagrams_to_send(now):
                self._transport.sendto(data, addr)
        for dial in core.dial_backs():
            self._dial_back(dial)
        while (event := core.next_event()) is not None:
            if isinstance(event, ReachChecked):
                for listener in self.reach_listeners:
                    listener(event)
            if isinstance(event, RecordsHeld):
                held = self._held.pop(event.op, None)
                if held is not None:
                    held(event)
                continue
            waiter = self._waiters.pop(event.op, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(event)
        if self._transport is None:
            return
        deadline = core.get_timer()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            delay = max(0.0, deadline - now)
            self._timer = self._loop.call_at(self._loop.time() + delay, self._on_timer)
