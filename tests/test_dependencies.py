"""What `pip install pagemesh-*.whl` brings, and what only the extras do.

A node, a relay, `pagemesh chat|send|receive` and a Python `Peer` need the core
dependencies of pyproject.toml alone; the simulator's figures and cluster sweeps come
with `pagemesh[sim]`, the tools with `pagemesh[test]`. Read from the sources (every
import, at any depth, as the files say it), the rule is: a module outside simulations/
imports only the standard library, our packages and the core dependencies; simulations/
adds [sim]; tests/ and benchmarks/ add [test]. Each package is named where it is used,
not reached through another's requirements.

Then in a fresh interpreter that cannot import any distribution outside the core's
requirements (and theirs), every module outside simulations/ imports, and so does the
simulator's command-line module that `pagemesh` loads to build its parser.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Iterator
from functools import cache
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
CORE_PACKAGES = ("dht", "pagemesh", "peer", "relay", "signaling")
OURS = frozenset({*CORE_PACKAGES, "simulations", "tests", "benchmarks"})
HEAVY = ("matplotlib", "dask", "distributed", "numpy", "PIL")
"""What a node has no use for: the simulator's figures and sweeps and what they pull in."""


def _project() -> dict[str, object]:
    project: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


def _names(requirements: Iterable[str]) -> set[str]:
    """Distribution names of requirement strings, without our own extras (`pagemesh[sim]`)."""
    names = {canonicalize_name(Requirement(text).name) for text in requirements}
    return names - {"pagemesh"}


def declared(*extras: str) -> set[str]:
    """The core dependencies' names, and those of each extra named."""
    project = _project()
    optional: dict[str, list[str]] = project["optional-dependencies"]  # type: ignore[assignment]
    names = _names(project["dependencies"])  # type: ignore[arg-type]
    for extra in extras:
        names |= _names(optional[extra])
    return names


@cache
def _distributions_of() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def imported_names(path: Path) -> Iterator[tuple[str, int]]:
    """(top-level name, line) of each absolute import in a file, at any depth."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.partition(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.partition(".")[0], node.lineno


def third_party(path: Path) -> Iterator[tuple[str, int]]:
    """Imports of names neither the standard library's nor ours (nor a sibling script's)."""
    for name, line in imported_names(path):
        if name in sys.stdlib_module_names or name in OURS or name == "__future__":
            continue
        if (path.parent / f"{name}.py").exists():  # benchmarks/ import each other as scripts
            continue
        yield name, line


def undeclared(folders: Iterable[str], allowed: set[str]) -> list[str]:
    """`file:line name (distribution)` for each import no allowed distribution provides."""
    found = []
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for name, line in third_party(path):
                distributions = {canonicalize_name(d) for d in _distributions_of().get(name, [])}
                if not distributions & allowed:
                    where = path.relative_to(ROOT).as_posix()
                    found.append(f"{where}:{line} {name} ({', '.join(sorted(distributions))})")
    return found


def test_the_core_declares_every_package_a_node_a_relay_or_a_peer_imports() -> None:
    assert undeclared(CORE_PACKAGES, declared()) == []


def test_the_simulator_needs_the_core_and_the_sim_extra_only() -> None:
    assert undeclared(["simulations"], declared("sim")) == []


def test_tests_and_benchmarks_need_what_the_test_extra_brings() -> None:
    assert undeclared(["tests", "benchmarks"], declared("sim", "test")) == []


def test_the_test_extra_brings_the_sim_extra() -> None:
    """`make test` installs `.[test]`: the simulator's tests draw plots and run Dask."""
    test: list[str] = _project()["optional-dependencies"]["test"]  # type: ignore[index]
    assert any(Requirement(r).name == "pagemesh" and "sim" in Requirement(r).extras for r in test)


def test_the_heavy_packages_are_not_core_dependencies() -> None:
    core = declared()
    assert not {"matplotlib", "dask", "distributed", "numpy", "pillow"} & core
    assert {"matplotlib", "dask"} <= declared("sim")


def test_every_dependency_has_a_lower_bound_and_none_is_pinned_but_the_baseline() -> None:
    """A lower bound (the release the tests ran with), never a pin: a node's venv takes
    fixes as they come. The stock kademlia package is the one exception: it is the
    interop tests' and the benchmark's fixed baseline."""
    project = _project()
    optional: dict[str, list[str]] = project["optional-dependencies"]  # type: ignore[assignment]
    every = [*project["dependencies"], *(r for extra in optional.values() for r in extra)]  # type: ignore[misc]
    for text in every:
        requirement = Requirement(text)
        if requirement.name == "pagemesh":
            continue
        operators = {spec.operator for spec in requirement.specifier}
        if requirement.name == "kademlia":
            assert operators == {"=="}
        else:
            assert operators == {">="}, f"{text}: a lower bound only"


def _core_closure() -> set[str]:
    """The core dependencies and, recursively, what each requires (markers evaluated)."""
    todo = [(name, frozenset[str]()) for name in declared()]
    seen: set[str] = set()
    while todo:
        name, extras = todo.pop()
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.add(key)
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            marker = requirement.marker
            wanted = ["", *sorted(extras)]
            if marker is None or any(marker.evaluate({"extra": e}) for e in wanted):
                todo.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return {key.partition("[")[0] for key in seen}


IMPORT_ALL = """
import importlib, importlib.abc, json, sys
blocked = set(json.loads(sys.argv[1]))
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"{name} is not a core dependency", name=name)
        return None
sys.meta_path.insert(0, Refuse())
started = set(sys.modules)  # what site's .pth files loaded (setuptools' _distutils_hack)
for module in json.loads(sys.argv[2]):
    importlib.import_module(module)
print(json.dumps(sorted(n for n in set(sys.modules) - started if n.partition(".")[0] in blocked)))
"""


def _modules(packages: Iterable[str]) -> list[str]:
    found = []
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__main__":  # runs the command
                continue
            found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def test_every_module_outside_the_simulator_imports_with_the_core_dependencies_alone() -> None:
    closure = _core_closure()
    blocked = {
        name
        for name, distributions in _distributions_of().items()
        if name not in sys.stdlib_module_names
        and name not in OURS
        and not {canonicalize_name(d) for d in distributions} & closure
    }
    assert set(HEAVY) <= blocked  # what the check is for: a node imports none of them
    modules = [*_modules(CORE_PACKAGES), "simulations.cli"]
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, json.dumps(sorted(blocked)), json.dumps(modules)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


FOR_PEERS_AND_THE_SIMULATOR = ("aiortc", "av", "matplotlib", "dask", "numpy")
"""What `pagemesh node` has no use for: WebRTC (aiortc and PyAV's codecs under it, about
35 MB of a node's memory and a second of its start) and the simulator's packages."""

A_NODES_IMPORTS = """
import json, sys
from pagemesh.cli import build_parser
args = build_parser().parse_args(["node", "--port", "0"])
from signaling.cli import serve                      # what the node's command runs
from pagemesh.embedded_relay import start_embedded_relay
print(json.dumps(sorted({name.partition(".")[0] for name in sys.modules})))
"""


def test_the_node_command_loads_neither_webrtc_nor_the_simulator() -> None:
    done = subprocess.run(
        [sys.executable, "-c", A_NODES_IMPORTS], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)) & set(FOR_PEERS_AND_THE_SIMULATOR) == set()
