"""What `pagemesh chat` shows a person, with no I/O: the room's events as lines.

Names, never keys: the name a member signs in its messages or gives in its
profile, or, when it gave none, a short tag of its key (`·3fa9`, as the
browser shows it); two members who give themselves one name are told apart by
that tag after the name. Nothing a member sends reaches the terminal as it is:
control characters (escape sequences) and invisible format marks become
U+FFFD (`printable`), but for a zero-width joiner within an emoji (👩‍💻).
"""

from __future__ import annotations

import bisect
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .blocks import FloodMutes
from .files import FileOffer
from .messaging import Chat, MessageRef, Reaction, read_content, short_tag
from .peer import (
    Connected,
    Device,
    FileDone,
    FileFailed,
    FileOffered,
    FileProgress,
    Flooding,
    Gap,
    MemberJoined,
    MemberLeft,
    MemberUnreachable,
    Message,
    Moved,
    PeerProblem,
    Profile,
    Rejoined,
    Room,
)

SETTLE = 0.3
"""Seconds without news after which what `chat` holds back is printed: history (so
that it reads in the room's order, not grouped by who passed it on), newcomers
whose name has not come yet, files shared earlier."""
MAX_NUMBERED = 1024
"""File offers `chat` remembers by number; older numbers are forgotten."""
MAX_HELD = 1000
"""History messages held back at most; past this, what is held is printed (a member
whose old messages never stop coming holds nothing back for long)."""
EARLIER = "\u2191 earlier: "
"""Before a message that belongs above lines already printed (the room's order)."""
QUOTE = 40
"""Characters of a message quoted by a reply or a reaction."""


_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
"""Controls (a terminal's escape sequences), invisible format marks (bidi overrides),
lone surrogates, line separators: never written to the terminal as they are."""

_PICTOGRAPH_RUNS = """
A9 AE 203C 2049 2122 2139 2194-2199 21A9-21AA 231A-231B 2328 23CF 23E9-23F3
23F8-23FA 24C2 25AA-25AB 25B6 25C0 25FB-25FE 2600-2604 260E 2611 2614-2615 2618
261D 2620 2622-2623 2626 262A 262E-262F 2638-263A 2640 2642 2648-2653 265F-2660
2663 2665-2666 2668 267B 267E-267F 2692-2697 2699 269B-269C 26A0-26A1 26A7
26AA-26AB 26B0-26B1 26BD-26BE 26C4-26C5 26C8 26CE-26CF 26D1 26D3-26D4 26E9-26EA
26F0-26F5 26F7-26FA 26FD 2702 2705 2708-270D 270F 2712 2714 2716 271D 2721 2728
2733-2734 2744 2747 274C 274E 2753-2755 2757 2763-2764 2795-2797 27A1 27B0 27BF
2934-2935 2B05-2B07 2B1B-2B1C 2B50 2B55 3030 303D 3297 3299 1F004 1F02C-1F02F
1F094-1F09F 1F0AF-1F0B0 1F0C0 1F0CF-1F0D0 1F0F6-1F0FF 1F170-1F171 1F17E-1F17F 1F18E
1F191-1F19A 1F1AE-1F1E5 1F201-1F20F 1F21A 1F22F 1F232-1F23A 1F23C-1F23F 1F249-1F25F
1F266-1F321 1F324-1F393 1F396-1F397 1F399-1F39B 1F39E-1F3F0 1F3F3-1F3F5 1F3F7-1F3FA
1F400-1F4FD 1F4FF-1F53D 1F549-1F54E 1F550-1F567 1F56F-1F570 1F573-1F57A 1F587
1F58A-1F58D 1F590 1F595-1F596 1F5A4-1F5A5 1F5A8 1F5B1-1F5B2 1F5BC 1F5C2-1F5C4
1F5D1-1F5D3 1F5DC-1F5DE 1F5E1 1F5E3 1F5E8 1F5EF 1F5F3 1F5FA-1F64F 1F680-1F6C5
1F6CB-1F6D2 1F6D5-1F6E5 1F6E9 1F6EB-1F6F0 1F6F3-1F6FF 1F7DA-1F7FF 1F80C-1F80F
1F848-1F84F 1F85A-1F85F 1F888-1F88F 1F8AE-1F8AF 1F8BC-1F8BF 1F8C2-1F8CF 1F8D9-1F8FF
1F90C-1F93A 1F93C-1F945 1F947-1F9FF 1FA58-1FA5F 1FA6E-1FAFF 1FC00-1FFFD
"""
PICTOGRAPHS = tuple(
    (int(a, 16), int(b or a, 16))
    for a, _, b in (run.partition("-") for run in _PICTOGRAPH_RUNS.split())
)
"""Unicode 17.0's Extended_Pictographic (emoji-data.txt), first and last of each run:
the characters a zero-width joiner joins into one emoji (`printable`)."""


