"""`pagemesh extension build`: one source of truth (the node page's modules as they
are, the panel's markup from index.html), a Manifest V3 manifest that loads nothing
from elsewhere, the same zip from the same sources, and typed refusals."""

from __future__ import annotations

import json
import re
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
