"""coturn's own test client, turnutils_uclient, against our relay on loopback.

Its default run allocates an RTP/RTCP pair (EVEN-PORT with the reserve bit,
then RESERVATION-TOKEN), binds channels in the 0x4000-0x7FFF range of RFC 5766,
and echoes 5 messages per allocation through turnutils_peer. With `-t -S` it does
the same over TLS (`turns:`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
from pathlib import Path

import pytest

from relay.tls import RelayTls
from tests.signaling.certs import TestCA

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


async def test_uclient_over_tls(
    relay_server: ServerFactory, coturn_peer: int, tmp_path: Path
) -> None:
    cert, key = tmp_path / "relay.pem", tmp_path / "relay.key"
    TestCA().issue(1).write(cert, key)
    server = await relay_server(tls_port=0, tls_context=RelayTls(cert, key).context)
    assert server.tls_address is not None
    # uclient's -E (a CA file) does not make it refuse another CA's certificate, so the
    # chain is checked by our own TLS clients (test_tls.py) and Chromium's (tests/nat).
    output = await run_uclient(server.tls_address[1], coturn_peer, "-t", "-S")
    # uclient picks one of its contexts at random for each connection, TLS 1.0 and 1.1
    # among them; we refuse those (TLS 1.2 at least), and it tries again with another.
    methods = re.findall(r"client session connected with cipher \S+, method=(\S+)", output)
    assert methods and set(methods) <= {"TLSv1.2", "TLSv1.3"}, output
    errors = [line for line in output.splitlines() if "error" in line.lower()]
    assert all("unexpected eof while reading" in line for line in errors), output
    assert re.search(r"tot_send_msgs=10, tot_recv_msgs=10", output), output
    assert "Total lost packets 0 (0.000000%)" in output, output
    assert server.core.counters["relayed.packets.to_peer"] == 10
    assert server.core.counters["relayed.packets.to_client"] == 10
