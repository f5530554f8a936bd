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
- a Lamport clock orders everything: `(lamport, author, seq)` is one total order
  every member converges to (`transcript()`);
- the clock is hybrid, anchored to wall time in milliseconds: a member's clock
  never runs more than half of `max_clock_lead` ahead of its own wall clock,
  whatever others sign, and an envelope more than `max_clock_lead` ahead is
  refused; so no member can push anyone's clock out of reach of the others;
- a gap nobody fills within `resume_window` becomes an explicit
  `Discontinuity` event, and delivery goes on after it;
- an envelope the glue could not send (its link's queue was full) is sent
  again on the same link: unacknowledged envelopes are re-sent every
  `resend_interval` in which the member acknowledged nothing new.

Nothing a member sends grows this state without bound or makes it answer
without bound (docs/protocol.md 5.0.1): authors tracked, early envelopes in
all, history kept, the `since` map, history answers (bytes and rate) are all
capped, and what goes past a cap is counted in `counters`, never raised.

Each author's new envelopes pass a rate limit (docs/protocol.md 5.4: token
buckets of envelopes and bytes on `now`): one over it is dropped unacknowledged,
so its author sends it again, and reported as `Flooding`. A blocked key's
envelopes are taken, kept and forwarded for others, never delivered or shown,
and it gets no link.

What an envelope says is read from its kind and body (docs/protocol.md 5.0.1,
"What an envelope says"): `text` (the body is the text), `chat` (text, a signed
display name, the message it replies to) and `reaction` (an emoji on or off a
message), as `Chat` and `Reaction`. A field that breaks its bound is counted
and left out, never a reason to withhold the envelope: delivery is by seq, and
a gap would hold back everything its author says next. The latest valid name
of each author is kept (`name_of`), and `reactions_for` folds reactions over
history.
"""

from __future__ import annotations

import json
import re
import unicodedata
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable
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
    max_early_total: int = 2_000
    """Out-of-order envelopes buffered across all authors (authors are free: any key signs)."""
    max_authors: int = 1_024
    """Authors whose delivery state is kept; past it the least recently delivered one,
    neither ourselves nor a connected member, is forgotten."""
    history_count: int = 200
    """Envelopes in one history answer, at most (and our own re-sent to a new member)."""
    history_age: float = 3600.0
    history_frame_bytes: int = 65_536
    """A `hist` frame (compact ASCII JSON) is at most this long, unless it carries a
    single envelope (one of max_body_bytes is at most ~99 KB, under the 256 KiB a data
    channel message may have)."""
    history_answer_bytes: int = 524_288
    """Envelope bytes in one history answer, at most: under the glue's send-queue mark."""
    hist_req_interval: float = 10.0
    """A member's history request is answered once per connection, then at most once
    per this many seconds; the rest are counted (`drop.hist_req_rate`)."""
    max_since: int = 256
    """Authors named in a `hist-req` (the most recently delivered); a longer one is refused."""
    resend_interval: float = 2.0
    """Unacknowledged envelopes are re-sent to a connected member after this long
    without a new acknowledgement (the glue may have refused to queue them)."""
    resend_burst: int = 200
    """Envelopes re-sent to one member at each resend_interval, at most."""
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
    max_names: int = 1_024
    """Authors whose latest signed name is kept; past it the least recently named goes."""
    flood_messages: int = 200
    """Per author, a token bucket of envelopes (docs/protocol.md 5.4): this many at once
    (a whole history answer of one author fits), refilled at `flood_rate` per second;
    a new envelope that finds it empty is dropped unacknowledged (`Flooding`)."""
    flood_rate: float = 4.0
    flood_bytes: int = 524_288
    """The same for body bytes (UTF-8): this many at once, `flood_byte_rate` a second."""
    flood_byte_rate: float = 65_536.0
    flood_report_interval: float = 10.0
    """A flooding author is reported at its first drop, then at most once per this long."""


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
    def order(self) -> tuple[int, bytes, int]:
        """The total order: lamport, then author, then seq (an author who signs two
        envelopes with one lamport gets them ordered the same way everywhere)."""
        return (self.lamport, self.author, self.seq)

    def wire_size(self) -> int:
        """Characters of this envelope in a frame as the Python glue sends it (compact,
        ASCII JSON): an upper bound of its bytes and characters from either client."""
        return len(json.dumps(self.to_json(), separators=(",", ":")))


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
    try:
        body_bytes = len(env.body.encode())
        env.kind.encode()
    except UnicodeEncodeError:  # a lone surrogate, from a "\ud800" escape
        raise FrameRejected("malformed envelope") from None
    if body_bytes > max_body:
        raise FrameRejected("envelope body too large")
    return env


