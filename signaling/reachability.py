"""A signaling node's reachability: the glue between the DHT's checks (dht/reach.py,
docs/protocol.md 1.9) and what a node advertises and tells the person running it.

* What the node advertises: a node listening on a wildcard address (`0.0.0.0`,
  `::`) with no `public_url` advertises the address other nodes saw its check
  come from, never the wildcard; when nobody can say (no other node to ask, or
  they disagree), it refuses to start and says to set `public_url`.
* The HTTP probe this node makes for another node's check (`dial_url`): only to
  the address the DHT core chose, which is the requester's own; a name in the
  requester's URL is dialled only if it resolves to that address, and then the
  connection goes to the address, not to whatever the name resolves to next.
  Its certificate is verified as node links verify it (signaling/trust.py), and
  what the probe met (an answer, nothing, or a certificate refused and why) goes
  back to the requester, signed by the DHT core (`pm_reach_result`).
* The HTTP probes other nodes make for this node's checks arrive as
  `GET /healthz?reach=<nonce>` (`NodeReachability.middleware`, which answers 204).
* What it says: a log line when the verdict changes, the reasons `/healthz` lists
  (`reachability_reasons`), the gauges in `/metrics`, and what to open or which
  certificate to serve (`NodeReachability.advice`), from the check that failed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from dht.core import LocalProtocolError, ReachChecked
from dht.node import DHTNode
from dht.options import ConfigError
from dht.reach import (
    DialTarget,
    Reachability,
    ReachVerdict,
    TlsFailure,
    UrlOutcome,
    UrlProbeResult,
    canonical_ip,
)

from . import trust

log = logging.getLogger(__name__)

DIAL_TIMEOUT = 5.0
"""Seconds an HTTP probe may take, connection and TLS handshake included (a helper's
probes must arrive within the requester's `probe_wait`, 5 s by default)."""
NONCE_HEX = 32


class ReachabilityError(ConfigError):
    """The node cannot tell which URL to advertise; the message says what to set."""


def reachability_reasons(reach: NodeReachability) -> list[str]:
    """What `/healthz` lists for reachability (docs/operations.md, "Reachability"):

    - `dht-unreachable`: other nodes' probes to the DHT port did not arrive; the node
      runs as a DHT client (in nobody's routing table, holding no records), so other
      nodes can neither check its seat lists nor link to it;
    - `url-unreachable`: their HTTP probes to its advertised URL did not arrive, so
      nobody but its own network can connect to it;
    - `url-tls-untrusted`: they reached the URL but could not verify its certificate
      (expired, self-signed, its chain incomplete, another name), so their links to it
      fail, and so do browsers that check as they do.
    """
    verdict = reach.verdict
    if verdict is None:
        return []
    reasons = []
    if verdict.dht is Reachability.UNREACHABLE:
        reasons.append("dht-unreachable")
    if verdict.url is Reachability.UNREACHABLE:
        reasons.append("url-unreachable")
    if verdict.url is Reachability.TLS_UNTRUSTED:
        reasons.append("url-tls-untrusted")
    return reasons


class _PinnedResolver(AbstractResolver):
    """Resolves any name to one address: the requester's, checked beforehand."""

    def __init__(self, address: str) -> None:
        self.address = address

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        return [
            ResolveResult(
                hostname=host, host=self.address, port=port, family=family, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        pass


async def resolve_host(name: str, port: int = 0) -> tuple[str, ...]:
    """The addresses `name` resolves to (empty when it does not), canonical."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(name, port, type=socket.SOCK_STREAM), DIAL_TIMEOUT
        )
    except (OSError, TimeoutError, UnicodeError):
        return ()
    found = (canonical_ip(str(info[4][0])) for info in infos)
    return tuple(dict.fromkeys(str(ip) for ip in found if ip is not None))


async def dial_url(target: DialTarget) -> UrlProbeResult:
    """GET `target.url` for another node's check, at `target.address` only; what it met.

    TLS is verified as a node link verifies it (`trust.node_tls_context`: the same trust
    store, the URL's host against the certificate), because the probe stands for the
    links other nodes will open: a certificate they would refuse is reported as
    `TLS_UNTRUSTED` with the reason, and nothing is sent over that connection. Nothing
    is raised: a failure is an outcome.
    """
    try:
        if target.name is not None:
            resolved = await resolve_host(target.name, target.port)
            if str(canonical_ip(target.address)) not in resolved:
                log.debug("not probing %s: it does not resolve to its requester", target.name)
                return UrlProbeResult(UrlOutcome.UNREACHABLE)
        connector = aiohttp.TCPConnector(
            resolver=_PinnedResolver(target.address),
            ssl=trust.node_tls_context(),
            limit=1,
            force_close=True,
        )
        timeout = aiohttp.ClientTimeout(total=DIAL_TIMEOUT)
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as http,
            http.get(target.url, allow_redirects=False) as response,
        ):
            response.release()
    except aiohttp.ClientConnectorCertificateError as exc:
        failure = tls_failure(exc.certificate_error)
        log.debug("reachability probe to %s: %s (%s)", target.address, failure.text, exc)
        return UrlProbeResult(UrlOutcome.TLS_UNTRUSTED, failure)
    except aiohttp.ClientSSLError as exc:
        log.debug("reachability probe to %s: no TLS handshake (%s)", target.address, exc)
        return UrlProbeResult(UrlOutcome.TLS_UNTRUSTED, TlsFailure.NO_TLS)
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        log.debug("reachability probe to %s failed: %s", target.address, exc)
        return UrlProbeResult(UrlOutcome.UNREACHABLE)
    return UrlProbeResult(UrlOutcome.REACHED)


# OpenSSL's X509_V_ERR_* codes (include/openssl/x509_vfy.h) for the reasons a requester
# can act on; any other verification error is UNTRUSTED.
_VERIFY_CODES = {
    2: TlsFailure.UNKNOWN_ISSUER,  # unable to get issuer certificate
    9: TlsFailure.NOT_YET_VALID,
    10: TlsFailure.EXPIRED,
    18: TlsFailure.SELF_SIGNED,  # the leaf signs itself
    19: TlsFailure.SELF_SIGNED,  # an untrusted root sent in the chain
    20: TlsFailure.UNKNOWN_ISSUER,  # issuer not in the store: cert.pem without its chain
    21: TlsFailure.UNKNOWN_ISSUER,  # unable to verify the first certificate
    62: TlsFailure.HOSTNAME_MISMATCH,
    64: TlsFailure.HOSTNAME_MISMATCH,  # IP address mismatch
}


def tls_failure(error: BaseException) -> TlsFailure:
    """Why a handshake's certificate was refused, as a code (dht.reach.TlsFailure)."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return _VERIFY_CODES.get(error.verify_code, TlsFailure.UNTRUSTED)
    return TlsFailure.UNTRUSTED


def is_wildcard(host: str) -> bool:
    """`0.0.0.0`, `::` or empty: every address of the machine, none of them advertisable."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return host == ""


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


GAUGE_CHECKS = ("dht", "url", "url_tls")
"""The `check` labels of `pagemesh_reachable`."""
_GAUGE = {
    Reachability.REACHABLE: 1.0,
    Reachability.UNREACHABLE: 0.0,
    Reachability.TLS_UNTRUSTED: 0.0,
}


class NodeReachability:
    """One node's checks as its operator sees them; `start` gives the URL to advertise."""

    def __init__(self, dht: DHTNode) -> None:
        self.dht = dht
        self.verdict: ReachVerdict | None = None
        self.url = ""
        self.learned = False
        """The URL's host is the address other nodes saw, not configured."""
        self._client: bool | None = None
        dht.url_dialer = dial_url
        dht.reach_listeners.append(self._checked)

    @property
    def client(self) -> bool:
        return self.dht.core.client

    async def start(self, bind_host: str, port: int, scheme: str, public_url: str) -> str:
        """The URL to advertise, after the first check when checks are on or the URL must
        be learned (a wildcard `bind_host` without `public_url`); bounded by the check's
        own deadlines (`rpc_timeout` twice, `probe_wait`: 9 s by default)."""
        checks = self.dht.core.config.reach.check
        if public_url:
            self.url = public_url
        elif not is_wildcard(bind_host):
            self.url = f"{scheme}://{_bracketed(bind_host)}:{port}"
        else:
            verdict = await self._check(f"{scheme}://:{port}")
            if verdict is None or verdict.observed is None:
                raise ReachabilityError(self._cannot_learn(bind_host, verdict))
            self.url = f"{scheme}://{_bracketed(verdict.observed[0])}:{port}"
            self.learned = True
            self.dht.core.set_reach_url(self.url, None)
            log.info("advertising %s, the address other nodes see this node at", self.url)
            return self.url
        if checks:
            await self._check(self.url)
        return self.url

    async def _check(self, url: str) -> ReachVerdict | None:
        """One check now; None if it could not run (the node then serves as it is, and the
        core's schedule tries again)."""
        host = URL(url).host if "://:" not in url else None
        hosts = None
        if host and canonical_ip(host) is None:
            hosts = await resolve_host(host)
        config = self.dht.core.config
        limit = 2 * config.rpc_timeout + config.reach.probe_wait + DIAL_TIMEOUT
        try:
            return await asyncio.wait_for(self.dht.check_reach(url, hosts), limit)
        except (TimeoutError, LocalProtocolError) as exc:
            log.warning("reachability check could not run: %s", exc or "timed out")
            return None

    def _cannot_learn(self, bind_host: str, verdict: ReachVerdict | None) -> str:
        why = "no other node was known to ask (no --bootstrap, no saved routing table)"
        if verdict is None:
            why = "the check could not run"
        elif verdict.helpers and len(verdict.reported) > 1:
            why = f"the nodes asked saw it at different addresses ({', '.join(verdict.reported)})"
        elif verdict.helpers:
            why = f"none of the {verdict.helpers} nodes asked answered"
        return (
            f"listening on {bind_host or 'every address'} without --public-url, and other "
            f"nodes cannot tell which address to advertise: {why}. Set --public-url "
            "(or public_url in [node]) to the URL clients and other nodes should dial."
        )

    # --- what the node says -------------------------------------------------------

    def _checked(self, event: ReachChecked) -> None:
        previous, self.verdict = self.verdict, event.verdict
        verdict = event.verdict
        if self.learned and verdict.address_changed and verdict.observed is not None:
            log.warning(
                "this node's address changed to %s, but it advertises %s: restart it "
                "(or set --public-url) so that others reach it",
                verdict.observed[0],
                self.url,
            )
        changed = previous is None or (
            previous.dht,
            previous.url,
            previous.url_tls,
            self._client,
        ) != (verdict.dht, verdict.url, verdict.url_tls, event.client)
        self._client = event.client
        advice = self.advice()
        if advice is not None and changed:
            log.warning("%s", advice)
        elif changed:
            log.info(
                "reachability: DHT %s, URL %s%s (%d of %d probes came back)",
                verdict.dht.value,
                verdict.url.value,
                ", running as a DHT client" if event.client else "",
                verdict.confirmed,
                verdict.helpers,
            )

    def advice(self) -> str | None:
        """What the person running the node should open, or which certificate serve,
        from the checks that failed."""
        verdict = self.verdict
        if verdict is None:
            return None
        ports = self._ports_advice(verdict)
        certificate = self._certificate_advice(verdict)
        if ports is not None and certificate is not None:
            return f"{ports} {certificate[0].upper()}{certificate[1:]}"
        return ports or certificate

    def _certificate_advice(self, verdict: ReachVerdict) -> str | None:
        if verdict.url is not Reachability.TLS_UNTRUSTED:
            return None
        url = self.url or verdict.checked_url
        failure = verdict.url_tls
        reason = failure.text or TlsFailure.UNTRUSTED.text
        if failure is TlsFailure.EXPIRED:
            fix = (
                "Renew it (certbot renew) and reload whatever serves it: the node "
                "(systemctl reload pagemesh-node, or SIGHUP) or its proxy."
            )
        elif failure is TlsFailure.NOT_YET_VALID:
            fix = "Check this machine's clock, and the certificate's start date."
        elif failure is TlsFailure.HOSTNAME_MISMATCH:
            fix = (
                f"It must name {urlsplit(url).hostname or 'the host of public_url'}, "
                "the host of public_url, as other nodes dial it."
            )
        elif failure is TlsFailure.NO_TLS:
            fix = (
                "Nothing answers TLS at that port: serve TLS there (tls_cert and "
                "tls_key, or a proxy that ends TLS), or advertise ws:// rather than wss://."
            )
        else:
            fix = (
                "Use a certificate from a CA other nodes trust (Let's Encrypt) and serve "
                "its whole chain: fullchain.pem, not cert.pem (tls_cert, or the proxy's "
                "ssl_certificate), then reload."
            )
        return (
            f"other nodes cannot verify this node's certificate at {url} ({reason}): "
            f"their links to it fail. {fix}"
        )

    def _ports_advice(self, verdict: ReachVerdict) -> str | None:
        closed = []
        dht_port = self.dht.address[1]
        if verdict.dht is Reachability.UNREACHABLE:
            closed.append(f"UDP port {dht_port} (the DHT)")
        if verdict.url is Reachability.UNREACHABLE:
            checked = urlsplit(verdict.checked_url)  # `ws://:8000` while the URL is learned
            port = checked.port or (443 if checked.scheme in ("wss", "https") else 80)
            shown = f", {self.url}" if self.url else ""
            closed.append(f"TCP port {port} (HTTP and WebSockets{shown})")
        if not closed:
            return None
        seen = ""
        if verdict.observed is not None:
            host, outside = verdict.observed
            seen = f" at {_bracketed(host)}"
            if verdict.dht is Reachability.UNREACHABLE and outside != dht_port:
                seen += f" (its DHT traffic leaves from port {outside} there: a NAT)"
        client = (
            " Until then it runs as a DHT client: it asks others, but holds no records and "
            "is in nobody's routing table."
            if self.client
            else ""
        )
        return (
            f"other nodes cannot reach this node{seen}: open {' and '.join(closed)} in its "
            "firewall and, behind a home router, forward them to this machine; or run "
            f"the node where it can be reached.{client}"
        )

    def report(self) -> dict[str, Any]:
        """The `reachability` object of `/healthz`."""
        verdict = self.verdict
        body: dict[str, Any] = {"client": self.client, "url_learned": self.learned}
        if verdict is None:
            body.update(dht="unchecked", url="unchecked")
            return body
        body.update(
            dht=verdict.dht.value,
            url=verdict.url.value if verdict.checked_url else "unchecked",
            checked_ago=round(max(0.0, time.time() - verdict.at), 1),
            probes=f"{verdict.confirmed} of {verdict.helpers}",
        )
        if verdict.url is Reachability.TLS_UNTRUSTED:
            body["url_tls"] = verdict.url_tls.text or TlsFailure.UNTRUSTED.text
        if verdict.observed is not None:
            body["seen_at"] = f"{_bracketed(verdict.observed[0])}:{verdict.observed[1]}"
        if verdict.url_refused:
            body["url_note"] = (
                "helpers would not dial the URL: its host is not the address this "
                "node's traffic comes from"
            )
        elif verdict.url_elsewhere:
            body["url_note"] = "the URL's name resolves elsewhere (a proxy?): not checked"
        advice = self.advice()
        if advice is not None:
            body["advice"] = advice
        return body

    def gauge(self, check: str) -> float:
        """`pagemesh_reachable{check}`: 1 reachable, 0 unreachable, -1 not known. `url`
        is 0 too when its certificate is refused (links to it fail); `url_tls` is 1 when
        helpers verified the certificate (an https/wss URL reachable), 0 when they
        refused it, -1 otherwise (not known, or plain http/ws)."""
        verdict = self.verdict
        if verdict is None:
            return -1.0
        if check == "url_tls":
            if verdict.url is Reachability.TLS_UNTRUSTED:
                return 0.0
            secure = urlsplit(verdict.checked_url).scheme in ("wss", "https")
            return 1.0 if secure and verdict.url is Reachability.REACHABLE else -1.0
        state = verdict.dht if check == "dht" else verdict.url
        return _GAUGE.get(state, -1.0)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """A helper's HTTP probe, `GET /healthz?reach=<nonce>`: noted and answered 204 here,
        before any handler (it may come while the node is still starting, and a probe
        needs no body)."""
        if request.path != "/healthz" or "reach" not in request.query:
            response: web.StreamResponse = await handler(request)
            return response
        value = request.query["reach"]
        if len(value) == NONCE_HEX:
            try:
                nonce = bytes.fromhex(value)
            except ValueError:
                nonce = b""
            if nonce:
                self.dht.url_probe_received(nonce)
        return web.Response(status=204)
