"""The relay inside a node: which address it advertises, binds and reports, and to whom.

Pure rules first (no sockets): the order in which configured addresses count, a 1:1 NAT
(a private address on the machine, a public one mapped onto it), and what a client is
told when the node does not know its public address. Then real relays on loopback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from pagemesh.embedded_relay import (
    EmbeddedRelay,
    RelayPorts,
    advertised_host,
    reachable_host,
    socket_addresses,
    start_embedded_relay,
)
from relay import wire
from relay.config import ListenOptions
from relay.credentials import mint_credentials
from relay.server import RelayServer
from signaling.config import ConfigError, NodeConfig, load_node_config
from signaling.node import SignalingNode
from tests.relay.conftest import Inbox, transact
from tests.relay.turn import TurnClient, error_code
from tests.signaling.certs import TestCA, serial_of
from tests.signaling.conftest import FAST_DHT, FAST_NODE

PUBLIC = "203.0.113.7"  # the address a 1:1 NAT maps onto the machine (documentation range)


# --- where clients reach it -------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "listen", "listen_host", "expected"),
    [
        ({"relay_host": "relay.example.net", "public_url": "wss://n.example.net"},
         {"external_host": PUBLIC}, "0.0.0.0", "relay.example.net"),
        ({"public_url": "wss://n.example.net"}, {"external_host": PUBLIC}, "0.0.0.0", PUBLIC),
        ({"public_url": "wss://n.example.net:8443/"}, {}, "0.0.0.0", "n.example.net"),
        ({}, {}, "192.0.2.4", "192.0.2.4"),
        ({}, {}, "127.0.0.1", "127.0.0.1"),
        ({}, {}, "0.0.0.0", None),
        ({}, {}, "::", None),
        ({}, {}, "", None),
    ],
    ids=["node-relay_host", "external_host", "public_url", "one-address", "loopback",
         "wildcard", "wildcard6", "empty"],
)  # fmt: skip
def test_the_advertised_host_is_the_first_configured(
    node: dict[str, str], listen: dict[str, str], listen_host: str, expected: str | None
) -> None:
    config = NodeConfig(host=listen_host, **node)  # type: ignore[arg-type]
    assert advertised_host(config, ListenOptions(**listen), listen_host) == expected  # type: ignore[arg-type]


# --- behind a 1:1 NAT -------------------------------------------------------------------


def test_behind_a_1_to_1_nat_the_relay_binds_its_own_address_and_reports_the_public_one() -> None:
    """The public address is not one of the machine's: relayed sockets bind the default
    (the private address of the outgoing route) and XOR-RELAYED-ADDRESS says the public."""
    assert socket_addresses(ListenOptions(), PUBLIC, public_is_local=False) == (None, PUBLIC)


def test_a_public_address_the_machine_holds_is_bound_and_reported_as_it_is() -> None:
    assert socket_addresses(ListenOptions(), PUBLIC, public_is_local=True) == (PUBLIC, None)


def test_configured_relay_and_external_hosts_win() -> None:
    listen = ListenOptions(relay_host="10.0.0.5", external_host=PUBLIC)
    assert socket_addresses(listen, "198.51.100.1", public_is_local=False) == ("10.0.0.5", PUBLIC)
    listen = ListenOptions(relay_host="10.0.0.5")
    assert socket_addresses(listen, PUBLIC, public_is_local=False) == ("10.0.0.5", PUBLIC)
    assert socket_addresses(listen, None, public_is_local=False) == ("10.0.0.5", None)


# --- what one client is told ------------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "client", "expected"),
    [
        ("192.0.2.4", "198.51.100.9", "192.0.2.4"),
        ("127.0.0.1", "127.0.0.1", "127.0.0.1"),
        ("127.0.0.1", "198.51.100.9", None),  # a proxy on this machine: the client is not
        ("::ffff:192.0.2.4", "198.51.100.9", "192.0.2.4"),
        ("0.0.0.0", "198.51.100.9", None),
        ("", "198.51.100.9", None),
        ("::1", "::1", "::1"),
    ],
)
def test_a_client_is_told_the_address_it_reached_never_a_loopback_from_elsewhere(
    local: str, client: str, expected: str | None
) -> None:
    assert reachable_host(local, client) == expected


def stub_relay(public_host: str | None, tls_port: int | None = None) -> EmbeddedRelay:
    server = cast(RelayServer, SimpleNamespace(core=None, address=("0.0.0.0", 3478)))
    return EmbeddedRelay(server, b"s", ports=RelayPorts(3478, tls_port), public_host=public_host)


def test_urls_name_every_transport_and_tls_when_it_listens() -> None:
    assert RelayPorts(3478, 443).urls("2001:db8::1") == [
        "stun:[2001:db8::1]:3478",
        "turn:[2001:db8::1]:3478?transport=udp",
        "turn:[2001:db8::1]:3478?transport=tcp",
        "turns:[2001:db8::1]:443?transport=tcp",
    ]
    assert not any(u.startswith("turns:") for u in RelayPorts(3478).urls("relay.example.net"))


def test_a_node_that_does_not_know_its_address_tells_each_client_its_own_view() -> None:
    relay = stub_relay(None, 443)
    assert relay.urls == []  # nothing for the directory or anyone else
    assert relay.urls_for("192.0.2.4", "198.51.100.9")[0] == "stun:192.0.2.4:3478"
    assert relay.urls_for("127.0.0.1", "127.0.0.1")[-1] == "turns:127.0.0.1:443?transport=tcp"
    assert relay.urls_for("127.0.0.1", "198.51.100.9") == []
    assert relay.urls_for("0.0.0.0", "198.51.100.9") == []


def test_a_loopback_public_host_is_for_clients_on_this_machine_only() -> None:
    relay = stub_relay("127.0.0.1")
    assert relay.urls_for("127.0.0.1", "127.0.0.1")[0] == "stun:127.0.0.1:3478"
    assert relay.urls_for("192.0.2.4", "198.51.100.9")[0] == "stun:192.0.2.4:3478"
    assert relay.urls_for("127.0.0.1", "198.51.100.9") == []


def test_a_known_public_host_is_told_to_everyone() -> None:
    relay = stub_relay("relay.example.net")
    urls = RelayPorts(3478).urls("relay.example.net")
    assert relay.urls == urls
    assert relay.urls_for("10.0.0.5", "198.51.100.9") == urls
    assert relay.urls_for("127.0.0.1", "127.0.0.1") == urls


# --- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"relay_tls_port": 443}, "needs relay_port"),
        ({"relay_port": 3478, "relay_tls_port": 443}, "needs relay_tls_cert"),
        ({"relay_port": 3478, "relay_tls_cert": "c.pem"}, "go together"),
        ({"relay_port": 3478, "relay_tls_cert": "c", "relay_tls_key": "k"}, "needs relay_tls_port"),
        (
            {"relay_port": 3478, "relay_tls_port": 3478, "tls_cert": "c", "tls_key": "k"},
            "must differ",
        ),
    ],
)
def test_relay_tls_options_that_cannot_work_are_refused(
    node: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_node_config(None, node)


def test_the_node_certificate_serves_the_relay_too() -> None:
    config, _ = load_node_config(
        None, {"relay_port": 3478, "relay_tls_port": 443, "tls_cert": "c", "tls_key": "k"}
    )
    assert config.relay_tls_port == 443


@pytest.mark.parametrize("option", ["port = 3479", "tls_port = 443", "secret_file = 's'"])
async def test_standalone_listener_options_in_a_nodes_relay_table_are_refused(
    tmp_path: Path, option: str
) -> None:
    toml = tmp_path / "node.toml"
    toml.write_text(f"[relay]\n{option}\n")
    with pytest.raises(ConfigError, match="standalone relay; in a node use"):
        await start_embedded_relay(NodeConfig(relay_port=0), toml)


# --- real relays on loopback ------------------------------------------------------------

Started = Callable[..., Awaitable[EmbeddedRelay]]


@pytest.fixture
async def embedded(tmp_path: Path) -> AsyncIterator[Started]:
    """`await embedded(node_options, relay_table)`: a node's relay on 127.0.0.1."""
    relays: list[EmbeddedRelay] = []

    async def start(node: dict[str, Any] | None = None, table: str = "") -> EmbeddedRelay:
        toml = tmp_path / f"node{len(relays)}.toml"
        toml.write_text('[relay]\nallow_peers = ["127.0.0.0/8"]\n' + table)
        config = dataclasses.replace(NodeConfig(relay_port=0), **(node or {}))
        relay = await start_embedded_relay(config, toml)
        relays.append(relay)
        return relay

    yield start
    for relay in relays:
        await relay.stop()


