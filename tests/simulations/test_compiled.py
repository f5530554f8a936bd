"""The mypyc-compiled `dht/` modules (dht/compiled.py) give the simulator's results exactly.

The golden fingerprints of tests/simulations/test_golden.py (every summary, operation,
routing table and message of small growth, churn and rooms runs) are taken again in a
fresh interpreter that runs the compiled `dht.ids`, `dht.routing`, `dht.lookup`,
`dht.core` and `simulations.oracle`, and must equal the reference values. The build is
made from scratch in the test's own directory, over a stale one (a stamp of other
sources and a module that cannot load), so a build older than the sources is shown to
be replaced, never used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dht import compiled
from tests.simulations.test_golden import GOLDEN

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

FINGERPRINTS = """
import json
import dht.compiled
from tests.simulations import test_golden as golden
prints = {
    name: {**golden.fingerprint(name, False), **golden.fingerprint(name, True)}
    for name in sorted(golden.RUNS)
}
print(json.dumps({"loaded": dht.compiled.loaded(), "fingerprints": prints}))
"""


def test_a_stale_build_is_rebuilt_and_the_compiled_modules_give_the_golden_results(
    tmp_path: Path,
) -> None:
    stale = tmp_path / "lib" / "dht"
    stale.mkdir(parents=True)
    (stale / "core.cpython-311-x86_64-linux-gnu.so").write_text("not a module")
    (tmp_path / "stamp").write_text("sources of another day")
    assert not compiled.is_fresh(tmp_path)

    compiled.build(tmp_path)
    assert compiled.is_fresh(tmp_path)
    assert (tmp_path / "stamp").read_text() == compiled.stamp()

    done = subprocess.run(
        [sys.executable, "-c", FINGERPRINTS],
        cwd=ROOT,
        env={**os.environ, compiled.ENV: str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["loaded"] == {name: True for name in compiled.COMPILED}
    assert result["fingerprints"] == GOLDEN


def test_without_the_variable_the_sources_run() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, simulations.oracle, dht.compiled as c; print(json.dumps(c.loaded()))",
        ],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != compiled.ENV},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout) == {name: False for name in compiled.COMPILED}
