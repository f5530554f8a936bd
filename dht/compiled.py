"""`dht/`'s hot modules compiled with mypyc, for the simulator; the sources stay the truth.

`PAGEMESH_COMPILED=1` in the environment (read by `dht/__init__.py` and
`simulations/__init__.py` before they import anything else) puts the compiled
`dht.ids`, `dht.routing`, `dht.lookup`, `dht.core`, the simulator's warm start
(`simulations.oracle`) and the modules every simulated message goes through (the
engine, the overlay and its transport, the hop counter, the lookup probe) ahead of
the source files; every other module is still interpreted, and without the variable
nothing changes. The build lives outside
the source tree, in build/mypyc/ (`make compiled`, or `dht.compiled.build()`),
and carries a stamp of every `dht/*.py` and `simulations/*.py`'s hash, mypy's
version and the interpreter's: a build whose stamp does not match the sources is
rebuilt before use, so an edited module is never shadowed by an older compiled one.

mypyc compiles type-checked Python to C extension modules, with the same
semantics (tests/simulations/test_compiled.py runs the golden fingerprints of
tests/simulations/test_golden.py through them). Two kinds of class stay
interpreted: `@dataclass(slots=True)` (a compiled class cannot be recreated
with slots; the cores' messages, events and pending RPCs are marked
`native_class=False`, `Contact` has a module of its own) and classes the
simulator subclasses (`DHTCore`, `ContactCodec`: compiled, but open to
interpreted subclasses; so are `Overlay`, `MessageObserver` and `LookupProbe`, which
tests and scenarios subclass, while `SimContact`, a `Contact`, stays interpreted).
`mypyc_attr` (mypy-extensions, a core dependency of a few lines) does nothing at run
time.
"""

from __future__ import annotations

import hashlib
import os
import sys
from importlib import metadata
from pathlib import Path

from mypy_extensions import mypyc_attr

__all__ = ["COMPILED", "build", "is_fresh", "loaded", "mypyc_attr", "requested", "use_compiled"]

COMPILED = (
    "dht.ids",
    "dht.routing",
    "dht.lookup",
    "dht.core",
    "simulations.oracle",
    "simulations.engine",
    "simulations.overlay",
    "simulations.observe",
    "simulations.lookups",
)
"""The modules compiled: those a lookup spends its time in, the warm start's fill and
the simulator's path of every message (docs/simulation.md)."""

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("dht", "simulations")
BUILD_DIR = ROOT / "build" / "mypyc"
ENV = "PAGEMESH_COMPILED"


def stamp() -> str:
    """What a build was made from: every module of both packages (mypyc type-checks the
    compiled modules against the others), mypy's version and the interpreter's."""
    digest = hashlib.sha256()
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            name = f"{package}/{path.name}"
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(_mypy_version().encode() + sys.version.encode() + sys.platform.encode())
    return digest.hexdigest()


def _mypy_version() -> str:
    try:
        return metadata.version("mypy")
    except metadata.PackageNotFoundError:
        return "none"


def _lib(build_dir: Path) -> Path:
    return build_dir / "lib"


def is_fresh(build_dir: Path = BUILD_DIR) -> bool:
    stamp_file = build_dir / "stamp"
    return stamp_file.exists() and stamp_file.read_text() == stamp()


def build(build_dir: Path = BUILD_DIR) -> None:
    """Compile `COMPILED` into `build_dir` unless a fresh build is there already.

    A lock file keeps two processes (a benchmark's children, say) from building
    at once; the second finds the first's build fresh."""
    import fcntl  # here, not at the top: dht.core imports this module for `mypyc_attr`
    import shutil
    import subprocess

    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_fresh(build_dir):
            return
        for old in ("lib", "work", "stamp"):
            path = build_dir / old
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        work = build_dir / "work"
        work.mkdir()
        sources = [str(ROOT / f"{name.replace('.', '/')}.py") for name in COMPILED]
        # mypy's checks without pyproject.toml's strict settings, which simulations/ is not
        # held to (the compiled code is the same either way); msgpack has no type hints.
        sources += ["--config-file=", "--ignore-missing-imports"]
        # setup() runs in `work`, where no pyproject.toml is read; mypy names the modules
        # from their packages' __init__.py, wherever it runs.
        script = (
            "import sys\n"
            "from setuptools import setup\n"
            "from mypyc.build import mypycify\n"
            "setup(name='pagemesh-compiled', ext_modules=mypycify(sys.argv[1:], opt_level='3'),\n"
            "      script_args=['build_ext', '--build-lib', 'LIB', '--build-temp', 'temp'])\n"
        ).replace("LIB", str(_lib(build_dir)))
        done = subprocess.run(
            [sys.executable, "-c", script, *sources],
            cwd=work,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"mypyc build failed:\n{done.stdout[-4000:]}{done.stderr[-4000:]}")
        (build_dir / "stamp").write_text(stamp())


def use_compiled(package: str, package_path: list[str], build_dir: Path = BUILD_DIR) -> None:
    """Put the compiled modules ahead of the sources in `package`'s `__path__`
    (building them first if missing or stale); the other modules are found after."""
    build(build_dir)
    lib = _lib(build_dir)
    package_path.insert(0, str(lib / package))
    if str(lib) not in sys.path:
        sys.path.append(str(lib))  # mypyc's shared runtime module, a top-level name


def loaded() -> dict[str, bool]:
    """Which of `COMPILED` this process runs compiled (importing those it has not yet:
    the answer is then the one a later import would get)."""
    from importlib import import_module

    return {
        name: str(getattr(import_module(name), "__file__", "")).endswith(".so") for name in COMPILED
    }


def requested() -> Path | None:
    """The build directory `PAGEMESH_COMPILED` asks for: "1" the default one, another
    value a directory of its own (a test's); None when unset, empty or "0"."""
    value = os.environ.get(ENV, "")
    if value in ("", "0"):
        return None
    return BUILD_DIR if value == "1" else Path(value)
