"""The NAT lab as a fixture: built once per module, torn down even when a test fails.

Peers a test starts are stopped when it ends; the namespaces, nodes and relay
live for the module. Connection times the tests record are written to
`nat_paths.json` in pytest's temporary directory and printed in the summary.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from .lab import NatLab, missing_requirements

TIMES: list[dict[str, Any]] = []


@pytest.fixture(scope="module")
def nat_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatLab]:
    reason = missing_requirements()
    if reason is not None:
        pytest.skip(reason)
    lab = NatLab.start(tmp_path_factory.mktemp("natlab"))
    try:
        yield lab
    finally:
        lab.close()
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert lab.suffix not in left, f"namespaces left behind: {left}"


@pytest.fixture
def lab(nat_lab: NatLab) -> Iterator[NatLab]:
    """The module's lab; the processes a test starts in it are stopped after the test."""
    before = len(nat_lab.processes)
    try:
        yield nat_lab
    finally:
        for process in nat_lab.processes[before:]:
            process.stop()
        del nat_lab.processes[before:]


@pytest.fixture(scope="session")
def nat_times(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict[str, Any]]]:
    """Append {"pair", "path", "candidates", "join_to_connected_s"} per measured pair."""
    yield TIMES
    if TIMES:
        out = tmp_path_factory.getbasetemp() / "nat_paths.json"
        out.write_text(json.dumps(TIMES, indent=1))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TIMES:
        terminalreporter.section("NAT lab: join -> Connected")
        for row in TIMES:
            terminalreporter.write_line(json.dumps(row))
