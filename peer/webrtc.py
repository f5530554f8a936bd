"""One aiortc RTCPeerConnection to one room member, with signed descriptions.

`PeerLink` owns the connection, its control channel (negotiated, id 0,
ordered and reliable: the messaging core's frames) and the file channels
the remote side opens. aiortc gathers every candidate before it finishes
`setLocalDescription` (no trickle ICE), so an offer and an answer are the
only signals a connection needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import aioice.ice
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)

from .sdp import NONCE_BYTES, SignedDescription, sign_description

log = logging.getLogger(__name__)

CONTROL_LABEL = "control"
MAX_CONTROL_FRAME = 256 * 1024
"""Characters of one control frame (SCTP carries at most 256 KiB in one message anyway)."""
MAX_CONTROL_DEPTH = 16
"""Nesting of arrays and objects in a control frame (a history frame needs 3)."""
MAX_CONTROL_BUFFERED = 1 << 20
"""Bytes queued on a control channel above which `PeerLink.send` refuses (and counts) a
frame: a member that asks for much (history, say) cannot grow our send queue without
bound. Nothing is lost: the messaging core sends unacknowledged envelopes again."""
_STRUCTURE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]')
"""A JSON string (skipped whole: brackets in it do not count; an unterminated one runs
to the end, so that a match never fails and the scan stays linear) or a bracket."""


class ControlFrameRejected(ValueError):
    """A control frame that is not a JSON object within the bounds; `code` names the defect
    (counted as `drop.control_<code>`)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_control_frame(data: str | bytes) -> dict[str, Any]:
    """One control-channel frame (docs/protocol.md 5.0): a JSON object of at most
    `MAX_CONTROL_FRAME` characters and `MAX_CONTROL_DEPTH` levels of nesting.

    Raises ControlFrameRejected and nothing else. The depth is checked by a scan
    before `json.loads`, whose C decoder recurses once per level.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        if len(data) > MAX_CONTROL_FRAME:
            raise ControlFrameRejected("too_large", "control frame too large")
        try:
            data = bytes(data).decode()
        except UnicodeDecodeError:
            raise ControlFrameRejected("not_utf8", "control frame is not UTF-8") from None
    if not isinstance(data, str):
        raise ControlFrameRejected("not_json", "control frame is not text")
    if len(data) > MAX_CONTROL_FRAME:
        raise ControlFrameRejected("too_large", "control frame too large")
    if _too_deep(data, MAX_CONTROL_DEPTH):
        raise ControlFrameRejected("too_deep", f"control frame nested over {MAX_CONTROL_DEPTH}")
    try:
        frame = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: a scan that missed is a bug
        raise ControlFrameRejected("not_json", "control frame is not JSON") from None
    if not isinstance(frame, dict):
        raise ControlFrameRejected("not_object", "control frame is not a JSON object")
    return frame


def _too_deep(text: str, limit: int) -> bool:
    if text.count("[") + text.count("{") <= limit:  # the common case, in C
        return False
    depth = 0
    for match in _STRUCTURE.finditer(text):
        char = text[match.start()]
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth = max(0, depth - 1)
    return False


def restrict_host_candidates(addresses: Sequence[str] | None) -> None:
    """Offer only these local addresses as ICE host candidates (None: every interface).

    aiortc passes no such option down to aioice, so this sets aioice's
    address discovery for the whole process. Tests and the loopback demo use
    ["127.0.0.1"] so that no traffic leaves the machine's loopback.
    """
    if addresses is None:
        aioice.ice.get_host_addresses = _ORIGINAL_HOST_ADDRESSES
    else:
        chosen = list(addresses)
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: list(chosen)


_ORIGINAL_HOST_ADDRESSES = aioice.ice.get_host_addresses


def ice_configuration(
    servers: Sequence[dict[str, Any]], relay_only: bool = False, turn_transport: str = ""
) -> RTCConfiguration:
    """An aiortc configuration from a node's `ice_servers` list.

    aiortc uses one TURN URL, the first (a browser uses them all): `turn_transport`
    ("udp", "tcp" or "tls" for `turns:`) puts the node's URL of that transport first,
    for a network that blocks UDP (and, for "tls", every port but 443). When the node
    offers none of that transport, its own order stands (UDP first).
    """
    ice = [
        RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
        for s in servers
        if isinstance(s, dict) and s.get("urls")
    ]
    if turn_transport:
        ice = _turn_first(ice, turn_transport)
    if relay_only:  # gather relay candidates only: the path must go through TURN
        ice = [s for s in ice if any(str(u).startswith("turn") for u in _as_list(s.urls))]
        return RTCConfiguration(iceServers=ice, iceTransportPolicy=RTCIceTransportPolicy.RELAY)
    return RTCConfiguration(iceServers=ice)


def turn_kind(url: str) -> str | None:
    """The transport of a TURN URL, "udp", "tcp" or "tls" (RFC 7065: turn: is UDP unless
    it says ?transport=tcp; turns: is TLS over TCP); None for anything else."""
    if url.startswith("turns:"):
        return "tls"
    if url.startswith("turn:"):
        return "tcp" if url.split("?", 1)[-1] == "transport=tcp" else "udp"
    return None


def _turn_first(ice: list[RTCIceServer], transport: str) -> list[RTCIceServer]:
    def preferred(url: str) -> bool:
        return turn_kind(url) == transport

    ordered: list[RTCIceServer] = []
    for server in ice:
        urls = _as_list(server.urls)
        if any(preferred(u) for u in urls):
            urls = sorted(urls, key=lambda u: not preferred(u))  # stable: the rest keep order
            server = RTCIceServer(urls=urls, username=server.username, credential=server.credential)
        ordered.append(server)
    return sorted(ordered, key=lambda s: not any(preferred(u) for u in _as_list(s.urls)))


def _as_list(urls: str | list[str]) -> list[str]:
    return [urls] if isinstance(urls, str) else list(urls)


def retrigger_in_progress_checks(connection: aioice.Connection) -> None:
    """Make this ICE agent check again at once a pair on which a check arrives mid-check.

    RFC 8445 section 7.3.1.4: a check received on a pair whose own check is In-Progress
    triggers a new check. aioice leaves such a pair to its retransmission timer (0.5 s,
    then 1 s...). Behind two NATs that filter by address and port, the first check of the
    side that starts first is dropped by the other NAT, not yet opened; when the other
    side's check then arrives, the hole is open, but aioice repeated its own only half a
    second later, and its aggressive nomination had meanwhile picked a relayed pair that
    answered sooner (a quarter of cone-to-cone runs in tests/nat, docs/nat-lab.md).

    Each pair is re-checked once at most, and only after the callbacks already due have
    run: an answer that arrived just before the other side's check has by then completed
    the check, which is left alone. (Re-checking every time, both sides can keep cancelling
    each other's answered checks.)
    """
    received = connection.check_incoming
    retriggered: set[aioice.ice.CandidatePair] = set()
    in_progress = aioice.ice.CandidatePair.State.IN_PROGRESS

    def retrigger(pair: aioice.ice.CandidatePair) -> None:
        if pair.state != in_progress or connection._check_list_done or pair.task is None:
            return
        pair.task.cancel()
        pair.task = None
        connection.check_start_task(pair)

    def check_incoming(
        message: aioice.stun.Message, addr: tuple[str, int], protocol: aioice.ice.StunProtocol
    ) -> None:
        received(message, addr, protocol)
        for pair in connection._check_list:
            same = pair.protocol is protocol and pair.remote_addr == addr
            if same and pair.state == in_progress and pair not in retriggered:
                retriggered.add(pair)
                asyncio.get_running_loop().call_soon(retrigger, pair)

    connection.check_incoming = check_incoming  # type: ignore[method-assign]


class PeerLink:
    """A WebRTC connection to one member of a room."""

    def __init__(
        self,
        room: bytes,
        me: bytes,
        member: bytes,
        sign: Callable[[bytes], bytes],
        config: RTCConfiguration,
        on_frame: Callable[[bytes, Any], None],
        on_state: Callable[[PeerLink], None],
        on_file_channel: Callable[[PeerLink, RTCDataChannel], None],
    ) -> None:
        self.room, self.me, self.member = room, me, member
        self._sign = sign
        self.pc = RTCPeerConnection(config)
        self.control = self.pc.createDataChannel(CONTROL_LABEL, negotiated=True, id=0)
        sctp = self.pc.sctp  # made by the first data channel
        assert sctp is not None
        retrigger_in_progress_checks(sctp.transport.transport.iceGatherer._connection)
        self.open = False
        self.ever_open = False
        self.closed = False
        self.made_offer = False
        self.relay_configured = any(
            str(url).startswith("turn") for s in config.iceServers or [] for url in _as_list(s.urls)
        )
        self._on_frame = on_frame
        self._on_state = on_state
        self.counters: dict[str, int] = {}
        """Control frames dropped (`drop.control_<code>`) and handler failures."""
        self.control.on("open", self._control_open)
        self.control.on("close", self._control_closed)
        self.control.on("message", self._control_message)
        self.pc.on("connectionstatechange", self._state_changed)
        self.pc.on("datachannel", lambda channel: on_file_channel(self, channel))

    # --- descriptions ------------------------------------------------------------

    async def offer(self, now: float) -> SignedDescription:
        self.made_offer = True
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self._signed("offer", now)

    async def answer(self, offer: SignedDescription, now: float) -> SignedDescription:
        await self.pc.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self._signed("answer", now)

    async def accept_answer(self, answer: SignedDescription) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))

    def _signed(self, kind: str, now: float) -> SignedDescription:
        sdp = self.pc.localDescription.sdp
        nonce = os.urandom(NONCE_BYTES)
        return sign_description(kind, sdp, self.room, self.me, self.member, nonce, now, self._sign)

    @property
    def awaiting_answer(self) -> bool:
        return self.pc.signalingState == "have-local-offer"

    # --- the control channel ---------------------------------------------------------

    def send(self, frame: Any) -> bool:
        """Queue one control frame; False (counted) when the link is down, its queue is
        over `MAX_CONTROL_BUFFERED` (docs/protocol.md 5.0.1), or aiortc refused it."""
        if not self.open or self.closed:
            return False
        if self.control.bufferedAmount > MAX_CONTROL_BUFFERED:
            self._count("drop.send_queue_full")
            return False
        try:
            self.control.send(json.dumps(frame, separators=(",", ":")))
        except Exception as exc:  # InvalidStateError when the channel just closed, ValueError
            # above the remote's maximum message size: counted, so neither is silent
            self._count("error.send")
            log.debug("control send to %s failed: %s", self.member.hex()[:12], exc)
            return False
        return True

    def _control_open(self) -> None:
        self.open = self.ever_open = True
        self._on_state(self)

    def _control_closed(self) -> None:
        was_open, self.open = self.open, False
        if was_open:
            self._on_state(self)

    def _control_message(self, message: str | bytes) -> None:
        """aiortc's callback: a bad frame is a counted drop, and nothing escapes into aiortc
        (an exception there would reset the association, and with it the link)."""
        try:
            frame = parse_control_frame(message)
        except ControlFrameRejected as exc:
            self._count(f"drop.control_{exc.code}")
            return
        try:
            self._on_frame(self.member, frame)
        except Exception:  # a bug in the room's code: logged once per link, counted
            self._count("error.frame_handler")
            if self.counters["error.frame_handler"] == 1:
                log.exception("frame from %s failed its handler", self.member.hex()[:12])

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _state_changed(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self.open = False
            self._on_state(self)

    @property
    def failed(self) -> bool:
        return self.closed or self.pc.connectionState in ("failed", "closed")

    # --- path --------------------------------------------------------------------------

    def path(self) -> str | None:
        """'direct' or 'relayed' once connected (from the nominated candidate pair)."""
        pair = self.selected_pair()
        if pair is None:
            return None
        return "relayed" if "relay" in pair else "direct"

    def selected_pair(self) -> tuple[str, str] | None:
        """The candidate types, local and remote, of the nominated pair ('host', 'srflx')."""
        sctp = self.pc.sctp
        if sctp is None:
            return None
        connection = sctp.transport.transport._connection  # aioice.Connection
        pairs = list(getattr(connection, "_nominated", {}).values())
        if not pairs:
            return None
        return pairs[0].local_candidate.type, pairs[0].remote_candidate.type

    def gathered(self) -> set[str]:
        """The types of the local candidates gathered so far ('host', 'srflx', 'relay')."""
        sctp = self.pc.sctp
        if sctp is None:
            return set()
        return {c.type for c in sctp.transport.transport.iceGatherer.getLocalCandidates()}

    def failure_reason(self) -> str:
        """Why a link that never opened failed, as far as this side can tell."""
        if "relay" in self.gathered():
            return "no direct path, and none through the relay either"
        if self.relay_configured:
            return "no direct path, and the relay is unreachable"
        return "no direct path, and no relay to fall back on"

    def _drained(self) -> bool:
        sctp = self.pc.sctp
        if sctp is None or not self.open:
            return True
        queues = ("_outbound_queue", "_sent_queue")  # not yet sent; sent, not yet acked
        pending = any(getattr(sctp, name, ()) for name in queues)
        return self.control.bufferedAmount == 0 and not pending

    async def drain(self, within: float = 2.0) -> None:
        """Wait (bounded) until what was sent on this link is acknowledged.

        Closing aborts the SCTP association, which drops anything still queued
        (a last `file-done`, say). aiortc has no event for "all acknowledged",
        so this looks every 10 ms.
        """
        for _ in range(int(within / 0.01)):
            if self._drained():
                return
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        self.closed = True
        self.open = False
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pc.close(), 5)
