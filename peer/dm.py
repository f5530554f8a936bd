"""Direct messages between two contacts: which DM rooms to be in, with no I/O
(docs/protocol.md 7.4).

A DM is an ordinary room (the same links, messaging core, history and files) whose id
is `friends.dm_room(pair secret)`: no page hashes to it and only the two contacts can
compute it. Its members admit the contact's key, their own, and devices certified by
either; an unknown key gets a link only on probation (7.4.1), on which nothing of the
room goes until its first frame shows such a delegation, so a third key that learns the
id gets no message.

A message written while the contact is away stays in the room's store (our outbox, as
in every room) until the contact acknowledges it. Meanwhile our presence notes for that
contact say `dm` (7.4), even when presence is off, and we wait in the DM room; a contact
who reads such a note joins it. `plan` decides, from what presence says now, which DM
rooms to join and which to leave.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

MAX_DM_ROOMS = 16
"""DM rooms joined at once, at most (each is a room at the node, with its links)."""


@dataclass(frozen=True, slots=True)
class DmPlan:
    join: tuple[bytes, ...]
    """Contacts whose DM room to join now, most wanted first."""
    leave: tuple[bytes, ...]
    """Contacts whose DM room nobody needs any more."""


def plan(
    contacts: Collection[bytes],
    online: Collection[bytes],
    waiting: Collection[bytes],
    knocking: Collection[bytes],
    opened: Collection[bytes],
    joined: Collection[bytes],
    linked: Collection[bytes] = (),
) -> DmPlan:
    """Which DM rooms to be in.

    `contacts`: contacts with a pair secret; `online`: those presence says are online;
    `waiting`: those a message of ours waits for; `knocking`: those whose note says one of
    theirs waits for us; `opened`: those the person opened a conversation with (kept
    whatever presence says); `joined`: the DM rooms we are in; `linked`: those whose
    contact has a link open there now. A room is wanted when it is opened or linked (a
    conversation going on), when a message of ours waits there (we wait in it for the
    contact, whom our note tells to come), or when the contact is online and says one of
    theirs waits for us. Never more than `MAX_DM_ROOMS` at once, never for anyone but a contact."""
    known = set(contacts)
    want: list[bytes] = []
    for group in (
        opened,
        [c for c in linked if c in joined],
        [c for c in online if c in knocking],
        waiting,
    ):
        for contact in sorted(group):
            if contact in known and contact not in want:
                want.append(contact)
    keep = set(want[:MAX_DM_ROOMS])
    leave = tuple(sorted(c for c in joined if c not in keep))
    room_for = MAX_DM_ROOMS - (len(joined) - len(leave))
    join = tuple(c for c in want[:MAX_DM_ROOMS] if c not in joined)[: max(0, room_for)]
    return DmPlan(join, leave)
