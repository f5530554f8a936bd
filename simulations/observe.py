"""Hop counting for iterative lookups, the same way in the simulator and on real sockets.

A lookup's hop count is the depth of the contact it ends on: contacts taken
from the origin's own routing table are one hop away; a contact first learned
from the reply of a depth-d contact is d + 1 hops away. For a find_node the
lookup ends on the closest contact returned; for a record read, on the
shallowest node that returned records. The counter sees only messages
(requests out of the origin, replies into it), so the definition does not
depend on the lookup's internals, and `attach_to_core` applies it unchanged to
a `DHTCore` behind the UDP glue (the validation against a loopback mesh).
"""

from __future__ import annotations

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


class _Trace:
    __slots__ = ("depths", "found", "msg_ids")

    def __init__(self) -> None:
        self.depths: dict[Address, int] = {}
        self.found: int | None = None
        self.msg_ids: list[bytes] = []


class HopCounter(MessageObserver):
    """Tracks the lookups registered with `track` and reports their hops in `finish`."""

    def __init__(self) -> None:
        self._traces: dict[LookupKey, _Trace] = {}
        self._asked: dict[bytes, tuple[_Trace, int, Request]] = {}

    def track(self, origin: Address, target: bytes) -> None:
        self._traces[(origin, target)] = _Trace()

    def on_request(self, origin: Address, msg_id: bytes, request: Any, dst: Address) -> None:
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
        self._asked[msg_id] = (trace, depth, request)

    def request_for(self, msg_id: bytes) -> Request | None:
        entry = self._asked.get(msg_id)
        return entry[2] if entry is not None else None

    def on_reply(self, msg_id: bytes, reply: Reply) -> None:
        entry = self._asked.pop(msg_id, None)
        if entry is None:
            return
        trace, depth, _ = entry
        if isinstance(reply, FindRecordsReply) and reply.records:
            trace.found = depth if trace.found is None else min(trace.found, depth)
        if isinstance(reply, NodesReply | FindRecordsReply):
            depths = trace.depths
            deeper = depth + 1
            for contact in reply.contacts:
                # A simulator contact carries its address tuple; a parsed one is rebuilt.
                addr = getattr(contact, "addr", None) or (contact.host, contact.port)
                depths.setdefault(addr, deeper)

    def finish(self, origin: Address, target: bytes, closest: Address | None) -> int | None:
        """Hops of the finished lookup: depth of `closest`, or of the first records found."""
        trace = self._traces.pop((origin, target), None)
        if trace is None:
            return None
        for msg_id in trace.msg_ids:
            self._asked.pop(msg_id, None)
        if closest is None:
            return trace.found
        return trace.depths.get(closest)

    # --- MessageObserver (simulated transport) ---------------------------------

    def sent(self, node: SimNode, message: Message, dst: Address) -> None:
        if message.request:
            self.on_request(node.addr, message.msg_id, message.body, dst)

    def delivered(self, node: SimNode, message: Message, src: Address) -> None:
        if not message.request and message.msg_id in self._asked:
            self.on_reply(message.msg_id, message.body)  # type: ignore[arg-type]


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
                counter.on_request(origin, message.msg_id, message.body, dst)
        return out

    def receive_and_watch(data: bytes, addr: Address, now: float) -> None:
        try:
            frame = parse_frame(data)
            request = None if frame.is_request else counter.request_for(frame.msg_id)
            if request is not None:
                counter.on_reply(frame.msg_id, parse_reply(request, frame.body))
        except WireError:
            pass
        receive(data, addr, now)

    core.messages_to_send = messages_to_send  # type: ignore[method-assign]
    core.receive = receive_and_watch  # type: ignore[method-assign]


__all__ = ["HopCounter", "attach_to_core"]
