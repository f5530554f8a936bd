"""The pages' module preloads (signaling/modules.py) against the import graph the
browser really walks, and the node's static answers (signaling/static.py).

Chromium loads each entry module from a plain server with no preloads, and the
modules it asked for must be exactly those `module_graph` lists; the node's page,
its widget and the extension's pages must name exactly that graph, every link
answered by the node. The page connects on the socket boot.js opened ahead of its
modules (js/early.js)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from pagemesh.extension import build
from signaling.modules import (
    MAX_MODULES,
    ModuleGraphError,
    imports,
    module_graph,
    preload_links,
    with_preloads,
)
from signaling.node import WEB_DIR
from signaling.static import MAX_TAGS, StaticFiles, matches
from tests.signaling.conftest import NodeFactory

ENTRIES = ["js/app.js", "js/widget.js", "js/boot.js", "extension/panel.js", "extension/options.js"]
PRELOAD = re.compile(r'<link rel="modulepreload" href="([^"]+)">')


def http(node: Any) -> str:
    return str(node.url).replace("ws://", "http://")


@pytest.fixture
async def plain_server() -> AsyncIterator[str]:
    """signaling/web/ as files under /web/, and /probe?entry=PATH: a page with only that
    module's script tag (no preloads), on 127.0.0.1."""

    async def probe(request: web.Request) -> web.Response:
        entry = request.query["entry"]
        body = (
            f'<!doctype html><title>probe</title><script type="module" src="/web/{entry}"></script>'
        )
        return web.Response(text=body, content_type="text/html")

    app = web.Application()
    app.router.add_get("/probe", probe)
    app.router.add_static("/web", WEB_DIR)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.browser
@pytest.mark.parametrize("entry", ENTRIES)
async def test_the_graph_is_what_the_browser_loads(
    chromium: Any, plain_server: str, entry: str
) -> None:
    context = await chromium.new_context()
    try:
        page = await context.new_page()
        asked: list[str] = []
        page.on("request", lambda request: asked.append(request.url))
        # module scripts run before `load`: by then every module of the graph was fetched
        # (the extension's modules fail when they run, outside an extension: no matter)
        await page.goto(f"{plain_server}/probe?entry={entry}", wait_until="load")
        web_ = plain_server + "/web/"
        loaded = {u.removeprefix(web_) for u in asked if u.startswith(web_) and u.endswith(".js")}
    finally:
        await context.close()
    listed = {p.relative_to(WEB_DIR).as_posix() for p in module_graph(WEB_DIR / entry, WEB_DIR)}
    assert loaded == listed
    assert len(listed) >= 3  # the graph was walked, not only its entry


async def test_the_node_pages_preload_exactly_their_graph(signaling_mesh: NodeFactory) -> None:
    (node,) = await signaling_mesh(1)
    async with aiohttp.ClientSession() as session:
        for path, entry in [("/", "js/app.js"), ("/widget", "js/widget.js")]:
            async with session.get(http(node) + path) as response:
                page = await response.text()
            hrefs = PRELOAD.findall(page)
            # boot.js first (async: the database and the socket start early), then the page's
            entries = [WEB_DIR / "js" / "boot.js", WEB_DIR / entry]
            graph = {m for e in entries for m in module_graph(e, WEB_DIR)} - set(entries)
            assert len(hrefs) == len(set(hrefs)) == len(graph)
            assert set(hrefs) == {f"/web/{m.relative_to(WEB_DIR).as_posix()}" for m in graph}
            assert '<script type="module" async src="/web/js/boot.js"></script>' in page
            assert f'<script type="module" src="/web/{entry}"></script>' in page
            assert page.index("boot.js") < page.index(entry) < page.index("modulepreload")
            assert "<script>" not in page  # still no inline script: the CSP stays strict
            for href in hrefs:
                async with session.get(http(node) + href) as response:
                    assert response.status == 200, href
                    assert response.content_type == "text/javascript"


def test_the_extension_pages_preload_exactly_their_graph(tmp_path: Path) -> None:
    built, _ = build(tmp_path / "ext", ["ws://127.0.0.1:8000"])
    for name in ("panel", "options"):
        page = (built / "extension" / f"{name}.html").read_text()
        hrefs = PRELOAD.findall(page)
        graph = module_graph(WEB_DIR / "extension" / f"{name}.js", WEB_DIR)
        assert hrefs == [f"../{m.relative_to(WEB_DIR).as_posix()}" for m in graph[1:]]
        for href in hrefs:  # the built folder holds each, where the page looks for it
            assert (built / "extension" / href).resolve().is_file(), href


