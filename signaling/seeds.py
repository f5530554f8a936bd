"""Where a node joins the mesh: `bootstrap` entries, each a DHT address or a node's URL.

A volunteer knows a node by the page they use (`https://node.example.net/`), not by
its DHT port. So a `bootstrap` entry is either `HOST:PORT` (a DHT address) or the URL
of any running node: `https://NAME[:PORT]` (or its `wss://` URL, the same thing), or
plain `http://` / `ws://` on a loopback address (a mesh on one machine). For a URL
the node asks `GET /v1/dht` of that node (docs/protocol.md 3.8), which answers its
DHT contact as `{"id": "<40 hex>", "host": "<address or name, or empty>", "port": N}`;
an empty host means the URL's own host.

Who may do what: the operator names the seeds. Whoever answers at a seed URL (any web
server, which may be hostile) may hand this node one DHT contact, and nothing else:

* it may not make the node wait: each attempt has `FETCH_TIMEOUT` in all (connection,
  TLS, headers, body), at most `FETCH_ATTEMPTS` attempts are made at start, and the
  node starts whatever they gave; seeds that gave nothing are asked again every
  `RETRY_INTERVAL` while the node knows no other node;
* it may not make the node read much: the body is read up to `MAX_CONTACT_BYTES`, and
  a longer one is refused (redirects are not followed);
* it may not point the node's DHT at this machine or at addresses nobody routes: a
  contact from a seed that is not on loopback must be a unicast address outside
  loopback, link-local, multicast and the unspecified address (a name is resolved,
  and the address it resolves to must pass too);
* what does not parse is a `SeedError` naming the seed and the defect.

The parsing and the checks are pure functions; `signaling/seed_fetch.py` is the glue.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from yarl import URL

DHT_PATH = "/v1/dht"
"""Where a node answers its DHT contact."""
MAX_CONTACT_BYTES = 4096
"""Longest body read from a seed (the answer is under 150 bytes)."""
MAX_HOST_CHARS = 253
"""Longest host a contact may name (a DNS name's limit)."""
FETCH_TIMEOUT = 5.0
"""Seconds one attempt may take in all."""
FETCH_ATTEMPTS = 3
"""Attempts per seed URL at start (a seed restarting at the same moment gets a second chance)."""
RETRY_BACKOFF = 1.0
"""Seconds before the second attempt; doubled before each further one."""
RETRY_INTERVAL = 60.0
"""Seconds between rounds for seeds that gave nothing, while the node knows no other node."""
WEB_SCHEMES = {"https": "https", "wss": "https", "http": "http", "ws": "http"}

Address = tuple[str, int]


class SeedError(ValueError):
    """A bootstrap entry, or a seed's answer, that cannot be used; says which and why."""


@dataclass(frozen=True, slots=True)
class SeedUrl:
    """A node's URL given as a seed: where its DHT contact is asked."""

    text: str
    """As the operator wrote it (for messages)."""
    contact_url: str
    """`https://HOST[:PORT]/v1/dht` (or `http://` on loopback)."""
    host: str
    """The URL's host, which an empty `host` in the answer stands for."""

    @property
    def on_loopback(self) -> bool:
        return _is_loopback(self.host)


def parse_seed(text: str) -> Address | SeedUrl:
    """A `bootstrap` entry: `HOST:PORT`, `[V6]:PORT`, or a node's URL (see the module)."""
    text = text.strip()
    if "://" in text:
        return _parse_url(text)
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise SeedError(
            f"bootstrap {text!r}: expected HOST:PORT (a DHT address) or a node's https:// URL"
        )
    return (host.strip("[]") or "127.0.0.1", int(port))


def _parse_url(text: str) -> SeedUrl:
    try:
        url = URL(text)
        scheme = WEB_SCHEMES.get(url.scheme)
        host = url.host
        port = url.explicit_port
    except ValueError as exc:  # yarl: a port out of range, a malformed host
        raise SeedError(f"bootstrap {text!r}: {exc}") from None
    if scheme is None:
        raise SeedError(f"bootstrap {text!r}: a node's URL is https:// (or wss://)")
    if not host:
        raise SeedError(f"bootstrap {text!r}: no host")
    if scheme == "http" and not _is_loopback(host):
        raise SeedError(
            f"bootstrap {text!r}: plain http:// only on this machine (127.0.0.1, ::1, "
            "localhost); another node's URL is https://"
        )
    origin = URL.build(scheme=scheme, host=host, port=port)
    return SeedUrl(text, str(origin.with_path(DHT_PATH)), host)


def parse_contact(body: bytes, seed: SeedUrl) -> tuple[bytes, str, int]:
    """(node id, host, port) from a seed's answer; the host may still be a name."""
    where = f"bootstrap {seed.text}: {DHT_PATH}"
    if len(body) > MAX_CONTACT_BYTES:
        raise SeedError(f"{where} answered more than {MAX_CONTACT_BYTES} bytes")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise SeedError(f"{where} answered something that is not JSON") from None
    if not isinstance(data, dict):
        raise SeedError(f"{where} answered JSON that is not an object")
    node_id, host, port = data.get("id"), data.get("host", ""), data.get("port")
    if not isinstance(node_id, str) or len(node_id) != 40:
        raise SeedError(f"{where}: id is not 40 hex digits")
    try:
        raw_id = bytes.fromhex(node_id)
    except ValueError:
        raise SeedError(f"{where}: id is not 40 hex digits") from None
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise SeedError(f"{where}: port is not a port number")
    if not isinstance(host, str) or len(host) > MAX_HOST_CHARS:
        raise SeedError(f"{where}: host is not a host name or address")
    host = host.strip("[]") or seed.host
    if any(c.isspace() or c in "/?#@" for c in host):
        raise SeedError(f"{where}: host is not a host name or address")
    return raw_id, host, port


def check_contact_address(address: str, seed: SeedUrl, ipv6: bool = False) -> str:
    """`address` (an IP address) as the DHT may dial it, or SeedError: of the DHT
    socket's family (`ipv6`), and from a seed that is not on this machine, never loopback,
    link-local, multicast or unspecified."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        raise SeedError(f"bootstrap {seed.text}: {address!r} is not an address") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if (ip.version == 6) != ipv6:
        raise SeedError(
            f"bootstrap {seed.text}: its DHT contact {ip} is IPv{ip.version}, this "
            f"node's DHT socket is IPv{6 if ipv6 else 4}"
        )
    if not seed.on_loopback and (
        ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified
    ):
        raise SeedError(
            f"bootstrap {seed.text}: its DHT contact {ip} is not an address other machines reach"
        )
    return str(ip)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
