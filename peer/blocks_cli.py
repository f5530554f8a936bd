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
    "/block NAME|KEY  no link, no messages or files from them, not shown (they are not told)",
    "/mute NAME|KEY   hide their messages, keep the link",
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
    names.update({k: e.label for k, e in room.peer.blocks.items() if e.label and k not in names})
    for key in room.members | set(room.links):
        if key not in names and (name := room.name_of(key)):
            names[key] = name
    try:
        found = find_key(spec, names, [*room.members, *room.peer.blocks, *room.hidden])
    except AmbiguousName as exc:
        return f"* {exc}"
    if found is None:
        return f"* nobody here is called {printable(spec)}; give their key (64 hex digits)"
    if found in (room.peer.public_key, room.peer.identity_key):
        return "* that is you"
    return found


def block_command(room: Room, name: str, arg: str) -> list[str]:
    """One of COMMANDS; the lines it prints."""
    if name == "/blocked":
        entries = sorted(room.peer.blocks.values(), key=lambda e: (e.level, e.since))
        flooding = sorted(room.flood_muted - set(room.peer.blocks))
        if not entries and not flooding:
            return ["* nobody is blocked or muted"]
        lines = [f"*   {e.level}ed  {_label(room, e.key)}  {e.key.hex()}" for e in entries]
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
        return [f"* blocked {who}: no link, nothing of theirs shown; /unblock to undo"]
    if name == "/mute":
        room.mute(key)
        return [f"* muted {who}: their messages are hidden; /unmute to undo"]
    if name == "/unblock":
        done = room.unblock(key)
        return [f"* unblocked {who}" if done else f"* {who} was not blocked"]
    done = room.unmute(key)
    if not done and room.peer.blocks.get(key, None) and room.peer.blocks[key].level == BLOCK:
        return [f"* {who} is blocked, not muted: /unblock"]
    return [f"* unmuted {who}" if done else f"* {who} was not muted"]
