"""docs/deploy/Caddyfile in front of a real node: Debian's caddy, in the foreground.

The shipped file is imported by the test's own main Caddyfile, as it is but
for the site name (`localhost`) and the node's port. The main file's global
options keep Caddy on loopback and test ports, and make its certificates come
from Caddy's own local CA (`local_certs`, not installed in any trust store)
instead of ACME, which would need the Internet. The client trusts that CA's
root and nothing else. Through Caddy: the page, a client's WebSocket join, a
node link, the real client address at the node's per-address limits (a
client's own X-Forwarded-For dropped), /metrics refused to 127.0.0.2.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from nacl.signing import SigningKey

from peer.signaling import PeerJoined, SignalFrom, SignalingClient
from signaling.rooms import canonical_url, room_key
from tests.deploy.conftest import (
    DOCS,
    NODE_BEHIND,
    NODE_DIRECT,
    STRANGER,
    NodeLauncher,
    NodeProcess,
    free_port,
    from_address,
    tail,
)

pytestmark = pytest.mark.integration

CADDY = shutil.which("caddy")
ROOM = room_key(canonical_url("https://example.org/behind-caddy"))

MAIN = """
{{
	admin off
	http_port {http}
	https_port {https}
	default_bind 127.0.0.1
	local_certs
	skip_install_trust
	storage file_system {dir}/data
}}
import {dir}/site.caddy
"""

# The other node refuses every link into it: any link between the two is its own,
# dialled to the node behind Caddy through Caddy.
NO_LINKS_IN = """
[node.link_admission]
unauthenticated = 0
"""


def site_config(node_port: int) -> str:
    text = (DOCS / "Caddyfile").read_text()
    for old, new in {
        "node.example.net {": "localhost {",
        "reverse_proxy 127.0.0.1:8000": f"reverse_proxy 127.0.0.1:{node_port}",
    }.items():
        assert text.count(old) == 1, f"docs/deploy/Caddyfile no longer says {old!r} once"
        text = text.replace(old, new)
    return text


@dataclass
class Site:
    node: NodeProcess
    https: int
    http: int
    trust: ssl.SSLContext
    root: Path
    """Caddy's local CA root (PEM)."""
    log: Path

    @property
    def base(self) -> str:
        return f"https://localhost:{self.https}"


async def until_serving(site: Site, proc: asyncio.subprocess.Process) -> None:
    """Caddy issues its certificate after it starts listening: wait for a good handshake."""
    async with asyncio.timeout(30):
        while True:
            assert proc.returncode is None, f"caddy exited:\n{tail(site.log)}"
            with contextlib.suppress(OSError, aiohttp.ClientError, ssl.SSLError):
                site.trust = ssl.create_default_context(cafile=site.root)
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(site.base + "/healthz", ssl=site.trust) as response,
                ):
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)


@pytest.fixture
async def site(tmp_path: Path, launch_node: NodeLauncher) -> AsyncIterator[Site]:
    if CADDY is None:
        pytest.skip("Debian's caddy is not installed (make debs)")
    directory = tmp_path / "caddy"
    directory.mkdir()
    http, https = free_port(), free_port()
    node = await launch_node(NODE_BEHIND.format(https=https))
    (directory / "site.caddy").write_text(site_config(node.port))
    (directory / "Caddyfile").write_text(MAIN.format(dir=directory, http=http, https=https))
    env = {**os.environ, "HOME": str(directory), "XDG_DATA_HOME": str(directory / "xdg")}
    env["XDG_CONFIG_HOME"] = str(directory / "xdg")
    with (directory / "caddy.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            CADDY,
            "run",
            "--config",
            str(directory / "Caddyfile"),
            "--adapter",
            "caddyfile",
            stdout=log,
            stderr=log,
            env=env,
        )
    root = directory / "data" / "pki" / "authorities" / "local" / "root.crt"
    site = Site(node, https, http, ssl.create_default_context(), root, directory / "caddy.log")
    try:
        await until_serving(site, proc)
        yield site
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 15)


async def test_page_and_metrics_through_caddy(site: Site) -> None:
    async with aiohttp.ClientSession() as local, from_address(STRANGER) as stranger:
        async with local.get(site.base + "/", ssl=site.trust) as response:
            assert response.status == 200
            assert "<html" in (await response.text()).lower()
        async with local.get(site.base + "/metrics", ssl=site.trust) as response:
            assert response.status == 200
            assert "pagemesh_clients" in await response.text()
        async with stranger.get(site.base + "/metrics", ssl=site.trust) as response:
            assert response.status == 403
        async with stranger.get(site.base + "/healthz", ssl=site.trust) as response:
            assert (await response.json())["url"] == f"wss://localhost:{site.https}"


async def test_a_client_joins_through_caddy_and_limits_see_its_address(site: Site) -> None:
    url = f"wss://localhost:{site.https}"
    alice = await SignalingClient.connect(url, SigningKey.generate(), ssl=site.trust)
    try:
        assert (await alice.join(ROOM)).layer >= 0
        assert await alice.ping() >= 0
    finally:
        await alice.close()

    ws_url = site.base + "/v1/ws"
    async with from_address(STRANGER) as stranger, from_address("127.0.0.3") as other:
        headers = {"X-Forwarded-For": "198.51.100.1"}
        first = await stranger.ws_connect(ws_url, ssl=site.trust, headers=headers)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            headers = {"X-Forwarded-For": "198.51.100.2"}
            await stranger.ws_connect(ws_url, ssl=site.trust, headers=headers)
        assert refused.value.status == 429
        second = await other.ws_connect(ws_url, ssl=site.trust)
        await first.close()
        await second.close()


async def test_a_node_links_to_a_node_behind_caddy(site: Site, launch_node: NodeLauncher) -> None:
    other = await launch_node(
        NODE_DIRECT + NO_LINKS_IN,
        "--bootstrap",
        site.node.dht,
        env={"SSL_CERT_FILE": str(site.root)},
    )
    url = f"wss://localhost:{site.https}"
    alice = await SignalingClient.connect(url, SigningKey.generate(), ssl=site.trust)
    bob = await SignalingClient.connect(other.url, SigningKey.generate())
    try:
        await alice.join(ROOM)
        await bob.join(ROOM)
        joined = await alice.next_event(within=15)
        assert isinstance(joined, PeerJoined) and joined.member.key == bob.key
        await bob.signal(alice.key, {"t": "hello"}, ROOM)
        async with asyncio.timeout(15):
            while not isinstance(event := await alice.next_event(), SignalFrom):
                pass
        assert event.sender == bob.key and event.payload == {"t": "hello"}
    finally:
        await alice.close()
        await bob.close()
