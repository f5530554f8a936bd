"""docs/deploy/pagemesh-node.service and node.toml: what they promise, and systemd's own check.

`systemd-analyze verify` (when the machine has it) reads the unit as systemd
would: unknown keys, bad values and a missing ExecStart binary are errors.
The only change made to the shipped file is ExecStart's path (to this
checkout's `pagemesh`). `systemd-analyze security --offline` rates the
sandbox; the unit must stay in its "OK" band (exposure at most 2.0).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from signaling.config import load_node_config
from tests.deploy.conftest import DOCS

UNIT = DOCS / "pagemesh-node.service"
ANALYZE = shutil.which("systemd-analyze")
SHIPPED_BINARY = "/opt/pagemesh/bin/pagemesh"


def directives(text: str) -> dict[str, list[str]]:
    """Each key of the unit with its values in order (a key may repeat)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_unit_is_hardened_as_documented() -> None:
    unit = directives(UNIT.read_text())
    expected = {
        "DynamicUser": "yes",
        "StateDirectory": "pagemesh",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",  # nothing: the node binds no port below 1024
        "AmbientCapabilities": "",
        "Restart": "on-failure",
        "ExecReload": "/bin/kill -HUP $MAINPID",  # SIGHUP reloads the TLS certificate
    }
    for key, value in expected.items():
        assert unit.get(key) == [value], (key, unit.get(key))
    (start,) = unit["ExecStart"]
    assert start.startswith(SHIPPED_BINARY + " node --config /etc/pagemesh/node.toml")
    assert "--data-dir /var/lib/pagemesh/" in start  # inside StateDirectory


def test_the_shipped_node_config_loads() -> None:
    config, _ = load_node_config(DOCS / "node.toml")
    assert config.host == "127.0.0.1" and config.public_url.startswith("wss://")
    assert config.trusted_proxies == ("127.0.0.1", "::1")


@pytest.fixture
def unit_here(tmp_path: Path) -> Path:
    if ANALYZE is None:
        pytest.skip("systemd-analyze is not installed")
    binary = Path(sys.executable).parent / "pagemesh"
    assert binary.exists(), binary
    text = UNIT.read_text()
    assert text.count(SHIPPED_BINARY) == 1
    path = tmp_path / UNIT.name
    path.write_text(text.replace(SHIPPED_BINARY, str(binary)))
    return path


def test_systemd_analyze_verify(unit_here: Path) -> None:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "verify", str(unit_here)], capture_output=True, text=True, timeout=60
    )
    # Unknown keys are only warnings (exit 0): any output at all is a finding.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr
    )


def test_systemd_analyze_security_rates_it_ok(unit_here: Path) -> None:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--threshold=20", str(unit_here)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("this systemd-analyze cannot rate a unit file offline")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert "Overall exposure level" in result.stdout
