"""One client connection's protocol state, with no I/O (docs/protocol.md, "Client API").

`ClientSession` is fed the text of each WebSocket frame, the WebSocket PING
and PONG control frames, and the current time; it checks limits, parses,
proves the client's key (hello), answers pings, and hands the node typed
requests (`next_event`). What it has to say goes out through `frames_to_send`,
and `take_probe` says when the node sends a WebSocket PING; when it decides
the connection must end it sets `close_reason`. Time arrives as `now`, so its
limits are tested on a virtual clock.

Liveness (docs/protocol.md 3.1). After the hello, a connection that has been
quiet for a third of the idle timeout is probed with a WebSocket PING, again
after each further third, and closed when nothing at all, a PONG included,
arrived within the idle timeout. A browser answers a PING in its network
stack, not in the page's JavaScript, so a hidden tab whose timers are
throttled (Chromium wakes a chained timer of a page hidden for 5 minutes at
most once a minute: "intensive wake up throttling", chromestatus.com feature
4718288976216064) stays, while a client that is gone is still dropped. Only
`handle_timer` makes a probe due: what a client sends can postpone probes,
never add one. Before the hello there are no probes and control frames do not
count as activity, so a connection that never proves a key still lapses.

Limits (all in `SessionLimits`): frame size, frames per second (token
bucket; a `join`, `members` or `layers` costs `lookup_cost` tokens, since each makes the
node read the DHT), rooms per connection, distinct signal targets per window, an idle
timeout, and a budget of protocol errors after which the connection is
closed with a reason. Opaque records (`put-record`, `get-record`, docs/protocol.md
7.3) draw on a bucket of their own and at most `max_record_ops` run at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from dht.ratelimit import TokenBucket

from .protocol import (
    MIN_CLIENT_VERSION,
    NONCE_BYTES,
    PROTOCOL_VERSION,
    UNVERSIONED,
    Challenge,
    ClientFrame,
    ErrorCode,
    FrameError,
    GetRecord,
    Hello,
    Join,
    Layers,
    Leave,
    Members,
    Ping,
    Pong,
    PutRecord,
    ServerFrame,
    Signal,
    error,
    hello_message,
    parse_client_frame,
)

Verifier = Callable[[bytes, bytes, bytes], bool]

# WebSocket close codes (RFC 6455 section 7.4.1; 4000-4999 are ours).
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_IDLE = 4000
CLOSE_REPLACED = 4001
CLOSE_TOO_OLD = 4002


@dataclass(frozen=True, slots=True)
class SessionLimits:
    max_frame_bytes: int = 65536
    frames_per_second: float = 20.0
    frame_burst: float = 40.0
    max_rooms: int = 8
    signal_peers: int = 64
    """Distinct peers one connection may signal within `signal_window` seconds."""
    signal_window: float = 10.0
    lookup_cost: float = 5.0
    """Tokens a `join` or `members` frame takes (each makes the node read the DHT)."""
    idle_timeout: float = 60.0
    error_burst: float = 20.0
    """Protocol errors tolerated in a burst; they are forgiven at one per second."""
    min_client_version: int = MIN_CLIENT_VERSION
    """The oldest protocol version served (docs/protocol.md 3.1); older hellos get `too-old`."""
    records_per_second: float = 2.0
    """put-record and get-record frames per second (each is a DHT lookup; 7.3)."""
    record_burst: float = 64.0
    max_record_ops: int = 8
    """put-record and get-record requests of one connection being answered at once."""
    send_timeout: float = 10.0
    """Seconds a send to the client may wait for its socket to drain before the node drops
    it: a client that stops reading must not hold up whoever writes to it."""


class State(Enum):
    AWAIT_HELLO = "await-hello"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The client proved it holds `key`."""

    key: bytes
    name: str | None


SessionEvent = Authenticated | ClientFrame


