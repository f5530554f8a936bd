"""What a node serves for the chat widget a site embeds (docs/widget.md), and who may
frame what.

- `/embed.js`: the script a site owner adds to their pages. Any site may load it
  (CORS and CORP open); it draws a launcher and frames `/widget` on demand.
- `/widget`: the chat, compact, in that iframe. Framed only by the sites in the
  node's `widget_ancestors` (CSP `frame-ancestors`; any site by default).
- Every other response forbids framing (`frame-ancestors 'none'` and, for
  browsers older than CSP 2, `X-Frame-Options: DENY`), whatever route or error
  made it: a page framing `/` cannot dress the node's page in its own clothes.

The host page's URL never reaches the node: embed.js hands it to the iframe by
postMessage, and the iframe canonicalises and hashes it as the page does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from aiohttp import web

WIDGET_PATH = "/widget"
EMBED_PATH = "/embed.js"

EMBED_HEADERS = {
    "Content-Type": "text/javascript; charset=utf-8",
    # Loaded by <script src> from any site: nothing to hide, nothing that depends on who asks.
    "Access-Control-Allow-Origin": "*",
    "Cross-Origin-Resource-Policy": "cross-origin",
    "X-Content-Type-Options": "nosniff",
    # An hour: a site's every page view need not ask again; a node's upgrade reaches
    # visitors within that.
    "Cache-Control": "public, max-age=3600",
    "Referrer-Policy": "no-referrer",
}

NO_FRAMING = "frame-ancestors 'none'"

# One CSP source expression (CSP3 2.3.1) of the kinds a node may list: `*`, `'self'`,
# a scheme (`https:`), or a host with an optional scheme, `*.` prefix and port. No
# path, no whitespace, no `;` or `,`: an entry can never add a source or a directive.
_SOURCE = re.compile(
    r"""\*|'self'|https?:|(?:https?://)?(?:\*\.)?[a-z0-9-]+(?:\.[a-z0-9-]+)*(?::(?:[0-9]{1,5}|\*))?""",
    re.IGNORECASE,
)


def frame_ancestors(sources: Iterable[str]) -> str:
    """The value of `frame-ancestors` for the widget: the sources, or `'none'` for an
    empty list. ValueError naming the first entry that is not one source."""
    listed = list(sources)
    for source in listed:
        if _SOURCE.fullmatch(source) is None:
            raise ValueError(
                f"{source!r} is not one CSP source (*, 'self', https:, https://site.example, "
                "https://*.site.example:port)"
            )
    return " ".join(listed) if listed else "'none'"


def widget_headers(page_headers: dict[str, str], ancestors: str) -> dict[str, str]:
    """The page's headers with its `frame-ancestors 'none'` replaced by `ancestors`."""
    csp = page_headers["Content-Security-Policy"]
    if NO_FRAMING not in csp:
        raise ValueError("the page's policy must forbid framing for the widget to allow it")
    return {
        **page_headers,
        "Content-Security-Policy": csp.replace(NO_FRAMING, f"frame-ancestors {ancestors}"),
    }


# What the widget's document changes in the page's (index.html), each found exactly once.
_WIDGET_EDITS = (
    ("<body>", '<body class="widget">'),
    (
        '<link rel="stylesheet" href="/web/style.css">',
        '<link rel="stylesheet" href="/web/style.css">\n'
        '  <link rel="stylesheet" href="/web/widget.css">',
    ),
    (
        '<script type="module" src="/web/js/app.js"></script>',
        '<script type="module" src="/web/js/widget.js"></script>',
    ),
)


def widget_page(index: str) -> str:
    """The widget's document: the node's page (`index`, index.html) with the widget's
    style sheet and module instead of the page's, and `class="widget"` on its body, so
    both show one chat markup and neither copies it. ValueError if the page changed
    shape (the node then refuses to start: caught by the tests, not by a visitor)."""
    for old, new in _WIDGET_EDITS:
        if index.count(old) != 1:
            raise ValueError(f"index.html should hold {old!r} once")
        index = index.replace(old, new)
    return index


async def forbid_framing(_request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: a response that says nothing about framing forbids it.

    Handlers that allow it (the widget) set their own `frame-ancestors`; a policy that
    lacks the directive gets it added."""
    csp = response.headers.get("Content-Security-Policy", "")
    if "frame-ancestors" not in csp:
        response.headers["Content-Security-Policy"] = f"{csp}; {NO_FRAMING}" if csp else NO_FRAMING
    if NO_FRAMING in response.headers["Content-Security-Policy"]:
        response.headers["X-Frame-Options"] = "DENY"
