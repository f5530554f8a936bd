"""`pagemesh node --tls-cert --tls-key` as a real process: HTTPS and WSS, SIGHUP reloads.

The operator renews the certificate and sends SIGHUP: a client that is
connected stays connected and keeps talking, a client that connects
afterwards sees the new certificate; a bad pair or a key others may read
keeps the old certificate, logs why, and the node runs on. Real sockets on
loopback, a CA the test makes, clients that trust only that CA.
"""

from __future__ import annotations

import asyncio
import re
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from nacl.signing import SigningKey

from peer.signaling import PeerJoined, SignalingClient
from signaling.rooms import canonical_url, room_key
from tests.signaling.certs import Issued, TestCA, serial_of

pytestmark = pytest.mark.integration

STARTED = re.compile(r"pagemesh node [0-9a-f]{40} at (\S+) dht \S+ .*page (\S+)")
ROOM = room_key(canonical_url("https://example.org/tls"))


class TlsNode:
    """A node process serving TLS from `cert` and `key`; its log lines as they come."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str, page: str) -> None:
        self.proc, self.url, self.page = proc, url, page
        self.log: list[str] = []

    async def logged(self, needle: str, within: float = 15.0) -> str:
        """The next log line containing `needle` (bounded by `within` seconds)."""
        assert self.proc.stderr is not None
        async with asyncio.timeout(within):
            while True:
                line = (await self.proc.stderr.readline()).decode()
                assert line, f"the node exited before logging {needle!r}: {self.log[-5:]}"
                self.log.append(line)
                if needle in line:
                    return line

    def hup(self) -> None:
        self.proc.send_signal(signal.SIGHUP)


async def start_node(data: Path, cert: Path, key: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pagemesh",
        "node",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--dht-port",
        "0",
        "--data-dir",
        str(data),
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.fixture
def ca() -> TestCA:
    return TestCA()


@pytest.fixture
def files(tmp_path: Path, ca: TestCA) -> tuple[Path, Path]:
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    ca.issue(serial=1001, days=30).write(cert, key)
    return cert, key


@pytest.fixture
async def node(tmp_path: Path, files: tuple[Path, Path]) -> AsyncIterator[TlsNode]:
    proc = await start_node(tmp_path / "node", *files)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        match = STARTED.search(line)
        assert match, f"unexpected first line {line!r}"
        yield TlsNode(proc, match.group(1), match.group(2))
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)


async def certificate_serial(url: str, context: ssl.SSLContext) -> int:
    """Open a new TLS connection to the node at `url`; the serial it presents."""
    address = url.split("://", 1)[1].rstrip("/")
    host, _, port = address.rpartition(":")
    _reader, writer = await asyncio.open_connection(
        host, int(port), ssl=context, server_hostname="localhost"
    )
    try:
        return serial_of(writer.get_extra_info("ssl_object").getpeercert(binary_form=True))
    finally:
        writer.close()
        await writer.wait_closed()


def connection_serial(client: SignalingClient) -> int:
    """The serial of the certificate an open client's connection was made with."""
    ssl_object = client._ws.get_extra_info("ssl_object")
    return serial_of(ssl_object.getpeercert(binary_form=True))


async def test_wss_and_https_and_a_reload_that_keeps_clients(
    node: TlsNode, ca: TestCA, files: tuple[Path, Path]
) -> None:
    trust = ca.client_context()
    assert node.url.startswith("wss://127.0.0.1:") and node.page.startswith("https://")

    async with aiohttp.ClientSession() as http:
        async with http.get(node.page, ssl=trust) as response:
            assert response.status == 200
            assert "<html" in (await response.text()).lower()
        async with http.get(node.page + "healthz", ssl=trust) as response:
            assert (await response.json())["url"] == node.url  # what the node advertises
        with pytest.raises(aiohttp.ClientError):  # a client that does not trust the CA
            await http.get(node.page, ssl=ssl.create_default_context())

    alice = await SignalingClient.connect(node.url, SigningKey.generate(), ssl=trust)
    try:
        await alice.join(ROOM)
        assert connection_serial(alice) == 1001

        ca.issue(serial=2002, days=60).write(*files)  # renewed: new key, serial, expiry
        node.hup()
        await node.logged("TLS certificate reloaded")

        assert await certificate_serial(node.url, trust) == 2002
        assert await alice.ping() >= 0  # the connection made before the reload still talks
        assert connection_serial(alice) == 1001
        bob = await SignalingClient.connect(node.url, SigningKey.generate(), ssl=trust)
        try:
            assert connection_serial(bob) == 2002
            await bob.join(ROOM)
            joined = await alice.next_event(within=10)  # and hears of the newcomer
            assert isinstance(joined, PeerJoined) and joined.member.key == bob.key
        finally:
            await bob.close()

        # A half-copied renewal (the new certificate beside the old key): refused, logged.
        cert, key = files
        Issued(ca.issue(serial=3003).cert_pem, key.read_bytes(), 3003).write(cert, key)
        node.hup()
        assert "keeping the previous certificate" in await node.logged("TLS reload failed")
        assert await certificate_serial(node.url, trust) == 2002

        # A key others may read: refused, logged, the node runs on with what it had.
        ca.issue(serial=4004).write(*files)
        key.chmod(0o644)
        node.hup()
        assert "mode 0644" in await node.logged("TLS reload failed")
        assert await certificate_serial(node.url, trust) == 2002
        assert await alice.ping() >= 0
        assert node.proc.returncode is None
    finally:
        await alice.close()


async def test_a_key_others_may_read_is_refused_at_start(
    tmp_path: Path, files: tuple[Path, Path]
) -> None:
    files[1].chmod(0o640)
    proc = await start_node(tmp_path / "node", *files)
    _out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert b"mode 0640" in err and b"chmod 600" in err
