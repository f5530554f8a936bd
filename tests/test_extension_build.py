"""`pagemesh extension build`: one source of truth (the node page's modules as they
are, the panel's markup from index.html), a Manifest V3 manifest that loads nothing
from elsewhere, the same zip from the same sources, and typed refusals."""

from __future__ import annotations

import json
import re
import shutil
import struct
import zipfile
from pathlib import Path

import pytest

from pagemesh.cli import main
from pagemesh.extension import (
    BODY_SLOT,
    EXTENSION_DIR,
    ExtensionBuildError,
    build,
    chrome_version,
    fill_body,
    package_version,
)
from signaling.node import WEB_DIR

NODE = "wss://node.example.net"


@pytest.fixture
def built(tmp_path: Path) -> Path:
    folder, _ = build(tmp_path / "ext", [NODE, "ws://127.0.0.1:8001/"])
    return folder


def test_the_node_pages_modules_go_in_as_they_are(built: Path) -> None:
    modules = sorted(p.name for p in (WEB_DIR / "js").glob("*.js"))
    assert sorted(p.name for p in (built / "js").iterdir()) == modules
    for name in modules:
        assert (built / "js" / name).read_bytes() == (WEB_DIR / "js" / name).read_bytes(), name
    assert (built / "style.css").read_bytes() == (WEB_DIR / "style.css").read_bytes()
    for source in EXTENSION_DIR.iterdir():
        if source.suffix in (".js", ".css"):
            assert (built / "extension" / source.name).read_bytes() == source.read_bytes()


def test_the_panel_shows_the_node_pages_chat(built: Path) -> None:
    panel = (built / "extension" / "panel.html").read_text()
    index = (WEB_DIR / "index.html").read_text()
    body = index[index.index("<body>") + len("<body>") : index.index("</body>")].strip("\n")
    assert body in panel and BODY_SLOT not in panel
    for element in ('id="messages"', 'id="compose"', 'id="identity-dialog"', 'id="here"'):
        assert panel.count(element) == 1, element


def test_the_manifest_asks_little_and_loads_nothing_from_elsewhere(built: Path) -> None:
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["manifest_version"] == 3
    assert manifest["version"] == chrome_version(package_version())
    assert manifest["incognito"] == "not_allowed"
    assert sorted(manifest["permissions"]) == ["sidePanel", "storage", "tabs"]
    for key in ("host_permissions", "content_scripts", "web_accessible_resources"):
        assert key not in manifest
    for path in (
        manifest["background"]["service_worker"],
        manifest["side_panel"]["default_path"],
        manifest["options_ui"]["page"],
    ):
        assert (built / path).is_file(), path
    policy = dict(
        d.strip().split(" ", 1)
        for d in manifest["content_security_policy"]["extension_pages"].split(";")
    )
    assert policy["script-src"] == "'self'" and policy["object-src"] == "'none'"
    assert {"ws:", "wss:"} <= set(policy["connect-src"].split())
    # Every script and style an extension page names is one of its own files.
    for page in (built / "extension").glob("*.html"):
        text = page.read_text()
        # MV3 runs no inline code: no <script> without src, no on...= attributes.
        assert "<script>" not in text and re.search(r"\son[a-z]+=", text) is None, page.name
        for ref in re.findall(r'(?:src|href)="([^"#]+\.(?:js|css))"', text):
            assert "//" not in ref and (page.parent / ref).resolve().is_file(), (page.name, ref)
    defaults = json.loads((built / "extension" / "defaults.json").read_text())
    assert defaults == {"nodes": [NODE, "ws://127.0.0.1:8001"], "version": package_version()}


def test_the_toolbar_and_the_extensions_page_show_its_own_icon(built: Path) -> None:
    # Without icons Chromium draws a grey letter on the toolbar button.
    manifest = json.loads((built / "manifest.json").read_text())
    named = {**manifest["icons"], **manifest["action"]["default_icon"]}
    assert {"16", "32", "48", "128"} <= set(manifest["icons"])
    for size, path in named.items():
        data = (built / path).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", path
        width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
        assert width == height == int(size), (path, width, height)


def test_the_zip_holds_the_folder_and_the_same_sources_give_the_same_bytes(
    tmp_path: Path,
) -> None:
    folder, archive = build(tmp_path / "a" / "ext", [NODE])
    assert archive == tmp_path / "a" / "ext.zip"
    with zipfile.ZipFile(archive) as zipped:
        names = zipped.namelist()
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        assert names == files and "manifest.json" in names
        assert all(zipped.read(n) == (folder / n).read_bytes() for n in names)
    _, again = build(tmp_path / "b" / "ext", [NODE])
    assert again.read_bytes() == archive.read_bytes()


