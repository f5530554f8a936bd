"""What README.md tells a newcomer to type agrees with what `make demo` prints and
serves, and leaves nothing behind that `make clean` and .gitignore do not know."""

from __future__ import annotations

import html
import re
import subprocess
from pathlib import Path

from pagemesh import demo

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _commands(text: str) -> list[str]:
    """The shell lines of README's code blocks (a trailing backslash joins lines)."""
    lines: list[str] = []
    inside = False
    for line in text.replace("\\\n", " ").splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
        elif inside:
            lines.append(line)
    return [line for line in lines if ".venv/bin/pagemesh" in line]


def test_readme_examples_write_only_where_make_clean_and_gitignore_look() -> None:
    ignored = (ROOT / ".gitignore").read_text().split()
    clean = subprocess.run(
        ["make", "-n", "clean"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    folders = set()
    for line in _commands(README):
        for option in ("--data-dir", "--out"):
            for path in re.findall(rf"{option} (\S+)", line):
                if not path.startswith("/"):
                    folders.add(Path(path).parts[0])
    assert folders, "README names no folder: this test reads it wrong"
    for folder in folders:
        assert f"{folder}/" in ignored, f"{folder}/ is not in .gitignore"
    for line in _commands(README):
        for path in re.findall(r"--out (\S+)", line):
            assert path in clean or Path(path).parts[0] in clean, f"make clean leaves {path}"
    for folder in folders - {"build"}:
        assert folder in clean, f"make clean leaves {folder}"


def test_readme_chats_on_loopback_as_the_demo_prints_them() -> None:
    chats = [line for line in _commands(README) if " chat " in line or " send " in line]
    assert chats
    for line in chats:
        if "127.0.0.1" in line:
            assert "--ice-host 127.0.0.1" in line, line


def test_the_sample_site_carries_the_tag_readme_gives() -> None:
    readme_tag = r'<script src="https://node\.example\.net/embed\.js"[^>]*></script>'
    (tag,) = re.findall(readme_tag, README)
    embed = "http://127.0.0.1:1234/embed.js"
    ours = tag.replace("https://node.example.net/embed.js", embed)
    page = demo.SAMPLE_SITE.format(embed=html.escape(embed))
    assert ours in page
    assert html.escape(ours, quote=False) in page  # the tag the page shows is that tag


def test_the_demos_hint_names_a_command_that_works_from_make() -> None:
    assert demo.VERBOSE_HINT.startswith("make demo V=1")
    source = (ROOT / "pagemesh" / "demo.py").read_text()
    assert "try -v" not in source and "; pagemesh -v demo" not in source
    dry = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed", "demo", "V=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert re.search(r"pagemesh -v demo\b", dry), dry


def test_readme_tells_of_every_identity_action() -> None:
    from pagemesh.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    identity = commands.choices["identity"]  # type: ignore[index]
    actions = next(a for a in identity._actions if a.dest == "identity_command")
    for action in actions.choices:  # type: ignore[union-attr]
        shown = rf"pagemesh identity (\w+`/`)*{action}\b"  # also `identity export`/`import`
        assert re.search(shown, README), f"README never shows `identity {action}`"


def test_the_demos_commands_parse_and_name_everyone() -> None:
    """What the demo prints for other terminals runs as printed, and the sender of a
    file is named as the chatters are (not `·2eef` to everyone)."""
    from pagemesh.cli import build_parser

    nodes = ["ws://127.0.0.1:8001", "ws://127.0.0.1:8002", "ws://127.0.0.1:8003"]
    commands = demo.join_commands("https://example.org/", nodes, Path("demo-data"))
    names = []
    for command in commands:
        words = command.split()
        assert words[0] == ".venv/bin/pagemesh"
        args = build_parser().parse_args(words[1:])
        assert args.ice_host == ["127.0.0.1"] and args.node
        names.append(args.name)
    assert names == ["alice", "bob", "carol"]
