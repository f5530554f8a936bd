"""The contact commands of `pagemesh chat` (docs/protocol.md 7): add a member you met here,
list your contacts and who of them is online and where, rename, forget, choose what you
tell them, and join one of them."""

from __future__ import annotations

from dataclasses import dataclass

from signaling.protocol import room_key

from .friends import PresenceNote
from .peer import Room
from .store import Contact

HELP = [
    "/contact add WHO NAME   keep a member of your group as a contact named NAME",
    "/contacts       your contacts: who is online, and where when they say",
    "/rename NAME NEW        rename a contact      /forget NAME   remove one",
    "/presence on|off|with-room   tell your contacts nothing, that you are online, or where",
    "/join NAME      go to the page and group of a contact who said where they are",
    "/back           after /join took you to another page: back to the page you left",
]
COMMANDS = ("/contact", "/contacts", "/rename", "/forget", "/presence", "/join")


def tag(key: bytes) -> str:
    return "\u00b7" + key.hex()[:4]


def _find(room: Room, name: str) -> Contact | list[str]:
    """The contact `name` names (petname, key, or tag), or the lines saying why not."""
    text = name.strip()
    contacts = room.peer.contacts()
    found = [c for c in contacts if c.petname.casefold() == text.casefold()]
    found = found or [c for c in contacts if c.key.hex() == text or tag(c.key) == text]
    if len(found) == 1:
        return found[0]
    if not found:
        return [f"* no contact {text!r} (/contacts lists them)"]
    return [
        f"* {text!r} names {len(found)} contacts; use a tag: "
        + ", ".join(tag(c.key) for c in found)
    ]


def _member(room: Room, who: str) -> bytes | list[str]:
    """The person a member of the room is (`who`: their name, key or tag)."""
    text = who.strip()
    here = room.members | set(room.links)
    found = [k for k in here if k.hex() == text or tag(k) == text]
    found = found or [k for k in here if (room.name_of(k) or "").casefold() == text.casefold()]
    people = sorted({room.person_of(k) for k in found})
    if len(people) == 1:
        return people[0]
    if not people:
        return [f"* nobody called {text!r} in your group (/who lists them)"]
    return [f"* {text!r} names {len(people)} members; use a tag: " + ", ".join(map(tag, people))]


def where(room: Room, note: PresenceNote) -> str:
    if note.room is None:
        return "online"
    group = f"group {(note.layer or 0) + 1:,}"
    if note.room == room.key:
        return f"here, in {group}"
    return f"on {note.page or 'a private room'}, {group}"


def contact_lines(room: Room, online: dict[bytes, PresenceNote]) -> list[str]:
    """/contacts: each contact, a dot for online, where they said they are."""
    contacts = room.peer.contacts()
    if not contacts:
        return ["* no contacts yet: /contact add WHO NAME keeps a member of your group"]
    lines = [f"* your contacts (you tell them: {room.peer.presence.mode}):"]
    for c in contacts:
        note = online.get(c.key)
        dot = "\u25cf" if note is not None else "\u25cb"
        state = where(room, note) if note is not None else "not seen online"
        if c.x is None:
            state = "no contact card yet (meet them in a room once more)"
        met = f"; met on {c.page}" if c.page else ""
        lines.append(f"*   {dot} {c.petname} {tag(c.key)}  {state}{met}")
    return lines


async def contact_command(room: Room, name: str, arg: str) -> list[str]:
    """One of `COMMANDS`; the lines it prints."""
    peer = room.peer
    if name == "/contacts":
        return contact_lines(room, await peer.refresh_presence())
    if name == "/contact":
        verb, _, rest = arg.partition(" ")
        who, _, petname = rest.strip().partition(" ")
        if verb != "add" or not who or not petname.strip():
            return ["* /contact add WHO NAME (WHO: a member's name, key or tag)"]
        key = _member(room, who)
        if isinstance(key, list):
            return key
        try:
            contact = peer.add_contact(key, petname, room)
        except ValueError as exc:
            return [f"* not added: {exc}"]
        card = "" if contact.x is not None else " (no contact card from them yet)"
        return [f"* {contact.petname} {tag(key)} is a contact{card}"]
    if name == "/rename":
        old, _, new = arg.partition(" ")
        found = _find(room, old)
        if isinstance(found, list):
            return found
        try:
            peer.rename_contact(found.key, new)
        except ValueError as exc:
            return [f"* not renamed: {exc}"]
        return [f"* {found.petname} is now {new.strip()}"]
    if name == "/forget":
        found = _find(room, arg)
        if isinstance(found, list):
            return found
        peer.forget_contact(found.key)
        return [f"* {found.petname} is no longer a contact"]
    if name == "/presence":
        if not arg:
            return [f"* you tell your contacts: {peer.presence.mode}"]
        try:
            peer.set_presence(arg)
        except ValueError as exc:
            return [f"* {exc}"]
        return [f"* you tell your contacts: {arg}"]
    return await join_contact(room, arg)


@dataclass(frozen=True, slots=True)
class Elsewhere:
    """A contact on another page, from their presence note: where /join takes us."""

    petname: str
    key: bytes
    """The contact's key: the member `join` with `friend` looks for."""
    page: str
    """The canonical URL of their page (its room key checked against the note's)."""
    layer: int


async def join_contact(room: Room, arg: str) -> list[str]:
    """/join NAME where nothing can switch rooms: sit with a contact here, or say how to
    reach their page."""
    found = await join_target(room, arg)
    if not isinstance(found, Elsewhere):
        return found
    return [
        f"* {found.petname} is on {found.page}, group {found.layer + 1:,}: "
        f"pagemesh chat {found.page} --layer {found.layer}"
    ]


async def join_target(room: Room, arg: str) -> list[str] | Elsewhere:
    """/join NAME: sit with a contact here (the lines that say so), or where they are on
    another page; or the lines that say why we cannot follow them."""
    found = _find(room, arg)
    if isinstance(found, list):
        return found
    note = room.peer.contacts_online().get(found.key)
    if note is None or note.room is None:
        return [f"* {found.petname} has not said where they are"]
    if note.room == room.key:
        layer = await room.move(note.layer or 0)
        return [f"* you sit with {found.petname} in group {layer + 1:,}"]
    if note.page is None or room_key(note.page) != note.room:
        return [
            f"* {found.petname} is in a private room: only its members know its address, "
            "so you cannot follow them there"
        ]
    return Elsewhere(found.petname, found.key, note.page, note.layer or 0)
