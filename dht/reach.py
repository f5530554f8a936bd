"""Reachability: can other nodes reach this node without being asked first?

A node behind a NAT answers whoever it has just sent to (the NAT lets the
answer in) and nobody else. Put into routing tables by the nodes it talks to,
it becomes a dead contact for every node they tell about it. So a node asks a
few others (helpers) to dial it back from a socket it never sent to; what
arrives decides whether it joins routing tables (a full node) or only asks (a
DHT client). docs/protocol.md 1.9 is the contract; this module holds its rules,
with no I/O (time is `now`, randomness an injected `random.Random`):

* the helper's side: which requests it dials back, where to (`dial_target`:
  only the requester's own source address, never one named in the request),
  how often (`DialBackLimiter`), and what it tells of its HTTP probe
  (`UrlOutcome`; `TlsFailure` when the certificate was refused, verified as
  node links verify it);
* the requester's side: whom to ask (`choose_helpers`), what the answers,
  probes and results say (`ReachRound`, `judge`, `judge_url`), and when to ask
  again (`next_check_at`).

`dht.core.DHTCore` runs both; dht/node.py sends the probes from a second
socket.
"""

from __future__ import annotations

import ipaddress
import random
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import TypeVar
from urllib.parse import urlsplit

from .routing import Contact
from .wire import MAX_URL_CHARS, Address

A = TypeVar("A")

WINDOW = 60.0
"""The dial-back limits count over this many seconds."""


class ReachStatus(IntEnum):
    """A helper's answer to `pm_reach` (docs/protocol.md 1.9)."""

    ACCEPTED = 0
    """Both probes go out: UDP to the request's source, and the URL if one was given."""
    URL_REFUSED = 1
    """Only the UDP probe: the URL is malformed, or its host is not the request's source."""
    URL_UNSUPPORTED = 2
    """Only the UDP probe: this node dials no URLs (a DHT node without HTTP)."""
    BUSY = 3
    """Nothing: over the helper's dial-back limits. Ask another."""


class Reachability(Enum):
    REACHABLE = "reachable"
    UNREACHABLE = "unreachable"
    UNKNOWN = "unknown"
    TLS_UNTRUSTED = "tls-untrusted"
    """The URL only: helpers reached it but could not verify its certificate, so other
    nodes' links to it fail as their probes did."""


class UrlOutcome(IntEnum):
    """What a helper's HTTP probe met, in its `pm_reach_result` (docs/protocol.md 1.9)."""

    REACHED = 0
    """An HTTP answer came back (TLS, if any, verified)."""
    UNREACHABLE = 1
    """No connection, no answer in time, or the URL's name does not resolve to the
    requester's address."""
    TLS_UNTRUSTED = 2
    """A TCP connection, but no verified TLS session: the certificate was refused (or the
    port speaks no TLS). Nothing was sent over it."""


class TlsFailure(IntEnum):
    """Why a helper refused a certificate, as one byte: the verifier's own words are
    free text, and a requester shows this to its operator. Unknown values read as
    UNTRUSTED (a newer helper's finer reason)."""

    NONE = 0
    UNTRUSTED = 1
    EXPIRED = 2
    NOT_YET_VALID = 3
    SELF_SIGNED = 4
    UNKNOWN_ISSUER = 5
    HOSTNAME_MISMATCH = 6
    NO_TLS = 7

    @classmethod
    def read(cls, value: int) -> TlsFailure:
        try:
            return cls(value)
        except ValueError:
            return cls.UNTRUSTED

    @property
    def text(self) -> str:
        """The short reason, as OpenSSL's verifier puts it where it has words for it."""
        return _TLS_TEXT[self]