@pytest.fixture
async def inbox() -> AsyncIterator[Inbox]:
    loop = asyncio.get_running_loop()
    _, box = await loop.create_datagram_endpoint(Inbox, local_addr=("127.0.0.1", 0))
    yield box
    box.close()


async def allocate_over_udp(box: Inbox, relay: EmbeddedRelay) -> wire.StunMessage:
    client = TurnClient(*mint_credentials(relay.secret, "alice", 600, time.time()))
    response = await transact(box, relay.server.address, client.allocate())
    if error_code(response) == 401:
        client.learn(response)
        response = await transact(box, relay.server.address, client.allocate())
    assert response.cls == wire.SUCCESS, error_code(response)
    return response


def relayed(response: wire.StunMessage) -> tuple[str, int]:
    raw = response.get(wire.XOR_RELAYED_ADDRESS)
    assert raw is not None
    return wire.decode_xor_address(raw, response.transaction_id)


def bound_relayed_sockets(relay: EmbeddedRelay) -> list[tuple[str, int]]:
    return [r.address for r in relay.server._relays.values()]


@pytest.mark.integration
async def test_a_relay_behind_a_1_to_1_nat_binds_private_and_reports_public(
    embedded: Started, inbox: Inbox
) -> None:
    """`[relay] relay_host` (the machine's private address) and `external_host` (the
    public one a 1:1 NAT maps onto it) were dropped by the node; now both count."""
    relay = await embedded(table=f'relay_host = "127.0.0.1"\nexternal_host = "{PUBLIC}"\n')
    host, port = relayed(await allocate_over_udp(inbox, relay))
    assert host == PUBLIC
    assert bound_relayed_sockets(relay) == [("127.0.0.1", port)]
    assert relay.urls[0] == f"stun:{PUBLIC}:{relay.server.address[1]}"
    assert relay.urls_for("127.0.0.1", "198.51.100.9") == relay.urls


