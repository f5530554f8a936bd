"""TURN over TLS on loopback: the stream framing of TCP inside TLS, the listener's bounds,
a renewed certificate, and the rules for the key and the listener options."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from relay import server as relay_server_module
from relay import wire
from relay.config import ConfigError, ListenOptions, check_listen, config_from_mapping
from relay.credentials import mint_credentials
from relay.tls import ALPN, RelayTls, TlsError
from tests.signaling.certs import TestCA, serial_of

from .conftest import Inbox, ServerFactory
from .turn import SECRET, TurnClient, error_code

pytestmark = pytest.mark.integration

InboxFactory = Callable[[], Awaitable[Inbox]]


@pytest.fixture
def ca() -> TestCA:
    return TestCA()


@pytest.fixture
def pair(ca: TestCA, tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "relay.pem", tmp_path / "relay.key"
    ca.issue(1).write(cert, key)
    return cert, key


class TlsTurn:
    """A TURN client over one TLS connection (the framing of RFC 8656 section 12.5)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.framer = wire.StreamFramer()
        self.pending: list[bytes] = []
        username, password = mint_credentials(SECRET, "alice", 600, time.time())
        self.client = TurnClient(username, password)

    @classmethod
    async def connect(cls, port: int, context: ssl.SSLContext) -> TlsTurn:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
        )
        return cls(reader, writer)

    async def next_message(self) -> bytes:
        while not self.pending:
            chunk = await asyncio.wait_for(self.reader.read(4096), 2.0)
            assert chunk, "connection closed"
            self.pending.extend(self.framer.feed(chunk))
        return self.pending.pop(0)

    async def ask(self, request: bytes) -> wire.StunMessage:
        self.writer.write(request)
        response = wire.parse_stun(await self.next_message())
        self.client.learn(response)
        return response

    async def allocate(self) -> wire.StunMessage:
        response = await self.ask(self.client.allocate())
        if error_code(response) == 401:
            response = await self.ask(self.client.allocate())
        return response

    async def close(self) -> None:
        self.writer.close()
        await asyncio.wait_for(self.writer.wait_closed(), 2.0)


def relayed_address(response: wire.StunMessage) -> tuple[str, int]:
    raw = response.get(wire.XOR_RELAYED_ADDRESS)
    assert raw is not None, response
    return wire.decode_xor_address(raw, response.transaction_id)


async def test_turn_over_tls_allocates_and_relays_both_ways(
    relay_server: ServerFactory, inbox: InboxFactory, ca: TestCA, pair: tuple[Path, Path]
) -> None:
    tls = RelayTls(*pair)
    server = await relay_server(tls_port=0, tls_context=tls.context)
    assert server.tls_address is not None and server.tls_address[1] != server.address[1]
    peer = await inbox()
    turn = await TlsTurn.connect(server.tls_address[1], ca.client_context())
    ssl_object = turn.writer.get_extra_info("ssl_object")
    assert ssl_object.version() in ("TLSv1.2", "TLSv1.3")
    response = await turn.allocate()
    assert response.cls == wire.SUCCESS, error_code(response)
    relayed = relayed_address(response)
    assert relayed[0] == "127.0.0.1"
    assert (await turn.ask(turn.client.channel_bind(0x4000, peer.address))).cls == wire.SUCCESS
    turn.writer.write(
        wire.serialize_channel_data(0x4000, b"abc", stream=True)
        + wire.serialize_channel_data(0x4000, b"defg", stream=True)
    )
    assert (await peer.receive())[0] == b"abc"
    assert (await peer.receive())[0] == b"defg"
    peer.send(b"xyzzy", relayed)
    assert await turn.next_message() == b"\x40\x00\x00\x05xyzzy\x00\x00\x00"
    await turn.close()
    for _ in range(50):  # the allocation ends with its connection
        if server.core.allocation_count == 0:
            break
        await asyncio.sleep(0.02)
    assert server.core.allocation_count == 0


async def test_alpn_names_turn_when_the_client_offers_it(
    relay_server: ServerFactory, ca: TestCA, pair: tuple[Path, Path]
) -> None:
    server = await relay_server(tls_port=0, tls_context=RelayTls(*pair).context)
    assert server.tls_address is not None
    context = ca.client_context()
    context.set_alpn_protocols(["h2", ALPN])
    turn = await TlsTurn.connect(server.tls_address[1], context)
    assert turn.writer.get_extra_info("ssl_object").selected_alpn_protocol() == ALPN
    await turn.close()