HIST_FRAME_OVERHEAD = len('{"t":"hist","envs":[]}')


# --- what an envelope says (docs/protocol.md 5.0.1, "What an envelope says") ---------

MAX_NAME_BYTES = 64
"""A display name: 1 to 64 UTF-8 bytes once in NFC."""
MAX_EMOJI = 16
"""A reaction: 1 to 16 code points (the longest emoji sequences have 10)."""
MAX_BODY_DEPTH = 8
"""Nested arrays and objects in a JSON body, checked by a scan before it is parsed."""
CONTENT_DEFECTS = (
    "drop.bad_body",
    "drop.bad_text",
    "drop.bad_name",
    "drop.bad_reference",
    "drop.bad_emoji",
    "drop.bad_reaction",
)
"""What a delivered envelope's content may be counted as: the field is left out."""

_LABEL_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]")
"""Control characters, line separators and bidi controls: none in a name or an emoji
(they would break or reorder the line a UI shows them in)."""
_SURROGATE = re.compile("[\ud800-\udfff]")
"""A lone surrogate, from a "\\ud800" escape (json joins the pairs)."""


@dataclass(frozen=True, slots=True)
class MessageRef:
    """A message of the room: its author and seq."""

    author: bytes
    seq: int


@dataclass(frozen=True, slots=True)
class Chat:
    """What a member said: kind `text` (the body is the text) or `chat`."""

    text: str
    name: str | None = None
    """The author's display name, signed with the text (NFC)."""
    reply_to: MessageRef | None = None


@dataclass(frozen=True, slots=True)
class Reaction:
    """Kind `reaction`: `emoji` on (or, `on` false, off) the message `target`."""

    target: MessageRef
    emoji: str
    on: bool = True
    name: str | None = None


Content = Chat | Reaction


class _Defect(ValueError):
    """A field of a body that breaks its bound; args[0] is one of CONTENT_DEFECTS."""


def _name(value: Any) -> str:
    """A display name in NFC, or _Defect."""
    if not isinstance(value, str) or _SURROGATE.search(value) or _LABEL_FORBIDDEN.search(value):
        raise _Defect("drop.bad_name")
    name = unicodedata.normalize("NFC", value)
    if not 0 < len(name.encode()) <= MAX_NAME_BYTES:
        raise _Defect("drop.bad_name")
    return name


def _emoji(value: Any) -> str:
    """A reaction, exactly as signed (not normalized), or _Defect."""
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_EMOJI
        or _SURROGATE.search(value)
        or _LABEL_FORBIDDEN.search(value)
    ):
        raise _Defect("drop.bad_emoji")
    return value


def _reference(value: Any) -> MessageRef:
    """`{"author": 64 lower-case hex, "seq": 1..2^53-1}`, or _Defect."""
    if not isinstance(value, dict):
        raise _Defect("drop.bad_reference")
    author, seq = value.get("author"), value.get("seq")
    if not isinstance(author, str) or not _LOWER_HEX_KEY.fullmatch(author):
        raise _Defect("drop.bad_reference")
    if type(seq) is not int or not 1 <= seq <= MAX_NUMBER:
        raise _Defect("drop.bad_reference")
    return MessageRef(bytes.fromhex(author), seq)


def _text(value: Any) -> str:
    if not isinstance(value, str) or _SURROGATE.search(value):
        raise _Defect("drop.bad_text")
    return value


def _optional(read: Callable[[Any], Any], obj: dict[str, Any], key: str, defects: list[str]) -> Any:
    """An optional field: absent is None, and so is a defective one (counted)."""
    if key not in obj:
        return None
    try:
        return read(obj[key])
    except _Defect as defect:
        defects.append(defect.args[0])
        return None


def _json_body(body: str) -> dict[str, Any]:
    """A body that is one JSON object, read as JavaScript's JSON.parse reads it (numbers
    are doubles, so 1.0 and 1e0 are the integer 1; no NaN or Infinity), or _Defect."""
    if _too_deep(body, MAX_BODY_DEPTH):
        raise _Defect("drop.bad_body")
    try:
        obj = json.loads(
            body, parse_int=_js_number, parse_float=_js_number, parse_constant=_no_constant
        )
    except (ValueError, RecursionError):
        raise _Defect("drop.bad_body") from None
    if not isinstance(obj, dict):
        raise _Defect("drop.bad_body")
    return obj


def _read_text(body: str, defects: list[str]) -> Chat:
    return Chat(body)


def _read_chat(body: str, defects: list[str]) -> Chat:
    obj = _json_body(body)
    text = _text(obj.get("text"))
    name = _optional(_name, obj, "name", defects)
    return Chat(text, name, _optional(_reference, obj, "re", defects))