@pytest.mark.integration
async def test_a_public_relay_host_the_machine_does_not_hold_is_taken_for_a_1_to_1_nat(
    embedded: Started, inbox: Inbox
) -> None:
    relay = await embedded({"relay_host": PUBLIC})
    host, port = relayed(await allocate_over_udp(inbox, relay))
    assert host == PUBLIC
    assert bound_relayed_sockets(relay) == [("127.0.0.1", port)]


@pytest.mark.integration
async def test_a_public_url_whose_host_the_machine_holds_is_bound_and_reported(
    embedded: Started, inbox: Inbox
) -> None:
    relay = await embedded({"public_url": "ws://127.0.0.1:8000"})
    host, port = relayed(await allocate_over_udp(inbox, relay))
    assert (host, port) == bound_relayed_sockets(relay)[0] == ("127.0.0.1", port)


@pytest.mark.integration
async def test_a_learned_public_address_is_advertised_and_reported(
    embedded: Started, inbox: Inbox
) -> None:
    relay = await embedded({"host": "127.0.0.1"})
    relay.use_public_address(PUBLIC)
    assert relay.urls[0] == f"stun:{PUBLIC}:{relay.server.address[1]}"
    assert relayed(await allocate_over_udp(inbox, relay))[0] == PUBLIC


@pytest.mark.integration
async def test_a_configured_external_host_is_not_replaced_by_a_learned_one(
    embedded: Started, inbox: Inbox
) -> None:
    relay = await embedded(table=f'external_host = "{PUBLIC}"\n')
    relay.use_public_address("198.51.100.1")
    assert relay.urls[0].startswith(f"stun:{PUBLIC}:")
    assert relayed(await allocate_over_udp(inbox, relay))[0] == PUBLIC


@pytest.mark.integration
async def test_the_relay_of_a_node_on_loopback_stays_on_loopback(embedded: Started) -> None:
    relay = await embedded()
    port = relay.server.address[1]
    assert relay.server.address[0] == "127.0.0.1"
    assert relay.urls == RelayPorts(port).urls("127.0.0.1")
    with socket.socket() as probe:  # TCP on the same port
        probe.connect(("127.0.0.1", port))


@pytest.mark.integration
async def test_the_relay_speaks_tls_with_the_nodes_certificate_and_reloads_it_with_the_node(
    tmp_path: Path,
) -> None:
    """`--relay-tls-port` alone: the relay's TLS listener takes the node's `tls_cert`, and
    the node's SIGHUP (`reload_tls`) renews both."""
    ca = TestCA()
    cert, key = tmp_path / "node.pem", tmp_path / "node.key"
    ca.issue(1).write(cert, key)
    config = dataclasses.replace(
        FAST_NODE,
        data_dir=str(tmp_path / "node"),
        relay_port=0,
        relay_tls_port=0,
        tls_cert=str(cert),
        tls_key=str(key),
    )
    relay = await start_embedded_relay(config, None)
    node = await SignalingNode.start(config, FAST_DHT, relay)
    try:
        tls_address = relay.server.tls_address
        assert tls_address is not None
        assert relay.urls[-1] == f"turns:127.0.0.1:{tls_address[1]}?transport=tcp"

        async def serial() -> int:
            _, writer = await asyncio.open_connection(
                *tls_address, ssl=ca.client_context(), server_hostname="127.0.0.1"
            )
            number = serial_of(writer.get_extra_info("ssl_object").getpeercert(True))
            writer.close()
            return number

        assert await serial() == 1
        ca.issue(2).write(cert, key)
        assert node.reload_tls()
        assert await serial() == 2
    finally:
        await node.stop(moving=False)


