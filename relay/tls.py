"""TURN over TLS (RFC 8656 section 3.1, `turns:` URLs): the relay's certificate and key.

Over TLS a TURN client speaks exactly what it speaks over TCP (the same stream of STUN
messages and padded ChannelData, RFC 8656 section 12.5); TLS only wraps the stream. Its
use is reach: a network that lets nothing out but TCP to port 443 (many offices, hotels,
schools) still lets a browser reach a relay listening there with `turns:`.

Who may do what: the operator (whoever can write the files and signal the process) may
swap the certificate at any time with `reload()` (SIGHUP for `pagemesh relay`); a client
that is connected keeps its connection, one that connects afterwards sees the new
certificate. Nobody else may read the key: a key file its group or other users could read
or write is refused, at start and at every reload (the rule of the node's own keys).

The listener keeps one `ssl.SSLContext` for its whole life; each load builds a fresh
context, and only one that loaded completely becomes current: the listening context's
SNI callback (OpenSSL calls it for every ClientHello, with or without a server name)
hands each new handshake to it. So a bad pair on reload changes nothing, and no
half-loaded context (a new certificate beside the old key) ever answers a handshake.
The node's own HTTPS listener (`signaling/tls.py`) is the same `ReloadingTls` with
HTTP's ALPN label.
"""

from __future__ import annotations

import logging
import ssl
import stat
from pathlib import Path

log = logging.getLogger("pagemesh.relay")

ALPN = "stun.turn"
"""RFC 7443's ALPN label for TURN over TLS; a client offering none or others is served too."""


class TlsError(Exception):
    """The certificate or key cannot be used; the message names the file and the reason."""


def check_key_mode(path: Path, user: str = "relay") -> None:
    """TlsError unless only the owner may read or write `path` (no group or other bits)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise TlsError(f"cannot read TLS key {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise TlsError(
            f"TLS key {path} has mode {mode:04o}: others may read it; "
            f"make it readable by the {user}'s user only (chmod 600 {path})"
        )


def load_context(cert: Path, key: Path, alpn: str = ALPN, user: str = "relay") -> ssl.SSLContext:
    """A server context with the PEM chain in `cert` and its key in `key`."""
    check_key_mode(key, user)

    def no_passphrase() -> bytes:
        # An encrypted key would make OpenSSL prompt on a terminal a service does not have.
        raise TlsError(f"the TLS key is encrypted; give the {user} an unencrypted key (mode 0600)")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols([alpn])
    try:
        context.load_cert_chain(cert, key, password=no_passphrase)
    except TlsError:
        raise
    except FileNotFoundError as exc:
        raise TlsError(f"cannot read {exc.filename}: no such file") from None
    except OSError as exc:  # ssl.SSLError is an OSError too
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        raise TlsError(f"cannot use certificate {cert} with key {key}: {reason}") from None
    return context


class ReloadingTls:
    """A listener's context (`context`, fixed: give it to the socket once) and `reload()`
    for a renewed pair; `alpn` is the one protocol offered, `user` whose key it is (named
    in refusals), `listener` what the log lines call it, `logger` where they go (the
    listener's owner's: the node's for the node's HTTPS, the relay's for `turns:`)."""

    def __init__(
        self,
        cert: Path,
        key: Path,
        alpn: str,
        user: str,
        logger: logging.Logger | None = None,
        listener: str = "",
    ) -> None:
        """TlsError when the files do not hold a usable certificate and key."""
        self.cert = cert
        self.key = key
        self.alpn = alpn
        self.user = user
        self.listener = listener or f"{user} TLS"
        self.log = logger or log
        self.context = load_context(cert, key, alpn, user)
        self._current = self.context
        self.context.sni_callback = self._select
        self.reloads = 0
        self.failed_reloads = 0

    def _select(
        self, connection: ssl.SSLObject, _name: str | None, context: ssl.SSLContext
    ) -> None:
        if self._current is not context:
            connection.context = self._current

    def reload(self) -> bool:
        """Load the files again: new handshakes use them, or (failing: logged, False)
        the previous pair; connections already up keep the context they were made with."""
        try:
            fresh = load_context(self.cert, self.key, self.alpn, self.user)
        except TlsError as exc:
            self.failed_reloads += 1
            self.log.error(
                "%s reload failed, keeping the previous certificate: %s", self.listener, exc
            )
            return False
        self._current = fresh
        self.reloads += 1
        self.log.info("%s certificate reloaded from %s", self.listener, self.cert)
        return True


class RelayTls(ReloadingTls):
    """The TURN-over-TLS listener's certificate: ALPN `stun.turn`. `user` is whose key it
    is: "relay", or "node" when a node's relay uses the node's own pair."""

    def __init__(self, cert: Path, key: Path, user: str = "relay") -> None:
        super().__init__(cert, key, ALPN, user, log, "relay TLS (turns:)")
