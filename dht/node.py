"""asyncio glue: a DHTCore on a UDP socket, plus the node's data directory.

Feed the core, drain it, send, re-arm one timer (the aioquic pattern). The
data directory holds `node.key` (the Ed25519 seed, mode 0600) and
`routing.json` (known contacts), so a restarted node rejoins without a
bootstrap list.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from collections.abc import Iterable
from pathlib import Path

from .core import (
    Bootstrapped,
    DHTConfig,
    DHTCore,
    Event,
    LookupCompleted,
    NodeContact,
    NodeVerified,
    RecordsFound,
    RecordsStored,
)
from .identity import Identity
from .records import Record
from .wire import Address

log = logging.getLogger(__name__)

KEY_FILE = "node.key"
ROUTING_FILE = "routing.json"


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
        self._saver: asyncio.Task[None] | None = None

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

    async def get_records(self, key: bytes) -> list[Record]:
        event = await self._run(self.core.get_records(key, time.time()))
        assert isinstance(event, RecordsFound)
        return list(event.records)

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

    async def publish(self, record: Record) -> int:
        """Store a record signed elsewhere (a peer's presence); returns how many nodes took it."""
        event = await self._run(self.core.put_record(record, time.time()))
        assert isinstance(event, RecordsStored)
        return event.stored

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
        while (event := core.next_event()) is not None:
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
