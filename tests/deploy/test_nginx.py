"""docs/deploy/nginx.conf in front of a real node: Debian's nginx, in the foreground.

The shipped file is used as it is, but for its listeners' ports (on
loopback), the node's port and the certificate paths. Through it: the page
over HTTPS, a client's WebSocket join, a node link from another node, the
real client address reaching the node's per-address limits (and a client's
own X-Forwarded-For ignored), and /metrics refused to anyone but 127.0.0.1
(127.0.0.2 plays a visitor from elsewhere).
"""

from __future__ import annotations

import asyncio
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
    until_listening,
)
from tests.signaling.certs import TestCA

pytestmark = pytest.mark.integration

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
ROOM = room_key(canonical_url("https://example.org/behind-nginx"))

WRAPPER = """
# The test's main file; the site is docs/deploy/nginx.conf, included as a distribution
# includes sites-enabled/ from its own /etc/nginx/nginx.conf.
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
{user}
events {{ worker_connections 256; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/pagemesh.conf;
}}
"""


def site_config(http: int, https: int, node_port: int, cert: Path, key: Path, web: Path) -> str:
    """docs/deploy/nginx.conf with ports, listen addresses and paths replaced; each
    replacement must hit exactly what the shipped file says (else the test is stale)."""
    text = (DOCS / "nginx.conf").read_text()
    replacements = {
        "listen 80;": f"listen 127.0.0.1:{http};",
        "listen [::]:80;": f"listen [::1]:{http};",
        "listen 443 ssl;": f"listen 127.0.0.1:{https} ssl;",
        "listen [::]:443 ssl;": f"listen [::1]:{https} ssl;",
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{node_port};",
        "/etc/letsencrypt/live/node.example.net/fullchain.pem": str(cert),
        "/etc/letsencrypt/live/node.example.net/privkey.pem": str(key),
        "root /var/www/html;": f"root {web};",
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, f"docs/deploy/nginx.conf no longer says {old!r} once"
        text = text.replace(old, new)
    return text


@dataclass
class Nginx:
    dir: Path
    http: int
    https: int

    @property
    def base(self) -> str:
        return f"https://localhost:{self.https}"

    def access_log(self) -> str:
        return (self.dir / "access.log").read_text()

    async def logged(self, needle: str, within: float = 10.0) -> None:
        """Wait for `needle` in the access log (nginx writes a request's line as it ends;
        the file is all there is to watch)."""
        async with asyncio.timeout(within):
            while needle not in self.access_log():  # noqa: ASYNC110
                await asyncio.sleep(0.05)


async def run_nginx(directory: Path, site: str) -> asyncio.subprocess.Process:
    assert NGINX is not None
    (directory / "pagemesh.conf").write_text(site)
    user = "user root;" if os.geteuid() == 0 else ""  # workers write under the test's 0700 dir
    (directory / "nginx.conf").write_text(WRAPPER.format(dir=directory, user=user))
    argv = [NGINX, "-p", str(directory), "-c", str(directory / "nginx.conf")]
    argv += ["-e", str(directory / "error.log")]
    check = await asyncio.create_subprocess_exec(
        *argv, "-t", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await check.communicate()
    assert check.returncode == 0, out.decode()
    return await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )


@dataclass
class Deployment:
    nginx: Nginx
    node: NodeProcess
    """The node behind nginx."""
    trust: ssl.SSLContext
    ca_file: Path


@pytest.fixture
async def site(tmp_path: Path, ca: TestCA, launch_node: NodeLauncher) -> AsyncIterator[Deployment]:
    if NGINX is None:
        pytest.skip("Debian's nginx is not installed (make debs)")
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    ca.issue(serial=1).write(cert, key)
    web = tmp_path / "www"
    web.mkdir()
    directory = tmp_path / "nginx"
    directory.mkdir()
    http, https = free_port(), free_port()
    node = await launch_node(NODE_BEHIND.format(https=https))
    site = site_config(http, https, node.port, cert, key, web)
    proc = await run_nginx(directory, site)
    try:
        await until_listening(https, proc, directory / "error.log")
        yield Deployment(
            Nginx(directory, http, https),
            node,
            ca.client_context(),
            ca.write_ca(tmp_path / "ca.pem"),
        )
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 15)


async def test_page_health_and_redirect_through_nginx(
    site: Deployment,
) -> None:
    base = site.nginx.base
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/", ssl=site.trust) as response:
            assert response.status == 200
            assert "<html" in (await response.text()).lower()
        async with http.get(base + "/healthz", ssl=site.trust) as response:
            assert (await response.json())["url"] == f"wss://localhost:{site.nginx.https}"
        plain = f"http://127.0.0.1:{site.nginx.http}/?x=1"
        async with http.get(plain, allow_redirects=False) as response:
            assert response.status == 301
            assert response.headers["Location"] == "https://127.0.0.1/?x=1"


async def test_metrics_only_from_this_machine(site: Deployment) -> None:
    url = site.nginx.base + "/metrics"
    async with aiohttp.ClientSession() as local, from_address(STRANGER) as stranger:
        async with local.get(url, ssl=site.trust) as response:
            assert response.status == 200
            assert "pagemesh_clients" in await response.text()
        async with stranger.get(url, ssl=site.trust) as response:
            assert response.status == 403
        async with stranger.get(site.nginx.base + "/healthz", ssl=site.trust) as response:
            assert response.status == 200  # the rest is public


async def test_a_client_joins_through_nginx_and_limits_see_its_address(
    site: Deployment,
) -> None:
    url = f"wss://localhost:{site.nginx.https}"
    alice = await SignalingClient.connect(url, SigningKey.generate(), ssl=site.trust)
    try:
        joined = await alice.join(ROOM)
        assert joined.layer >= 0 and alice.node_url == url
        assert await alice.ping() >= 0
    finally:
        await alice.close()
    await site.nginx.logged('"GET /v1/ws HTTP/1.1" 101')

    # The node allows one connection waiting for its hello per address. Each stranger's
    # header names someone else; nginx replaces it with the address it saw.
    ws_url = site.nginx.base + "/v1/ws"
    async with from_address(STRANGER) as stranger, from_address("127.0.0.3") as other:
        headers = {"X-Forwarded-For": "198.51.100.1"}
        first = await stranger.ws_connect(ws_url, ssl=site.trust, headers=headers)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            headers = {"X-Forwarded-For": "198.51.100.2"}
            await stranger.ws_connect(ws_url, ssl=site.trust, headers=headers)
        assert refused.value.status == 429
        second = await other.ws_connect(ws_url, ssl=site.trust)  # another person: its own
        await first.close()
        await second.close()


async def test_a_node_links_to_a_node_behind_nginx(
    site: Deployment, launch_node: NodeLauncher
) -> None:
    # The other node trusts the test's CA as a system would trust a public one.
    other = await launch_node(
        NODE_DIRECT,
        "--bootstrap",
        site.node.dht,
        env={"SSL_CERT_FILE": str(site.ca_file)},
    )
    url = f"wss://localhost:{site.nginx.https}"
    alice = await SignalingClient.connect(url, SigningKey.generate(), ssl=site.trust)
    bob = await SignalingClient.connect(other.url, SigningKey.generate())
    try:
        await alice.join(ROOM)
        await bob.join(ROOM)  # bob's node tells alice's home node, through nginx
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
    # nginx logs a request when it ends: the link ends with the other node.
    other.proc.terminate()
    await asyncio.wait_for(other.proc.wait(), 20)
    await site.nginx.logged('"GET /v1/node HTTP/1.1" 101')