async def test_the_node_answers_with_validators_and_304(signaling_mesh: NodeFactory) -> None:
    (node,) = await signaling_mesh(1)
    async with aiohttp.ClientSession() as session:
        for path in ["/web/js/peer.js", "/web/style.css", "/"]:
            async with session.get(http(node) + path) as response:
                assert response.status == 200
                etag = response.headers["ETag"]
                assert response.headers["Cache-Control"] == "no-cache"
                body = await response.read()
            assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
            async with session.get(http(node) + path, headers={"If-None-Match": etag}) as again:
                assert again.status == 304 and await again.read() == b""
                assert again.headers["ETag"] == etag
            stale = '"' + "0" * 32 + '"'
            async with session.get(http(node) + path, headers={"If-None-Match": stale}) as other:
                assert other.status == 200 and await other.read() == body
        async with session.get(http(node) + "/web/js/peer.js") as response:
            assert await response.read() == (WEB_DIR / "js" / "peer.js").read_bytes()


async def serve(files: StaticFiles) -> tuple[web.AppRunner, str]:
    """`files` served on 127.0.0.1 alone: its runner (to clean up) and origin."""
    app = web.Application()
    app.add_routes([files.route()])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def test_the_static_files_are_only_the_folders(tmp_path: Path) -> None:
    # An attacker's paths find nothing outside the folder; an edited file is served anew.
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "a.js").write_text("export const a = 1;\n")
    (tmp_path / "secret.txt").write_text("key")
    (tmp_path / "web" / ".hidden").write_text("x")
    runner, base = await serve(StaticFiles(tmp_path / "web", "/web"))
    try:
        async with aiohttp.ClientSession() as session:
            for path in [
                "/web/../secret.txt",
                "/web/%2e%2e/secret.txt",
                "/web/..%2fsecret.txt",
                "/web//etc/passwd",
                "/web/.hidden",
                "/web/b.js",
            ]:
                async with session.get(base + path) as response:
                    assert response.status == 404, path
                    assert b"key" not in await response.read()
            async with session.get(base + "/web/a.js") as response:
                first = response.headers["ETag"]
                assert await response.read() == b"export const a = 1;\n"
            (tmp_path / "web" / "a.js").write_text("export const a = 22;\n")
            async with session.get(base + "/web/a.js", headers={"If-None-Match": first}) as again:
                assert again.status == 200 and again.headers["ETag"] != first
                assert await again.read() == b"export const a = 22;\n"
    finally:
        await runner.cleanup()


async def test_every_document_gets_the_page_headers(tmp_path: Path) -> None:
    # Any file a browser would open as a page of the node's origin (whatever the case of
    # its suffix) carries the page's policy, on a 304 too; a module or sheet does not.
    policy = {"Content-Security-Policy": "default-src 'self'", "Referrer-Policy": "no-referrer"}
    documents = ["a.html", "b.HTML", "c.htm", "d.svg", "e.xhtml", "f.xml"]
    others = ["g.js", "h.css", "i.json"]
    for name in documents + others:
        (tmp_path / name).write_text("x")
    runner, origin = await serve(StaticFiles(tmp_path, "/web", page_headers=policy))
    base = f"{origin}/web/"
    try:
        async with aiohttp.ClientSession() as session:
            for name in documents + others:
                async with session.get(base + name) as response:
                    assert response.status == 200, name
                    etag = response.headers["ETag"]
                    got = {key: response.headers.get(key) for key in policy}
                    assert got == (policy if name in documents else dict.fromkeys(policy)), name
                async with session.get(base + name, headers={"If-None-Match": etag}) as again:
                    assert again.status == 304, name
                    got = {key: again.headers.get(key) for key in policy}
                    assert got == (policy if name in documents else dict.fromkeys(policy)), name
    finally:
        await runner.cleanup()


@pytest.mark.browser
@pytest.mark.parametrize("first_node", [None, "ws://127.0.0.1:9"])
async def test_the_page_connects_on_the_socket_boot_opened(
    signaling_mesh: NodeFactory, chromium: Any, first_node: str | None
) -> None:
    # boot.js opens the socket to the page's node ahead of the modules; the page takes
    # it rather than open another (and a page told to try another node first opens
    # none early: it goes there first, then home, one socket each).
    (node,) = await signaling_mesh(1)
    home = node.url + "/v1/ws"
    context = await chromium.new_context()
    try:
        page = await context.new_page()
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        query = "name=early" + (f"&node={first_node}" if first_node else "")
        await page.goto(f"{http(node)}/?{query}")
        await page.wait_for_selector("#status[data-state=connected]", timeout=15_000)
        await page.wait_for_function("window.pagemesh.peer.node !== null")
        key = await page.evaluate("window.pagemesh.peer.keyHex")
        assert [url for url in sockets if url == home] == [home]
        assert set(sockets) <= {home, f"{first_node}/v1/ws"}
        assert [client.key.hex() for client in node.clients.values()] == [key]
    finally:
        await context.close()


