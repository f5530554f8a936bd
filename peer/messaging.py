"""Reliable room messaging: a core with no I/O (docs/protocol.md, "Room messages").

One `ReliableRoom` per joined room. It is fed frames from members (each over
an ordered data channel that may drop at any time), connection changes and
the time; it returns frames to send per member, events to deliver, and its
next timer.

Guarantees, for members that stay within the resume window:

- each author numbers its messages 1, 2, ... per room; envelopes are signed
  by the author, so anyone may forward them (history) and nobody can forge;
- a receiver delivers each author's messages exactly once and in seq order,
  buffering what arrives early, and acknowledges cumulatively to the author;
- an author keeps what a member has not acknowledged and re-sends from the
  member's last ack whenever the connection to it comes up again;
- a Lamport clock orders everything: `(lamport, author)` is one total order
  every member converges to (`transcript()`);
- the clock is hybrid, anchored to wall time in milliseconds: a member's clock
  never runs more than half of `max_clock_lead` ahead of its own wall clock,
  whatever others sign, and an envelope more than `max_clock_lead` ahead is
  refused; so no member can push anyone's clock out of reach of the others;
- a gap nobody fills within `resume_window` becomes an explicit
  `Discontinuity` event, and delivery goes on after it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MESSAGE_CONTEXT = b"pagemesh-msg/1\0"
KEY_BYTES = 32
SIG_BYTES = 64
MAX_NUMBER = 2**53 - 1
"""The largest seq, lamport and ts on the wire (JavaScript's safe integers)."""

Signer = Callable[[bytes], bytes]
Verifier = Callable[[bytes, bytes, bytes], bool]


class MessagingError(ValueError):
    """The application misused the room (message too large, too much unacknowledged)."""


class FrameRejected(ValueError):
    """A member sent a frame that breaks the protocol; it is dropped and counted."""


@dataclass(frozen=True, slots=True)
class RoomConfig:
    max_body_bytes: int = 16_384
    max_unacked: int = 1_000
    """Own messages a connected member may lag behind before `send` refuses more."""
    max_outbox: int = 10_000
    """Own messages kept for re-sending; older ones are gone (the resume window, by count)."""
    max_early: int = 1_000
    """Out-of-order envelopes buffered per author."""
    history_count: int = 200
    history_age: float = 3600.0
    resume_window: float = 30.0
    """How long a gap may stay open before it becomes a Discontinuity."""
    ack_delay: float = 0.02
    max_history: int = 5_000
    """Envelopes kept for the transcript and for newcomers."""
    max_clock_lead: float = 3600.0
    """Seconds an envelope's lamport (read as milliseconds) may be ahead of our wall
    clock; beyond it the envelope is refused. Our own clock adopts what we receive only
    up to half of this ahead, so honest members whose wall clocks differ by less than
    half of it always accept each other's messages."""


@dataclass(frozen=True, slots=True)
class Envelope:
    room: bytes
    author: bytes
    seq: int
    lamport: int
    sent_at: int
    """Author's clock, milliseconds: shown to people, never used for order."""
    kind: str
    body: str
    signature: bytes = b""

    def signed_bytes(self) -> bytes:
        fields = [
            self.room.hex(),
            self.author.hex(),
            self.seq,
            self.lamport,
            self.sent_at,
            self.kind,
            self.body,
        ]
        text = json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
        return MESSAGE_CONTEXT + text.encode()

    def to_json(self) -> dict[str, Any]:
        return {
            "room": self.room.hex(),
            "author": self.author.hex(),
            "seq": self.seq,
            "lamport": self.lamport,
            "ts": self.sent_at,
            "kind": self.kind,
            "body": self.body,
            "sig": self.signature.hex(),
        }

    @property
    def order(self) -> tuple[int, bytes]:
        return (self.lamport, self.author)


def envelope_from_json(data: Any, max_body: int) -> Envelope:
    """Parse an envelope (signature not checked here); FrameRejected on any defect."""
    try:
        env = Envelope(
            bytes.fromhex(data["room"]),
            bytes.fromhex(data["author"]),
            data["seq"],
            data["lamport"],
            data["ts"],
            data["kind"],
            data["body"],
            bytes.fromhex(data["sig"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise FrameRejected("malformed envelope") from None
    ints = (env.seq, env.lamport, env.sent_at)
    if not all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i <= MAX_NUMBER for i in ints
    ):
        raise FrameRejected("envelope numbers out of range")
    if env.seq < 1 or len(env.author) != KEY_BYTES or len(env.signature) != SIG_BYTES:
        raise FrameRejected("envelope field of the wrong size")
    if not isinstance(env.kind, str) or not isinstance(env.body, str) or len(env.kind) > 32:
        raise FrameRejected("envelope kind and body are strings")
    if len(env.body.encode()) > max_body:
        raise FrameRejected("envelope body too large")
    return env


# --- events ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivered:
    envelope: Envelope


@dataclass(frozen=True, slots=True)
class Discontinuity:
    """Messages `first`..`last` of `author` will never be delivered here."""

    author: bytes
    first: int
    last: int


RoomEvent = Delivered | Discontinuity


@dataclass(slots=True)
class _Author:
    delivered: int = 0
    """Highest seq delivered; everything up to it was delivered or declared lost."""
    early: dict[int, Envelope] = field(default_factory=dict)
    gap_since: float | None = None


class ReliableRoom:
    """The messaging state of one room for one local identity."""

    def __init__(
        self,
        room: bytes,
        key: bytes,
        sign: Signer,
        verify: Verifier,
        config: RoomConfig | None = None,
        seq: int = 0,
        lamport: int = 0,
        delivered: dict[bytes, int] | None = None,
        history: list[Envelope] | None = None,
        *,
        now: float | None = None,
    ) -> None:
        """`seq`, `lamport`, `delivered` and `history` restore a room after a restart.

        Given `now`, the restored clock is repaired as if the history were received
        now (docs/protocol.md 5.0.1): envelopes beyond the clock lead are left out
        (listed in `refused_on_restore`, so the store can forget them; our own are
        not re-sent, every member would refuse them), and the clock is brought down
        to what the kept ones and the adoption bound allow.
        """
        self.room = room
        self.key = key
        self.config = config or RoomConfig()
        self._sign = sign
        self._verify = verify
        self.seq = seq
        self.lamport = lamport
        kept = list(history or ())
        self.refused_on_restore: list[Envelope] = []
        if now is not None:
            refuse_above, adopt_up_to = self._clock_bounds(now)
            self.refused_on_restore = [e for e in kept if e.lamport > refuse_above]
            kept = [e for e in kept if e.lamport <= refuse_above]
            self.lamport = max(min(c, adopt_up_to) for c in [lamport, *(e.lamport for e in kept)])
        self._authors: dict[bytes, _Author] = {
            author: _Author(delivered=upto) for author, upto in (delivered or {}).items()
        }
        self._authors[key] = _Author(delivered=seq)
        self._outbox: dict[int, Envelope] = {}
        self._acked: dict[bytes, int] = {}
        """Per member: the highest of our seqs it acknowledged."""
        self._connected: set[bytes] = set()
        self._history: dict[tuple[bytes, int], Envelope] = {}
        self._frames: list[tuple[bytes, dict[str, Any]]] = []
        self._events: list[RoomEvent] = []
        self._ack_due: dict[bytes, float] = {}
        self.counters: dict[str, int] = {}
        for env in kept:
            self._remember(env)
            if env.author == key:
                self._outbox[env.seq] = env

    # --- the application's side ---------------------------------------------

    def send(self, body: str, now: float, kind: str = "text") -> Envelope:
        """Number, sign and send a message to every connected member."""
        if len(body.encode()) > self.config.max_body_bytes:
            raise MessagingError(f"a message is at most {self.config.max_body_bytes} bytes")
        for member in self._connected:
            if self.seq - self._acked.get(member, 0) >= self.config.max_unacked:
                raise MessagingError("too many messages not yet acknowledged; wait")
        # A hybrid logical clock: one past everything seen, and never behind wall time.
        lamport = max(self.lamport + 1, _millis(now))
        if not 0 <= _millis(now) <= MAX_NUMBER or max(lamport, self.seq + 1) > MAX_NUMBER:
            raise MessagingError("the clock is out of range; is the system time right?")
        self.seq += 1
        self.lamport = lamport
        unsigned = Envelope(self.room, self.key, self.seq, lamport, _millis(now), kind, body)
        env = Envelope(**{**_fields(unsigned), "signature": self._sign(unsigned.signed_bytes())})
        self._outbox[env.seq] = env
        while len(self._outbox) > self.config.max_outbox:
            del self._outbox[next(iter(self._outbox))]
        self._authors[self.key].delivered = env.seq
        self._remember(env)
        self._events.append(Delivered(env))
        for member in self._connected:
            self._frames.append((member, {"t": "msg", "env": env.to_json()}))
        return env

    def transcript(self) -> list[Envelope]:
        """Every message kept, in the total order all members converge to."""
        return sorted(self._history.values(), key=lambda e: e.order)

    # --- connections ----------------------------------------------------------

    def connected(self, member: bytes, now: float) -> None:
        """A data channel to `member` is (again) open: resume and ask for history."""
        self._connected.add(member)
        if member in self._acked:
            start = self._acked[member] + 1
        else:  # a member we never heard from gets recent history, not everything we said
            start = max(1, self.seq - self.config.history_count + 1)
            self._acked[member] = start - 1
        for seq in range(start, self.seq + 1):
            env = self._outbox.get(seq)
            if env is not None:
                self._frames.append((member, {"t": "msg", "env": env.to_json()}))
        since = {a.hex(): s.delivered for a, s in self._authors.items()}
        self._frames.append((member, {"t": "hist-req", "since": since}))

    def disconnected(self, member: bytes) -> None:
        self._connected.discard(member)
        self._ack_due.pop(member, None)

    # --- input ----------------------------------------------------------------

    def receive(self, member: bytes, frame: Any, now: float) -> None:
        """One frame from `member` (a parsed JSON object); bad ones are dropped and counted."""
        try:
            self._receive(member, frame, now)
        except FrameRejected as exc:
            self._count(f"drop.{exc.args[0].replace(' ', '_')}")

    def _receive(self, member: bytes, frame: Any, now: float) -> None:
        if not isinstance(frame, dict):
            raise FrameRejected("not an object")
        kind = frame.get("t")
        if kind == "msg":
            self._accept(envelope_from_json(frame.get("env"), self.config.max_body_bytes), now)
        elif kind == "hist":
            envs = frame.get("envs")
            if not isinstance(envs, list) or len(envs) > self.config.history_count * 4:
                raise FrameRejected("bad history")
            for data in envs:
                self._accept(envelope_from_json(data, self.config.max_body_bytes), now)
        elif kind == "ack":
            seq = frame.get("seq")
            if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= self.seq:
                raise FrameRejected("bad ack")
            self._acked[member] = max(self._acked.get(member, 0), seq)
        elif kind == "hist-req":
            self._answer_history(member, frame.get("since"), now)
        else:
            raise FrameRejected("unknown frame")

    def _accept(self, env: Envelope, now: float) -> None:
        if env.room != self.room:
            raise FrameRejected("envelope for another room")
        if not self._verify(env.author, env.signed_bytes(), env.signature):
            raise FrameRejected("bad signature")
        refuse_above, adopt_up_to = self._clock_bounds(now)
        if env.lamport > refuse_above:
            # Not delivered, not adopted, not kept, so never forwarded: a gap of this
            # author's, which a re-send fills or the resume window turns into a
            # Discontinuity. Counted per envelope, the rest of a history batch goes on.
            self._count("drop.clock_too_far_ahead")
            return
        # Adopt at most half the lead ahead of our wall clock: then our next message is
        # within the lead of every member less than half the lead behind us, whatever
        # was signed. Clamped rather than ignored, so a reply still sorts after any
        # message from a clock up to half the lead ahead.
        self.lamport = max(self.lamport, min(env.lamport, adopt_up_to))
        if env.author == self.key:
            return  # our own, echoed back in history
        state = self._authors.get(env.author)
        if state is None:
            # First word from this author: we start at what we got (history fills the rest).
            state = self._authors[env.author] = _Author(delivered=env.seq - 1)
        if env.seq <= state.delivered or env.seq in state.early:
            self._count("duplicate")
        elif env.seq == state.delivered + 1:
            self._deliver(state, env)
            while (following := state.early.pop(state.delivered + 1, None)) is not None:
                self._deliver(state, following)
            state.gap_since = now if state.early else None
        else:
            if len(state.early) >= self.config.max_early:
                raise FrameRejected("too many early envelopes")
            state.early[env.seq] = env
            if state.gap_since is None:
                state.gap_since = now
        self._ack_due.setdefault(env.author, now + self.config.ack_delay)

    def _clock_bounds(self, now: float) -> tuple[int, int]:
        """(refuse a lamport above, adopt a lamport up to), from our wall clock `now`."""
        lead = int(self.config.max_clock_lead * 1000)
        return _millis(now) + lead, _millis(now) + lead // 2

    def _deliver(self, state: _Author, env: Envelope) -> None:
        state.delivered = env.seq
        self._remember(env)
        self._events.append(Delivered(env))

    def _remember(self, env: Envelope) -> None:
        self._history[(env.author, env.seq)] = env
        if len(self._history) > self.config.max_history:
            oldest = min(self._history.values(), key=lambda e: e.order)
            del self._history[(oldest.author, oldest.seq)]

    def _answer_history(self, member: bytes, since: Any, now: float) -> None:
        if not isinstance(since, dict) or len(since) > 10_000:
            raise FrameRejected("bad history request")
        known: dict[bytes, int] = {}
        for author, seq in since.items():
            if isinstance(author, str) and isinstance(seq, int) and len(author) == 2 * KEY_BYTES:
                try:
                    known[bytes.fromhex(author)] = seq
                except ValueError:
                    continue
        horizon = (now - self.config.history_age) * 1000
        wanted = [
            env
            for env in self.transcript()
            # our own words go by resend (from the member's ack), not twice
            if env.author not in (self.key, member)
            and env.seq > known.get(env.author, 0)
            and env.sent_at >= horizon
        ][-self.config.history_count :]
        if wanted:
            self._frames.append((member, {"t": "hist", "envs": [e.to_json() for e in wanted]}))

    # --- output and time ---------------------------------------------------------

    def frames_to_send(self) -> list[tuple[bytes, dict[str, Any]]]:
        frames, self._frames = self._frames, []
        return frames

    def next_event(self) -> RoomEvent | None:
        return self._events.pop(0) if self._events else None

    def get_timer(self) -> float | None:
        deadlines = list(self._ack_due.values())
        deadlines += [
            s.gap_since + self.config.resume_window
            for s in self._authors.values()
            if s.gap_since is not None
        ]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        for author, due in list(self._ack_due.items()):
            if due <= now:
                del self._ack_due[author]
                if author in self._connected:
                    seq = self._authors[author].delivered
                    self._frames.append((author, {"t": "ack", "seq": seq}))
        for author, state in self._authors.items():
            if state.gap_since is not None and state.gap_since + self.config.resume_window <= now:
                self._skip_gap(author, state, now)

    def _skip_gap(self, author: bytes, state: _Author, now: float) -> None:
        """Declare the first gap lost, deliver what follows it."""
        first_early = min(state.early)
        self._events.append(Discontinuity(author, state.delivered + 1, first_early - 1))
        self._count("discontinuity")
        state.delivered = first_early - 1
        while (following := state.early.pop(state.delivered + 1, None)) is not None:
            self._deliver(state, following)
        state.gap_since = now if state.early else None
        self._ack_due.setdefault(author, now + self.config.ack_delay)

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1


def _millis(now: float) -> int:
    """Wall time in whole milliseconds, the unit of the clock (and of `ts`)."""
    return int(now * 1000)


def _fields(env: Envelope) -> dict[str, Any]:
    return {name: getattr(env, name) for name in Envelope.__slots__}