_TLS_TEXT = {
    TlsFailure.NONE: "",
    TlsFailure.UNTRUSTED: "certificate verify failed",
    TlsFailure.EXPIRED: "certificate has expired",
    TlsFailure.NOT_YET_VALID: "certificate is not yet valid",
    TlsFailure.SELF_SIGNED: "self-signed certificate",
    TlsFailure.UNKNOWN_ISSUER: "unable to get local issuer certificate",
    TlsFailure.HOSTNAME_MISMATCH: "hostname mismatch",
    TlsFailure.NO_TLS: "no TLS handshake",
}


@dataclass(frozen=True, slots=True)
class UrlProbeResult:
    """What the glue's HTTP probe met (`DHTCore.url_dialed` signs and sends it)."""

    outcome: UrlOutcome
    tls: TlsFailure = TlsFailure.NONE


@dataclass(frozen=True, slots=True)
class ReachConfig:
    """Reachability checks (`[dht.reach]`). Intervals are seconds."""

    check: bool = False
    """Check this node's own reachability and act on it (`pagemesh node` and `pagemesh dht
    serve` do by default): a node that checks starts as a DHT client when it has seeds,
    until its first check says it is reachable, becomes one whenever a check finds it
    unreachable, and checks again on the schedule below. Helping others is always on,
    within the limits below."""
    helpers: int = 3
    """Nodes asked in each check, from different /24s (IPv6: /64s) when the table allows."""
    confirmations: int = 2
    """Probes that must fail, none arriving, for a verdict of unreachable; as many must
    arrive for reachable (fewer when fewer helpers answered)."""
    probe_wait: float = 5.0
    """How long after its request a helper's probes may take to arrive."""
    interval: float = 1800.0
    """Between checks of a reachable node."""
    unreachable_interval: float = 300.0
    """Between checks of an unreachable node (so an opened port is noticed soon)."""
    retry_interval: float = 60.0
    """After a check that could not decide (too few helpers answered)."""
    address_interval: float = 300.0
    """How often one contact is asked (`stun`) which address this node's traffic comes
    from; a change brings the next check forward. 0 turns this off."""
    dial_backs_per_minute: int = 60
    """Dial-backs this node makes for others, in all, per minute."""
    source_interval: float = 60.0
    """Seconds between two dial-backs to one source address (IPv4, or IPv6 /64)."""

    def __post_init__(self) -> None:
        if self.helpers < 1 or self.confirmations < 1 or self.dial_backs_per_minute < 0:
            raise ValueError("reach.helpers and reach.confirmations must be at least 1")
        if self.probe_wait <= 0 or min(self.interval, self.unreachable_interval) <= 0:
            raise ValueError("reach.probe_wait and the check intervals must be positive")
        if self.retry_interval <= 0 or self.address_interval < 0 or self.source_interval < 0:
            raise ValueError("reach.retry_interval must be positive, the others not negative")


# --- the helper's side ------------------------------------------------------------


def canonical_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """`host` as an address (an IPv4-mapped IPv6 address as its IPv4), or None if no IP."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def network_of(host: str) -> str:
    """The unit per-source limits count and helpers are spread over: an IPv4 /24, an IPv6
    /64; a host that is no IP literal (the simulator's names) is its own."""
    ip = canonical_ip(host)
    if ip is None:
        return host[:64]
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network((ip, prefix), strict=False))


def source_unit(host: str) -> str:
    """The unit of the per-source dial-back limit: an IPv4 address, an IPv6 /64."""
    ip = canonical_ip(host)
    if ip is None:
        return host[:64]
    if ip.version == 4:
        return str(ip)
    return str(ipaddress.ip_network((ip, 64), strict=False))


def is_loopback(host: str) -> bool:
    ip = canonical_ip(host)
    return ip is not None and ip.is_loopback


@dataclass(frozen=True, slots=True)
class DialTarget:
    """Where a helper's HTTP probe goes: always to `address`, the requester's own source.

    `url` is the GET to make (`/healthz?reach=<nonce>` under the requester's URL); its
    host is `address`, or `name` when the requester's URL gives a name, in which case the
    name must resolve to `address` and the connection is made to `address` only.
    """

    url: str
    address: str
    port: int
    name: str | None = None


