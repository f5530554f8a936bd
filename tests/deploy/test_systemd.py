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

from pagemesh.embedded_relay import start_embedded_relay
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
    assert config.bootstrap == ("https://seed.example.net",)  # a node's URL, not a DHT port
    assert config.metrics_from == ("127.0.0.0/8", "::1/128")


@pytest.mark.integration
async def test_uncommenting_the_relay_gives_one_clients_reach(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What a volunteer does: uncomment `relay_port` and the `[relay]` table. The node's
    HTTP stays on 127.0.0.1; the relay listens on every address, without the warning
    that a relay on loopback advertising elsewhere gets."""
    text = (DOCS / "node.toml").read_text()
    for line in ("# relay_port = 3478", "# [relay]", '# host = "0.0.0.0"'):
        assert text.count(line) == 1, line
        text = text.replace(line, line[2:])
    text = text.replace("relay_port = 3478", "relay_port = 0")  # a free port here
    text = text.replace('public_url = "wss://node.example.net"', 'public_url = "wss://203.0.113.7"')
    path = tmp_path / "node.toml"
    path.write_text(text)
    config, _ = load_node_config(path)
    assert config.host == "127.0.0.1" and config.relay_port == 0
    with caplog.at_level("WARNING", logger="pagemesh.relay"):
        relay = await start_embedded_relay(config, path)
    try:
        assert relay.server.address[0] == "0.0.0.0" and not relay.on_loopback_only
        assert relay.urls[0].startswith("stun:203.0.113.7:")
        assert "(loopback) but tells clients" not in caplog.text
    finally:
        await relay.stop()


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
