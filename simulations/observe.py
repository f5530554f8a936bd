"""Hop counting for iterative lookups, the same way in the simulator and on real sockets.

A lookup's hop count is the depth of the contact it ends on: contacts taken
from the origin's own routing table are one hop away; a contact first learned
from the reply of a depth-d contact is d + 1 hops away. For a find_node the
lookup ends on the closest contact returned; for a record read, on the
shallowest node that returned records. The counter sees only messages
(requests out of the origin, replies into it), so the definition does not
depend on the lookup's internals, and `attach_to_core` applies it unchanged to
a `DHTCore` behind the UDP glue (the validation against a loopback mesh).

The same trace gives a lookup's **floor**: the sum of the round trips along the
chain of queries that led to the contact it ends on (the origin asked c1, c1's
answer named c2, the origin asked c2, ... up to that contact, whose own answer
counts too). Each round trip is the one measured: the request's first send to
its reply. No lookup that learns contacts only from answers can end sooner, so
latency minus floor is what the lookup spent waiting on other contacts; with a
clock (`now`) the counter measures it, without one the floor is None.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import filterfalse, repeat
from operator import attrgetter
from typing import Any

from dht.core import DHTCore, Message
from dht.wire import (
    Address,
    FindNode,
    FindRecords,
    FindRecordsReply,
    NodesReply,
    Reply,
    Request,
    WireError,
    parse_frame,
    parse_reply,
)

from .overlay import MessageObserver, SimNode

LookupKey = tuple[Address, bytes]
_addr = attrgetter("addr")


class _Trace:
    __slots__ = ("depths", "found", "found_path", "msg_ids", "paths", "reached")

    def __init__(self) -> None:
        self.depths: dict[Address, int] = {}
        self.found: int | None = None
        self.msg_ids: list[bytes] = []
        self.paths: dict[Address, float] = {}
        """Address -> round trips spent before the origin could first ask it."""
        self.reached: dict[Address, float] = {}
        """Address -> round trips along the chain up to and including its answer."""
        self.found_path: float | None = None
        """Smallest `reached` of a node whose answer carried records."""


class _Asked:
    __slots__ = ("depth", "dst", "request", "sent_at", "trace")

    def __init__(
        self, trace: _Trace, depth: int, request: Request, dst: Address, sent_at: float | None
    ) -> None:
        self.trace = trace
        self.depth = depth
        self.request = request
        self.dst = dst
        self.sent_at = sent_at


class HopCounter(MessageObserver):
    """Tracks the lookups registered with `track` and reports their hops in `finish`
    (and their floor in `finish_with_floor`). `clock` gives the time of messages the
    simulated transport shows it (`sent`, `delivered`), for the floor."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._traces: dict[LookupKey, _Trace] = {}
        self._asked: dict[bytes, _Asked] = {}
        self._clock = clock

    def track(self, origin: Address, target: bytes) -> None:
        self._traces[(origin, target)] = _Trace()

    def on_request(
        self,
        origin: Address,
        msg_id: bytes,
        request: Any,
        dst: Address,
        now: float | None = None,
    ) -> None:
        if msg_id in self._asked:
            return  # a retransmission: the round trip counts from the first send
        if isinstance(request, FindNode):
            target = request.target
        elif isinstance(request, FindRecords) and not request.after:
            target = request.key
        else:
            return
        trace = self._traces.get((origin, target))
        if trace is None:
            return
        trace.msg_ids.append(msg_id)
        depth = trace.depths.setdefault(dst, 1)
        trace.paths.setdefault(dst, 0.0)
        self._asked[msg_id] = _Asked(trace, depth, request, dst, now)

    def request_for(self, msg_id: bytes) -> Request | None:
        entry = self._asked.get(msg_id)
        return entry.request if entry is not None else None

    def on_reply(self, msg_id: bytes, reply: Reply, now: float | None = None) -> None:
        entry = self._asked.pop(msg_id, None)
        if entry is None:
            return
        trace, depth = entry.trace, entry.depth
        path: float | None = None
        if now is not None and entry.sent_at is not None:
            path = trace.paths.get(entry.dst, 0.0) + (now - entry.sent_at)
            trace.reached.setdefault(entry.dst, path)
        if isinstance(reply, FindRecordsReply) and reply.records:
            trace.found = depth if trace.found is None else min(trace.found, depth)
            if path is not None and (trace.found_path is None or path < trace.found_path):
                trace.found_path = path
        if isinstance(reply, NodesReply | FindRecordsReply):
            contacts = reply.contacts
            depths, paths = trace.depths, trace.paths
            if path is not None and len(paths) == len(depths):
                # The common case: `paths` has every key of `depths` (never more), so the
                # addresses new to one are new to the other: found once, set in both.
                try:  # a simulator contact carries its address tuple
                    new = list(filterfalse(depths.__contains__, map(_addr, contacts)))
                except AttributeError:  # a parsed one is rebuilt
                    new = list(filterfalse(depths.__contains__, _addresses(contacts)))
                if new:
                    depths.update(zip(new, repeat(depth + 1), strict=False))
                    paths.update(zip(new, repeat(path), strict=False))
                return
            try:
                addrs = list(map(_addr, contacts))
            except AttributeError:
                addrs = _addresses(contacts)
            # setdefault for each address, in C (every reply to a tracked lookup comes here)
            depths.update(
                zip(filterfalse(depths.__contains__, addrs), repeat(depth + 1), strict=False)
            )
            if path is not None:
                paths.update(
                    zip(filterfalse(paths.__contains__, addrs), repeat(path), strict=False)
                )

    def finish(self, origin: Address, target: bytes, closest: Address | None) -> int | None:
        """Hops of the finished lookup: depth of `closest`, or of the first records found."""
        return self.finish_with_floor(origin, target, closest)[0]

    def finish_with_floor(
        self, origin: Address, target: bytes, closest: Address | None
    ) -> tuple[int | None, float | None]:
        """Hops and floor (module docstring) of the finished lookup: of `closest`, or of
        the first node whose answer carried records when `closest` is None."""
        trace = self._traces.pop((origin, target), None)
        if trace is None:
            return None, None
        for msg_id in trace.msg_ids:
            self._asked.pop(msg_id, None)
        if closest is None:
            return trace.found, trace.found_path
        return trace.depths.get(closest), trace.reached.get(closest)

    # --- MessageObserver (simulated transport) ---------------------------------

    def sent(self, node: SimNode, message: Message, dst: Address) -> None:
        # Without a tracked lookup `on_request` records nothing (the reads' counter of a
        # run without reads sees every message).
        if message.request and self._traces:
            now = self._clock() if self._clock is not None else None
            self.on_request(node.addr, message.msg_id, message.body, dst, now)

    def delivered(self, node: SimNode, message: Message, src: Address) -> None:
        if not message.request and message.msg_id in self._asked:
            now = self._clock() if self._clock is not None else None
            self.on_reply(message.msg_id, message.body, now)  # type: ignore[arg-type]


