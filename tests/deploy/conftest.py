"""The shipped deployment files (docs/deploy/) run for real: node processes, a proxy, certificates.

A node here is `python -m pagemesh node` in a subprocess, as a service manager
starts it; its first stdout line says where it listens. Ports are the
kernel's (port 0), except a proxy's, which cannot report one: those are taken
free from the kernel just before the proxy binds them.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.signaling.certs import TestCA

DOCS = Path(__file__).resolve().parents[2] / "docs" / "deploy"
STARTED = re.compile(r"pagemesh node ([0-9a-f]{40}) at (\S+) dht (\S+) listen (\S+) .*page (\S+)")


class NodeProcess:
    def __init__(self, proc: asyncio.subprocess.Process, line: str) -> None:
        match = STARTED.search(line)
        assert match, f"unexpected first line {line!r}"
        self.proc = proc
        self.node_id, self.url, self.dht, self.listen, self.page = match.groups()
        """`url`: what the node advertises (a proxy's); `listen`: where it binds itself."""

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


NodeLauncher = Callable[..., Awaitable[NodeProcess]]


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody holds right now (for a proxy that cannot take 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def ca() -> TestCA:
    return TestCA()


@pytest.fixture
async def launch_node(tmp_path: Path) -> AsyncIterator[NodeLauncher]:
    """`await launch_node(toml, *args, env=...)`: a node from a config file, stopped at the end."""
    started: list[NodeProcess] = []

    async def start(toml: str, *args: str, env: dict[str, str] | None = None) -> NodeProcess:
        index = len(started)
        config = tmp_path / f"node{index}.toml"
        config.write_text(toml)
        argv = ["-m", "pagemesh", "node", "--config", str(config)]
        argv += ["--data-dir", str(tmp_path / f"node{index}"), *args]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        assert proc.stdout is not None
        try:
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            node = NodeProcess(proc, line)
        except BaseException:
            proc.kill()
            await proc.wait()
            raise
        started.append(node)
        return node

    yield start
    for node in started:
        if node.proc.returncode is None:
            node.proc.terminate()
            try:
                await asyncio.wait_for(node.proc.wait(), 20)
            except TimeoutError:
                node.proc.kill()
                await node.proc.wait()