_JOINER = "\u200d"
_TONES = frozenset({"\ufe0f", *map(chr, range(0x1F3FB, 0x1F400))})
"""What may come between a pictograph and its joiner: emoji presentation (U+FE0F) or
one skin tone (U+1F3FB..U+1F3FF), as in ❤️‍🔥 and 👩🏽‍💻."""
_FIRSTS = [first for first, _ in PICTOGRAPHS]


def _pictograph(c: str) -> bool:
    at = bisect.bisect_right(_FIRSTS, ord(c)) - 1
    return at >= 0 and ord(c) <= PICTOGRAPHS[at][1]


def _joins(text: str, at: int) -> bool:
    """Whether the zero-width joiner `text[at]` joins two pictographs into one emoji
    (👩‍💻): one right after it, and one right before it or before its U+FE0F or tone."""
    if at + 1 >= len(text) or not _pictograph(text[at + 1]) or at == 0:
        return False
    before = text[at - 1]
    return _pictograph(before) or (before in _TONES and at >= 2 and _pictograph(text[at - 2]))


def printable(text: str, lines: bool = False) -> str:
    """`text` as it may reach a terminal: each hidden character becomes U+FFFD, but for
    a zero-width joiner between two pictographs (👩‍💻); with `lines`, line breaks stay
    (and tabs), the lines after the first indented. The page's `printable` (js/people.js)
    is its twin (tests/web/test_printable_twins.py)."""
    keep = {"\n", "\t"} if lines else set()
    safe = "".join(
        c
        if c in keep
        or unicodedata.category(c) not in _HIDDEN
        or (c == _JOINER and _joins(text, at))
        else "\ufffd"
        for at, c in enumerate(text)
    )
    return safe.replace("\n", "\n    ") if lines else safe