_SCHEMES = {"ws": "http", "wss": "https", "http": "http", "https": "https"}
_DEFAULT_PORTS = {"http": 80, "https": 443}


def dial_target(url: str, source_host: str, nonce: bytes) -> DialTarget | None:
    """The HTTP probe for a `pm_reach` URL from `source_host`, or None to refuse the URL.

    A requester chooses only the port (and the path): the probe goes to the address its
    request came from, so no one can point a helper at a third party. A URL with no host
    (`ws://:8000`) means that address; a literal must equal it; a name is dialled only if
    it resolves to it (the glue resolves, then connects to the address, never the name).
    """
    source = canonical_ip(source_host)
    if source is None or len(url) > MAX_URL_CHARS:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None or parts.username is not None or parts.password is not None:
        return None
    if any(c in url for c in "\r\n\t ") or "#" in url:
        return None
    host = parts.hostname or ""
    name: str | None = None
    if host:
        literal = canonical_ip(host)
        if literal is None:
            if not _is_dns_name(host):
                return None
            name = host
        elif literal != source:
            return None
    if port is None:
        port = _DEFAULT_PORTS[scheme]
    elif port == 0:
        return None
    shown = name or (f"[{source}]" if source.version == 6 else str(source))
    path = parts.path.rstrip("/") + "/healthz"
    probe = f"{scheme}://{shown}:{port}{path}?reach={nonce.hex()}"
    return DialTarget(probe, str(source), port, name)


def _is_dns_name(host: str) -> bool:
    labels = host.rstrip(".").split(".")
    return len(host) <= 253 and all(
        0 < len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii()
        for label in labels
    )


@dataclass(slots=True)
class _Served:
    when: float
    addr: Address
    msg_id: bytes
    status: ReachStatus


class DialBackLimiter:
    """How often a helper dials back: `per_minute` in all over any minute, and one per
    `source_interval` to each source (an IPv4 address or an IPv6 /64). A requester on
    this very host (a loopback source) has only the total: there is no third party
    behind a loopback address to protect.

    A retransmission (the same source address and message id) is answered as the
    first copy was, without dialling again. Memory is bounded by the total: no more
    than `per_minute` sources can have been served within the minute.
    """

    def __init__(self, per_minute: int, source_interval: float) -> None:
        self.per_minute = per_minute
        self.source_interval = source_interval
        self._times: deque[float] = deque()
        self._sources: dict[str, _Served] = {}

    def __len__(self) -> int:
        return len(self._sources)

    def answered(self, addr: Address, msg_id: bytes, now: float) -> ReachStatus | None:
        """What this very request got the first time, if it is a retransmission."""
        served = self._sources.get(source_unit(addr[0]))
        if served is None or served.addr != addr or served.msg_id != msg_id:
            return None
        return served.status if now - served.when < max(self.source_interval, WINDOW) else None

    def allow(self, addr: Address, now: float) -> bool:
        self._prune(now)
        if len(self._times) >= self.per_minute:
            return False
        served = self._sources.get(source_unit(addr[0]))
        return served is None or now - served.when >= self.source_interval

    def served(self, addr: Address, msg_id: bytes, status: ReachStatus, now: float) -> None:
        """Count a dial-back made (after `allow`), and remember the answer for retransmissions."""
        self._times.append(now)
        if not is_loopback(addr[0]):
            source = source_unit(addr[0])
            self._sources.pop(source, None)
            self._sources[source] = _Served(now, addr, msg_id, status)

    def _prune(self, now: float) -> None:
        times = self._times
        while times and now - times[0] >= WINDOW:
            times.popleft()
        keep = max(self.source_interval, WINDOW)
        sources = self._sources
        while sources:
            oldest = next(iter(sources))
            if now - sources[oldest].when < keep:
                break
            del sources[oldest]


