"""The messaging scenario drives peer/messaging.py under dropping links: nothing is
lost, nothing is delivered twice, and every room ends in one order."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from simulations.cli import SCENARIO_DIR
from simulations.scenario import load_scenario, run


@pytest.mark.parametrize(
    "overrides",
    [
        {"nodes": 48, "room_size": 8, "duration": 120.0, "drain": 60.0},
        # links dropping every few minutes, each down for ~10 s: resends and history
        {
            "nodes": 30,
            "room_size": 6,
            "message_rate": 0.3,
            "link_drops_per_hour": 60.0,
            "reconnect_mean": 10.0,
            "duration": 300.0,
            "drain": 120.0,
        },
    ],
)
def test_nothing_lost_nothing_twice_one_order(overrides: dict[str, float]) -> None:
    result = run(load_scenario(SCENARIO_DIR / "messaging.toml", overrides))
    messages = result.summary["messages"]
    assert messages["sent"] > 0
    assert messages["lost"] == 0
    assert messages["duplicates"] == 0
    assert messages["delivered"] == messages["deliveries_expected"]
    assert result.summary["rooms_in_one_order_share"] == 1.0
    if overrides.get("link_drops_per_hour", 0) > 0:
        assert result.summary["links"]["drops"] > 0
        assert result.summary["frames"]["by_kind"]["hist-req"] > 0  # reconnections resumed


def test_same_seed_same_summary_in_processes_with_other_hash_seeds(tmp_path: Path) -> None:
    """The core keeps its members in a set; the summary must not depend on its order."""
    outputs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / hash_seed
        subprocess.run(
            [sys.executable, "-m", "pagemesh", "simulate", "run",
             str(SCENARIO_DIR / "messaging.toml"), "--out", str(out),
             "--set", "nodes=24", "--set", "room_size=6", "--set", "duration=60",
             "--set", "drain=30"],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            check=True,
            capture_output=True,
            timeout=120,
        )  # fmt: skip
        outputs.append((out / "summary.json").read_text())
    assert outputs[0] == outputs[1]