def _read_reaction(body: str, defects: list[str]) -> Reaction:
    obj = _json_body(body)
    target = _reference(obj.get("re"))
    emoji = _emoji(obj.get("emoji"))
    on = obj.get("on")
    if not isinstance(on, bool):
        raise _Defect("drop.bad_reaction")
    return Reaction(target, emoji, on, _optional(_name, obj, "name", defects))


CONTENT_KINDS: dict[str, Callable[[str, list[str]], Content]] = {
    "text": _read_text,
    "chat": _read_chat,
    "reaction": _read_reaction,
}
"""The kinds read here; an envelope of any other kind is delivered with no content."""


def parse_content(kind: str, body: str) -> tuple[Content | None, tuple[str, ...]]:
    """What an envelope of `kind` with `body` says, and the defects of its fields (each
    one of CONTENT_DEFECTS). A defective optional field (a name, a reply's reference) is
    left out; a defective required one leaves no content. Never raises."""
    read = CONTENT_KINDS.get(kind)
    if read is None:
        return None, ()
    defects: list[str] = []
    try:
        return read(body, defects), tuple(defects)
    except _Defect as defect:
        return None, (*defects, defect.args[0])


def read_content(env: Envelope) -> Content | None:
    """What `env` says (a history entry, say), its defective fields left out."""
    return parse_content(env.kind, env.body)[0]


def check_name(name: str) -> str:
    """`name` as it is sent (NFC); MessagingError unless it is a valid display name."""
    try:
        return _name(name)
    except _Defect:
        raise MessagingError(
            f"a name is 1 to {MAX_NAME_BYTES} UTF-8 bytes, without control characters"
        ) from None


def chat_body(text: str, name: str | None = None, reply_to: MessageRef | None = None) -> str:
    """The body of a `chat` envelope; MessagingError for a bad name or text."""
    if _SURROGATE.search(text):
        raise MessagingError("the text has a lone surrogate")
    fields: dict[str, Any] = {"text": text}
    if name is not None:
        fields["name"] = check_name(name)
    if reply_to is not None:
        fields["re"] = _reference_json(reply_to)
    return _compact(fields)


def reaction_body(target: MessageRef, emoji: str, on: bool = True, name: str | None = None) -> str:
    """The body of a `reaction` envelope; MessagingError for a bad emoji or name."""
    reference = _reference_json(target)
    try:
        _emoji(emoji)
    except _Defect:
        raise MessagingError(
            f"a reaction is 1 to {MAX_EMOJI} code points, without control characters"
        ) from None
    fields: dict[str, Any] = {"re": reference, "emoji": emoji, "on": on}
    if name is not None:
        fields["name"] = check_name(name)
    return _compact(fields)


def reactions_for(history: Iterable[Envelope]) -> dict[MessageRef, dict[str, set[bytes]]]:
    """Who reacts with what to each message: per message and emoji, the authors whose
    latest reaction with it (in total order) is on. A pure fold over `history`."""
    folded: dict[MessageRef, dict[str, set[bytes]]] = {}
    for env in sorted((e for e in history if e.kind == "reaction"), key=lambda e: e.order):
        reaction = read_content(env)
        if not isinstance(reaction, Reaction):
            continue
        by_emoji = folded.setdefault(reaction.target, {})
        who = by_emoji.setdefault(reaction.emoji, set())
        if reaction.on:
            who.add(env.author)
        else:
            who.discard(env.author)
        if not who:
            del by_emoji[reaction.emoji]
        if not by_emoji:
            del folded[reaction.target]
    return folded


def short_tag(key: bytes) -> str:
    """A few characters that tell apart two members who gave themselves one name: the
    first four hex digits of the key, as UIs show it elsewhere ("·3fa9")."""
    return "\u00b7" + key[:2].hex()


def key_hue(key: bytes) -> int:
    """A hue (0..359) from the key's third and fourth bytes (the tag shows the first two)."""
    return int.from_bytes(key[2:4], "big") % 360


def key_colour(key: bytes) -> str:
    """A CSS colour for the key's messages, the same in every client."""
    return f"hsl({key_hue(key)} 65% 40%)"


def _reference_json(ref: MessageRef) -> dict[str, Any]:
    if len(ref.author) != KEY_BYTES or type(ref.seq) is not int or not 1 <= ref.seq <= MAX_NUMBER:
        raise MessagingError("a message is named by its author's key and a seq from 1")
    return {"author": ref.author.hex(), "seq": ref.seq}


def _compact(fields: dict[str, Any]) -> str:
    """JSON as JavaScript's JSON.stringify writes it (so both clients sign one body)."""
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)


