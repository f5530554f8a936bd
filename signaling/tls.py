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
with. The rules are the relay's TLS listener's (`relay/tls.py`, `ReloadingTls`),
with HTTP's ALPN label.
"""

from __future__ import annotations

import logging
from pathlib import Path

from relay.tls import ReloadingTls, TlsError, check_key_mode

__all__ = ["ServerTls", "TlsError", "check_key_mode"]


class ServerTls(ReloadingTls):
    """The TLS side of the node's listener: `context` for the socket, `reload()` on SIGHUP.
    Browsers speak HTTP/1.1 for WebSockets; aiohttp serves nothing else. Its log lines go
    to the node's logger (`signaling.node`), as the rest of what the node says."""

    def __init__(self, cert: Path, key: Path) -> None:
        super().__init__(cert, key, "http/1.1", "node", logging.getLogger("signaling.node"))
