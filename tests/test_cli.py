"""The `pagemesh` command as an operator uses it: real processes on loopback."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from dht.config import ConfigError, config_from_mapping, load_config
from pagemesh.cli import build_parser, log_level, main

PAGEMESH = [sys.executable, "-m", "pagemesh"]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(*args: str, data_dir: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PAGEMESH_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [*PAGEMESH, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.integration
def test_serve_put_get_and_a_clean_stop(tmp_path: Path) -> None:
    ports = [free_udp_port(), free_udp_port()]
    config = tmp_path / "node.toml"
    config.write_text("[dht]\nmaintenance_interval = 2\n")
    servers = []
    try:
        for i, port in enumerate(ports):
            args = ["dht", "serve", "--host", "127.0.0.1", "--port", str(port)]
            args += ["--data-dir", str(tmp_path / f"n{i}"), "--config", str(config)]
            if i:
                args += ["--bootstrap", f"127.0.0.1:{ports[0]}"]
            servers.append(subprocess.Popen([*PAGEMESH, *args], stderr=subprocess.PIPE, text=True))
        for server in servers:  # each logs once it listens (after its bootstrap)
            assert server.stderr is not None
            assert "listening on 127.0.0.1" in server.stderr.readline()
        node = f"127.0.0.1:{ports[1]}"
        put = run("dht", "put", "greeting", "hello mesh", "--node", node, data_dir=tmp_path)
        assert put.returncode == 0, put.stderr
        assert json.loads(put.stdout)["stored_at_nodes"] == 2
        got = run("dht", "get", "greeting", "--node", f"127.0.0.1:{ports[0]}", data_dir=tmp_path)
        assert got.returncode == 0, got.stderr
        (line,) = got.stdout.splitlines()
        record = json.loads(line)
        assert record["text"] == "hello mesh" and 3500 < record["expires_in"] <= 3600
        assert len(record["publisher"]) == 64 and len(record["publisher_id"]) == 40
        assert (tmp_path / "client.key").stat().st_mode & 0o777 == 0o600
        missing = run("dht", "get", "nothing here", "--node", node, data_dir=tmp_path)
        assert missing.returncode == 1 and missing.stdout == ""
        assert re.search(r"no record for 'nothing here' \(asked [1-9]\d* nodes?\)", missing.stderr)
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
        for server in servers:
            assert server.wait(timeout=10) == 0
    saved = json.loads((tmp_path / "n0" / "routing.json").read_text())
    assert [c["port"] for c in saved["contacts"]] == [ports[1]]
    assert (tmp_path / "n0" / "node.key").stat().st_mode & 0o777 == 0o600


@pytest.mark.integration
def test_a_client_with_no_node_to_talk_to_fails_clearly(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_udp_port()}"
    result = run("dht", "get", "x", "--node", dead, "--timeout", "3", data_dir=tmp_path)
    assert result.returncode == 1
    assert "no DHT node answered" in result.stderr


def test_bad_arguments_are_refused_with_a_message(tmp_path: Path) -> None:
    result = run("dht", "get", "x", "--node", "nowhere", data_dir=tmp_path)
    assert result.returncode == 2 and "expected HOST:PORT" in result.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[dht]\nk = 'twenty'\n")
    result = run("dht", "serve", "--config", str(bad), data_dir=tmp_path)
    assert result.returncode == 2 and "'k' must be int" in result.stderr


@pytest.mark.integration
def test_the_demo_is_a_mesh_one_can_chat_in(tmp_path: Path) -> None:
    """`pagemesh demo` prints how to join; a chat client that does is greeted."""
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pagemesh",
            "demo",
            "--duration",
            "60",
            "--data-dir",
            str(tmp_path / "d"),
            "--port",
            "0",  # free ports: another demo on this machine may hold the fixed ones
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert demo.stdout is not None
        command = ""
        for line in demo.stdout:
            if "pagemesh chat" in line:
                command = line.strip()
                break
        assert command, "the demo printed no chat command"
        args = command.split()[2:]  # after ".venv/bin/pagemesh chat"
        data_dir = args.index("--data-dir")
        args[data_dir + 1] = str(tmp_path / "visitor")

        def visit() -> list[str]:
            chat = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pagemesh",
                    "chat",
                    *args,
                    "--say",
                    "hi",
                    "--wait",
                    "6",
                    "--json",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert chat.returncode == 0, chat.stderr[-2000:]
            texts = [json.loads(line).get("text", "") for line in chat.stdout.splitlines()]
            return [text for text in texts if "welcome to the room" in text]

        assert len(visit()) == 1
        # Back a moment later with the same key (a reload, a rejoin): the first hello
        # was seen already, and no second one comes.
        assert visit() == []
    finally:
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=30) == 0


def test_config_tables_map_onto_the_dht_config(tmp_path: Path) -> None:
    config = config_from_mapping({"k": 8, "rpc_timeout": 1, "records": {"max_ttl": 60}})
    assert (config.k, config.rpc_timeout, config.records.max_ttl) == (8, 1.0, 60)
    for bad, message in [
        ({"kk": 1}, "unknown dht option 'kk'"),
        ({"read_only": 1}, "'read_only' must be bool"),
        ({"alpha": True}, "'alpha' must be int"),
        ({"records": {"max_ttl": "1h"}}, "dht.records option 'max_ttl' must be int"),
        ({"records": 3}, "must be a table"),
        ({"slow_quantile": 0}, "slow_quantile is in"),
        ({"slow_min": 2.0}, "at most slow_max"),
    ]:
        with pytest.raises(ConfigError, match=message):
            config_from_mapping(bad)
    path = tmp_path / "c.toml"
    path.write_text("[dht]\nalpha = 5\n")
    assert load_config(path).alpha == 5
    assert load_config(None).k == 20


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["chat", "https://example.org/"], logging.WARNING),
        (["chat", "https://example.org/", "-v"], logging.INFO),
        (["-v", "chat", "https://example.org/"], logging.INFO),
        (["chat", "https://example.org/", "-vv"], logging.DEBUG),
        (["send", "f", "https://example.org/"], logging.WARNING),
        (["receive", "https://example.org/", "--out", "x"], logging.WARNING),
        (["demo"], logging.WARNING),
        (["demo", "-v"], logging.INFO),
        (["node"], logging.INFO),
        (["-v", "node"], logging.DEBUG),
    ],
)
def test_library_logs_stay_off_at_a_prompt_unless_asked(argv: list[str], level: int) -> None:
    """What a person types at (chat, send, receive, demo) logs warnings only; -v info,
    -vv debug. A node logs info, -v debug."""
    args = build_parser().parse_args(argv)
    verbose = args.verbose + args.command_verbose
    assert log_level(verbose, getattr(args, "quiet_logs", False)) == level


def test_send_usage_names_the_file_then_the_page(tmp_path: Path) -> None:
    result = run("send", "--help", data_dir=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: pagemesh send [options] FILE URL")
    assert "--to NAME|KEY" in result.stdout and "--all-present" in result.stdout


@pytest.mark.parametrize("argv", [["--version"], ["node", "--version"], ["chat", "--version"]])
def test_version_is_the_installed_distributions(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`pagemesh --version` (and after any command) says which build runs: the version
    setuptools-scm gave it from git (pyproject.toml), as pip and /healthz know it."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 0
    assert capsys.readouterr().out == f"pagemesh {metadata.version('pagemesh')}\n"


SCENARIO = Path(__file__).resolve().parent.parent / "simulations" / "scenarios" / "growth.toml"


@pytest.mark.parametrize(
    ("argv", "missing", "named"),
    [
        (["run", str(SCENARIO)], "matplotlib", "matplotlib"),
        (["sweep", str(SCENARIO), "--param", "nodes=50,60"], "matplotlib", "matplotlib"),
        (["sweep", str(SCENARIO), "--scheduler", "tcp://127.0.0.1:1"], "distributed", "dask"),
    ],
)
def test_the_simulator_without_its_extra_says_what_to_install(
    argv: list[str],
    missing: str,
    named: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A core install (`pip install pagemesh-*.whl`) has no matplotlib or Dask: the runs
    that need them refuse before they start instead of failing at the plots."""
    monkeypatch.setitem(sys.modules, missing, None)  # what an absent package looks like
    out = tmp_path / "out"
    assert main(["simulate", *argv, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "pip install 'pagemesh[sim]'" in error and named in error
    assert not out.exists()


def test_listing_the_scenarios_needs_no_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("matplotlib", "dask", "distributed"):
        monkeypatch.setitem(sys.modules, name, None)
    assert main(["simulate", "list"]) == 0
    assert str(SCENARIO) in capsys.readouterr().out
