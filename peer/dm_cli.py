"""Direct messages in `pagemesh chat` (docs/protocol.md 7.4): `/dm NAME text` writes to a
contact, `/dm NAME` shows the conversation; a DM's lines print as they come, marked
`[dm NAME]`, with whether each of ours reached them or waits for them to come online.
Files go as in any room (5.2): `/dm NAME /send PATH` offers one to the contact, and what
they offer is numbered per conversation for `/dm NAME /get N`."""

from __future__ import annotations

from pathlib import Path

from .chatscreen import ChatScreen, human_size, message_line, printable
from .contacts_cli import _find
from .messaging import Chat, MessagingError, read_content
from .peer import DmDelivered, FileDone, FileFailed, FileOffered, Message, Peer, Room
from .signaling import SignalingError

HELP = [
    "/dm NAME TEXT   a direct message to a contact (it waits if they are away)",
    "/dm NAME        your conversation with a contact, and what still waits",
    "/dm NAME /send PATH   offer a file to a contact (while you are both online)",
    "/dm NAME /get N       download file N a contact offers (/dm NAME /get lists them)",
]
COMMANDS = ("/dm",)
SHOWN = 20
"""Lines of a conversation `/dm NAME` shows."""
MAX_SCREENS = 64
"""DM rooms whose file numbering is kept (the oldest go first)."""

_screens: dict[bytes, ChatScreen] = {}


def screen_of(room: Room) -> ChatScreen:
    """The file numbering of a DM room (its own, from 1), kept while it is among the
    `MAX_SCREENS` latest."""
    screen = _screens.pop(room.key, None)
    if screen is None or screen.room is not room:
        screen = ChatScreen(room, 0.0)
    _screens[room.key] = screen
    while len(_screens) > MAX_SCREENS:
        del _screens[next(iter(_screens))]
    return screen


def petname(peer: Peer, key: bytes) -> str:
    for contact in peer.contacts():
        if contact.key == key:
            return printable(contact.petname)
    return key.hex()[:8]


def waiting_line(peer: Peer, contact: bytes) -> str:
    count = len(peer.dm_waiting(contact))
    name = petname(peer, contact)
    if count == 0:
        return f"* everything you wrote reached {name} \u2713"
    what = "1 message waits" if count == 1 else f"{count:,} messages wait"
    return f"* {what} for {name} to come online; kept, and sent when you both are"


def conversation(room: Room) -> list[str]:
    """The last `SHOWN` messages of a DM room, ours marked delivered or waiting."""
    assert room.contact is not None
    peer, contact = room.peer, room.contact
    lines: list[str] = []
    for env in room.transcript()[-SHOWN:]:
        mine = env.author == peer.public_key
        content = read_content(env)
        text = content.text if isinstance(content, Chat) else env.body
        message = Message(
            env.author, text, env.lamport, env.sent_at / 1000, env.seq, mine, content, None
        )
        mark = ("  \u2713" if env.seq <= room.dm_acked else "  (waiting)") if mine else ""
        lines.append(f"[dm {petname(peer, contact)}] {message_line(room, message)}{mark}")
    return [*lines, waiting_line(peer, contact)]


