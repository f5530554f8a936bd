"""`pagemesh relay`: a standalone TURN relay for the nodes that share its secret."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from .config import ConfigError, ListenOptions, check_listen, load_config
from .core import RelayConfig
from .credentials import SECRET_ENV, load_secret
from .server import RelayServer
from .tls import RelayTls, TlsError

log = logging.getLogger("pagemesh.relay")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    relay = commands.add_parser(
        "relay",
        help="run a TURN relay (RFC 8656) until SIGINT/SIGTERM",
        description="Every option can also be set in the [relay] table of --config; the "
        f"command line wins. The secret comes from --secret-file or ${SECRET_ENV}.",
    )
    relay.add_argument("--host", help="address for the UDP and TCP listeners (default 0.0.0.0)")
    relay.add_argument("--port", type=int, help="UDP and TCP port (default 3478; 0 picks one)")
    relay.add_argument("--secret-file", help="file holding the secret shared with the nodes")
    relay.add_argument("--config", type=Path, help="TOML file with a [relay] table")
    relay.add_argument("--realm", help="realm of the long-term credentials (default pagemesh)")
    relay.add_argument("--relay-host", help="address relayed sockets bind")
    relay.add_argument("--external-host", help="address advertised to clients behind a 1:1 NAT")
    relay.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    relay.add_argument("--no-tcp", action="store_true", help="UDP listener only")
    relay.add_argument(
        "--tls-port", type=int, help="TURN over TLS (turns:) on this TCP port, e.g. 443 or 5349"
    )
    relay.add_argument("--tls-cert", help="PEM certificate chain of the TLS listener")
    relay.add_argument("--tls-key", help="PEM key of --tls-cert (mode 0600; SIGHUP reloads both)")
    relay.add_argument(
        "--allow-peer",
        action="append",
        default=[],
        metavar="NETWORK",
        help="relay to this otherwise refused network (tests, private deployments)",
    )
    relay.set_defaults(run=_run_relay)


def options_from_args(
    args: argparse.Namespace,
) -> tuple[RelayConfig, ListenOptions]:
    """The config file's [relay] table with the command line applied on top."""
    config, listen = load_config(args.config)
    listen_changes = {
        "host": args.host,
        "port": args.port,
        "secret_file": args.secret_file,
        "relay_host": args.relay_host,
        "external_host": args.external_host,
        "metrics_port": args.metrics_port,
        "tls_port": args.tls_port,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
    }
    listen = dataclasses.replace(
        listen, **{k: v for k, v in listen_changes.items() if v is not None}
    )
    if args.no_tcp:
        listen = dataclasses.replace(listen, tcp=False)
    check_listen(listen)
    if args.realm:
        config = dataclasses.replace(config, realm=args.realm)
    if args.allow_peer:
        config = dataclasses.replace(config, allow_peers=(*config.allow_peers, *args.allow_peer))
        config.policy()  # ValueError for a bad network
    return config, listen


def _run_relay(args: argparse.Namespace) -> int:
    try:
        config, listen = options_from_args(args)
        secret = load_secret(listen.secret_file or None)
        tls = None
        if listen.tls_port >= 0:
            tls = RelayTls(Path(listen.tls_cert), Path(listen.tls_key))
    except (ConfigError, OSError, ValueError, TlsError) as exc:
        print(f"pagemesh relay: bad config: {exc}", file=sys.stderr)
        return 2
    if secret is None:
        print(f"pagemesh relay: no secret: give --secret-file or set {SECRET_ENV}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(listen, config, secret, tls))
    except OSError as exc:
        print(f"pagemesh relay: {exc}", file=sys.stderr)
        return 1
    return 0


async def serve(
    listen: ListenOptions, config: RelayConfig, secret: bytes, tls: RelayTls | None = None
) -> None:
    server = await RelayServer.start(
        listen.host,
        listen.port,
        secret,
        config,
        tcp=listen.tcp,
        relay_host=listen.relay_host or None,
        external_host=listen.external_host or None,
        metrics_port=listen.metrics_port,
        tls_port=listen.tls_port if tls is not None else None,
        tls_context=tls.context if tls is not None else None,
    )
    host, port = server.address
    extra = f" metrics :{server.metrics_address[1]}" if server.metrics_address else ""
    if server.tls_address is not None:
        extra = f" tls :{server.tls_address[1]}{extra}"
    print(
        f"pagemesh relay on {host}:{port} (udp{', tcp' if listen.tcp else ''}){extra}", flush=True
    )
    try:
        await _until_stop_signal(tls.reload if tls is not None else None)
    finally:
        log.info("stopping relay with %d allocations", server.core.allocation_count)
        await server.stop()


async def _until_stop_signal(on_hangup: Callable[[], object] | None = None) -> None:
    """Until SIGINT or SIGTERM; SIGHUP calls `on_hangup` (reload the TLS certificate)."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    if on_hangup is not None:
        loop.add_signal_handler(signal.SIGHUP, on_hangup)
    await stopping.wait()
