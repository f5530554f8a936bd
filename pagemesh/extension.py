"""`pagemesh extension build --out DIR [--node URL ...]`: the browser extension.

The extension is the browser client every node serves (signaling/web/) in another
frame: a Manifest V3 side panel that follows the active tab (docs/extension.md).
Nothing of it is kept twice in the repository; this build assembles it:

- `js/*.js` and `style.css`: the node page's modules and style, as they are;
- `extension/*`: what only the extension has (service worker, panel, options,
  site policy, settings), from signaling/web/extension/;
- `extension/panel.html`: its template with the slot `<!-- index.html: body -->`
  filled with the body of index.html, so the panel shows the very chat the node's
  page shows (panel.js and panel.css dress it: no join box, the identity folded);
- every page's module script followed by `<link rel="modulepreload">` for each
  module it loads (signaling/modules.py), as the node's pages have them: the
  browser reads the whole graph at once instead of one level of imports at a time;
- `manifest.json`: the template with this package's version;
- `extension/defaults.json`: the nodes given with `--node`, which the options page
  shows until the person chooses others.

DIR is loadable as it is (chrome://extensions, Developer mode, Load unpacked, or
`chromium --load-extension=DIR`); `DIR.zip` beside it holds the same files, with
fixed timestamps so that the same sources give the same bytes.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import zipfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from signaling.modules import ModuleGraphError, with_preloads
from signaling.node import WEB_DIR

EXTENSION_DIR = WEB_DIR / "extension"
NODE_URL = re.compile(r"wss?://[^/\s]{1,250}")
"""A node's address as the browser's peer takes it (peer.js NODE_URL)."""
BODY_SLOT = "<!-- index.html: body -->"
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
"""Every file's time in the zip: the earliest a zip can say, the same on every build."""


class ExtensionBuildError(Exception):
    """The sources or the arguments cannot make an extension; the message says why."""


def fill_body(template: str, index: str) -> str:
    """`template` with its one `<!-- index.html: body -->` replaced by what index.html
    holds between `<body>` and `</body>`."""
    opening = re.search(r"<body[^>]*>", index)
    closing = index.rfind("</body>")
    if opening is None or closing < opening.end():
        raise ExtensionBuildError("index.html has no <body> ... </body>")
    if template.count(BODY_SLOT) != 1:
        raise ExtensionBuildError(f"a page of the extension holds {BODY_SLOT} more than once")
    return template.replace(BODY_SLOT, index[opening.end() : closing].strip("\n"))


def chrome_version(version: str) -> str:
    """A manifest `version` (one to four dot-separated integers) from a package version:
    its leading release numbers ("0.1.0.dev3" -> "0.1.0")."""
    numbers: list[str] = []
    for part in version.split("."):
        if not part.isdigit() or len(numbers) == 4:
            break
        numbers.append(str(int(part)))
    return ".".join(numbers) or "0"


def package_version() -> str:
    try:
        return metadata.version("pagemesh")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0"


def check_nodes(nodes: Sequence[str]) -> list[str]:
    """The `--node` addresses, without a trailing slash; ExtensionBuildError for one that
    is no ws:// or wss:// address."""
    kept: list[str] = []
    for node in nodes:
        url = node.strip().rstrip("/")
        if NODE_URL.fullmatch(url) is None:
            raise ExtensionBuildError(
                f"{node!r} is no node address: ws://HOST[:PORT] or wss://HOST[:PORT]"
            )
        if url not in kept:
            kept.append(url)
    return kept


DEFAULTS = "extension/defaults.json"
"""The file only a build writes: with our manifest's name, it marks an earlier build."""


def _our_name() -> object:
    return json.loads((EXTENSION_DIR / "manifest.json").read_text(encoding="utf-8")).get("name")


def _manifest_name(text: bytes) -> object:
    try:
        manifest = json.loads(text)
    except ValueError:
        return None
    return manifest.get("name") if isinstance(manifest, dict) else None


def _earlier_build(out: Path) -> bool:
    """`out` is recognisably a build of ours: it holds the build's defaults.json and a
    manifest with our extension's name (a copy of the sources has no defaults.json,
    someone's own extension another name)."""
    manifest = out / "manifest.json"
    if not (out / DEFAULTS).is_file() or not manifest.is_file():
        return False
    return _manifest_name(manifest.read_bytes()) == _our_name()