# --- the requester's side ------------------------------------------------------------


def choose_helpers(
    contacts: Sequence[Contact[A]], count: int, rng: random.Random
) -> list[Contact[A]]:
    """Up to `count` contacts to ask, one per network (/24, IPv6 /64) as long as there are
    networks left, then other contacts (each a different node id), all at random.

    Helpers in different networks make it unlikely that all of them sit behind this
    node's own NAT, or on its LAN, where they would reach it when nobody else can.
    """
    groups: dict[str, list[Contact[A]]] = {}
    for contact in contacts:
        host = contact.addr[0] if isinstance(contact.addr, tuple) else str(contact.addr)
        groups.setdefault(network_of(str(host)), []).append(contact)
    networks = sorted(groups)
    rng.shuffle(networks)
    chosen: list[Contact[A]] = []
    for network in networks[:count]:
        chosen.append(rng.choice(groups[network]))
    if len(chosen) < count:
        taken = {c.node_id for c in chosen}
        rest = sorted((c for c in contacts if c.node_id not in taken), key=lambda c: c.node_id)
        rng.shuffle(rest)
        chosen.extend(rest[: count - len(chosen)])
    return chosen


@dataclass(slots=True)
class HelperState:
    """One helper of a round: what it answered and which of its probes arrived."""

    node_id: bytes
    addr: Address
    nonce: bytes
    status: ReachStatus | None = None
    """None until it answers (and for good when it never does)."""
    settled: bool = False
    observed: Address | None = None
    udp: bool = False
    url: bool = False
    url_result: UrlOutcome | None = None
    """What the helper said its HTTP probe met (None: it said nothing)."""
    tls: TlsFailure = TlsFailure.NONE


def judge(confirmed: int, missed: int, confirmations: int) -> Reachability:
    """The verdict from probes that arrived (`confirmed`) and probes promised that did not
    (`missed`); helpers that were busy or silent count for neither.

    Reachable: more arrived than were missed, and at least `confirmations` arrived, or
    as many as helpers promised when fewer promised (a network of two nodes has one
    helper). Unreachable: none arrived and at least `confirmations` were missed (one
    lost datagram never decides it). Anything else is unknown, and is asked again soon.
    """
    promised = confirmed + missed
    if confirmed > missed and confirmed >= min(confirmations, promised):
        return Reachability.REACHABLE
    if confirmed == 0 and missed >= confirmations:
        return Reachability.UNREACHABLE
    return Reachability.UNKNOWN


def judge_url(confirmed: int, missed: int, untrusted: int, confirmations: int) -> Reachability:
    """The URL's verdict: `judge`, where a helper that could not verify the certificate
    (`untrusted`) counts as a miss, unless such helpers decide it: more of them than
    probes arrived, and at least `confirmations` of them (or every helper that promised
    a probe, when fewer did). Their word is a signed statement, not a silence, so one
    helper of a network of two is enough, as it is for reachable."""
    promised = confirmed + missed + untrusted
    if untrusted > confirmed and untrusted >= min(confirmations, promised):
        return Reachability.TLS_UNTRUSTED
    return judge(confirmed, missed + untrusted, confirmations)


@dataclass(frozen=True, slots=True)
class ReachVerdict:
    """What a check found. `dht` decides whether the node is a full node or a DHT client;
    `url` says whether its advertised URL answers (unknown: not checked, or undecided)."""

    dht: Reachability
    url: Reachability
    at: float
    checked_url: str
    observed: Address | None
    """This node's address as the helpers saw it, when enough of them agreed."""
    reported: tuple[str, ...] = ()
    """Every host the helpers reported, most reported first."""
    helpers: int = 0
    answered: int = 0
    confirmed: int = 0
    missed: int = 0
    url_confirmed: int = 0
    url_missed: int = 0
    url_refused: int = 0
    """Helpers that would not dial the URL: its host is not this node's address."""
    url_untrusted: int = 0
    """Helpers that reached the URL but could not verify its certificate."""
    url_tls: TlsFailure = TlsFailure.NONE
    """Why, as most of them said (NONE when none did)."""
    url_elsewhere: bool = False
    """The URL's name resolves to other addresses than this node's (a proxy in front)."""
    address_changed: bool = False
    """The observed address differs from the previous check's."""

    @property
    def no_helpers(self) -> bool:
        return self.helpers == 0

    @property
    def url_judged(self) -> bool:
        """A URL was asked for and some helper promised to dial it: `url` is a judgement
        (perhaps that there was too little to go on), not "nobody would look"."""
        promised = self.url_confirmed + self.url_missed + self.url_untrusted
        return bool(self.checked_url) and not self.url_elsewhere and promised > 0


