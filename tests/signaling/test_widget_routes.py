"""What a node serves for the widget a site embeds (docs/widget.md), seen from the wire:
`/embed.js` is a script any site may load (CORS and CORP open, a JavaScript type that
is not sniffed), `/widget` may be framed by the sites in `widget_ancestors` (any site
by default) and by no one when the list is empty, and every other route keeps
`frame-ancestors 'none'`. A list entry that is not one CSP source is refused at
start: a config file cannot inject another directive into the header."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from dht.options import ConfigError
from signaling.config import load_node_config
from signaling.node import WEB_DIR, SignalingNode
from signaling.widget import frame_ancestors, widget_page

from .conftest import NodeFactory


def http(node: SignalingNode) -> str:
    return node.url.replace("ws://", "http://")


def directive(csp: str, name: str) -> str:
    """The value of one directive of a Content-Security-Policy header ('' if absent)."""
    for part in csp.split(";"):
        words = part.split()
        if words and words[0] == name:
            return " ".join(words[1:])
    return ""


async def test_embed_js_is_a_script_any_site_may_load(signaling_mesh: NodeFactory) -> None:
    (node,) = await signaling_mesh(1)
    async with aiohttp.ClientSession() as session:
        headers = {"Origin": "https://a-site.example", "Referer": "https://a-site.example/"}
        async with session.get(http(node) + "/embed.js", headers=headers) as response:
            assert response.status == 200
            assert response.content_type == "text/javascript"
            assert response.charset == "utf-8"
            assert response.headers["Access-Control-Allow-Origin"] == "*"
            assert response.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert "max-age=" in response.headers["Cache-Control"]
            assert "/widget" in await response.text()


async def test_only_the_widget_may_be_framed(signaling_mesh: NodeFactory) -> None:
    (node,) = await signaling_mesh(1)
    async with aiohttp.ClientSession() as session:
        async with session.get(http(node) + "/widget") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            csp = response.headers["Content-Security-Policy"]
            assert directive(csp, "frame-ancestors") == "*"
            assert directive(csp, "default-src") == "'self'"  # the page's own policy otherwise
            assert "X-Frame-Options" not in response.headers
            assert response.headers["Referrer-Policy"] == "no-referrer"
            assert 'class="widget"' in await response.text()
        for path in [
            "/",
            "/healthz",
            "/metrics",
            "/web/js/peer.js",
            "/web/style.css",
            "/embed.js",
            "/no-such-page",
            "/widget/",
            "/v1/ws",  # not an upgrade: refused, and still not frameable
        ]:
            async with session.get(http(node) + path) as response:
                csp = response.headers.get("Content-Security-Policy", "")
                assert directive(csp, "frame-ancestors") == "'none'", (path, csp)
                assert response.headers.get("X-Frame-Options") == "DENY", path


async def test_a_node_names_the_sites_that_may_frame_its_widget(
    signaling_mesh: NodeFactory,
) -> None:
    some, none = await signaling_mesh(
        2, widget_ancestors=("https://blog.example", "https://*.example.org")
    )
    await none.stop(moving=False)
    (closed,) = await signaling_mesh(1, widget_ancestors=())
    async with aiohttp.ClientSession() as session:
        async with session.get(http(some) + "/widget") as response:
            csp = response.headers["Content-Security-Policy"]
            assert directive(csp, "frame-ancestors") == "https://blog.example https://*.example.org"
        async with session.get(http(closed) + "/widget") as response:
            csp = response.headers["Content-Security-Policy"]
            assert directive(csp, "frame-ancestors") == "'none'"


@pytest.mark.parametrize(
    "sources",
    [
        ("https://a.example; script-src *",),  # a second directive smuggled in
        ("https://a.example https://b.example",),  # two sources in one entry
        ("'unsafe-inline'",),
        ("https://a.example/\r\nSet-Cookie: x=1",),
        ("",),
        ("https://a.example,https://b.example",),
        ("javascript:",),
    ],
)
def test_an_entry_that_is_not_one_source_is_refused(
    sources: tuple[str, ...], tmp_path: Path
) -> None:
    with pytest.raises(ValueError):
        frame_ancestors(sources)
    config = tmp_path / "node.toml"
    config.write_text(f"[node]\nwidget_ancestors = {json.dumps(list(sources))}\n")
    with pytest.raises(ConfigError, match="widget_ancestors"):
        load_node_config(config)


def test_the_sources_a_node_may_name() -> None:
    assert frame_ancestors(()) == "'none'"
    assert frame_ancestors(("*",)) == "*"
    assert frame_ancestors(("'self'", "https:", "http://localhost:8080")) == (
        "'self' https: http://localhost:8080"
    )
    assert frame_ancestors(("https://*.example.org:*",)) == "https://*.example.org:*"


def test_the_widget_is_the_page_with_its_own_sheet_and_module() -> None:
    index = (WEB_DIR / "index.html").read_text()
    page = widget_page(index)
    assert page.count('<body class="widget">') == 1
    assert '<script type="module" src="/web/js/widget.js"></script>' in page
    assert "/web/js/app.js" not in page
    assert page.index("/web/style.css") < page.index("/web/widget.css")
    # One markup for both: everything else is the page's own.
    assert page.replace('<body class="widget">', "<body>").count("\n") == index.count("\n") + 1
    with pytest.raises(ValueError, match=r"app\.js"):
        widget_page(index.replace("/web/js/app.js", "/web/js/main.js"))


async def test_every_page_under_web_carries_the_policy_of_the_node_page(
    signaling_mesh: NodeFactory,
) -> None:
    # /web/index.html is the whole client on the node's origin: a link to it must not
    # skip the policy `/` has (an injected tag would run there otherwise). The widget
    # still names its own ancestors.
    (node,) = await signaling_mesh(1, widget_ancestors=("https://blog.example",))
    pages = sorted(p.relative_to(WEB_DIR).as_posix() for p in WEB_DIR.rglob("*.html"))
    assert {"index.html", "extension/panel.html", "extension/options.html"} <= set(pages)
    async with aiohttp.ClientSession() as session:
        async with session.get(http(node) + "/") as response:
            policy = response.headers["Content-Security-Policy"]
            referrer = response.headers["Referrer-Policy"]
        assert directive(policy, "default-src") == "'self'"
        assert directive(policy, "object-src") == "'none'"
        assert directive(policy, "base-uri") == "'none'"
        for page in pages:
            async with session.get(f"{http(node)}/web/{page}") as response:
                assert response.status == 200, page
                assert response.content_type == "text/html"
                assert response.headers["Content-Security-Policy"] == policy, page
                assert response.headers["Referrer-Policy"] == referrer, page
                assert response.headers["X-Frame-Options"] == "DENY", page
                etag = response.headers["ETag"]
            revalidate = {"If-None-Match": etag}
            async with session.get(f"{http(node)}/web/{page}", headers=revalidate) as again:
                assert again.status == 304, page
                assert again.headers["Content-Security-Policy"] == policy, page
                assert again.headers["Referrer-Policy"] == referrer, page
        async with session.get(http(node) + "/web/js/app.js") as response:
            assert response.status == 200 and response.content_type == "text/javascript"
        async with session.get(http(node) + "/widget") as response:
            csp = response.headers["Content-Security-Policy"]
            assert directive(csp, "frame-ancestors") == "https://blog.example"
            assert "X-Frame-Options" not in response.headers
