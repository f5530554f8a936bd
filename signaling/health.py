"""Whether a node can serve its clients, and why not: the rule behind `/healthz`.

The glue (`signaling/node.py`) gathers `HealthFacts` and answers 200 when
`assess` finds no reason, else 503 with the reasons (docs/operations.md, "Health").
Each reason names something a person running the node can act on:

- `stopping`: the node is shutting down (its clients were told to move).
- `no-dht-peers`: its routing table is empty although it is meant to be part of a
  mesh (seeds were configured, or other nodes were known): its clients cannot
  meet anyone on other nodes, and its seats are stored nowhere else.
- `no-node-links`: other nodes are known, no link to one is open, and the last
  attempt to open one failed within `LINK_FAILURE_WINDOW` with none made since.
  Links are opened when clients need them, so an idle node with none is fine.
- `relay-down`: the node was started with an embedded relay that serves no more.

A node started alone (no seeds, nobody in its routing table, no other node known)
serves: its clients meet each other, as in development or on the first node of a
new mesh. It says so with the note `alone`. A node whose embedded relay listens on
loopback only but tells clients an address elsewhere serves too, with the note
`relay-on-loopback`: its own clients on this machine reach the relay, nobody else does.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

LINK_FAILURE_WINDOW = 60.0
"""Seconds a failed link attempt, with nothing tried since, counts against the node."""


class Reason(StrEnum):
    """Why a node cannot serve; the values are what `/healthz` lists."""

    STOPPING = "stopping"
    NO_DHT_PEERS = "no-dht-peers"
    NO_NODE_LINKS = "no-node-links"
    RELAY_DOWN = "relay-down"


class Note(StrEnum):
    """What a serving node says about itself besides."""

    ALONE = "alone"
    RELAY_ON_LOOPBACK = "relay-on-loopback"


@dataclass(frozen=True, slots=True)
class HealthFacts:
    now: float
    dht_peers: int
    """Contacts in the DHT routing table."""
    bootstrap: bool
    """Seeds were configured: the node is meant to be part of a mesh."""
    other_nodes: int
    """Other nodes' URLs in the node directory."""
    links: int
    """Node links open now."""
    link_failed_at: float | None
    """When an attempt to link to another node last failed."""
    link_ok_at: float | None
    """When a link to another node was last made (or a frame sent on one)."""
    relay: bool | None
    """None without an embedded relay; else whether it serves."""
    stopping: bool
    relay_on_loopback: bool = False
    """The embedded relay listens on loopback only and advertises an address elsewhere."""


@dataclass(frozen=True, slots=True)
class Health:
    reasons: tuple[Reason, ...]
    notes: tuple[Note, ...]

    @property
    def ok(self) -> bool:
        return not self.reasons


def assess(facts: HealthFacts) -> Health:
    """The reasons (in a fixed order) and notes for `facts`."""
    reasons: list[Reason] = []
    notes: list[Note] = []
    if facts.stopping:
        reasons.append(Reason.STOPPING)
    if facts.dht_peers == 0:
        if facts.bootstrap or facts.other_nodes:
            reasons.append(Reason.NO_DHT_PEERS)
        else:
            notes.append(Note.ALONE)
    if facts.other_nodes and not facts.links and _links_failing(facts):
        reasons.append(Reason.NO_NODE_LINKS)
    if facts.relay is False:
        reasons.append(Reason.RELAY_DOWN)
    if facts.relay and facts.relay_on_loopback:
        notes.append(Note.RELAY_ON_LOOPBACK)
    return Health(tuple(reasons), tuple(notes))


def _links_failing(facts: HealthFacts) -> bool:
    failed = facts.link_failed_at
    if failed is None or facts.now - failed > LINK_FAILURE_WINDOW:
        return False
    return facts.link_ok_at is None or facts.link_ok_at < failed