async def test_a_client_that_never_handshakes_holds_a_place_and_is_refused_past_the_cap(
    relay_server: ServerFactory, pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stranger may open TCP connections and say nothing: each holds one of the relay's
    TCP places until its handshake times out, and one past the cap is closed at once."""
    monkeypatch.setattr(relay_server_module, "MAX_TCP_CONNECTIONS", 3)
    server = await relay_server(tls_port=0, tls_context=RelayTls(*pair).context)
    assert server.tls_address is not None
    silent = [await asyncio.open_connection(*server.tls_address) for _ in range(3)]
    for _ in range(50):
        if len(server._handshakes) == 3:
            break
        await asyncio.sleep(0.02)
    assert len(server._handshakes) == 3
    reader, writer = await asyncio.open_connection(*server.tls_address)
    assert await asyncio.wait_for(reader.read(), 2.0) == b""  # refused before any TLS
    assert server.core.counters["refuse.tcp_connections"] == 1
    writer.close()
    await server.stop()  # the handshakes in progress are closed with the server
    for silent_reader, silent_writer in silent:
        assert await asyncio.wait_for(silent_reader.read(), 2.0) == b""
        silent_writer.close()
    assert not server._handshakes


async def test_what_is_not_tls_on_the_tls_port_is_a_counted_failed_handshake(
    relay_server: ServerFactory, pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An HTTP request fails the handshake at once; plain TURN looks like the start of a
    long TLS record, so it waits, and the handshake's deadline closes it."""
    monkeypatch.setattr(relay_server_module, "TLS_HANDSHAKE_TIMEOUT", 1)
    server = await relay_server(tls_port=0, tls_context=RelayTls(*pair).context)
    assert server.tls_address is not None
    username, password = mint_credentials(SECRET, "alice", 600, time.time())
    for count, junk in enumerate(
        [b"GET / HTTP/1.1\r\n\r\n", TurnClient(username, password).allocate()], 1
    ):
        reader, writer = await asyncio.open_connection(*server.tls_address)
        writer.write(junk)
        assert await asyncio.wait_for(reader.read(), 3.0) == b""
        writer.close()
        for _ in range(50):
            if server.core.counters["drop.tls_handshake"] == count:
                break
            await asyncio.sleep(0.02)
        assert server.core.counters["drop.tls_handshake"] == count
    assert server.core.allocation_count == 0 and not server._handshakes


async def test_a_renewed_certificate_serves_new_connections_and_a_bad_one_changes_nothing(
    relay_server: ServerFactory, ca: TestCA, pair: tuple[Path, Path]
) -> None:
    cert, key = pair
    tls = RelayTls(cert, key)
    server = await relay_server(tls_port=0, tls_context=tls.context)
    assert server.tls_address is not None
    port = server.tls_address[1]

    async def serial() -> int:
        turn = await TlsTurn.connect(port, ca.client_context())
        number = serial_of(turn.writer.get_extra_info("ssl_object").getpeercert(True))
        await turn.close()
        return number

    first = await TlsTurn.connect(port, ca.client_context())
    assert await serial() == 1
    ca.issue(2).write(cert, key)
    assert tls.reload()
    assert await serial() == 2
    key.write_text("not a key")
    assert not tls.reload() and tls.failed_reloads == 1
    assert await serial() == 2
    # The connection made before the renewal still carries TURN.
    assert error_code(await first.ask(first.client.allocate())) == 401
    await first.close()


def test_a_key_others_may_read_is_refused(pair: tuple[Path, Path]) -> None:
    cert, key = pair
    key.chmod(0o644)
    with pytest.raises(TlsError, match="mode 0644"):
        RelayTls(cert, key)


def test_a_missing_or_mismatched_pair_is_a_typed_error(
    ca: TestCA, pair: tuple[Path, Path], tmp_path: Path
) -> None:
    cert, key = pair
    with pytest.raises(TlsError, match="no such file"):
        RelayTls(tmp_path / "absent.pem", key)
    other_cert, other_key = tmp_path / "other.pem", tmp_path / "other.key"
    ca.issue(3).write(other_cert, other_key)
    with pytest.raises(TlsError, match="cannot use certificate"):
        RelayTls(cert, other_key)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tls_port": 443}, "tls_port needs tls_cert and tls_key"),
        ({"tls_cert": "c.pem", "tls_key": "k.pem"}, "need tls_port"),
        (
            {"tls_port": 3478, "tls_cert": "c.pem", "tls_key": "k.pem"},
            "tls_port must differ from port",
        ),
    ],
)
def test_tls_listener_options_that_cannot_work_are_refused(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_mapping(options)


def test_tls_options_that_work() -> None:
    _, listen = config_from_mapping({"tls_port": 443, "tls_cert": "c.pem", "tls_key": "k.pem"})
    assert (listen.tls_port, listen.tls_cert, listen.tls_key) == (443, "c.pem", "k.pem")
    check_listen(ListenOptions(port=443, tcp=False, tls_port=443, tls_cert="c", tls_key="k"))


async def test_pagemesh_relay_serves_tls_and_reloads_its_certificate_on_sighup(
    ca: TestCA, pair: tuple[Path, Path], tmp_path: Path
) -> None:
    cert, key = pair
    secret = tmp_path / "relay.secret"
    secret.write_text("relay-secret")
    secret.chmod(0o600)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pagemesh",
        "relay",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--secret-file",
        str(secret),
        "--tls-port",
        "0",
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        match = re.search(r" tls :(\d+)", line)
        assert match is not None, line
        port = int(match.group(1))

        async def serial() -> int:
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ca.client_context(), server_hostname="127.0.0.1"
            )
            number = serial_of(writer.get_extra_info("ssl_object").getpeercert(True))
            writer.close()
            return number

        assert await serial() == 1
        ca.issue(2).write(cert, key)
        process.send_signal(signal.SIGHUP)
        for _ in range(100):
            if await serial() == 2:
                break
            await asyncio.sleep(0.05)
        assert await serial() == 2
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_pagemesh_relay_refuses_a_readable_key(pair: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = pair
    key.chmod(0o640)
    tls = ["--tls-port", "5349", "--tls-cert", str(cert), "--tls-key", str(key)]
    run = subprocess.run(
        [sys.executable, "-m", "pagemesh", "relay", *tls],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PAGEMESH_RELAY_SECRET": "s"},
    )
    assert run.returncode == 2
    assert "mode 0640" in run.stderr