def _js_number(text: str) -> int | float:
    """A JSON number as a double, an integer when it is one JavaScript holds exactly."""
    value = float(text)
    return int(value) if value.is_integer() and abs(value) <= MAX_NUMBER else value


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def _too_deep(text: str, limit: int) -> bool:
    """Brackets outside strings nested over `limit` (an unterminated string runs to the
    end; json fails there). A linear scan, so a deep body never reaches the parser's
    recursion."""
    depth = 0
    in_string = False
    escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            if depth > limit:
                return True
        elif c in "]}" and depth > 0:
            depth -= 1
    return False


# --- events ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivered:
    envelope: Envelope
    content: Content | None = None
    """What it says (`parse_content`); None for a kind not read here or a bad body."""
    replaces: int | None = None
    """Our own message sent again under a new seq (`Reissue`): the seq it had."""


@dataclass(frozen=True, slots=True)
class Reissue:
    """Our own messages to send again under new seqs (`send(..., replaces=seq)`).

    The room had seen our key say up to a higher seq than ours (another device
    holding this identity, docs/protocol.md 5.0.1): members who had those seqs
    took ours as duplicates. These are what we said since then, taken back.
    """

    envelopes: tuple[Envelope, ...]


@dataclass(frozen=True, slots=True)
class Discontinuity:
    """Messages `first`..`last` of `author` will never be delivered here."""

    author: bytes
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class Flooding:
    """`author` sent faster than the room's rate limit (docs/protocol.md 5.4): `dropped`
    of its envelopes were dropped, unacknowledged, since it was last reported (the first
    report comes at the first drop). Others' messages are not held back."""

    author: bytes
    dropped: int


RoomEvent = Delivered | Discontinuity | Reissue | Flooding


@dataclass(slots=True)
class _Author:
    delivered: int = 0
    """Highest seq delivered; everything up to it was delivered or declared lost."""
    early: dict[int, Envelope] = field(default_factory=dict)
    gap_since: float | None = None
    bucket: TokenBucket | None = None
    """Its rate limit, made with its first envelope that needs one (docs/protocol.md 5.4)."""
    flood_dropped: int = 0
    """Envelopes dropped for rate since it was last reported."""
    flood_reported: float | None = None


