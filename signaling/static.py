"""The browser client's files (signaling/web/), served from memory with validators.

A page load asks for some 25 modules at once; aiohttp's file responses open, stat
and send each file through a worker thread, several times slower on a loaded
machine than an answer from memory. Each file is read once and read again only
when its size or modification time changes (so an edited module shows on the next
reload, as before). Every answer carries a strong ETag (a hash of the bytes) and
`Cache-Control: no-cache`: a browser that has the file revalidates it and gets
`304 Not Modified` with no body, and never runs a module of one version beside one
of another after a node's upgrade (a max-age could mix them).

Only files under the folder, found when it starts, are served; a name that is not
one of them is a 404 (no path is ever joined to a request's path).

A document (HTML, XHTML, SVG or XML, by the type it is served as) is a page of the
node's origin like the one at `/`: it answers with `page_headers` (the node gives
its page's Content-Security-Policy and Referrer-Policy), on a 304 as on a 200, so a
link to `/web/index.html` does not run the client without the page's policy.
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

MAX_FILES = 512
"""The most files served from one folder (the client has about 40)."""
MAX_FILE_BYTES = 4 << 20
"""The largest file served (the largest module is about 50 kB)."""
CACHE_CONTROL = "no-cache"
"""Keep it, but ask each time: a 304 costs a round trip and no bytes."""
TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".json": "application/json",
}
DOCUMENT_TYPES = frozenset(
    {"text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml"}
)
"""The types a browser runs as a document (scripts and all): they get `page_headers`."""


@dataclass(frozen=True, slots=True)
class Cached:
    size: int
    mtime_ns: int
    body: bytes
    etag: str


class StaticFiles:
    """GET /PREFIX/{path}: the files under `root`, from memory."""

    def __init__(self, root: Path, prefix: str, page_headers: Mapping[str, str] = {}) -> None:
        self.root = root.resolve()
        self.prefix = prefix.rstrip("/")
        self.page_headers = dict(page_headers)
        names = sorted(
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.parts)
        )
        if len(names) > MAX_FILES:
            raise ValueError(f"{root} holds more than {MAX_FILES} files")
        self.names = frozenset(names)
        self._cache: dict[str, Cached] = {}

    def route(self) -> web.RouteDef:
        return web.get(self.prefix + "/{path:.+}", self.handle)

    def _load(self, name: str) -> Cached | None:
        path = self.root / name
        try:
            stat = path.stat()
        except OSError:
            return None
        cached = self._cache.get(name)
        now = (stat.st_size, stat.st_mtime_ns)
        if cached is not None and (cached.size, cached.mtime_ns) == now:
            return cached
        if stat.st_size > MAX_FILE_BYTES:
            return None
        body = path.read_bytes()
        cached = Cached(stat.st_size, stat.st_mtime_ns, body, etag_of(body))
        self._cache[name] = cached
        return cached

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["path"]
        cached = self._load(name) if name in self.names else None
        if cached is None:
            raise web.HTTPNotFound()
        headers = {"ETag": cached.etag, "Cache-Control": CACHE_CONTROL}
        if is_document(name):
            headers = {**self.page_headers, **headers}
        if not_modified(request, cached.etag):
            return web.Response(status=304, headers=headers)
        headers["Content-Type"] = content_type(name)
        return web.Response(body=cached.body, headers=headers)


def content_type(name: str) -> str:
    suffix = Path(name).suffix
    kind = TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    return f"{kind}; charset=utf-8" if suffix in TYPES else kind


def is_document(name: str) -> bool:
    """`name` is served as a type a browser opens as a page of the node's origin."""
    return content_type(name).split(";")[0] in DOCUMENT_TYPES


def etag_of(body: bytes) -> str:
    """A strong entity tag for `body`: 128 bits of its SHA-256, quoted."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


MAX_TAGS = 64
"""The most entity tags of an If-None-Match header looked at."""


def matches(header: str, etag: str) -> bool:
    """An If-None-Match value names `etag` (or is `*`); weak tags compare by value
    (RFC 9110 13.1.2). Only the first MAX_TAGS tags count."""
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",", MAX_TAGS)[:MAX_TAGS]}
    return etag in tags or "*" in tags


def not_modified(request: web.Request, etag: str) -> bool:
    """The request's If-None-Match names `etag`: answer 304."""
    return matches(request.headers.get("If-None-Match", ""), etag)
