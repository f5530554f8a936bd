"""The NAT lab: network namespaces, a public segment, private networks behind NAT routers.

Topology and address plan (docs/nat-lab.md has the picture):

- `pub`: a bridge, 198.18.0.0/24 (RFC 2544 benchmarking range). Signaling node 1
  at 198.18.0.1, node 2 at 198.18.0.2, the TURN relay at 198.18.0.3, all three
  processes in this namespace. Node 2 also runs its own relay, with TURN over TLS on
  port 443 (a certificate of the lab's own CA, `NatLab.ca_file`). Routers' WAN sides
  are 198.18.0.11 and up.
- `open`: a host straight on the public segment, 198.18.0.20, no NAT.
- one router namespace and one host namespace per private network, the host at
  .10 of its LAN, its router at .1:

  | network   | LAN                | NAT                                           |
  |-----------|--------------------|-----------------------------------------------|
  | `cone-a`  | 192.0.2.0/25       | MASQUERADE (endpoint-independent mapping)     |
  | `cone-b`  | 192.0.2.128/25     | MASQUERADE                                    |
  | `sym-a`   | 198.51.100.0/25    | MASQUERADE --random-fully (symmetric)         |
  | `sym-b`   | 198.51.100.128/25  | MASQUERADE --random-fully                     |
  | `walled`  | 203.0.113.0/24     | symmetric, and every packet to the relay dropped |
  | `tcp-443` | 198.19.0.0/24      | MASQUERADE; no UDP out, TCP only to 443 (and 8000) |

Every router also drops new flows arriving on its WAN side, in INPUT and
FORWARD, as a home router's firewall does. Dropping in INPUT matters for hole
punching, not only for realism: a check that arrives before this side has
sent anything would otherwise leave a conntrack entry (WAN port <- the other
side) behind, and MASQUERADE then maps this side's own outgoing check to a
different port to avoid the clash, which defeats the punch. A packet dropped
in INPUT never gets its conntrack entry confirmed.

Nothing routes outside these ranges: no namespace has a default route to the
machine's own network, and IPv6 is off in all of them. Names carry a random
suffix so that runs do not collide; `NatLab.close` kills what runs in the
namespaces and deletes them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[2]
PUBLIC = ipaddress.IPv4Network("198.18.0.0/24")
NODE_ADDRESSES = ("198.18.0.1", "198.18.0.2")
RELAY_ADDRESS = "198.18.0.3"
OPEN_ADDRESS = "198.18.0.20"
HTTP_PORT, DHT_PORT, RELAY_PORT = 8000, 4000, 3478
RELAY_TLS_PORT = 443
"""Node 2's relay speaks TURN over TLS here (`turns:198.18.0.2:443?transport=tcp`)."""
NAMESPACE_PREFIX = "pmlab"


@dataclass(frozen=True, slots=True)
class PrivateNetwork:
    """A LAN behind one NAT router."""

    name: str
    lan: str
    wan: str
    """The router's address on the public segment."""
    symmetric: bool
    """MASQUERADE --random-fully: a new mapping for every destination."""
    relay_blocked: bool = False
    """Drop everything to the relay's address (its STUN, TURN and relayed ports)."""
    tcp_only_to: tuple[int, ...] = ()
    """When set, nothing gets out but TCP to these ports: no UDP at all (an office or
    hotel network that lets HTTPS out and little else)."""

    @property
    def router(self) -> str:
        return str(ipaddress.IPv4Network(self.lan)[1])

    @property
    def host(self) -> str:
        return str(ipaddress.IPv4Network(self.lan)[10])

    @property
    def prefix(self) -> int:
        return ipaddress.IPv4Network(self.lan).prefixlen


