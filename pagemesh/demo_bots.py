"""The two bots of `pagemesh demo`, peers in the room of https://example.org/: a greeter
that says hello to whoever joins (and answers `!echo`), and a file bot that sends back
every file it is given. Imported when the demo runs (peers bring aiortc), not whenever
`pagemesh` builds its command line.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from peer.chatscreen import member_label
from peer.peer import Connected, FileDone, MemberLeft, Message, Peer, Room

ROOM_URL = "https://example.org/"
GREET_WAIT = 2.0
"""Seconds the greeter waits for a newcomer's name before it greets its key's tag."""
LINK_TIMEOUT = 30.0
"""Seconds the bots may take to link to each other before the demo says so and goes on."""
MAX_GREETED = 1000
"""Keys (and people) the greeter remembers greeting; the oldest are forgotten past this."""
REJOIN_QUIET = 600.0
"""Seconds after a person was last here in which they are not greeted again, whatever
key they come back with (another device of theirs)."""


KEY_BYTES = 32


def parse_greeted(text: str) -> tuple[bytes, ...]:
    """The keys a greeter's memory file names (one in hex a line, oldest first): the last
    `MAX_GREETED`; a line that is no key (a damaged file) is skipped, never fatal."""
    keys: list[bytes] = []
    for line in text.splitlines():
        word = line.strip()
        if len(word) == 2 * KEY_BYTES and all(c in "0123456789abcdef" for c in word):
            keys.append(bytes.fromhex(word))
    return tuple(keys[-MAX_GREETED:])


def serialize_greeted(keys: Iterable[bytes]) -> str:
    """What `parse_greeted` reads: the last `MAX_GREETED` of `keys`."""
    return "".join(f"{key.hex()}\n" for key in list(keys)[-MAX_GREETED:])


def _recall(memory: Path) -> tuple[bytes, ...]:
    """The keys greeted in earlier runs (none the first time)."""
    return parse_greeted(memory.read_text()) if memory.is_file() else ()


class Greetings:
    """Whom the greeter greets, on the clock it is given: a key at most once (of the last
    `MAX_GREETED` greeted, `greeted` by an earlier run among them), and nobody whose
    person (the identity a device speaks for) is here or was within `REJOIN_QUIET`
    seconds. A reload, a rejoin, a restart of the demo or a second device is not a
    newcomer, and the history newcomers get is not all hellos."""

    def __init__(self, never: Iterable[bytes] = (), greeted: Iterable[bytes] = ()) -> None:
        self._never = frozenset(never)
        self._keys: OrderedDict[bytes, float | None] = OrderedDict()
        """Keys greeted, oldest first (no value: one map type for `_remember`)."""
        self._people: OrderedDict[bytes, float | None] = OrderedDict()
        """People seen, least recently first: when they last left, or None while here."""
        for key in greeted:
            self._remember(self._keys, key, None)

    @property
    def size(self) -> int:
        return len(self._keys) + len(self._people)

    @property
    def greeted(self) -> tuple[bytes, ...]:
        """The keys greeted, oldest first: what a later run is given."""
        return tuple(self._keys)

    def should_greet(self, key: bytes, person: bytes, now: float) -> bool:
        """`key` (speaking for `person`) arrived: greet it? Either way its person is here."""
        seen, last = person in self._people, self._people.get(person)
        self._remember(self._people, person, None)
        if key in self._never or key in self._keys:
            return False
        if seen and (last is None or now - last < REJOIN_QUIET):
            return False  # another device of theirs is here, or they were a moment ago
        self._remember(self._keys, key, None)
        return True

    def left(self, person: bytes, now: float) -> None:
        """A key of `person` left at `now`."""
        self._remember(self._people, person, now)

    @staticmethod
    def _remember(seen: OrderedDict[bytes, float | None], key: bytes, value: float | None) -> None:
        seen.pop(key, None)
        seen[key] = value
        while len(seen) > MAX_GREETED:
            seen.popitem(last=False)


def welcome(who: str, page: str, file_bot: bool) -> str:
    """The greeter's hello to `who` in the room of `page`, naming the file bot only
    where it is (`file_bot`)."""
    files = "; the file bot sends back any file" if file_bot else ""
    return f"hello {who}, welcome to the room of {page}! Say !echo TEXT and I say it back{files}."


async def greet(
    room: Room,
    bots: set[bytes],
    page: str = ROOM_URL,
    file_bot: bool = True,
    memory: Path | None = None,
) -> None:
    """The greeter: hello to each newcomer by name (or, when it gives none within
    `GREET_WAIT` seconds of its link opening, by its key's tag), once per key whatever
    its name does later (`Greetings`: not on a reload, a rejoin or a second device
    either), and an echo for lines starting with `!echo`. `file_bot`: the file bot is
    in this room too, and the hello says so. `memory`: a file of the keys greeted, read
    at the start and written after each hello, so that a restart greets none again."""
    loop = asyncio.get_running_loop()
    waiting: dict[bytes, float] = {}  # linked, not yet greeted: since when
    earlier = await asyncio.to_thread(_recall, memory) if memory is not None else ()
    greetings = Greetings(never=bots, greeted=earlier)
    while True:
        try:
            event = await room.next_event(GREET_WAIT if waiting else 3600.0)
        except TimeoutError:
            event = None
        if isinstance(event, Connected) and len(waiting) < MAX_GREETED:
            waiting.setdefault(event.key, loop.time())
        elif isinstance(event, MemberLeft):
            waiting.pop(event.key, None)
            greetings.left(room.person_of(event.key), loop.time())
        elif isinstance(event, Message) and not event.mine and event.text.startswith("!echo"):
            who = member_label(room, event.author)
            await room.say(f"{who} said: {event.text.removeprefix('!echo').strip()}")
        for key, since in list(waiting.items()):
            if room.name_of(key) or loop.time() - since >= GREET_WAIT:
                del waiting[key]
                if not greetings.should_greet(key, room.person_of(key), loop.time()):
                    continue
                if memory is not None:
                    await asyncio.to_thread(memory.write_text, serialize_greeted(greetings.greeted))
                await room.say(welcome(member_label(room, key), page, file_bot))


async def echo_files(room: Room) -> None:
    """The file bot: every file it receives goes back to the room, renamed `echo-<name>`."""
    async for event in room.events():
        if isinstance(event, FileDone) and event.path is not None:
            echoed = event.path.with_name(f"echo-{event.path.name}")
            event.path.rename(echoed)
            await room.say(f"got {event.path.name}; sending it back as {echoed.name}")
            await room.send_file(echoed, to=[event.sender])


async def linked(room: Room, member: bytes) -> bool:
    """Wait until `room` has a link to `member`: the mesh is up (False: not in time)."""
    try:
        async with asyncio.timeout(LINK_TIMEOUT):
            while True:
                event = await room.next_event(LINK_TIMEOUT)
                if isinstance(event, Connected) and event.key == member:
                    return True
    except TimeoutError:
        return False


async def start_bot(
    name: str, data_dir: Path, nodes: list[str], files: Path | None = None
) -> tuple[Peer, Room]:
    bot = Peer(data_dir / name, nodes, name=name, accept_files_to=files)
    await bot.__aenter__()
    return bot, await bot.join(ROOM_URL)
