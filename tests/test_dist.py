"""What a volunteer installs without cloning: `make dist`, then `pip install dist/pagemesh-*.whl`.

The wheel is built as `make dist` builds it, from a git checkout of a copy of the tree
(PyPA's `build`: the sdist first, then the wheel from the sdist, so a file the sdist
forgets is missing from the wheel too). It must hold every package and every file of
the browser client, and a node started from a fresh venv, in a directory far from the
source tree, must serve the page from the installed copy.

Its version is git's (setuptools-scm, pyproject.toml): the commit's, kept by the sdist
(the wheel is built from the sdist, where there is no git), shown by `pagemesh --version`,
the node's start line and /healthz; a release tag's; 0.0 without git metadata. Its
metadata keep the simulator's and the tests' packages in the extras.

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
import tarfile
import zipfile
from pathlib import Path

import aiohttp
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("dht", "pagemesh", "peer", "relay", "signaling", "simulations")
STARTED = re.compile(r"pagemesh node ([0-9a-f]{40}) at (\S+) dht (\S+)")


def _copy_tree(tree: Path) -> Path:
    """The files a build reads, copied: building writes pagemesh.egg-info beside the
    sources, and another run of the tests may be building at the same time."""
    skip = shutil.ignore_patterns("__pycache__", "*.py[cod]")
    for name in (*PACKAGES, "docs", "tests"):
        shutil.copytree(ROOT / name, tree / name, ignore=skip)
    for name in ("pyproject.toml", "MANIFEST.in", "README.md", "Makefile", ".gitignore"):
        shutil.copy(ROOT / name, tree / name)
    return tree


def _git(tree: Path, *args: str) -> str:
    identity = ["-c", "user.name=pagemesh tests", "-c", "user.email=tests@pagemesh.invalid"]
    return _run(["git", *identity, *args], cwd=tree).strip()


def _committed(tree: Path) -> str:
    """The copy as one commit of a fresh repository: the tree a clone gives. Its hash."""
    _git(tree, "init", "-q")
    _git(tree, "add", "-A")
    _git(tree, "commit", "-q", "-m", "the tree under test")
    return _git(tree, "rev-parse", "HEAD")


def _build(tree: Path, out: Path, *what: str) -> None:
    _run([sys.executable, "-m", "build", *what, "--outdir", str(out), str(tree)])


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    tree = _copy_tree(tmp_path_factory.mktemp("tree"))
    return tree, _committed(tree)


@pytest.fixture(scope="module")
def wheel(checkout: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _build(checkout[0], out)
    (built,) = out.glob("pagemesh-*.whl")
    return built


def wheel_version(wheel: Path) -> str:
    return wheel.name.split("-")[1]


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


def test_the_version_is_the_commits_and_the_sdist_keeps_it(
    wheel: Path, checkout: tuple[Path, str]
) -> None:
    """No release tag in this history: a dev release counted from the first commit, with
    the commit's hash, so that two builds of different commits never share a version."""
    version = wheel_version(wheel)
    match = re.fullmatch(r"0\.1\.dev1\+g([0-9a-f]{7,40})", version)
    assert match, version
    assert checkout[1].startswith(match.group(1))
    (sdist,) = wheel.parent.glob("pagemesh-*.tar.gz")
    assert sdist.name == f"pagemesh-{version}.tar.gz"  # the wheel was built from it
    with tarfile.open(sdist) as archive:
        info = archive.extractfile(f"pagemesh-{version}/PKG-INFO")
        assert info is not None and f"\nVersion: {version}\n" in info.read().decode()


def test_a_release_tag_is_the_version_and_no_git_metadata_gives_0_0(
    checkout: tuple[Path, str], tmp_path: Path
) -> None:
    tagged = tmp_path / "tagged"
    _run(["git", "clone", "-q", str(checkout[0]), str(tagged)])
    _git(tagged, "tag", "-a", "v1.2.3", "-m", "release 1.2.3")
    _build(tagged, tmp_path / "out-tagged", "--sdist")
    assert [p.name for p in (tmp_path / "out-tagged").iterdir()] == ["pagemesh-1.2.3.tar.gz"]

    plain = _copy_tree(tmp_path / "plain")  # a copy, no .git: nothing to ask
    _build(plain, tmp_path / "out-plain", "--sdist")
    assert [p.name for p in (tmp_path / "out-plain").iterdir()] == ["pagemesh-0.0.tar.gz"]


def test_the_simulator_and_the_tools_are_extras(wheel: Path) -> None:
    """`pip install pagemesh-*.whl` brings what a node, a relay and a peer import;
    `[sim]` the simulator's figures and sweeps; `[test]` both and the tools."""
    archive = zipfile.ZipFile(wheel)
    name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
    lines = archive.read(name).decode().splitlines()
    requires = [
        line.removeprefix("Requires-Dist: ") for line in lines if line.startswith("Requires-Dist: ")
    ]
    always = {r.split(">=")[0].split("==")[0].strip().lower() for r in requires if ";" not in r}
    assert {"aiohttp", "aiortc", "pynacl", "cryptography", "yarl", "msgpack"} <= always
    assert not always & {"matplotlib", "dask", "numpy", "pillow", "pytest", "playwright"}
    assert any(r.startswith("matplotlib") and 'extra == "sim"' in r for r in requires)
    assert any(r.startswith("pagemesh[sim]") and 'extra == "test"' in r for r in requires)
    assert {"Provides-Extra: sim", "Provides-Extra: test"} <= set(lines)


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
    version = wheel_version(wheel)
    pagemesh = str(python.parent / "pagemesh")
    assert _run([pagemesh, "--version"], elsewhere) == f"pagemesh {version}\n"
    assert _run([pagemesh, "node", "--version"], elsewhere) == f"pagemesh {version}\n"
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
        assert line.rstrip().endswith(f" version {version}"), line
        base = match.group(2).replace("ws://", "http://")
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/healthz") as response:
                assert (await response.json())["version"] == version
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
        # index.html as installed, its module graph preloaded (signaling/modules.py)
        assert b'<link rel="modulepreload" href="/web/js/peer.js">' in page
        preloads = re.compile(rb'\n *<link rel="modulepreload" href="[^"]+">')
        assert preloads.sub(b"", page) == (site / "signaling" / "web" / "index.html").read_bytes()
        assert app == marked
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    scenarios = _run([str(python.parent / "pagemesh"), "simulate", "list"], elsewhere, env)
    assert str(site / "simulations" / "scenarios" / "rooms.toml") in scenarios
