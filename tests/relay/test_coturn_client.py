"""coturn's own test client, turnutils_uclient, against our relay on loopback.

Its default run allocates an RTP/RTCP pair (EVEN-PORT with the reserve bit,
then RESERVATION-TOKEN), binds channels in the 0x4000-0x7FFF range of RFC 5766,
and echoes 5 messages per allocation through turnutils_peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket

import pytest

from .conftest import ServerFactory
from .turn import SECRET

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("turnutils_uclient") is None or shutil.which("turnutils_peer") is None,
        reason="coturn's turnutils_uclient/turnutils_peer not installed (make debs)",
    ),
]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def run_uclient(relay_port: int, peer_port: int, *flags: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "turnutils_uclient",
        *flags,
        "-u",
        "alice",
        "-W",
        SECRET.decode(),
        "-e",
        "127.0.0.1",
        "-r",
        str(peer_port),
        "-p",
        str(relay_port),
        "127.0.0.1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, output.decode()
    return output.decode(errors="replace")


@pytest.fixture
async def coturn_peer() -> object:
    port = free_udp_port()
    process = await asyncio.create_subprocess_exec(
        "turnutils_peer",
        "-L",
        "127.0.0.1",
        "-p",
        str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(0.2)
    yield port
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    await process.wait()


@pytest.mark.parametrize("flags", [(), ("-t",), ("-s",)], ids=["udp", "tcp", "send-indications"])
async def test_uclient_default_run(
    relay_server: ServerFactory, coturn_peer: int, flags: tuple[str, ...]
) -> None:
    server = await relay_server()
    output = await run_uclient(server.address[1], coturn_peer, *flags)
    assert "error" not in output.lower(), output
    assert re.search(r"tot_send_msgs=10, tot_recv_msgs=10", output), output
    assert "Total lost packets 0 (0.000000%)" in output, output
    assert server.core.counters["relayed.packets.to_peer"] == 10
    assert server.core.counters["relayed.packets.to_client"] == 10
