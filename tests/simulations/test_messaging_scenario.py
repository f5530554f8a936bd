"""The messaging scenario drives peer/messaging.py under dropping links: nothing is
lost, nothing is delivered twice, and every room ends in one order."""

from __future__ import annotations

import pytest

from simulations.cli import SCENARIO_DIR
from simulations.scenario import load_scenario, run, summary_json


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


def test_same_seed_same_summary() -> None:
    small = {"nodes": 24, "room_size": 6, "duration": 60.0, "drain": 30.0}
    first = summary_json(run(load_scenario(SCENARIO_DIR / "messaging.toml", small)))
    again = summary_json(run(load_scenario(SCENARIO_DIR / "messaging.toml", small)))
    assert first == again