def test_a_build_replaces_an_earlier_one_and_nothing_else(tmp_path: Path) -> None:
    folder, _ = build(tmp_path / "ext")
    (folder / "js" / "stale.js").write_text("old")
    build(folder)
    assert not (folder / "js" / "stale.js").exists()
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(ExtensionBuildError, match="holds other files"):
        build(other)
    assert (other / "cat.jpg").exists()


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_a_folder_with_a_manifest_is_not_an_earlier_build(tmp_path: Path) -> None:
    # Someone's own extension project, a copy of the sources, or a build's manifest in a
    # folder the build did not make: each is refused and left as it was.
    theirs = tmp_path / "my-extension"
    (theirs / "src").mkdir(parents=True)
    (theirs / "manifest.json").write_text('{"manifest_version": 3, "name": "My tool"}')
    (theirs / "src" / "main.js").write_text("work of weeks")
    sources = tmp_path / "sources"
    sources.mkdir()
    for source in EXTENSION_DIR.iterdir():
        (sources / source.name).write_bytes(source.read_bytes())
    named = tmp_path / "named"  # our build's files, someone else's manifest
    build(named)
    manifest = json.loads((named / "manifest.json").read_text())
    (named / "manifest.json").write_text(json.dumps({**manifest, "name": "My tool"}))
    bare = tmp_path / "bare"  # a manifest that is not even JSON
    bare.mkdir()
    (bare / "manifest.json").write_text("{")
    (bare / "extension").mkdir()
    (bare / "extension" / "defaults.json").write_text("{}")
    for folder in (theirs, sources, named, bare):
        before = files_of(folder)
        archive = folder.parent / f"{folder.name}.zip"
        zipped = archive.read_bytes() if archive.exists() else None
        with pytest.raises(ExtensionBuildError, match="not an earlier build") as refused:
            build(folder)
        assert "give an empty or new folder" in str(refused.value), folder
        assert files_of(folder) == before, folder
        assert (archive.read_bytes() if archive.exists() else None) == zipped, folder


def test_a_folder_in_the_sources_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fresh = WEB_DIR / "build-here"
    assert not fresh.exists()
    try:
        with pytest.raises(ExtensionBuildError, match="inside the sources"):
            build(fresh)
        assert not fresh.exists() and not (WEB_DIR / "build-here.zip").exists()
    finally:  # what a build that was not refused made (and only that)
        shutil.rmtree(fresh, ignore_errors=True)
        (WEB_DIR / "build-here.zip").unlink(missing_ok=True)
    before = files_of(EXTENSION_DIR)
    for out in (EXTENSION_DIR, WEB_DIR, WEB_DIR / "js" / ".." / "extension" / "new"):
        with pytest.raises(ExtensionBuildError, match="inside the sources"):
            build(out)
    link = tmp_path / "link"
    link.symlink_to(EXTENSION_DIR, target_is_directory=True)
    with pytest.raises(ExtensionBuildError, match="inside the sources"):
        build(link)
    assert main(["extension", "build", "--out", str(EXTENSION_DIR)]) == 2
    assert "inside the sources" in capsys.readouterr().err
    assert files_of(EXTENSION_DIR) == before


def test_a_zip_that_is_not_an_earlier_build_is_kept(tmp_path: Path) -> None:
    mine = tmp_path / "ext.zip"
    mine.write_bytes(b"a zip of someone's own")
    with pytest.raises(ExtensionBuildError, match="not an earlier build"):
        build(tmp_path / "ext")
    assert mine.read_bytes() == b"a zip of someone's own"
    assert not (tmp_path / "ext").exists()
    _, archive = build(tmp_path / "ours")
    (tmp_path / "ours" / "js" / "stale.js").write_text("old")
    build(tmp_path / "ours")  # an earlier build and its zip are replaced
    with zipfile.ZipFile(archive) as zipped:
        assert "js/stale.js" not in zipped.namelist()


@pytest.mark.parametrize(
    "node", ["https://node.example.net", "node.example.net", "ws://", "ws://a b"]
)
def test_a_node_that_is_no_websocket_address_is_refused(tmp_path: Path, node: str) -> None:
    with pytest.raises(ExtensionBuildError, match="no node address"):
        build(tmp_path / "ext", [node])
    assert not (tmp_path / "ext").exists()


def test_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["extension", "build", "--out", str(tmp_path / "ext"), "--node", NODE]) == 0
    assert "unpacked:" in capsys.readouterr().out
    assert (tmp_path / "ext" / "manifest.json").is_file() and (tmp_path / "ext.zip").is_file()
    assert main(["extension", "build", "--out", str(tmp_path / "x"), "--node", "http://a"]) == 2
    assert "no node address" in capsys.readouterr().err
    assert main(["extension", "build", "--out", str(tmp_path / "y")]) == 0
    assert "add a node in the extension's options" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("version", "chrome"),
    [
        ("0.1.0", "0.1.0"),
        ("0.1.0.dev3", "0.1.0"),
        ("1.2.3.4.5", "1.2.3.4"),
        ("07.1", "7.1"),
        ("dev", "0"),
    ],
)
def test_manifest_versions(version: str, chrome: str) -> None:
    assert chrome_version(version) == chrome


def test_a_template_needs_one_slot_and_index_html_a_body() -> None:
    assert fill_body(f"<main>{BODY_SLOT}</main>", "<html><body class=x>\n<p>hi</p>\n</body>") == (
        "<main><p>hi</p></main>"
    )
    with pytest.raises(ExtensionBuildError, match="no <body>"):
        fill_body(BODY_SLOT, "<html></html>")
    with pytest.raises(ExtensionBuildError, match="more than once"):
        fill_body(BODY_SLOT * 2, "<body></body>")