def _earlier_zip(archive: Path) -> bool:
    """`archive` is a zip of an earlier build (the same marks as `_earlier_build`)."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            if DEFAULTS not in zipped.namelist():
                return False
            return _manifest_name(zipped.read("manifest.json")) == _our_name()
    except (OSError, KeyError, zipfile.BadZipFile):
        return False


def _refuse(path: Path, why: str) -> ExtensionBuildError:
    return ExtensionBuildError(
        f"{path} {why}, not an earlier build of this extension, so it is left as it is: "
        "give an empty or new folder to --out"
    )


def _check_out(out: Path) -> None:
    """ExtensionBuildError unless `out` and `out.zip` beside it are new, empty, or an
    earlier build: nothing else is ever replaced. Checked before anything is written."""
    resolved = out.resolve()
    if resolved.is_relative_to(WEB_DIR.resolve()):
        raise ExtensionBuildError(
            f"{out} is inside the sources ({WEB_DIR}), which the build reads: "
            "give a folder outside signaling/web/"
        )
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise _refuse(out, "is a file or a link")
        if any(out.iterdir()) and not _earlier_build(out):
            has = (
                "holds a manifest.json" if (out / "manifest.json").exists() else "holds other files"
            )
            raise _refuse(out, has)
    archive = _archive(out)
    if (archive.exists() or archive.is_symlink()) and (
        archive.is_symlink() or not archive.is_file() or not _earlier_zip(archive)
    ):
        raise _refuse(archive, "exists")


def _prepare(out: Path) -> None:
    # Replace an earlier build, never a folder that holds something else.
    _check_out(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)


def _archive(out: Path) -> Path:
    return out.parent / f"{out.name}.zip"


def _zip(out: Path) -> Path:
    archive = _archive(out)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(out).as_posix(), ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zipped.writestr(info, path.read_bytes())
    return archive


def build(out: Path, nodes: Sequence[str] = ()) -> tuple[Path, Path]:
    """Assemble the extension in `out` (replacing an earlier build there) and zip it
    beside; returns both paths. Everything is read and checked before `out` is touched:
    a folder or zip that is not recognisably an earlier build (`_check_out`), or a
    folder inside signaling/web/, is refused, never deleted."""
    version = package_version()
    defaults = {"nodes": check_nodes(nodes), "version": version}
    index = (WEB_DIR / "index.html").read_text(encoding="utf-8")
    made: dict[str, bytes] = {}  # path in the extension -> content, for what is not copied
    copied: dict[str, Path] = {f"js/{m.name}": m for m in sorted((WEB_DIR / "js").glob("*.js"))}
    copied["style.css"] = WEB_DIR / "style.css"
    for source in sorted(EXTENSION_DIR.iterdir()):
        if source.name == "manifest.json" or not source.is_file():
            continue
        if source.suffix != ".html":
            copied[f"extension/{source.name}"] = source
            continue
        text = source.read_text(encoding="utf-8")
        if BODY_SLOT in text:
            text = fill_body(text, index)
        try:
            # the page's modules as the built folder lays them out: js/ beside extension/
            text = with_preloads(text, EXTENSION_DIR, WEB_DIR, "../")
        except ModuleGraphError as error:
            raise ExtensionBuildError(f"{source.name}: {error}") from error
        made[f"extension/{source.name}"] = text.encode()
    manifest = json.loads((EXTENSION_DIR / "manifest.json").read_text(encoding="utf-8"))
    manifest["version"] = chrome_version(version)
    manifest["version_name"] = version
    made["manifest.json"] = (json.dumps(manifest, indent=2) + "\n").encode()
    made["extension/defaults.json"] = (json.dumps(defaults, indent=2) + "\n").encode()
    _prepare(out)
    for name, source in copied.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, out / name)
    for name, content in made.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(content)
    return out, _zip(out)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    extension = commands.add_parser("extension", help="the browser extension (Chromium)")
    actions = extension.add_subparsers(dest="action", required=True, metavar="ACTION")
    build_ = actions.add_parser(
        "build",
        help="assemble the extension from the browser client: an unpacked folder and a zip",
        description="Assemble the Manifest V3 extension in DIR (load it unpacked from "
        "chrome://extensions in Developer mode) and DIR.zip beside it.",
    )
    build_.add_argument("--out", type=Path, required=True, metavar="DIR")
    build_.add_argument(
        "--node",
        action="append",
        default=[],
        metavar="URL",
        help="a signaling node the extension uses until its options say otherwise "
        "(ws:// or wss://; repeat for more)",
    )
    build_.set_defaults(run=_run_build)


def _run_build(args: argparse.Namespace) -> int:
    try:
        folder, archive = build(args.out, args.node)
    except ExtensionBuildError as error:
        print(f"pagemesh extension build: {error}", file=sys.stderr)
        return 2
    print(f"unpacked: {folder}\nzip:      {archive}")
    if not args.node:
        print("no --node given: add a node in the extension's options before it can join")
    return 0