# --- If-None-Match, on made-up headers ---

TAG = st.from_regex(r'"[0-9a-f]{32}"', fullmatch=True)


@given(st.lists(TAG, max_size=80), TAG, st.booleans(), st.text(max_size=200))
def test_if_none_match_names_the_tag_or_not(
    tags: list[str], etag: str, weak: bool, junk: str
) -> None:
    listed = [("W/" if weak else "") + tag for tag in tags]
    header = ", ".join(listed)
    assert matches(header, etag) == (etag in tags[:MAX_TAGS])
    assert matches("*", etag) and not matches("", etag)
    matches(junk, etag)  # any header: an answer, never an exception
    if '"' not in junk and "*" not in junk:
        assert not matches(junk, etag)


# --- the import scanner, on made-up modules ---

SPEC = st.from_regex(r"\.\.?/[a-z][a-z0-9_-]{0,12}\.js", fullmatch=True)
NAME = st.from_regex(r"[A-Za-z_$][A-Za-z0-9_$]{0,8}", fullmatch=True).filter(
    lambda n: n not in {"from", "as", "import", "export"}
)
FORMS = [
    lambda names, spec: f'import "{spec}";',
    lambda names, spec: f"import {names[0]} from '{spec}';",
    lambda names, spec: f'import {{ {", ".join(names)} }} from "{spec}";',
    lambda names, spec: "import {\n  " + ",\n  ".join(names) + f'\n}} from "{spec}";',
    lambda names, spec: f'import * as {names[0]} from "{spec}"',
    lambda names, spec: f'import {names[0]}, {{ {names[-1]} as x }} from "{spec}";',
    lambda names, spec: f'export {{ {", ".join(names)} }} from "{spec}";',
    lambda names, spec: f'export * from "{spec}";',
]
# Code that says `from` and names a module without importing it.
DECOYS = [
    '// an old import: import { x } from "./old.js";',
    "  const text = \"import y from './not.js'\";",
    'export function from(a) { return "./no.js"; }',
    "export const WORDS = ['from', './nope.js'];",
    '/* import "./comment.js" */',
    'export function parse(hash) {\n  // a value from "#room=..."\n  return hash;\n}',
    'const later = () => import("./dynamic.js");',
]


@given(
    st.lists(
        st.tuples(SPEC, st.sampled_from(range(len(FORMS))), st.lists(NAME, min_size=1, max_size=4)),
        max_size=12,
    ),
    st.lists(st.sampled_from(DECOYS), max_size=6),
)
def test_imports_finds_the_static_imports_and_nothing_else(
    statements: list[tuple[str, int, list[str]]], decoys: list[str]
) -> None:
    lines = [FORMS[form](names, spec) for spec, form, names in statements]
    source = "\n".join(decoys + lines + decoys)
    expected = list(dict.fromkeys(spec for spec, _, _ in statements))
    assert imports(source) == expected


def test_a_graph_that_leaves_its_folder_or_grows_without_end_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "web"
    root.mkdir()
    (tmp_path / "outside.js").write_text("export const x = 1;\n")
    (root / "a.js").write_text('import { x } from "../outside.js";\n')
    with pytest.raises(ModuleGraphError, match="not a module under"):
        module_graph(root / "a.js", root)
    (root / "b.js").write_text('import "./missing.js";\n')
    with pytest.raises(ModuleGraphError, match="not a module under"):
        module_graph(root / "b.js", root)
    (root / "c.js").write_text('import { y } from "https://cdn.example/y.js";\n')
    with pytest.raises(ModuleGraphError, match="not a relative path"):
        module_graph(root / "c.js", root)
    # a chain longer than the bound, and a cycle (walked once)
    for i in range(MAX_MODULES + 1):
        (root / f"m{i}.js").write_text(f'import "./m{i + 1}.js";\n' if i < MAX_MODULES else "")
    with pytest.raises(ModuleGraphError, match="more than"):
        module_graph(root / "m0.js", root)
    (root / "p.js").write_text('import "./q.js";\n')
    (root / "q.js").write_text('import "./p.js";\nimport "./p.js";\n')
    assert [m.name for m in module_graph(root / "p.js", root)] == ["p.js", "q.js"]
    assert preload_links([root / "p.js"], root, "/s/") == (
        '<link rel="modulepreload" href="/s/q.js">'
    )
    assert preload_links([root / "p.js", root / "q.js"], root, "/s/") == ""
    with pytest.raises(ModuleGraphError, match="no module script"):
        with_preloads("<head></head>", root, root, "/s/")