@dataclass(slots=True)
class ReachRound:
    """One check: the helpers asked, their answers, the probes that came back."""

    helpers: list[HelperState]
    url: str
    started: float
    deadline: float
    url_hosts: tuple[str, ...] | None = None
    """The addresses the URL's name resolves to (None: the URL has no name)."""
    by_nonce: dict[bytes, HelperState] = field(init=False)

    def __post_init__(self) -> None:
        self.by_nonce = {h.nonce: h for h in self.helpers}

    def answered(self, nonce: bytes, status: ReachStatus, observed: Address) -> None:
        helper = self.by_nonce[nonce]
        helper.status, helper.observed, helper.settled = status, observed, True

    def failed(self, nonce: bytes) -> None:
        self.by_nonce[nonce].settled = True

    def url_reported(self, nonce: bytes, outcome: UrlOutcome, tls: TlsFailure) -> None:
        """The helper of `nonce` says what its HTTP probe met (`pm_reach_result`)."""
        helper = self.by_nonce[nonce]
        helper.url_result = outcome
        helper.tls = tls if outcome is UrlOutcome.TLS_UNTRUSTED else TlsFailure.NONE

    def probe_arrived(self, nonce: bytes, via_url: bool) -> bool:
        """A probe with `nonce` came in; False if it is none of this round's."""
        helper = self.by_nonce.get(nonce)
        if helper is None:
            return False
        if via_url:
            helper.url = True
        else:
            helper.udp = True
        return True

    def complete(self) -> bool:
        """Every helper answered or failed, and every probe promised arrived: no need to
        wait for the deadline."""
        for helper in self.helpers:
            if not helper.settled:
                return False
            if helper.status is ReachStatus.BUSY or helper.status is None:
                continue
            if not helper.udp or (self._url_promised(helper) and not self._url_done(helper)):
                return False
        return True

    @staticmethod
    def _url_done(helper: HelperState) -> bool:
        """Its HTTP probe arrived, or it said why it will not (a failed probe is final)."""
        return helper.url or helper.url_result in (UrlOutcome.UNREACHABLE, UrlOutcome.TLS_UNTRUSTED)

    @staticmethod
    def _untrusted(helper: HelperState) -> bool:
        return not helper.url and helper.url_result is UrlOutcome.TLS_UNTRUSTED

    def _url_promised(self, helper: HelperState) -> bool:
        return bool(self.url) and helper.status is ReachStatus.ACCEPTED

    def verdict(
        self, confirmations: int, now: float, previous: ReachVerdict | None
    ) -> ReachVerdict:
        promised = [h for h in self.helpers if h.status not in (None, ReachStatus.BUSY)]
        confirmed = sum(1 for h in self.helpers if h.udp)  # a probe is evidence, whatever said
        missed = sum(1 for h in promised if not h.udp)
        url_promised = [h for h in self.helpers if self._url_promised(h)]
        url_confirmed = sum(1 for h in self.helpers if h.url)
        untrusted = [h for h in url_promised if self._untrusted(h)]
        url_missed = sum(1 for h in url_promised if not h.url) - len(untrusted)
        url_refused = sum(1 for h in self.helpers if h.status is ReachStatus.URL_REFUSED)
        reported = Counter(h.observed for h in self.helpers if h.observed is not None)
        observed = _agreed(reported, confirmations)
        hosts = Counter(addr[0] for addr in reported.elements())
        elsewhere = (
            self.url_hosts is not None
            and observed is not None
            and canonical_ip(observed[0]) not in {canonical_ip(h) for h in self.url_hosts}
        )
        url = Reachability.UNKNOWN
        if self.url and not elsewhere:
            url = judge_url(url_confirmed, url_missed, len(untrusted), confirmations)
        # The reason most of them gave; a tie goes to the lower code, so the same
        # answers always give the same reason.
        reasons = Counter(h.tls for h in untrusted)
        tls = min(reasons, key=lambda r: (-reasons[r], r)) if reasons else TlsFailure.NONE
        changed = (
            previous is not None
            and previous.observed is not None
            and observed is not None
            and previous.observed[0] != observed[0]
        )
        return ReachVerdict(
            dht=judge(confirmed, missed, confirmations),
            url=url,
            at=now,
            checked_url=self.url,
            observed=observed,
            reported=tuple(host for host, _ in hosts.most_common()),
            helpers=len(self.helpers),
            answered=sum(1 for h in self.helpers if h.status is not None),
            confirmed=confirmed,
            missed=missed,
            url_confirmed=url_confirmed,
            url_missed=url_missed,
            url_refused=url_refused,
            url_untrusted=len(untrusted),
            url_tls=tls,
            url_elsewhere=elsewhere,
            address_changed=changed,
        )


