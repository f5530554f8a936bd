"""How a node checks another node's certificate: one rule for the links it opens
(signaling/links.py) and for the HTTP probes it makes for other nodes' reachability
checks (signaling/reachability.py), so that a probe that gets through means a link
would, and a certificate links refuse is reported to its node by the probe.

The rule is Python's default for a TLS client: the system's trust store as OpenSSL
finds it (the files named by `SSL_CERT_FILE` and `SSL_CERT_DIR` instead, when set;
tests trust their own CA so), the URL's host (a name, or an IP literal) checked
against the certificate's names, TLS 1.2 or later.
"""

from __future__ import annotations

import functools
import os
import ssl


def node_tls_context() -> ssl.SSLContext:
    """The context a node verifies other nodes with (see the module docstring).

    Loading a trust store takes milliseconds, and probes come up to 60 a minute: one
    context is kept per `SSL_CERT_FILE`/`SSL_CERT_DIR` pair, so setting either (a test
    trusting its CA) takes effect at the next call, and a store updated on disk at the
    node's next start, as for any long-running TLS client.
    """
    return _context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=4)
def _context(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    # The arguments are the cache key: create_default_context reads the same variables.
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