@dataclass(slots=True)
class TokenBucket:
    """Two token buckets on one clock: envelopes and bytes (docs/protocol.md 5.4).

    Both start full. At `now` each refills by rate * elapsed, up to its capacity (a
    clock that goes back refills nothing); an envelope of `size` bytes passes when one
    envelope token and `size` byte tokens are there, and takes them. The arithmetic is
    the same double arithmetic in JavaScript's `TokenBucket`, in the same order."""

    messages: float
    octets: float
    at: float

    def take(self, size: int, now: float, config: RoomConfig) -> bool:
        elapsed = now - self.at
        if elapsed > 0:
            self.messages = min(
                float(config.flood_messages), self.messages + elapsed * config.flood_rate
            )
            self.octets = min(
                float(config.flood_bytes), self.octets + elapsed * config.flood_byte_rate
            )
            self.at = now
        if self.messages < 1 or self.octets < size:
            return False
        self.messages -= 1
        self.octets -= size
        return True


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
        blocked: Iterable[bytes] = (),
    ) -> None:
        """`seq`, `lamport`, `delivered` and `history` restore a room after a restart.

        `delivered` is read in order of activity, least recent first: past
        `max_authors`, the first ones are forgotten. Given `now`, the restored clock
        is repaired as if the history were received now (docs/protocol.md 5.0.1):
        envelopes beyond the clock lead are left out (listed in `refused_on_restore`,
        so the store can forget them; our own are not re-sent, every member would
        refuse them), and the clock is brought down to what the kept ones and the
        adoption bound allow.
        """
        self.room = room
        self.key = key
        self.config = config or RoomConfig()
        self._sign = sign
        self._verify = verify
        self.seq = seq
        self._base = seq
        """Our seqs above this were numbered here, not restored or proven elsewhere."""
        self.lamport = lamport
        kept = list(history or ())
        self.refused_on_restore: list[Envelope] = []
        if now is not None:
            refuse_above, adopt_up_to = self._clock_bounds(now)
            self.refused_on_restore = [e for e in kept if e.lamport > refuse_above]
            kept = [e for e in kept if e.lamport <= refuse_above]
            self.lamport = max(min(c, adopt_up_to) for c in [lamport, *(e.lamport for e in kept)])
        self.counters: dict[str, int] = {}
        self._connected: set[bytes] = set()
        self._blocked: set[bytes] = set(blocked) - {key}
        """Keys whose envelopes are kept and forwarded but never delivered or shown, and
        who get no link (docs/protocol.md 5.4)."""
        self._authors: dict[bytes, _Author] = {
            author: _Author(delivered=upto) for author, upto in (delivered or {}).items()
        }
        """In order of activity: the least recently delivered author first."""
        self._authors[key] = _Author(delivered=seq)
        self._early_total = 0
        self._ack_due: dict[bytes, float] = {}
        while len(self._authors) > self.config.max_authors and self._forget_an_author():
            pass
        self._outbox: dict[int, Envelope] = {}
        """Our own envelopes by seq, in seq order."""
        self._acked: dict[bytes, int] = {}
        """Per member: the highest of our seqs it acknowledged."""
        self._retry_at: dict[bytes, float] = {}
        """Per connected member with envelopes unacknowledged: when to re-send them."""
        self._hist_answered: dict[bytes, float] = {}
        """Per member: when its last history request on this connection was answered."""
        self._history: dict[tuple[bytes, int], Envelope] = {}
        self._order: list[tuple[int, bytes, int]] = []
        """The keys of `_history` in total order (`Envelope.order`), kept sorted."""
        self._frames: list[tuple[bytes, dict[str, Any]]] = []
        self._events: list[RoomEvent] = []
        self._names: dict[bytes, tuple[tuple[int, bytes, int], str]] = {}
        """Per author, the latest name (by total order) and its envelope's order; the
        least recently named first."""
        for env in kept:
            self._remember(env)
            content, _ = parse_content(env.kind, env.body)  # not counted: nobody sent it now
            self._learn_name(env, content)
        for env in sorted((e for e in kept if e.author == key), key=lambda e: e.seq):
            self._outbox[env.seq] = env

    @property
    def tracked_authors(self) -> int:
        """Authors whose delivery state is kept (ourselves included)."""
        return len(self._authors)

    @property
    def early_envelopes(self) -> int:
        """Out-of-order envelopes buffered, across all authors."""
        return self._early_total

    # --- the application's side ---------------------------------------------

    def say(
        self, text: str, now: float, name: str | None = None, reply_to: MessageRef | None = None
    ) -> Envelope:
        """Send `text` as a `chat` envelope, signed with our display name and the message
        it replies to; MessagingError for a bad name or a body too large."""
        return self.send(chat_body(text, name, reply_to), now, "chat")

    def react(
        self, target: MessageRef, emoji: str, now: float, on: bool = True, name: str | None = None
    ) -> Envelope:
        """Put `emoji` on `target` (or take it off, `on=False`) with a `reaction` envelope."""
        return self.send(reaction_body(target, emoji, on, name), now, "reaction")

    def send(
        self, body: str, now: float, kind: str = "text", replaces: int | None = None
    ) -> Envelope:
        """Number, sign and send a message to every connected member; `replaces` names
        the seq of ours it sends again (`Reissue`), past the unacknowledged bound."""
        if len(body.encode()) > self.config.max_body_bytes:
            raise MessagingError(f"a message is at most {self.config.max_body_bytes} bytes")
        for member in self._connected:
            if (
                replaces is None
                and self.seq - self._acked.get(member, 0) >= self.config.max_unacked
            ):
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
        self._events.append(Delivered(env, self._read(env), replaces))
        for member in self._connected:
            self._frames.append((member, {"t": "msg", "env": env.to_json()}))
            self._retry_at.setdefault(member, now + self.config.resend_interval)
        return env

    def transcript(self) -> list[Envelope]:
        """Every message kept, in the total order all members converge to; a blocked
        author's are left out (they are kept, and forwarded in history)."""
        blocked = self._blocked
        return [self._history[(a, seq)] for _, a, seq in self._order if a not in blocked]

    def envelope(self, ref: MessageRef) -> Envelope | None:
        """The message `ref` names, if it is kept (what a reply quotes); never a blocked
        author's."""
        if ref.author in self._blocked:
            return None
        return self._history.get((ref.author, ref.seq))

    def name_of(self, author: bytes) -> str | None:
        """The latest name (in total order) `author` signed that we have seen."""
        known = self._names.get(author)
        return known[1] if known is not None and author not in self._blocked else None

    @property
    def names(self) -> dict[bytes, str]:
        """Every author's latest signed name, at most `max_names` of them (none blocked)."""
        return {a: name for a, (_, name) in self._names.items() if a not in self._blocked}

    # --- blocking (docs/protocol.md 5.4) ------------------------------------------

    @property
    def blocked(self) -> frozenset[bytes]:
        return frozenset(self._blocked)

    def block(self, author: bytes) -> None:
        """Deliver nothing more of `author`'s, show none of it, and drop its link: its
        envelopes that others forward are still taken (so its seqs stay in step and
        `since` says so), kept and forwarded in history, never delivered. Nothing is
        sent to say so; to `author` we look like a member it cannot reach."""
        if author == self.key:
            raise MessagingError("one cannot block oneself")
        self._blocked.add(author)
        if author in self._connected:
            self.disconnected(author)

    def unblock(self, author: bytes) -> None:
        """Deliver `author`'s envelopes again from the next one; those kept meanwhile
        come back in `transcript()` (they are not delivered as events again)."""
        self._blocked.discard(author)

    # --- connections ----------------------------------------------------------

    def connected(self, member: bytes, now: float) -> None:
        """A data channel to `member` is (again) open: ask for history and resume."""
        if member in self._blocked:
            self._count("refused.blocked")  # the glue makes no link to it; nor do we
            return
        self._connected.add(member)
        self._hist_answered.pop(member, None)  # one answer per connection
        # First, while the link's queue is empty: the one frame never sent again.
        self._frames.append((member, {"t": "hist-req", "since": self._since()}))
        if member not in self._acked:
            # a member we never heard from gets recent history, not everything we said
            self._acked[member] = max(0, self.seq - self.config.history_count)
        for env in self._unacked(member, self.seq):
            self._frames.append((member, {"t": "msg", "env": env.to_json()}))
        self._retry_at.pop(member, None)
        if self._acked[member] < self.seq:
            self._retry_at[member] = now + self.config.resend_interval

    def acked(self, member: bytes) -> int:
        """Our highest seq `member` acknowledged on this run (0: none yet)."""
        return self._acked.get(member, 0)

    def disconnected(self, member: bytes) -> None:
        self._connected.discard(member)
        self._ack_due.pop(member, None)
        self._retry_at.pop(member, None)
        self._hist_answered.pop(member, None)

    def _since(self) -> dict[str, int]:
        """What we have delivered, for the `max_since` most recently delivered authors."""
        since: dict[str, int] = {}
        for author in reversed(self._authors):
            if len(since) >= self.config.max_since:
                break
            if author != self.key:
                since[author.hex()] = self._authors[author].delivered
        return since

    def _unacked(self, member: bytes, limit: int) -> list[Envelope]:
        """Our envelopes after `member`'s ack that the outbox still has, at most `limit`."""
        if not self._outbox:
            return []
        start = max(self._acked.get(member, 0) + 1, next(iter(self._outbox)))
        found: list[Envelope] = []
        for seq in range(start, self.seq + 1):
            if len(found) >= limit:
                break
            if (env := self._outbox.get(seq)) is not None:
                found.append(env)
        return found

    # --- input ----------------------------------------------------------------

    def receive(self, member: bytes, frame: Any, now: float) -> None:
        """One frame from `member` (a parsed JSON object); bad ones are dropped and counted."""
        if member in self._blocked:
            self._count("drop.blocked")
            return
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
            self._acknowledged(member, seq, now)
        elif kind == "hist-req":
            known = self._parse_since(frame.get("since"))
            last = self._hist_answered.get(member)
            if last is not None and now < last + self.config.hist_req_interval:
                raise FrameRejected("hist req rate")
            self._hist_answered[member] = now
            self._answer_history(member, known, now)
        else:
            raise FrameRejected("unknown frame")

    def _acknowledged(self, member: bytes, seq: int, now: float) -> None:
        if seq <= self._acked.get(member, 0):
            return
        self._acked[member] = seq
        if member in self._retry_at:  # progress: the link moves, wait a full interval again
            if seq >= self.seq:
                del self._retry_at[member]
            else:
                self._retry_at[member] = now + self.config.resend_interval

    def _accept(self, env: Envelope, now: float) -> None:
        if env.room != self.room:
            raise FrameRejected("envelope for another room")
        # One we keep already (delivered, or early), the same to the byte, was checked when
        # it came: a history answer of copies costs no signature check (as the page's
        # Room.checkEnvelopes).
        author = self._authors.get(env.author)
        known = self._history.get((env.author, env.seq)) == env or (
            author is not None and author.early.get(env.seq) == env
        )
        if not known and not self._verify(env.author, env.signed_bytes(), env.signature):
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
            if env.seq > self.seq:
                self._behind(env)
            return  # our own, echoed back
        state = self._authors.get(env.author)
        if state is None:
            if (env.author, env.seq) in self._history:
                self._count("duplicate")  # of an author we forgot, still in our history
                return
            # First word from this author: we start at what we got (history fills the rest).
            state = self._new_author(env.author, env.seq - 1)
            if state is None:
                return
        # Bounds count per envelope; the rest of a history batch goes on.
        if env.seq <= state.delivered or env.seq in state.early:
            self._count("duplicate")  # acknowledged again below: an ack may have been lost
        elif not self._within_rate(env, state, now):
            return  # not acknowledged: its author sends it again (docs/protocol.md 5.4)
        elif env.seq == state.delivered + 1:
            self._deliver(state, env)
            self._drain_early(state)
            state.gap_since = now if state.early else None
        elif len(state.early) >= self.config.max_early:
            self._count("drop.too_many_early_envelopes")
            return
        elif self._early_total >= self.config.max_early_total:
            self._count("drop.early_full")
            return
        else:
            state.early[env.seq] = env
            self._early_total += 1
            if state.gap_since is None:
                state.gap_since = now
        self._ack_due.setdefault(env.author, now + self.config.ack_delay)

    def _behind(self, env: Envelope) -> None:
        """Our key said `env.seq` elsewhere (signed: only we could): take up numbering
        after it, and take back what we numbered here at or below it, to send again."""
        self._count("own.behind")
        stale = tuple(e for seq, e in self._outbox.items() if seq > self._base)
        for old in stale:
            del self._outbox[old.seq]
            self._forget(old)
        self.seq = self._base = env.seq
        self._authors[self.key].delivered = env.seq
        self._remember(env)
        self._events.append(Delivered(env, self._read(env)))
        if stale:
            self._events.append(Reissue(stale))

    def _within_rate(self, env: Envelope, state: _Author, now: float) -> bool:
        """Whether `env`, new from another author, fits that author's rate limit; if not,
        it is counted and its author reported (docs/protocol.md 5.4)."""
        config = self.config
        if state.bucket is None:
            state.bucket = TokenBucket(float(config.flood_messages), float(config.flood_bytes), now)
        if state.bucket.take(len(env.body.encode()), now, config):
            return True
        self._count("drop.flood")
        state.flood_dropped += 1
        last = state.flood_reported
        if last is None or now >= last + config.flood_report_interval:
            self._events.append(Flooding(env.author, state.flood_dropped))
            state.flood_dropped = 0
            state.flood_reported = now
        return False

    def _new_author(self, author: bytes, delivered: int) -> _Author | None:
        """Track a new author, forgetting the least recently active one if full."""
        if len(self._authors) >= self.config.max_authors and not self._forget_an_author():
            self._count("drop.too_many_authors")
            return None
        state = self._authors[author] = _Author(delivered=delivered)
        return state

    def _forget_an_author(self) -> bool:
        """Forget the least recently delivered author that is neither us nor connected.

        Its envelopes stay in history (and count as duplicates if they come again);
        a later one starts it afresh, as a first word does."""
        for author in self._authors:
            if author != self.key and author not in self._connected:
                break
        else:
            return False
        state = self._authors.pop(author)
        self._early_total -= len(state.early)
        self._ack_due.pop(author, None)
        self._count("forgot.author")
        return True

    def _clock_bounds(self, now: float) -> tuple[int, int]:
        """(refuse a lamport above, adopt a lamport up to), from our wall clock `now`."""
        lead = int(self.config.max_clock_lead * 1000)
        return _millis(now) + lead, _millis(now) + lead // 2

    def _drain_early(self, state: _Author) -> None:
        while (following := state.early.pop(state.delivered + 1, None)) is not None:
            self._early_total -= 1
            self._deliver(state, following)

    def _deliver(self, state: _Author, env: Envelope) -> None:
        state.delivered = env.seq
        self._authors[env.author] = self._authors.pop(env.author)  # the most recent now
        self._remember(env)
        if env.author not in self._blocked:  # kept and forwarded, never shown or read
            self._events.append(Delivered(env, self._read(env)))

    def _read(self, env: Envelope) -> Content | None:
        """What a delivered envelope says; its defects counted once, here."""
        content, defects = parse_content(env.kind, env.body)
        for defect in defects:
            self._count(defect)
        self._learn_name(env, content)
        return content

    def _learn_name(self, env: Envelope, content: Content | None) -> None:
        """Keep `env`'s name if it is its author's latest in total order (an old message
        from history must not undo a rename); past `max_names`, the least recently named
        author's goes."""
        if content is None or content.name is None:
            return
        known = self._names.get(env.author)
        if known is not None and known[0] >= env.order:
            return
        self._names.pop(env.author, None)
        self._names[env.author] = (env.order, content.name)
        if len(self._names) > self.config.max_names:
            del self._names[next(iter(self._names))]

    def _remember(self, env: Envelope) -> None:
        """Keep `env`; past `max_history`, the first in total order goes. A bisection:
        O(log n) comparisons per envelope, never a scan of the history."""
        if (env.author, env.seq) in self._history:
            return
        self._history[(env.author, env.seq)] = env
        insort(self._order, (env.lamport, env.author, env.seq))
        if len(self._order) > self.config.max_history:
            _, author, seq = self._order.pop(0)
            del self._history[(author, seq)]

    def _forget(self, env: Envelope) -> None:
        """Drop `env` from history (a bisection, as `_remember`)."""
        if self._history.pop((env.author, env.seq), None) is None:
            return
        at = bisect_left(self._order, env.order)
        del self._order[at]

    def _parse_since(self, since: Any) -> dict[bytes, int]:
        """A `hist-req`'s map: at most `max_since` entries, or the request is refused.
        An entry that is not (64 lower-case hex, a seq) counts as 0."""
        if not isinstance(since, dict) or len(since) > self.config.max_since:
            raise FrameRejected("bad history request")
        known: dict[bytes, int] = {}
        for author, seq in since.items():
            if (
                isinstance(author, str)
                and _LOWER_HEX_KEY.fullmatch(author)
                and isinstance(seq, int)
                and not isinstance(seq, bool)
                and 0 <= seq <= MAX_NUMBER
            ):
                known[bytes.fromhex(author)] = seq
        return known

    def _answer_history(self, member: bytes, known: dict[bytes, int], now: float) -> None:
        """Other authors' envelopes after `known`, the newest that fit in
        `history_count` envelopes and `history_answer_bytes`, sent in total order in
        frames of at most `history_frame_bytes`."""
        horizon = (now - self.config.history_age) * 1000
        chosen: list[tuple[Envelope, int]] = []
        total = 0
        for _, author, seq in reversed(self._order):
            if len(chosen) >= self.config.history_count:
                break
            env = self._history[(author, seq)]
            # our own words go by resend (from the member's ack), not twice
            if author in (self.key, member) or seq <= known.get(author, 0):
                continue
            if env.sent_at < horizon:
                continue
            size = env.wire_size()
            if chosen and total + size > self.config.history_answer_bytes:
                break
            chosen.append((env, size))
            total += size
        chosen.reverse()
        frame: list[dict[str, Any]] = []
        length = HIST_FRAME_OVERHEAD
        for env, size in chosen:
            if frame and length + 1 + size > self.config.history_frame_bytes:
                self._frames.append((member, {"t": "hist", "envs": frame}))
                frame, length = [], HIST_FRAME_OVERHEAD
            length += size + (1 if frame else 0)
            frame.append(env.to_json())
        if frame:
            self._frames.append((member, {"t": "hist", "envs": frame}))
        # The asker's own last word we hold: proof of where its numbering is, for a
        # key that moved to a device that does not know (it is signed by the asker).
        state = self._authors.get(member)
        if state is not None and (own := self._history.get((member, state.delivered))):
            self._frames.append((member, {"t": "msg", "env": own.to_json()}))

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
        deadlines += self._retry_at.values()
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        for author, due in list(self._ack_due.items()):
            if due <= now:
                del self._ack_due[author]
                if author in self._connected and author in self._authors:
                    seq = self._authors[author].delivered
                    self._frames.append((author, {"t": "ack", "seq": seq}))
        # a copy: delivering after a gap moves the author to the end
        for author, state in list(self._authors.items()):
            if state.gap_since is not None and state.gap_since + self.config.resume_window <= now:
                self._skip_gap(author, state, now)
        for member, due in list(self._retry_at.items()):
            if due <= now:
                self._resend(member, now)

    def _resend(self, member: bytes, now: float) -> None:
        """Re-send what `member` has not acknowledged: the glue may have refused it."""
        envs = self._unacked(member, self.config.resend_burst)
        if member not in self._connected or not envs:
            del self._retry_at[member]
            return
        for env in envs:
            self._frames.append((member, {"t": "msg", "env": env.to_json()}))
            self._count("resent")
        self._retry_at[member] = now + self.config.resend_interval

    def _skip_gap(self, author: bytes, state: _Author, now: float) -> None:
        """Declare the first gap lost, deliver what follows it."""
        first_early = min(state.early)
        self._events.append(Discontinuity(author, state.delivered + 1, first_early - 1))
        self._count("discontinuity")
        state.delivered = first_early - 1
        self._drain_early(state)
        state.gap_since = now if state.early else None
        self._ack_due.setdefault(author, now + self.config.ack_delay)

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1


_LOWER_HEX_KEY = re.compile(f"[0-9a-f]{{{2 * KEY_BYTES}}}")


def _millis(now: float) -> int:
    """Wall time in whole milliseconds, the unit of the clock (and of `ts`)."""
    return int(now * 1000)


def _fields(env: Envelope) -> dict[str, Any]:
    return {name: getattr(env, name) for name in Envelope.__slots__}