def _agreed(reported: Counter[Address], confirmations: int) -> Address | None:
    """The host most helpers reported, if at least `confirmations` of them (or all of them,
    when fewer answered) agree on it, and no other host is reported as often; with the
    port most reported with it (a NAT may map each destination to another port)."""
    if not reported:
        return None
    hosts = Counter(addr[0] for addr in reported.elements())
    (host, count), *rest = hosts.most_common()
    if rest and rest[0][1] == count:
        return None
    if count < min(confirmations, sum(hosts.values())):
        return None
    ports = Counter({addr[1]: n for addr, n in reported.items() if addr[0] == host}).most_common()
    return (host, ports[0][0])


def next_check_at(verdict: ReachVerdict, config: ReachConfig) -> float:
    """When to check again after `verdict`: soon when it decided nothing, sooner when
    unreachable (an operator who opens the port should not wait half an hour), rarely
    when reachable. A change of address seen in between brings it forward.

    The DHT port and the URL are judged alike, and the one that needs it sooner sets
    the time: a node started before its proxy has a reachable DHT port and a URL that
    decided nothing, and is asked again after `retry_interval`, not half an hour. A URL
    no helper would dial (refused, unsupported, or a name resolving elsewhere) cannot be
    decided by asking again, and sets no time.
    """
    wait = _wait(verdict.dht, config)
    if verdict.url_judged:
        wait = min(wait, _wait(verdict.url, config))
    return verdict.at + wait


def _wait(found: Reachability, config: ReachConfig) -> float:
    if found is Reachability.REACHABLE:
        return config.interval
    if found is Reachability.UNREACHABLE or found is Reachability.TLS_UNTRUSTED:
        return config.unreachable_interval  # a fixed certificate is seen within minutes
    return config.retry_interval


def client_after(verdict: ReachVerdict, client: bool) -> bool:
    """Whether the node is a DHT client after `verdict` (it was one if `client`).

    Unreachable: a client. Reachable: a full node. Unknown keeps what it was, except
    when there was nobody to ask: the first node of a network, or one whose every seed
    is a client too (all restarted at once), must serve, or nobody ever could join.
    """
    if verdict.dht is Reachability.UNREACHABLE:
        return True
    if verdict.dht is Reachability.REACHABLE or verdict.no_helpers:
        return False
    return client
