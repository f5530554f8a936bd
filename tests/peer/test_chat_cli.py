"""`pagemesh chat --say ... --json` as real processes against a loopback mesh."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from tests.signaling.conftest import NodeFactory

pytestmark = pytest.mark.integration


async def chat(data_dir: Path, node: str, say: str, wait: float) -> list[dict[str, object]]:
    env = {**os.environ, "PAGEMESH_ICE_HOSTS": "127.0.0.1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pagemesh",
        "chat",
        "https://example.org/",
        "--node",
        node,
        "--data-dir",
        str(data_dir),
        "--say",
        say,
        "--wait",
        str(wait),
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), wait + 30)
    assert proc.returncode == 0, err.decode()[-2000:]
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


async def test_two_chat_processes_talk(signaling_mesh: NodeFactory, tmp_path: Path) -> None:
    a, b = await signaling_mesh(2)
    alice, bob = await asyncio.gather(
        chat(tmp_path / "alice", a.url, "hi from alice", 6.0),
        chat(tmp_path / "bob", b.url, "hi from bob", 6.0),
    )
    for events in (alice, bob):
        texts = {e["text"] for e in events if e["event"] == "message"}
        assert texts == {"hi from alice", "hi from bob"}, events
        assert any(e["event"] == "connected" and e["path"] == "direct" for e in events)


async def run(*args: str, within: float = 60.0) -> tuple[int, str]:
    env = {**os.environ, "PAGEMESH_ICE_HOSTS": "127.0.0.1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pagemesh",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), within)
    return proc.returncode or 0, out.decode()


async def test_send_and_receive_commands(signaling_mesh: NodeFactory, tmp_path: Path) -> None:
    a, b = await signaling_mesh(2)
    source = tmp_path / "photo.jpg"
    source.write_bytes(os.urandom(2_000_000))
    url = "https://example.org/photos"
    env = {**os.environ, "PAGEMESH_ICE_HOSTS": "127.0.0.1"}
    receiver = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pagemesh",
        "receive",
        url,
        "--node",
        b.url,
        "--data-dir",
        str(tmp_path / "r"),
        "--out",
        str(tmp_path / "inbox"),
        "--count",
        "1",
        "--timeout",
        "50",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    assert receiver.stdout is not None
    first = await asyncio.wait_for(receiver.stdout.readline(), 30)  # seated: present now
    assert first.startswith(b"waiting for files"), first
    code_s, out_s = await run(
        "send", str(source), url, "--node", a.url, "--data-dir", str(tmp_path / "s"),
        "--timeout", "50",
    )  # fmt: skip
    out_r, _ = await asyncio.wait_for(receiver.communicate(), 30)
    assert receiver.returncode == 0, out_r.decode()
    assert code_s == 0, out_s
    assert (tmp_path / "inbox" / "photo.jpg").read_bytes() == source.read_bytes()
    assert "received" in out_r.decode() and "has photo.jpg (verified)" in out_s


async def test_send_of_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    code, out = await run("send", "https://example.org/", str(tmp_path / "nope"))
    assert code == 2 and "no such file" in out
