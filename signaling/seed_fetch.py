"""Glue for signaling/seeds.py: a seed URL's DHT contact over HTTP, bounded in time and size."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl

import aiohttp

from . import seeds
from .seeds import (
    DHT_PATH,
    FETCH_ATTEMPTS,
    FETCH_TIMEOUT,
    MAX_CONTACT_BYTES,
    Address,
    SeedError,
    SeedUrl,
    check_contact_address,
    parse_contact,
)


async def fetch_contact(
    seed: SeedUrl,
    family: socket.AddressFamily = socket.AF_INET,
    *,
    per_attempt: float = FETCH_TIMEOUT,
    attempts: int = FETCH_ATTEMPTS,
    backoff: float | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[bytes, Address]:
    """The seed's (node id, DHT address), the address in `family` (the DHT socket's);
    SeedError (the last attempt's reason) when no attempt gave one. `backoff`: seconds
    before the second attempt (doubled after), by default `seeds.RETRY_BACKOFF`."""
    backoff = seeds.RETRY_BACKOFF if backoff is None else backoff
    error = SeedError(f"bootstrap {seed.text}: not asked")
    for attempt in range(max(1, attempts)):
        if attempt:
            await asyncio.sleep(backoff * 2 ** (attempt - 1))
        try:
            return await asyncio.wait_for(_fetch_once(seed, family, ssl_context), per_attempt)
        except SeedError as exc:
            error = exc
        except TimeoutError:
            error = SeedError(f"bootstrap {seed.text}: no answer within {per_attempt:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            error = SeedError(f"bootstrap {seed.text}: {_reason(exc)}")
    raise error


async def _fetch_once(
    seed: SeedUrl, family: socket.AddressFamily, ssl_context: ssl.SSLContext | None
) -> tuple[bytes, Address]:
    connector = aiohttp.TCPConnector(limit=1, force_close=True, ssl=ssl_context or True)
    headers = {"Accept": "application/json"}
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get(seed.contact_url, allow_redirects=False, headers=headers) as response,
    ):
        if response.status != 200:
            raise SeedError(
                f"bootstrap {seed.text}: {DHT_PATH} answered HTTP {response.status} "
                "(is it a pagemesh node, and a recent one?)"
            )
        # Never more than the cap plus one byte, whatever Content-Length says.
        body = await response.content.read(MAX_CONTACT_BYTES + 1)
    node_id, host, port = parse_contact(body, seed)
    address = await _resolve(host, port, family, seed)
    return node_id, (check_contact_address(address, seed, family == socket.AF_INET6), port)


async def _resolve(host: str, port: int, family: socket.AddressFamily, seed: SeedUrl) -> str:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        return host
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as exc:
        raise SeedError(f"bootstrap {seed.text}: cannot resolve {host}: {_reason(exc)}") from None
    if not infos:
        raise SeedError(f"bootstrap {seed.text}: {host} has no address")
    return str(infos[0][4][0])


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