NETWORKS = (
    PrivateNetwork("cone-a", "192.0.2.0/25", "198.18.0.11", symmetric=False),
    PrivateNetwork("cone-b", "192.0.2.128/25", "198.18.0.12", symmetric=False),
    PrivateNetwork("sym-a", "198.51.100.0/25", "198.18.0.13", symmetric=True),
    PrivateNetwork("sym-b", "198.51.100.128/25", "198.18.0.14", symmetric=True),
    PrivateNetwork("walled", "203.0.113.0/24", "198.18.0.15", symmetric=True, relay_blocked=True),
    PrivateNetwork(
        "tcp-443", "198.19.0.0/24", "198.18.0.16", symmetric=False, tcp_only_to=(443, HTTP_PORT)
    ),
)


def missing_requirements() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the NAT lab needs root (network namespaces and iptables)"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"the NAT lab needs `{tool}` (iproute2, iptables; `make test` installs them)"
    return None


def _ip(ns: str, *args: str) -> None:
    _run("ip", "-n", ns, *args)


def _veth(ns: str, name: str, peer_ns: str, peer_name: str) -> None:
    _ip(ns, "link", "add", name, "type", "veth", "peer", "name", peer_name, "netns", peer_ns)


def _run(*args: str) -> None:
    result = subprocess.run(args, capture_output=True, text=True, timeout=20)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")


