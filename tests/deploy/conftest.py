"""The shipped deployment files (docs/deploy/) run for real: node processes, a proxy, certificates.

A node here is `python -m pagemesh node` in a subprocess, as a service manager
starts it; its first stdout line says where it listens. Ports are the
kernel's (port 0), except a proxy's, which cannot report one: those are taken
free from the kernel just before the proxy binds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
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

STRANGER = "127.0.0.2"
"""A visitor from another address (all of 127.0.0.0/8 is this machine's loopback)."""

NODE_BEHIND = """
[node]
host = "127.0.0.1"
port = 0
dht_port = 0
public_url = "wss://localhost:{https}"
trusted_proxies = ["127.0.0.1", "::1"]
presence_ttl = 3.0
refresh_interval = 0.5

[node.admission]
unauthenticated = 1   # a second connection waiting for its hello from one address: 429
connections = 100
per_second = 100.0
burst = 100.0

[dht]
maintenance_interval = 0.5
"""

NODE_DIRECT = """
[node]
host = "127.0.0.1"
port = 0
dht_port = 0
presence_ttl = 3.0
refresh_interval = 0.5

[dht]
maintenance_interval = 0.5
"""


def from_address(source: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0)))


def tail(path: Path, lines: int = 20) -> str:
    """The end of a log file, for a failure's message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"({path}: {exc.strerror})"


async def until_listening(port: int, proc: asyncio.subprocess.Process, log: Path) -> None:
    async with asyncio.timeout(15):
        while True:
            assert proc.returncode is None, f"{log.parent.name} exited:\n{tail(log)}"
            with contextlib.suppress(OSError):
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            await asyncio.sleep(0.05)


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
        log = tmp_path / f"node{index}.log"
        argv = ["-m", "pagemesh", "node", "--config", str(config)]
        argv += ["--data-dir", str(tmp_path / f"node{index}"), *args]
        with log.open("wb") as stderr:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                *argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                env={**os.environ, **(env or {})},
            )
        assert proc.stdout is not None
        try:
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            assert STARTED.search(line), f"node {index} said {line!r}:\n{tail(log)}"
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