@pytest.mark.integration
async def test_a_node_without_a_relay_or_ice_servers_hands_out_none(tmp_path: Path) -> None:
    """Documented (docs/operations.md): STUN comes with the node's relay; without one and
    without `[node.ice]`, a node has nothing to give."""
    config = dataclasses.replace(FAST_NODE, data_dir=str(tmp_path / "node"))
    node = await SignalingNode.start(config, FAST_DHT)
    try:
        assert node.ice_servers(b"\x01" * 32) == ()
    finally:
        await node.stop(moving=False)


@pytest.mark.parametrize("own_key", [False, True])
async def test_a_readable_key_is_refused_in_the_name_of_whoever_uses_it(
    tmp_path: Path, own_key: bool
) -> None:
    """The relay that takes the node's own key (no relay_tls_key) names the node's user,
    whose key it is; a key of the relay's own names the relay."""
    ca = TestCA()
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    ca.issue(1).write(cert, key)
    key.chmod(0o644)
    options: dict[str, Any] = {"tls_cert": str(cert), "tls_key": str(key)}
    if own_key:
        options = {"relay_tls_cert": str(cert), "relay_tls_key": str(key)}
    config = dataclasses.replace(
        FAST_NODE, data_dir=str(tmp_path / "n"), relay_port=0, relay_tls_port=0, **options
    )
    with pytest.raises(ConfigError) as refused:
        await start_embedded_relay(config, None)
    who = "relay" if own_key else "node"
    assert f"readable by the {who}'s user only" in str(refused.value)
    if not own_key:
        assert str(refused.value).startswith("node TLS (shared with the relay):")


@pytest.mark.integration
async def test_reload_lines_name_the_listener_under_its_own_logger(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A node whose relay shares its certificate: SIGHUP logs the node's reload under the
    node's logger and the relay's under the relay's, each saying which listener it was."""
    ca = TestCA()
    cert, key = tmp_path / "node.pem", tmp_path / "node.key"
    ca.issue(1).write(cert, key)
    config = dataclasses.replace(
        FAST_NODE,
        data_dir=str(tmp_path / "node"),
        relay_port=0,
        relay_tls_port=0,
        tls_cert=str(cert),
        tls_key=str(key),
    )
    relay = await start_embedded_relay(config, None)
    node = await SignalingNode.start(config, FAST_DHT, relay)
    try:
        with caplog.at_level("INFO"):
            assert node.reload_tls()
    finally:
        await node.stop(moving=False)
    lines = {(r.name, r.getMessage().split(" certificate")[0]) for r in caplog.records}
    assert ("signaling.node", "node TLS") in lines
    assert ("pagemesh.relay", "relay TLS (turns:)") in lines


@pytest.mark.integration
async def test_a_relay_on_loopback_that_advertises_elsewhere_is_warned_about(
    embedded: Started, caplog: pytest.LogCaptureFixture
) -> None:
    """The node on 127.0.0.1 behind a proxy, `relay_port` uncommented, nothing said of
    where the relay listens: it binds loopback and tells clients the public address,
    which nobody can reach. The start says so, with the fix."""
    with caplog.at_level("WARNING", logger="pagemesh.relay"):
        relay = await embedded({"host": "127.0.0.1", "relay_host": PUBLIC})
    assert relay.server.address[0] == "127.0.0.1"
    assert relay.on_loopback_only
    assert "listens on 127.0.0.1 (loopback) but tells clients 203.0.113.7" in caplog.text
    assert '[relay] host = "0.0.0.0"' in caplog.text


@pytest.mark.integration
async def test_a_relay_on_loopback_told_to_listen_everywhere_is_not(
    embedded: Started, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="pagemesh.relay"):
        relay = await embedded({"host": "127.0.0.1", "relay_host": PUBLIC}, 'host = "0.0.0.0"\n')
        loopback = await embedded({"host": "127.0.0.1"})  # a node on a laptop: all loopback
    assert relay.server.address[0] == "0.0.0.0" and not relay.on_loopback_only
    assert not loopback.on_loopback_only
    assert "(loopback) but tells clients" not in caplog.text