class ClientSession:
    """The protocol state of one client connection."""

    __slots__ = (
        "_errors",
        "_events",
        "_frames",
        "_last_activity",
        "_last_probe",
        "_probe_due",
        "_rate",
        "_records",
        "_signal_targets",
        "_verify",
        "close_reason",
        "key",
        "limits",
        "node_id",
        "nonce",
        "record_ops",
        "rooms",
        "state",
    )

    def __init__(
        self, node_id: bytes, nonce: bytes, limits: SessionLimits, verify: Verifier, now: float
    ) -> None:
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"a hello nonce is {NONCE_BYTES} bytes")
        self.node_id = node_id
        self.nonce = nonce
        self.limits = limits
        self._verify = verify
        self.state = State.AWAIT_HELLO
        self.key: bytes | None = None
        self.rooms: set[bytes] = set()
        """Rooms joined or being joined; the node removes a room when a join fails or on leave."""
        self.close_reason: tuple[int, str] | None = None
        self._rate = TokenBucket(limits.frames_per_second, limits.frame_burst, now)
        self._errors = TokenBucket(1.0, limits.error_burst, now)
        self._records = TokenBucket(limits.records_per_second, limits.record_burst, now)
        self.record_ops = 0
        """put-record and get-record requests handed to the node and not yet answered."""
        self._signal_targets: dict[bytes, float] = {}
        self._last_activity = now
        self._last_probe = now
        self._probe_due = False
        self._events: list[SessionEvent] = []
        self._frames: list[ServerFrame] = [Challenge(PROTOCOL_VERSION, nonce, node_id)]

    # --- input ---------------------------------------------------------------

    def receive(self, text: str | bytes, now: float) -> None:
        """One WebSocket frame from the client."""
        if self.state is State.CLOSED:
            return
        self._last_activity = now
        if not self._rate.take(now):
            self.error(ErrorCode.RATE_LIMITED, "too many frames; slow down", None, now)
            return
        try:
            frame = parse_client_frame(text, self.limits.max_frame_bytes)
            if isinstance(frame, Join | Members | Layers) and not self._rate.take(
                now, self.limits.lookup_cost - 1
            ):
                raise FrameError(ErrorCode.RATE_LIMITED, "too many joins; slow down", frame.id)
            self._accept(frame, now)
        except FrameError as exc:
            self.error(exc.code, exc.message, exc.ref, now)

    def receive_ping(self, now: float) -> bool:
        """A WebSocket PING from the client: True if the node should answer it with a PONG.

        RFC 6455 section 5.5.2 asks for an answer; each PING costs a token of the frame
        rate like any other frame, so a flood of them is refused and closed as one of
        text frames is, rather than answered without end.
        """
        if self.state is State.CLOSED:
            return False
        if self.state is State.OPEN:
            self._last_activity = now
        if not self._rate.take(now):
            self.error(ErrorCode.RATE_LIMITED, "too many frames; slow down", None, now)
            return False
        return True

    def receive_pong(self, now: float) -> None:
        """A WebSocket PONG from the client: the answer to a probe, or a heartbeat of its
        own (RFC 6455 section 5.5.3 allows unsolicited ones). It asks nothing of the node."""
        if self.state is State.OPEN:
            self._last_activity = now

    def _accept(self, frame: ClientFrame, now: float) -> None:
        if self.state is State.AWAIT_HELLO:
            if not isinstance(frame, Hello):
                raise FrameError(ErrorCode.NOT_AUTHENTICATED, "the first frame must be a hello")
            if self._too_old(frame):
                return
            message = hello_message(self.nonce, self.node_id)
            if not self._verify(frame.key, message, frame.sig):
                raise FrameError(ErrorCode.BAD_SIGNATURE, "hello signature does not verify")
            self.state = State.OPEN
            self.key = frame.key
            self._events.append(Authenticated(frame.key, frame.name))
            return
        if isinstance(frame, Hello):
            raise FrameError(ErrorCode.BAD_FRAME, "already authenticated")
        if isinstance(frame, Ping):
            self.send(Pong(frame.id))
            return
        if (
            isinstance(frame, Join)
            and frame.room not in self.rooms
            and len(self.rooms) >= self.limits.max_rooms
        ):
            raise FrameError(
                ErrorCode.TOO_MANY_ROOMS,
                f"at most {self.limits.max_rooms} rooms per connection",
                frame.id,
            )
        if isinstance(frame, Join):
            self.rooms.add(frame.room)  # reserved now, so concurrent joins count too
        if isinstance(frame, Leave | Signal | Layers) and frame.room not in self.rooms:
            raise FrameError(ErrorCode.NOT_IN_ROOM, "not joined to that room", frame.id)
        if isinstance(frame, Signal):
            self._count_signal_target(frame, now)
        if isinstance(frame, PutRecord | GetRecord):
            self._admit_record_op(frame, now)
        self._events.append(frame)

    def _admit_record_op(self, frame: PutRecord | GetRecord, now: float) -> None:
        if self.record_ops >= self.limits.max_record_ops:
            raise FrameError(
                ErrorCode.RATE_LIMITED,
                f"at most {self.limits.max_record_ops} record requests at once",
                frame.id,
            )
        if not self._records.take(now):
            raise FrameError(ErrorCode.RATE_LIMITED, "too many record requests", frame.id)
        self.record_ops += 1

    def record_done(self) -> None:
        """The node answered a put-record or get-record it was handed."""
        self.record_ops = max(0, self.record_ops - 1)

    def _too_old(self, hello: Hello) -> bool:
        """A client older than this node serves is told so and closed (docs/protocol.md 3.1):
        retrying cannot help it, an upgrade can. A newer one is served at our version."""
        version = UNVERSIONED if hello.version is None else hello.version
        oldest = self.limits.min_client_version
        if version >= oldest:
            return False
        message = (
            f"protocol version {version} is older than this node serves "
            f"({oldest} to {PROTOCOL_VERSION})"
        )
        self.send(error(ErrorCode.TOO_OLD, message))
        self.close(CLOSE_TOO_OLD, f"{ErrorCode.TOO_OLD.value}: {message}")
        return True

    def _count_signal_target(self, frame: Signal, now: float) -> None:
        targets = self._signal_targets
        horizon = now - self.limits.signal_window
        if frame.to not in targets and len(targets) >= self.limits.signal_peers:
            for key in [k for k, t in targets.items() if t <= horizon]:
                del targets[key]
            if len(targets) >= self.limits.signal_peers:
                raise FrameError(
                    ErrorCode.TOO_MANY_PEERS,
                    f"at most {self.limits.signal_peers} peers per {self.limits.signal_window:g} s",
                    frame.id,
                )
        targets[frame.to] = now

    # --- output --------------------------------------------------------------

    def send(self, frame: ServerFrame) -> None:
        if self.state is not State.CLOSED:
            self._frames.append(frame)

    def error(self, code: ErrorCode, message: str, ref: str | int | None, now: float) -> None:
        """Tell the client what it did wrong; close after too many errors in a burst."""
        self.send(error(code, message, ref))
        if not self._errors.take(now):
            self.close(CLOSE_POLICY, f"{ErrorCode.ABUSE.value}: too many protocol errors")

    def close(self, code: int, reason: str) -> None:
        if self.state is not State.CLOSED:
            self.state = State.CLOSED
            self.close_reason = (code, reason)

    def frames_to_send(self) -> list[ServerFrame]:
        frames, self._frames = self._frames, []
        return frames

    def next_event(self) -> SessionEvent | None:
        return self._events.pop(0) if self._events else None

    def take_probe(self) -> bool:
        """True once each time the node should send the client a WebSocket PING."""
        due, self._probe_due = self._probe_due, False
        return due

    # --- time ------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When `handle_timer` has something to do: the next probe or the idle deadline."""
        if self.state is State.CLOSED:
            return None
        deadline = self._last_activity + self.limits.idle_timeout
        if self.state is State.AWAIT_HELLO:
            return deadline
        return min(deadline, self._next_probe())

    def handle_timer(self, now: float) -> None:
        if self.state is State.CLOSED:
            return
        if now >= self._last_activity + self.limits.idle_timeout:
            self.send(error(ErrorCode.IDLE, "no frame within the idle timeout"))
            self.close(
                CLOSE_IDLE, f"{ErrorCode.IDLE.value}: no frame in {self.limits.idle_timeout:g} s"
            )
        elif self.state is State.OPEN and now >= self._next_probe():
            self._last_probe = now
            self._probe_due = True

    def _next_probe(self) -> float:
        """A third of the idle timeout after the last frame or the last probe, if later."""
        return max(self._last_activity, self._last_probe) + self.limits.idle_timeout / 3
