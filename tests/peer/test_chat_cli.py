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
