"""`pagemesh chat`'s block and mute commands (docs/protocol.md 5.4).

/block NAME|KEY, /unblock, /mute, /unmute and /blocked. NAME is a name or a
key's tag (`·3fa9`, or more hex digits) of someone here or already listed;
KEY is 64 hex digits, for someone not here.
"""

from __future__ import annotations

from .blocks import BLOCK, AmbiguousName, find_key
from .chatscreen import member_label, printable
from .messaging import short_tag
from .peer import Room

HELP = [
    "/block NAME|KEY  no link, no messages or files from them or their other devices,",
    "                 not shown (they are not told)",
    "/mute NAME|KEY   hide their messages (all their devices'), keep the link",
    "/unblock, /unmute NAME|KEY  undo; /blocked lists who is blocked or muted",
]
COMMANDS = ("/block", "/unblock", "/mute", "/unmute", "/blocked")


def _label(room: Room, key: bytes) -> str:
    entry = room.peer.blocks.get(key)
    if entry is not None and entry.label and not room.name_of(key):
        return printable(entry.label) + short_tag(key)
    return member_label(room, key) if room.name_of(key) else short_tag(key)


def _key(room: Room, spec: str) -> bytes | str:
    """The key `spec` names, or what to print when it names none or several."""
    names = dict(room.core.names)
    for key in room.members | set(room.links):
        if key not in names and (name := room.name_of(key)):
            names[key] = name
    # a person blocked or muted by the name one of its devices here has: that device
    here = {room.peer.person_blocked(k) or room.person_of(k) for k in names}
    taken = names.keys() | here
    names.update({k: e.label for k, e in room.peer.blocks.items() if e.label and k not in taken})
    try:
        found = find_key(spec, names, [*room.members, *room.peer.blocks, *room.hidden])
    except AmbiguousName as exc:
        return f"* {exc}"
    if found is None:
        return f"* nobody here is called {printable(spec)}; give their key (64 hex digits)"
    if room.peer.identity_key in (found, room.person_of(found)) or found == room.peer.public_key:
        return "* that is you"
    return found


def _devices(room: Room, person: bytes) -> str:
    """How many device keys of `person` are caught with it (5.4), as the list says it."""
    count = sum(1 for i in room.peer.block_devices.values() if i == person)
    return f" ({count} device{'s' if count != 1 else ''})" if count else ""


def block_command(room: Room, name: str, arg: str) -> list[str]:
    """One of COMMANDS; the lines it prints."""
    if name == "/blocked":
        entries = sorted(room.peer.blocks.values(), key=lambda e: (e.level, e.since))
        flooding = sorted(room.flood_muted - set(room.peer.blocks))
        if not entries and not flooding:
            return ["* nobody is blocked or muted"]
        lines = [
            f"*   {e.level}ed  {_label(room, e.key)}{_devices(room, e.key)}  {e.key.hex()}"
            for e in entries
        ]
        lines += [f"*   muted for flooding  {_label(room, k)}  {k.hex()}" for k in flooding]
        return lines
    if not arg:
        return [f"* {name} NAME or KEY"]
    key = _key(room, arg)
    if isinstance(key, str):
        return [key]
    who = _label(room, key)
    if name == "/block":
        room.block(key)
        person = room.peer.person_blocked(key) or key
        more = _devices(room, person)
        return [f"* blocked {who}{more}: no link, nothing of theirs shown; /unblock to undo"]
    if name == "/mute":
        room.mute(key)
        person = room.peer.person_blocked(key) or key
        more = _devices(room, person)
        return [f"* muted {who}{more}: their messages are hidden; /unmute to undo"]
    if name == "/unblock":
        done = room.unblock(key)
        return [f"* unblocked {who}" if done else f"* {who} was not blocked"]
    done = room.unmute(key)
    entry = room.peer.blocks.get(room.peer.person_blocked(key) or key)
    if not done and entry is not None and entry.level == BLOCK:
        return [f"* {who} is blocked, not muted: /unblock"]
    return [f"* unmuted {who}" if done else f"* {who} was not muted"]
