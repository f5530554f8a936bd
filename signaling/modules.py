"""The browser client's module graph, so a page can ask for every module at once.

A page that loads `app.js` learns of `chat.js` only once `app.js` has arrived and
been parsed, of `bytes.js` only after `peer.js`, and so on: a waterfall of round
trips, one per level of imports. `<link rel="modulepreload">` for each module of the
graph lets the browser fetch them all as soon as it reads the page's head. The list
is computed from the modules themselves (a node when it starts, `pagemesh extension
build` when it builds), so it cannot fall behind an edit.

The modules are this project's own (signaling/web/): static `import` and `export
... from` statements with relative specifiers, one statement starting a line. A
test loads the graph in Chromium without preloads and checks that the browser asks
for exactly what `module_graph` finds (tests/web/test_modulepreload.py).
"""

from __future__ import annotations

import html
import re
from pathlib import Path

MAX_MODULES = 256
"""The most modules one graph may hold (the client has about 25)."""
MAX_MODULE_BYTES = 1 << 20
"""The largest module read (the largest is about 50 kB)."""

# A static import or re-export at the start of a line: `import "./a.js"`,
# `import x, {y as z} from "./a.js"`, `import * as m from '../js/a.js'`,
# `export {x} from "./a.js"`; the bindings (names, braces, commas, `as`, `*`) may
# span lines.
_IMPORT = re.compile(
    r"""^[ \t]*(?:import|export)(?:\s*[\w${},*\s]*?\bfrom)?\s*(["'])(?P<spec>[^"'\n]{1,300})\1""",
    re.MULTILINE,
)


class ModuleGraphError(Exception):
    """A module names one this graph cannot hold: outside the root, missing, not
    relative, too large, or too many; the message says which."""


def imports(source: str) -> list[str]:
    """The specifiers of `source`'s static imports and re-exports, in order, each once."""
    found: list[str] = []
    for match in _IMPORT.finditer(source):
        spec = match["spec"]
        if spec not in found:
            found.append(spec)
    return found


def module_graph(entry: Path, root: Path) -> list[Path]:
    """Every module `entry` loads, itself first, then in the order they are found
    (breadth first). Each must be a relative specifier naming a file under `root`."""
    root = root.resolve()
    entry = entry.resolve()
    order = [entry]
    seen = {entry}
    for module in order:  # grows while it is walked
        if not module.is_relative_to(root) or not module.is_file():
            raise ModuleGraphError(f"{module} is not a module under {root}")
        if module.stat().st_size > MAX_MODULE_BYTES:
            raise ModuleGraphError(f"{module} is larger than {MAX_MODULE_BYTES} bytes")
        for spec in imports(module.read_text(encoding="utf-8")):
            if not spec.startswith(("./", "../")):
                raise ModuleGraphError(f"{module.name} imports {spec!r}: not a relative path")
            target = (module.parent / spec).resolve()
            if target in seen:
                continue
            if len(order) == MAX_MODULES:
                raise ModuleGraphError(f"{entry.name} loads more than {MAX_MODULES} modules")
            seen.add(target)
            order.append(target)
    return order


def preload_links(entries: list[Path], root: Path, prefix: str) -> str:
    """`<link rel="modulepreload">` lines for every module the `entries` load, the
    entries themselves left out (their `<script>` tags fetch them), each once:
    `prefix` + the module's path under `root`."""
    skip = {entry.resolve() for entry in entries}
    lines: list[str] = []
    for entry in entries:
        for module in module_graph(entry, root):
            if module in skip:
                continue
            skip.add(module)
            href = html.escape(prefix + module.relative_to(root.resolve()).as_posix())
            lines.append(f'<link rel="modulepreload" href="{href}">')
    return "\n".join(lines)


_SCRIPT = re.compile(
    r"""^([ \t]*)<script type="module"(?: async)? src="([^"]+)"></script>$""", re.MULTILINE
)


def with_preloads(page: str, page_dir: Path, root: Path, prefix: str) -> str:
    """`page` (HTML) with preload links after its last module script tag, for the
    graphs of the modules its tags name (`src`: under `root` when it starts with an
    absolute `prefix`, else relative to `page_dir`). ModuleGraphError if it has none."""
    tags = list(_SCRIPT.finditer(page))
    if not tags:
        raise ModuleGraphError("the page has no module script tag")
    entries = []
    for tag in tags:
        src = tag[2]
        if prefix.startswith("/") and src.startswith(prefix):
            entries.append(root / src[len(prefix) :])
        else:
            entries.append(page_dir / src)
    links = preload_links(entries, root, prefix)
    if not links:
        return page
    last = tags[-1]
    block = "\n".join(last[1] + line for line in links.split("\n"))
    return page[: last.end()] + "\n" + block + page[last.end() :]