def human_size(size: int) -> str:
    """ "2.1 MB": bytes in SI units, as file managers show them, to a tenth rounded half
    up in integers (the page's `size`, js/dom.js, says the same words)."""
    if size < 1000:
        return f"{size} B"
    for power, unit in enumerate(("kB", "MB", "GB", "TB"), start=1):
        scale = 1000**power
        tenths = (size * 10 + scale // 2) // scale
        if tenths < 10_000 or unit == "TB":
            return f"{tenths // 10}.{tenths % 10} {unit}"
    raise AssertionError("unreachable")


def member_label(room: Room, key: bytes) -> str:
    """What to call a member: its name, else "member" and its key's tag; name and tag
    when another person here gives itself a name that looks the same (spacing aside, as
    the page's labelsFor). A device of a person (docs/protocol.md 5.3) is named as its
    person, by the identity's tag, with the device's label after it."""
    person = room.person_of(key)
    label = room.device_label(key) if person != key else None
    device = f" [{printable(label)}]" if label else ""
    name = room.name_of(key) or (_given_name(room, person) if person != key else None)
    look = looks(name) if name else ""
    if not name or not look:
        return unnamed(person) + device
    others = (room.members | set(room.links)) - {key}
    if any(looks(room.name_of(o) or "") == look and room.person_of(o) != person for o in others):
        return printable(name) + short_tag(person) + device
    return printable(name) + device


def looks(name: str) -> str:
    """How a name reads on a screen: "Ana " and "Ana" are namesakes (the page's
    `namesake` of its `printable`, js/people.js)."""
    return " ".join(printable(name).split())


def _given_name(room: Room, identity: bytes) -> str | None:
    """The name the person `identity` gives: its own, or one a device of it gives (its
    card or its messages), us included; None when none did."""
    me = room.peer.public_key
    if room.person_of(me) == identity and room.peer.store.name:
        return str(room.peer.store.name)
    if name := room.name_of(identity):
        return name
    for key in sorted(room.members | set(room.links)):
        if room.person_of(key) == identity and (name := room.name_of(key)):
            return name
    return None


def person_name(room: Room, identity: bytes) -> str:
    """What to call the person whose identity key is `identity`: `_given_name`, else
    its key's tag."""
    name = _given_name(room, identity)
    return printable(name) if name else unnamed(identity)


def unnamed(key: bytes) -> str:
    """A person who gave no name: "member ·3fa9", as the page calls them (people.js)."""
    return f"member {short_tag(key)}"


def device_note(room: Room, key: bytes) -> str:
    """ "a second device of dan" for a device whose person has another key here (us
    included), "a device of dan" for one alone here; "" for a key that is its person."""
    identity = room.person_of(key)
    if identity == key:
        return ""
    here = (room.members | set(room.links) | {room.peer.public_key}) - {key}
    second = any(room.person_of(other) == identity for other in here)
    return f"a {'second ' if second else ''}device of {person_name(room, identity)}"


def my_label(room: Room) -> str:
    name = room.peer.store.name
    return printable(name) if name else "you"


def _quote(room: Room, ref: MessageRef) -> str:
    """Who said the message `ref` names, and how it began: `Bob "hello the…"`."""
    env = room.core.envelope(ref)
    content = read_content(env) if env is not None else None
    who = my_label(room) if ref.author == room.peer.public_key else member_label(room, ref.author)
    if not isinstance(content, Chat):
        return f"{who}'s message"
    text = " ".join(content.text.split())
    cut = text if len(text) <= QUOTE else text[: QUOTE - 1] + "\u2026"
    return f'{who} "{printable(cut)}"'


def message_line(room: Room, message: Message) -> str:
    """One message for a person: `[12:04] <Ana> hello`, a reply's quote, a reaction."""
    who = my_label(room) if message.mine else member_label(room, message.author)
    content = message.content
    if isinstance(content, Reaction):
        did = "reacts" if content.on else "takes back"
        return f"* {who} {did} {printable(content.emoji)} on {_quote(room, content.target)}"
    stamp = time.strftime("%H:%M", time.localtime(message.sent_at))
    reply = ""
    if isinstance(content, Chat) and content.reply_to is not None:
        reply = f"(to {_quote(room, content.reply_to)}) "
    return f"[{stamp}] <{who}> {reply}{printable(message.text, lines=True)}"


@dataclass(slots=True)
class _Numbered:
    number: int
    sender: bytes
    offer: FileOffer


class ChatScreen:
    """What `pagemesh chat` prints: one line for each thing that happened, names for
    keys, history in the room's total order, every file offer once with its number.

    Feed it the room's events (`feed`) and, after `SETTLE` seconds without any while
    it holds something back (`holding`), call `settle`; each returns the lines to
    print. History (messages older than our arrival) is held back and printed sorted
    by the room's order, since each member passes on its own messages first; a
    message that comes after one that follows it in that order is marked `EARLIER`; a
    newcomer is announced once its name comes (or at the next settle, with its tag);
    files shared earlier follow the history.
    """

    def __init__(self, room: Room, joined_at: float) -> None:
        self.room = room
        self.joined_ms = int(joined_at * 1000)
        self._history: list[Message] = []
        self._arriving: dict[bytes, str | None] = {}
        """Members linked whose arrival is not yet told, with their path."""
        self._earlier: list[FileOffered] = []
        self._here: dict[bytes, str | None] = {}
        """Members whose arrival was told, with their path."""
        self.offers: dict[str, _Numbered] = {}
        """Offers by id, numbered for /get (the newest `MAX_NUMBERED`)."""
        self.numbers: dict[int, str] = {}
        self._next_number = 1
        self.mine: dict[str, str] = {}
        """Our own offers: id -> file name (bounded as `offers`)."""
        self.flooding = FloodMutes()
        """Authors reported flooding (docs/protocol.md 5.4), the newest MAX_FLOOD_MUTED."""
        self._tagged: set[bytes] = set()
        """Members told here by their tag alone: their name is told when it comes."""
        self._last: tuple[int, bytes, int] | None = None
        """The latest message printed, in the room's order (lamport, author, seq)."""

    @property
    def holding(self) -> bool:
        return bool(self._history or self._arriving or self._earlier)

    def on_offer(self) -> list[_Numbered]:
        """The numbered offers the room still offers (/get without a number)."""
        offered = self.room.transfers.offers
        return [n for n in self.offers.values() if n.offer.id in offered]

    def take(
        self, arg: str, out: Path, unknown: Callable[[int], str], gone: Callable[[int], str]
    ) -> _Numbered | str:
        """/get N: start downloading offer number `arg` into `out`. The offer taken, or
        the line that says why not (`unknown(N)`: no such number, `gone(N)`: no longer
        offered)."""
        try:
            number = int(arg)
        except ValueError:
            return f"* /get takes a file's number, not {printable(arg)!r}"
        file_id = self.numbers.get(number)
        numbered = self.offers.get(file_id) if file_id is not None else None
        if file_id is None or numbered is None:
            return unknown(number)
        if file_id in self.room.transfers.incoming:
            return f"* {printable(numbered.offer.name)} is on its way"
        try:
            self.room.accept_file(file_id, out)
        except KeyError:
            return gone(number)
        except OSError as exc:
            return f"* cannot save into {printable(str(out))}: {printable(str(exc))}"
        return numbered

    def feed(self, event: Any) -> list[str]:
        if isinstance(event, Message):
            if event.replaces is not None:
                return []  # ours said again under a new seq: shown when we said it
            if not event.mine and event.lamport < self.joined_ms:
                self._history.append(event)
                return self.settle() if len(self._history) >= MAX_HELD else []
            return [*self.settle(), *self._named(event.author), self._message(event)]
        if isinstance(event, FileOffered):
            return self._offered(event)
        if isinstance(event, Connected | Profile | MemberJoined | MemberLeft):
            return self._presence(event)
        if isinstance(event, FileDone | FileFailed | FileProgress):
            return self._file(event)
        line = self.other_line(event)
        return [line] if line else []

    def settle(self) -> list[str]:
        """Everything held back, in order: history, arrivals, files shared earlier."""
        history, self._history = self._history, []
        history.sort(key=lambda m: (m.lamport, m.author, m.seq))
        lines = [self._message(m) for m in history]
        for key in list(self._arriving):
            lines += self._arrived(key)
        earlier, self._earlier = self._earlier, []
        lines += [self._offer_line(e) for e in earlier]
        return lines

    def _message(self, message: Message) -> str:
        """A message's line; marked `EARLIER` when it sorts before one already printed.

        The room's core delivers each author's messages in their order as they come,
        and only its transcript is in the total order (docs/protocol.md 5.0.1): nothing
        says when an earlier message can no longer come (a member's slower link, history
        passed on after we spoke). A page puts it in its place; a terminal cannot move
        printed lines, so the line says where it belongs."""
        line = message_line(self.room, message)
        order = (message.lamport, message.author, message.seq)
        if self._last is not None and order < self._last:
            return f"{EARLIER}{line}"
        self._last = order
        return line

    def number(self, event: FileOffered) -> int:
        known = self.offers.get(event.offer.id)
        if known is not None:
            return known.number
        number, self._next_number = self._next_number, self._next_number + 1
        self.offers[event.offer.id] = _Numbered(number, event.sender, event.offer)
        self.numbers[number] = event.offer.id
        while len(self.numbers) > MAX_NUMBERED:
            oldest = next(iter(self.numbers))
            self.offers.pop(self.numbers.pop(oldest), None)
        return number

    def _offered(self, event: FileOffered) -> list[str]:
        if event.offer.id in self.offers:
            return []  # told once: a re-offer after the sender left and came back
        self.number(event)
        if event.earlier:
            self._earlier.append(event)
            return []
        return [*self.settle(), self._offer_line(event)]

    def _offer_line(self, event: FileOffered) -> str:
        offer = event.offer
        who = member_label(self.room, event.sender)
        what = f"{printable(offer.name)} ({human_size(offer.size)})"
        number = self.offers[offer.id].number if offer.id in self.offers else self.number(event)
        if event.earlier:
            return f"* {who} shared {what} earlier \u2014 /get {number}"
        return f"* {who} offers {what} \u2014 /get {number}"

    def _presence(self, event: Connected | Profile | MemberJoined | MemberLeft) -> list[str]:
        key = event.key
        if isinstance(event, MemberJoined):
            return []  # told when its link opens and its name comes
        if isinstance(event, MemberLeft):
            self._arriving.pop(key, None)
            self._tagged.discard(key)
            if key not in self._here:
                return []
            del self._here[key]
            return [f"* {member_label(self.room, key)} left"]
        if isinstance(event, Connected):
            if key in self._here:
                before, self._here[key] = self._here[key], event.path
                if event.path != before and event.path is not None:
                    return [f"* {member_label(self.room, key)} is {event.path} now"]
                return []
            self._arriving[key] = event.path
            return self._arrived(key) if self._has_name(key) else []
        if key in self._arriving:  # its name came: announce it now
            return self._arrived(key)
        return self._named(key)  # a later rename shows in its next message

    def _arrived(self, key: bytes) -> list[str]:
        path = self._arriving.pop(key, None)
        self._here[key] = path
        if not self._has_name(key):
            self._tagged.add(key)
        note = device_note(self.room, key)
        how = f"{path or 'connecting'}{'; ' if note else ''}{note}"
        return [f"* {member_label(self.room, key)} is here ({how})"]

    def _has_name(self, key: bytes) -> bool:
        """`key` gave a name, or its person did (a device, docs/protocol.md 5.3)."""
        person = self.room.person_of(key)
        return bool(self.room.name_of(key) or (person != key and _given_name(self.room, person)))

    def _named(self, key: bytes) -> list[str]:
        """`* ·3a55 is Ana`: the name of a member told here by its tag, once it comes."""
        if key not in self._tagged or not self._has_name(key):
            return []
        self._tagged.discard(key)
        return [f"* {short_tag(self.room.person_of(key))} is {member_label(self.room, key)}"]

    def _file(self, event: FileDone | FileFailed | FileProgress) -> list[str]:
        if isinstance(event, FileProgress):
            return []
        numbered = self.offers.get(event.id)
        if isinstance(event, FileDone):
            if event.path is not None:
                who = member_label(self.room, event.sender)
                size = f"{human_size(numbered.offer.size)}, " if numbered else ""
                where = printable(str(event.path.absolute()))  # where to look, from anywhere
                return [f"* saved from {who}: {where} ({size}verified)"]
            name = self.mine.get(event.id, "the file")
            return [f"* {member_label(self.room, event.sender)} has {name} (verified)"]
        if event.member is not None and event.id in self.mine:
            return [f"* {member_label(self.room, event.member)} declined {self.mine[event.id]}"]
        name = printable(numbered.offer.name) if numbered else self.mine.get(event.id, "a file")
        return [f"* {name}: {printable(event.reason)}"]

    def sent(self, file_id: str, name: str) -> None:
        """We offered a file: name it in the receipts that follow."""
        self.mine[file_id] = printable(name)
        while len(self.mine) > MAX_NUMBERED:
            del self.mine[next(iter(self.mine))]

    def other_line(self, event: Any) -> str:
        room = self.room
        if isinstance(event, Moved):
            return f"* moved: {seat_sentence(event.layer, event.layers, event.total)}"
        if isinstance(event, Rejoined):
            return f"* seated again through {event.node}, in group {event.layer + 1:,}"
        if isinstance(event, Flooding):
            who = member_label(room, event.author)
            if event.author in self.flooding:
                return f"* {who}: {event.dropped:,} more messages dropped for flooding"
            self.flooding.add(event.author)
            return (
                f"* muted {who} for flooding: they sent faster than the room takes, "
                f"{event.dropped:,} dropped (/unmute to show them again, /block to cut them off)"
            )
        if isinstance(event, Gap):
            who = member_label(room, event.author)
            return f"* {who}'s messages {event.first} to {event.last} are lost to this room"
        if isinstance(event, MemberUnreachable):
            why = event.message.partition(": ")[2] or event.message
            return f"* cannot connect to {member_label(room, event.key)}: {printable(why)}"
        if isinstance(event, PeerProblem):
            return f"* {printable(event.message)}"
        if isinstance(event, Device):
            if event.key not in self._here:
                return ""  # its arrival, still held, will say it
            self._tagged.discard(event.key)
            note = device_note(room, event.key) or f"a device of {short_tag(event.identity)}"
            return f"* {member_label(room, event.key)} is {note}"
        return f"* {type(event).__name__}"


def seat_sentence(layer: int, layers: int, total: int) -> str:
    """ "you are in group 7 of 412, about 9,800 people on this page": groups from 1.

    Both numbers after the group are the node's estimates; the group count never
    reads below our own group."""
    people = "person" if total == 1 else "people"
    return (
        f"you are in group {layer + 1:,} of {max(layers, layer + 1):,}, "
        f"about {total:,} {people} on this page"
    )
