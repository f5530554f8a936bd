"""What a volunteer installs without cloning: `make dist`, then `pip install dist/pagemesh-*.whl`.

The wheel is built as `make dist` builds it, from a copy of the tree (PyPA's `build`:
the sdist first, then the wheel from the sdist, so a file the sdist forgets is missing
from the wheel too). It must hold every package and every file of the browser client,
and a node started from a fresh venv, in a directory far from the source tree, must
serve the page from the installed copy.

The fresh venv gets the wheel with `--no-deps` and reaches the dependencies through a
`.pth` line naming this venv's site-packages (a plain path line: the editable install's
finder there is not run, so `pagemesh` resolves to the wheel). Installing the
dependencies from the registry as well took 19 s on a warm cache against 0.7 s this way.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import aiohttp
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("dht", "pagemesh", "peer", "relay", "signaling", "simulations")
STARTED = re.compile(r"pagemesh node ([0-9a-f]{40}) at (\S+) dht (\S+)")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # From a copy: building writes pagemesh.egg-info beside the sources, and another run of
    # the tests may be building at the same time.
    tree = tmp_path_factory.mktemp("tree")
    skip = shutil.ignore_patterns("__pycache__", "*.py[cod]")
    for name in (*PACKAGES, "docs", "tests"):
        shutil.copytree(ROOT / name, tree / name, ignore=skip)
    for name in ("pyproject.toml", "MANIFEST.in", "README.md", "Makefile"):
        shutil.copy(ROOT / name, tree / name)
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(tree)])
    (built,) = out.glob("pagemesh-*.whl")
    return built


def _run(args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run a command to completion; on failure, say what it printed."""
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


def _source_files(pattern: str) -> set[str]:
    return {p.relative_to(ROOT).as_posix() for p in ROOT.glob(pattern) if p.is_file()}


def test_wheel_holds_every_package_and_the_browser_client(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {
        init.parent.relative_to(ROOT).as_posix()
        for name in PACKAGES
        for init in (ROOT / name).rglob("__init__.py")
    }
    assert {f"{package}/__init__.py" for package in packages} <= names
    web = _source_files("signaling/web/**/*")
    assert "signaling/web/index.html" in web and "signaling/web/js/app.js" in web
    assert web - names == set(), "browser files missing from the wheel (pyproject package-data)"
    scenarios = _source_files("simulations/scenarios/*.toml")
    assert scenarios and scenarios <= names
    assert not any(name.startswith("tests/") for name in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "pagemesh = pagemesh.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def _fresh_venv(where: Path, wheel: Path) -> tuple[Path, Path]:
    """A venv holding the wheel alone; its dependencies come from this venv's site-packages."""
    _run([sys.executable, "-m", "venv", "--without-pip", str(where)])
    python = where / "bin" / "python"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            str(wheel),
        ]
    )
    site = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).strip()
    )
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "test-dependencies.pth").write_text("".join(f"{path}\n" for path in sorted(ours)))
    return python, site


async def test_a_node_from_the_installed_wheel_serves_the_page(wheel: Path, tmp_path: Path) -> None:
    python, site = _fresh_venv(tmp_path / "venv", wheel)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run([str(python), "-c", "import signaling.node as n; print(n.WEB_DIR)"], elsewhere)
    assert Path(where.strip()) == site / "signaling" / "web"
    # A mark only the installed copy has: what the node serves must carry it.
    installed_app = site / "signaling" / "web" / "js" / "app.js"
    marked = installed_app.read_bytes() + b"\n// served from the installed wheel\n"
    installed_app.write_bytes(marked)

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = await asyncio.create_subprocess_exec(
        str(python.parent / "pagemesh"),
        "node",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--dht-port",
        "0",
        "--data-dir",
        str(tmp_path / "node"),
        cwd=elsewhere,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        match = STARTED.search(line)
        assert match, f"unexpected first line {line!r}"
        base = match.group(2).replace("ws://", "http://")
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/") as response:
                assert response.status == 200
                page = await response.read()
            async with http.get(base + "/web/js/app.js") as response:
                assert response.status == 200
                app = await response.read()
            async with http.get(base + "/embed.js") as response:  # the widget (docs/widget.md)
                assert response.status == 200
            async with http.get(base + "/widget") as response:
                assert response.status == 200 and b'class="widget"' in await response.read()
        assert page == (site / "signaling" / "web" / "index.html").read_bytes()
        assert app == marked
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    scenarios = _run([str(python.parent / "pagemesh"), "simulate", "list"], elsewhere, env)
    assert str(site / "simulations" / "scenarios" / "rooms.toml") in scenarios
