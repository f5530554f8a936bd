"""Who may open a connection to a node: per-source caps before anyone has proven a key.

A stranger owns as many keys as it likes, but not as many addresses. So the
limits a node puts on connections that have not yet proven a key (no hello
yet) are per *source*: one IPv4 address, or one IPv6 /64 (what one host or
one home network gets; a single address of it costs nothing). For each
source a node keeps

- how many of its connections are open and unauthenticated (at most
  `unauthenticated`), and how many are open at all (at most `connections`,
  so one address cannot take a node's every slot, key by key), and
- a token bucket of connection attempts (`per_second`, bursts of `burst`):
  every attempt costs a challenge, and its hello a signature check.

A stranger with many addresses gets each one's allowance, so what waits for a
hello is capped in all too (`unauthenticated_total`): past it, a caller that
can close the connection that has waited longest makes room for the newcomer
(the node's clients, `evict`); otherwise the newcomer is refused.

What is over is refused before the WebSocket upgrade (HTTP 429), so a flood
costs the node a TCP accept and a few bytes. Client connections (`/v1/ws`)
and node links (`/v1/node`) have an `Admission` each. No I/O and no clock:
time arrives as `now` (docs/protocol.md, "Limits per source").
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from dht.ratelimit import SourceRateLimiter


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    unauthenticated: int = 16
    """Connections from one source that may wait for their hello at once."""
    connections: int = 64
    """Connections from one source open at once, authenticated or not."""
    per_second: float = 4.0
    """New connections per second from one source, on average..."""
    burst: float = 40.0
    """...and in a burst."""
    max_sources: int = 100_000
    """Sources remembered (least recently seen forgotten first: they start afresh)."""
    unauthenticated_total: int = 1024
    """Connections that may wait for their hello at once, from all sources together."""


def source_of(address: str | None) -> str:
    """The unit a limit applies to: an IPv4 address, or the /64 of an IPv6 one."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


# --- behind a reverse proxy ----------------------------------------------------------------

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_FORWARDED_HOPS = 16
"""X-Forwarded-For entries looked at, from the right (a header is not a place to grow)."""


def proxy_networks(texts: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """`trusted_proxies` as networks: an address is a network of one. ValueError on a typo."""
    return tuple(ipaddress.ip_network(text.strip(), strict=False) for text in texts)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def in_networks(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    """Whether `address` (IPv4-mapped IPv6 read as IPv4) lies in one of `networks`."""
    ip = _ip(address)
    return ip is not None and any(ip in net for net in networks)


def client_address(peer: str, forwarded: list[str], proxies: tuple[IPNetwork, ...]) -> str:
    """The address a connection stands for. Who may say what: a trusted proxy (`peer` in
    `proxies`) names the client in its `X-Forwarded-For` (the header's lines, `forwarded`);
    anyone else is its own socket address, whatever header it sends.

    Entries are read from the right, where each trusted proxy appended the address it saw,
    past the proxies (nginx's `real_ip_recursive`); a malformed entry stops the walk, so
    what a client wrote to the left of its own address is never believed.
    """
    address = _ip(peer)
    if address is None or not any(address in net for net in proxies):
        return peer
    hops = ",".join(forwarded).split(",")[-MAX_FORWARDED_HOPS:]
    for text in reversed(hops):
        hop = _ip(text.strip())
        if hop is None:
            break
        address = hop
        if not any(hop in net for net in proxies):
            break
    return str(address)


class Admission:
    """Counts unauthenticated connections and connection attempts per source."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self._attempts = SourceRateLimiter(limits.per_second, limits.burst, limits.max_sources)
        self._waiting: dict[str, int] = {}
        self._open: dict[str, int] = {}
        self.waiting_total = 0
        """Connections waiting for their hello, from all sources."""
        self.refused: dict[str, int] = {
            "rate": 0,
            "unauthenticated": 0,
            "connections": 0,
            "busy": 0,
        }
        self.evicted = 0
        """Connections closed while waiting for their hello, to make room (`admit`)."""

    def admit(self, source: str, now: float, evict: Callable[[], bool] | None = None) -> str | None:
        """Take a new connection from `source`: None if admitted, else why not.

        An admitted connection counts as unauthenticated until `settled`, and as open
        until `closed`. When `unauthenticated_total` wait already, `evict` (if given)
        closes the one that has waited longest and settles it, True if there was one;
        else the newcomer is refused.
        """
        if self._open.get(source, 0) >= self.limits.connections:
            self.refused["connections"] += 1
            return "too many connections from your address"
        if self._waiting.get(source, 0) >= self.limits.unauthenticated:
            self.refused["unauthenticated"] += 1
            return "too many connections from your address waiting for their hello"
        if not self._attempts.allow(source, now):
            self.refused["rate"] += 1
            return "too many connections from your address; slow down"
        if self.waiting_total >= self.limits.unauthenticated_total:
            if evict is None or not evict():
                self.refused["busy"] += 1
                return "too many connections waiting for their hello; try again"
            self.evicted += 1
        self.waiting_total += 1
        self._waiting[source] = self._waiting.get(source, 0) + 1
        self._open[source] = self._open.get(source, 0) + 1
        return None

    def settled(self, source: str) -> None:
        """An admitted connection proved a key, or closed before it did."""
        if _decrement(self._waiting, source):
            self.waiting_total -= 1

    def closed(self, source: str) -> None:
        """An admitted connection ended (call `settled` first if it never proved a key)."""
        _decrement(self._open, source)

    def waiting(self, source: str) -> int:
        return self._waiting.get(source, 0)

    def open(self, source: str) -> int:
        return self._open.get(source, 0)

    def prune(self, now: float) -> None:
        self._attempts.prune(now)


def _decrement(counts: dict[str, int], source: str) -> bool:
    """One fewer for `source`: False if it had none."""
    left = counts.get(source, 0) - 1
    if left > 0:
        counts[source] = left
    else:
        return counts.pop(source, None) is not None
    return True