class LineReader:
    """JSON lines from a child's stdout, read with deadlines (no blocking readline)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._fd = stream.fileno()
        self._buffer = b""
        self.lines: list[dict[str, Any]] = []
        self.closed = False

    def next_line(self, deadline: float) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if self.closed or remaining <= 0:
                raise TimeoutError("no line in time" if not self.closed else "the process ended")
            ready, _, _ = select.select([self._fd], [], [], remaining)
            if ready:
                chunk = os.read(self._fd, 65536)
                self.closed = not chunk
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            parsed = json.loads(line)
        except ValueError:
            parsed = {"text": line.decode(errors="replace")}
        if not isinstance(parsed, dict):
            parsed = {"value": parsed}
        self.lines.append(parsed)
        return parsed


def is_event(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda line: line.get("event") == kind


@dataclass
class LabProcess:
    """A process started in one of the lab's namespaces."""

    name: str
    process: subprocess.Popen[bytes]
    reader: LineReader
    log: Path

    def until(
        self, matches: Callable[[dict[str, Any]], bool], within: float = 30.0
    ) -> dict[str, Any]:
        """The first line (seen before or now) that `matches`, else TimeoutError."""
        for line in self.reader.lines:
            if matches(line):
                return line
        deadline = time.monotonic() + within
        while True:
            try:
                line = self.reader.next_line(deadline)
            except TimeoutError as exc:
                tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
                raise TimeoutError(
                    f"{self.name}: {exc} after {within} s; lines {self.reader.lines}\n{tail}"
                ) from None
            if matches(line):
                return line

    def stop(self, within: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(within)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(within)
        if self.process.stdout is not None:
            self.process.stdout.close()


@dataclass
class NatLab:
    """The namespaces and the mesh running in them; `start` builds, `close` tears down."""

    workdir: Path
    suffix: str = field(default_factory=lambda: os.urandom(3).hex())
    namespaces: list[str] = field(default_factory=list)
    processes: list[LabProcess] = field(default_factory=list)
    ca_file: Path | None = None
    """The lab's CA, which signed node 2's relay certificate: every process the lab starts
    trusts it (SSL_CERT_FILE) and nothing else; Chromium is told its key (test_browser_nat)."""
    relay_spki: str = ""
    """base64 SHA-256 of the relay certificate's public key, for Chromium's
    --ignore-certificate-errors-spki-list."""

    def ns(self, role: str) -> str:
        return f"{NAMESPACE_PREFIX}{self.suffix}-{role}"

    @property
    def node_urls(self) -> list[str]:
        return [f"ws://{address}:{HTTP_PORT}" for address in NODE_ADDRESSES]

    @classmethod
    def start(cls, workdir: Path) -> NatLab:
        lab = cls(workdir)
        try:
            lab.build()
            lab.start_mesh()
        except BaseException:
            lab.close()
            raise
        return lab

    # --- namespaces ------------------------------------------------------------------

    def _add_namespace(self, role: str) -> str:
        name = self.ns(role)
        _run("ip", "netns", "add", name)
        self.namespaces.append(name)
        self._exec(name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        self._exec(name, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
        _ip(name, "link", "set", "lo", "up")
        return name

    def _exec(self, ns: str, *args: str) -> None:
        _run("ip", "netns", "exec", ns, *args)

    def _iptables(self, ns: str, *rule: str) -> None:
        self._exec(ns, "iptables", "-w", *rule)

    def _plug_into_public(self, ns: str, port: str, address: str) -> None:
        """A veth from `ns` (named `wan` there) to the public bridge (named `port` there)."""
        pub = self.ns("pub")
        _veth(ns, "wan", pub, port)
        _ip(pub, "link", "set", port, "master", "br0", "up")
        _ip(ns, "addr", "add", f"{address}/{PUBLIC.prefixlen}", "dev", "wan")
        _ip(ns, "link", "set", "wan", "up")

    def build(self) -> None:
        pub = self._add_namespace("pub")
        _ip(pub, "link", "add", "br0", "type", "bridge")
        _ip(pub, "link", "set", "br0", "up")
        for address in (*NODE_ADDRESSES, RELAY_ADDRESS):
            _ip(pub, "addr", "add", f"{address}/{PUBLIC.prefixlen}", "dev", "br0")
        self._plug_into_public(self._add_namespace("open"), "open", OPEN_ADDRESS)
        for network in NETWORKS:
            self._build_private(network)

    def _build_private(self, network: PrivateNetwork) -> None:
        router = self._add_namespace(f"r-{network.name}")
        host = self._add_namespace(f"h-{network.name}")
        self._plug_into_public(router, network.name, network.wan)
        _veth(router, "lan", host, "eth0")
        _ip(router, "addr", "add", f"{network.router}/{network.prefix}", "dev", "lan")
        _ip(router, "link", "set", "lan", "up")
        _ip(host, "addr", "add", f"{network.host}/{network.prefix}", "dev", "eth0")
        _ip(host, "link", "set", "eth0", "up")
        _ip(host, "route", "add", "default", "via", network.router)
        self._exec(router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        masquerade = ["-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"]
        self._iptables(router, *masquerade, *(["--random-fully"] if network.symmetric else []))
        new_from_wan = ["-i", "wan", "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"]
        self._iptables(router, "-A", "INPUT", *new_from_wan)
        self._iptables(router, "-A", "FORWARD", *new_from_wan)
        if network.relay_blocked:
            self._iptables(router, "-A", "FORWARD", "-o", "wan", "-d", RELAY_ADDRESS, "-j", "DROP")
        if network.tcp_only_to:
            for port in network.tcp_only_to:
                out = ["-A", "FORWARD", "-o", "wan", "-p", "tcp", "--dport", str(port)]
                self._iptables(router, *out, "-j", "ACCEPT")
            self._iptables(router, "-A", "FORWARD", "-o", "wan", "-p", "tcp", "-j", "DROP")
            self._iptables(router, "-A", "FORWARD", "-o", "wan", "-p", "udp", "-j", "DROP")

    def host_namespace(self, where: str) -> str:
        """The namespace a peer runs in: 'open' or a private network's name."""
        return self.ns("open") if where == "open" else self.ns(f"h-{where}")

    # --- processes -------------------------------------------------------------------

    def spawn(self, ns: str, name: str, args: Sequence[str]) -> LabProcess:
        """`python -m ...args` in `ns`; stdout is read as JSON lines, stderr goes to a log."""
        log = self.workdir / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if k != "PAGEMESH_ICE_HOSTS"}
        if self.ca_file is not None:
            env["SSL_CERT_FILE"] = str(self.ca_file)
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-m", *args],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        assert process.stdout is not None
        started = LabProcess(name, process, LineReader(process.stdout), log)
        self.processes.append(started)
        return started

    def start_peer(
        self, where: str, name: str, url: str, node: int, options: Sequence[str] = ()
    ) -> LabProcess:
        """tests/nat/lab_peer.py in `where` ('open' or a network), signaling through `node`."""
        args = ["tests.nat.lab_peer", url, "--node", self.node_urls[node]]
        args += ["--data-dir", str(self.workdir / name), *options]
        return self.spawn(self.host_namespace(where), name, args)

    def pair(
        self,
        first: str,
        newcomer: str,
        tag: str,
        first_options: Sequence[str] = (),
        newcomer_options: Sequence[str] = (),
    ) -> tuple[LabProcess, LabProcess]:
        """A peer in `first` joins room `tag` through node 1; once it sits in the room, one
        in `newcomer` joins through node 2 (so it offers, and the signals cross nodes)."""
        url = f"https://example.org/nat/{tag}"
        a = self.start_peer(first, f"{tag}-1-{first}", url, 0, first_options)
        a.until(is_event("in-room"), 30)
        b = self.start_peer(newcomer, f"{tag}-2-{newcomer}", url, 1, newcomer_options)
        return a, b

    def start_mesh(self) -> None:
        secret = self.workdir / "relay.secret"
        secret.write_text(os.urandom(24).hex())
        secret.chmod(0o600)
        pub = self.ns("pub")
        relay_args = ["pagemesh", "relay", "--host", RELAY_ADDRESS, "--port", str(RELAY_PORT)]
        relay_args += ["--secret-file", str(secret), "--no-tcp"]
        # The relay refuses special-purpose peer addresses, and the lab's public segment is
        # one (benchmarking, RFC 2544): allow it. The private LANs stay refused.
        relay_args += ["--allow-peer", str(PUBLIC)]
        relay = self.spawn(pub, "relay", relay_args)
        relay.until(lambda line: "pagemesh relay on" in line.get("text", ""), 20)
        relay_tls = self._relay_certificate()
        config = self.workdir / "node.toml"
        config.write_text(
            "[node]\npresence_ttl = 10.0\n\n[node.ice]\n"
            f'stun_urls = ["stun:{RELAY_ADDRESS}:{RELAY_PORT}"]\n'
            f'turn_urls = ["turn:{RELAY_ADDRESS}:{RELAY_PORT}?transport=udp"]\n'
            f'secret_file = "{secret}"\n\n'
            # Node 2's own relay: the same lab-only opening as the standalone relay's.
            f'[relay]\nallow_peers = ["{PUBLIC}"]\n'
        )
        for i, address in enumerate(NODE_ADDRESSES):
            args = ["pagemesh", "node", "--host", address, "--port", str(HTTP_PORT)]
            args += ["--dht-port", str(DHT_PORT), "--config", str(config)]
            args += ["--data-dir", str(self.workdir / f"node{i + 1}")]
            if i:
                args += ["--bootstrap", f"{NODE_ADDRESSES[0]}:{DHT_PORT}"]
                args += ["--relay-port", str(RELAY_PORT), "--relay-tls-port", str(RELAY_TLS_PORT)]
                args += relay_tls
            node = self.spawn(pub, f"node{i + 1}", args)
            node.until(lambda line: "pagemesh node" in line.get("text", ""), 20)

    def _relay_certificate(self) -> list[str]:
        """A CA of the lab's own and a certificate for node 2's relay (its IP address, as
        `turns:` names it); the node options that give it to the relay."""
        from tests.signaling.certs import TestCA

        ca = TestCA("pagemesh NAT lab CA")
        issued = ca.issue(1, names=(NODE_ADDRESSES[1],))
        cert, key = self.workdir / "relay-tls.pem", self.workdir / "relay-tls.key"
        issued.write(cert, key)
        self.ca_file = ca.write_ca(self.workdir / "lab-ca.pem")
        self.relay_spki = spki_hash(issued.cert_pem)
        return ["--relay-tls-cert", str(cert), "--relay-tls-key", str(key)]

    def close(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                process.stop()
        for ns in self.namespaces:  # anything still running inside, started by us
            pids = subprocess.run(
                ["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10
            ).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        self.namespaces.clear()


def spki_hash(cert_pem: bytes) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of a PEM certificate (Chromium's pin format)."""
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    public = x509.load_pem_x509_certificate(cert_pem).public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()