def _addresses(contacts: Any) -> list[Address]:
    return [getattr(c, "addr", None) or (c.host, c.port) for c in contacts]


def attach_to_core(counter: HopCounter, core: DHTCore, origin: Address) -> None:
    """Make `counter` watch a core driven by real datagrams (dht.node.DHTNode).

    Wraps the instance's `messages_to_send` (requests out) and `receive`
    (replies in, decoded with the request they answer); the core's logic is
    untouched.
    """
    send = core.messages_to_send
    receive = core.receive

    def messages_to_send(now: float) -> list[tuple[Message, Address]]:
        out = send(now)
        for message, dst in out:
            if message.request:
                counter.on_request(origin, message.msg_id, message.body, dst, now)
        return out

    def receive_and_watch(data: bytes, addr: Address, now: float) -> None:
        try:
            frame = parse_frame(data)
            request = None if frame.is_request else counter.request_for(frame.msg_id)
            if request is not None:
                counter.on_reply(frame.msg_id, parse_reply(request, frame.body), now)
        except WireError:
            pass
        receive(data, addr, now)

    core.messages_to_send = messages_to_send  # type: ignore[method-assign]
    core.receive = receive_and_watch  # type: ignore[method-assign]


__all__ = ["HopCounter", "attach_to_core"]
