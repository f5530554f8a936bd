"""Which peer addresses a relay may send to.

A TURN relay that sends anywhere it is asked is an open proxy into the
network it stands in: its loopback, the cloud metadata service at
169.254.169.254, the operator's private LAN. RFC 8656 section 21.2.1 asks
servers to restrict peers; by default this module refuses every address of the
IANA special-purpose registries (RFC 6890 and later updates), for IPv4 and
IPv6, and looks inside the IPv6 forms that carry an IPv4 address (IPv4-mapped
`::ffff:a.b.c.d`, the NAT64 well-known prefix `64:ff9b::/96` and 6to4
`2002::/16`) so that `::ffff:127.0.0.1` is refused like
`127.0.0.1`.

An explicit allow-list wins over the deny-list (tests on loopback, private
deployments); an explicit extra deny-list wins over everything.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SPECIAL_IPV4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network", unspecified (RFC 791, 1122)
        "10.0.0.0/8",  # private (RFC 1918)
        "100.64.0.0/10",  # shared address space, CGNAT (RFC 6598)
        "127.0.0.0/8",  # loopback (RFC 1122)
        "169.254.0.0/16",  # link-local, cloud metadata (RFC 3927)
        "172.16.0.0/12",  # private (RFC 1918)
        "192.0.0.0/24",  # IETF protocol assignments (RFC 6890)
        "192.0.2.0/24",  # documentation TEST-NET-1 (RFC 5737)
        "192.31.196.0/24",  # AS112-v4 (RFC 7535)
        "192.52.193.0/24",  # AMT (RFC 7450)
        "192.88.99.0/24",  # deprecated 6to4 relay anycast (RFC 7526)
        "192.168.0.0/16",  # private (RFC 1918)
        "192.175.48.0/24",  # direct delegation AS112 (RFC 7534)
        "198.18.0.0/15",  # benchmarking (RFC 2544)
        "198.51.100.0/24",  # documentation TEST-NET-2 (RFC 5737)
        "203.0.113.0/24",  # documentation TEST-NET-3 (RFC 5737)
        "224.0.0.0/4",  # multicast (RFC 5771)
        "240.0.0.0/4",  # reserved, and limited broadcast 255.255.255.255 (RFC 1112, 919)
    )
)

SPECIAL_IPV6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/96",  # unspecified, loopback, deprecated IPv4-compatible (RFC 4291)
        "::ffff:0:0/96",  # IPv4-mapped (RFC 4291), refused when its IPv4 is
        "64:ff9b:1::/48",  # local-use IPv4/IPv6 translation (RFC 8215)
        "100::/64",  # discard-only (RFC 6666)
        "2001::/23",  # IETF protocol assignments: Teredo, benchmarking, ORCHID (RFC 2928)
        "2001:db8::/32",  # documentation (RFC 3849)
        "2620:4f:8000::/48",  # direct delegation AS112 (RFC 7534)
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # segment routing SIDs (RFC 9602)
        "fc00::/7",  # unique local, ULA (RFC 4193)
        "fe80::/10",  # link-local (RFC 4291)
        "fec0::/10",  # deprecated site-local (RFC 3879)
        "ff00::/8",  # multicast (RFC 4291)
    )
)

NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix
SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")  # RFC 3056


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    return None


def is_special(address: IPAddress) -> bool:
    """True if `address` (or the IPv4 inside it) is in a special-purpose registry."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            return is_special(inner)
        return any(address in net for net in SPECIAL_IPV6)
    return any(address in net for net in SPECIAL_IPV4)


@dataclass(frozen=True, slots=True)
class PeerPolicy:
    """The peer addresses a relay sends to: not special-purpose, or explicitly allowed."""

    allow: tuple[IPNetwork, ...] = ()
    deny: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_strings(cls, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> PeerPolicy:
        """Networks as text ("127.0.0.1", "10.0.0.0/8"); ValueError if one is not a network."""
        return cls(
            tuple(ipaddress.ip_network(n, strict=False) for n in allow),
            tuple(ipaddress.ip_network(n, strict=False) for n in deny),
        )

    def permits(self, address: IPAddress) -> bool:
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address):
            inner = embedded_ipv4(address)
            if inner is not None:
                candidates.append(inner)
        if any(_within(a, net) for a in candidates for net in self.deny):
            return False
        if any(_within(a, net) for a in candidates for net in self.allow):
            return True
        return not is_special(address)

    def permits_host(self, host: str) -> bool:
        """`permits` for an address in text; False for anything that is not an IP address."""
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        return self.permits(address)


def _within(address: IPAddress, network: IPNetwork) -> bool:
    return address.version == network.version and address in network
