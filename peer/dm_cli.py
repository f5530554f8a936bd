"""Direct messages in `pagemesh chat` (docs/protocol.md 7.4): `/dm NAME text` writes to a
contact, `/dm NAME` shows the conversation; a DM's lines print as they come, marked
`[dm NAME]`, with whether each of ours reached them or waits for them to come online."""

from __future__ import annotations

from .chatscreen import message_line, printable
from .contacts_cli import _find
from .messaging import Chat, MessagingError, read_content
from .peer import DmDelivered, Message, Peer, Room
from .signaling import SignalingError

HELP = [
    "/dm NAME TEXT   a direct message to a contact (it waits if they are away)",
    "/dm NAME        your conversation with a contact, and what still waits",
]
COMMANDS = ("/dm",)
SHOWN = 20
"""Lines of a conversation `/dm NAME` shows."""


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


async def dm_command(room: Room, arg: str) -> list[str]:
    """/dm NAME TEXT or /dm NAME; the lines it prints."""
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
    try:
        await dm.say(text)
    except (MessagingError, ValueError) as exc:
        return [f"* not sent: {exc}"]
    if dm.contact_linked():
        return []  # the line prints as it is delivered, and its tick when it arrives
    return [
        f"* waiting for {printable(found.petname)} to come online; kept, and sent when you both are"
    ]


def dm_line(room: Room, event: object) -> str | None:
    """A DM room's event as a line (`[dm Ana] ...`), or None for one not shown."""
    assert room.contact is not None
    name = petname(room.peer, room.contact)
    if isinstance(event, Message):
        return f"[dm {name}] {message_line(room, event)}"
    if isinstance(event, DmDelivered):
        return f"[dm {name}] \u2713 delivered"
    return None