async def dm_command(room: Room, arg: str, out: Path = Path(".")) -> list[str]:
    """/dm NAME TEXT, /dm NAME, /dm NAME /send PATH or /dm NAME /get [N]; the lines it
    prints. `out`: where /get saves."""
    peer = room.peer
    name, _, text = arg.partition(" ")
    found = _find(room, name) if name else ["* /dm NAME TEXT, or /dm NAME for the conversation"]
    if isinstance(found, list) and text:
        # a petname with spaces: the longest one the line begins with
        for contact in sorted(peer.contacts(), key=lambda c: -len(c.petname)):
            if arg.casefold().startswith(contact.petname.casefold() + " "):
                found, text = contact, arg[len(contact.petname) + 1 :]
                break
    if isinstance(found, list):
        return found
    try:
        dm = await peer.open_dm(found.key)
    except ValueError as exc:
        return [f"* no DM with {printable(found.petname)}: {exc}"]
    except (SignalingError, TimeoutError) as exc:
        return [f"* no DM with {printable(found.petname)} now: {exc}"]
    if not text.strip():
        return conversation(dm)
    word, _, rest = text.strip().partition(" ")
    if word == "/send":
        return await send_dm_file(dm, rest.strip())
    if word == "/get":
        return get_dm_file(dm, rest.strip(), out)
    if text.startswith("/") and not text.startswith("//"):
        return [f"* /dm {printable(found.petname)} takes a text, /send PATH or /get N"]
    try:
        await dm.say(text.removeprefix("/"))
    except (MessagingError, ValueError) as exc:
        return [f"* not sent: {exc}"]
    if dm.contact_linked():
        return []  # the line prints as it is delivered, and its tick when it arrives
    return [
        f"* waiting for {printable(found.petname)} to come online; kept, and sent when you both are"
    ]


def _named_file(arg: str) -> tuple[Path, int] | None:
    """The file a person named, and its size (None when there is none)."""
    path = Path(arg).expanduser()
    try:
        return (path, path.stat().st_size) if arg and path.is_file() else None
    except OSError:
        return None


async def send_dm_file(dm: Room, arg: str) -> list[str]:
    """/dm NAME /send PATH: offer a file in the DM room."""
    assert dm.contact is not None
    name = petname(dm.peer, dm.contact)
    if not arg:
        return [f"* /dm {name} /send takes a file's path"]
    found = _named_file(arg)
    if found is None:
        return [f"* no such file: {printable(arg)}"]
    path, size = found
    try:
        file_id = await dm.send_file(path)
    except (OSError, ValueError) as exc:
        return [f"* not offered: {printable(str(exc))}"]
    screen_of(dm).sent(file_id, path.name)
    where = "" if dm.contact_linked() else f"; {name} gets the offer when you are both online"
    return [f"[dm {name}] * you offer {printable(path.name)} ({human_size(size)}){where}"]


def get_dm_file(dm: Room, arg: str, out: Path) -> list[str]:
    """/dm NAME /get N: download the contact's offer N into `out`; without N, list them."""
    assert dm.contact is not None
    name = petname(dm.peer, dm.contact)
    screen = screen_of(dm)
    if not arg:
        listed = [
            f"*   /dm {name} /get {n.number}  "
            f"{printable(n.offer.name)} ({human_size(n.offer.size)})"
            for n in screen.on_offer()
        ]
        return [f"* files {name} offers:", *listed] if listed else [f"* {name} offers no files now"]
    numbered = screen.take(
        arg,
        out,
        unknown=lambda n: f"* {name} offered no file numbered {n}",
        gone=lambda n: f"* file {n} is no longer offered (it got old, or {name} left)",
    )
    if isinstance(numbered, str):
        return [numbered]
    return [f"[dm {name}] * getting {printable(numbered.offer.name)}"]


def dm_line(room: Room, event: object) -> str | None:
    """A DM room's event as a line (`[dm Ana] ...`), or None for one not shown."""
    assert room.contact is not None
    name = petname(room.peer, room.contact)
    if isinstance(event, Message):
        return f"[dm {name}] {message_line(room, event)}"
    if isinstance(event, DmDelivered):
        return f"[dm {name}] \u2713 delivered"
    if isinstance(event, FileOffered):
        screen = screen_of(room)
        if event.offer.id in screen.offers:
            return None  # told once: a re-offer when the link opens again
        number = screen.number(event)
        what = f"{printable(event.offer.name)} ({human_size(event.offer.size)})"
        verb = f"shared {what} earlier" if event.earlier else f"offers {what}"
        return f"[dm {name}] * {name} {verb} \u2014 /dm {name} /get {number}"
    if isinstance(event, FileDone | FileFailed):
        lines = screen_of(room).feed(event)
        return "\n".join(f"[dm {name}] {line}" for line in lines) if lines else None
    return None
