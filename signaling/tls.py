"""A node that serves TLS itself: certificate and key from files, reloaded on SIGHUP.

Who may do what: the operator (whoever can write the certificate files and
send the node a signal) may swap the certificate at any time; a client that
is connected keeps its connection, a client that connects afterwards sees the
new certificate. Nobody else may read the key: the node refuses a key file
that its group or other users could read or write (mode 0600 or 0400, as the
node's own `node.key`), at start and at every reload.

The listening socket keeps one `ssl.SSLContext` for its whole life. Every
load builds a *fresh* context from the files; only a context that loaded
completely (certificate chain, matching key) becomes the current one, and
the listening context's SNI callback hands each new handshake to the current
context (OpenSSL calls it for every ClientHello, with or without a server
name). So a bad pair on reload changes nothing, and there is no moment at
which a half-loaded context (a new certificate beside the old key) could
answer a handshake. Connections already up keep the context they were made
with.
"""

from __future__ import annotations

import logging
import ssl
import stat
from pathlib import Path

log = logging.getLogger(__name__)


class TlsError(Exception):
    """The certificate or key could not be used; the message says which file and why."""


def check_key_mode(path: Path) -> None:
    """TlsError unless only the owner may read or write `path` (no group or other bits)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise TlsError(f"cannot read TLS key {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise TlsError(
            f"TLS key {path} has mode {mode:04o}: others may read it; "
            f"make it readable by the node's user only (chmod 600 {path})"
        )


def _no_passphrase() -> bytes:
    # An encrypted key would otherwise make OpenSSL prompt on the terminal: a service
    # has none. With this the load fails with an error naming the file instead.
    raise TlsError("the TLS key is encrypted; give the node an unencrypted key (mode 0600)")


def load_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context holding the chain in `cert` and the key in `key` (PEM)."""
    check_key_mode(key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Browsers speak HTTP/1.1 for WebSockets; aiohttp serves nothing else.
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except TlsError:
        raise
    except FileNotFoundError as exc:
        raise TlsError(f"cannot read {exc.filename}: no such file") from None
    except OSError as exc:  # ssl.SSLError is an OSError too
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        raise TlsError(f"cannot use certificate {cert} with key {key}: {reason}") from None
    return context


class ServerTls:
    """The TLS side of the node's listener: `context` for the socket, `reload()` on SIGHUP."""

    def __init__(self, cert: Path, key: Path) -> None:
        """TlsError when the files do not hold a usable certificate and key."""
        self.cert = cert
        self.key = key
        self.context = load_context(cert, key)
        """Given to the listening socket once; it never changes."""
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
        """Load the files again. On success new handshakes use them; on failure the
        previous certificate stays and the reason is logged (the node keeps running)."""
        try:
            fresh = load_context(self.cert, self.key)
        except TlsError as exc:
            self.failed_reloads += 1
            log.error("TLS reload failed, keeping the previous certificate: %s", exc)
            return False
        self._current = fresh
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.cert)
        return True
