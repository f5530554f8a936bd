"""`pagemesh`: one console command; each package registers its own subcommands.

This module is the only place allowed to import every package (see
docs/architecture.md); the packages themselves keep the import direction of
the architecture.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from dht import cli as dht_cli
from peer import args as peer_args
from relay import cli as relay_cli
from signaling import cli as signaling_cli
from signaling.node import PACKAGE_VERSION
from simulations import cli as simulations_cli

from . import demo, extension
from .embedded_relay import start_embedded_relay


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pagemesh",
        description="Chat with the other people on the same web page, "
        "with no company in the middle.",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more logging: -v info, -vv debug (a node logs info without it)",
    )
    parser.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    parser.add_argument("--version", action="version", version=VERSION, help=VERSION_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    dht_cli.register(commands)
    signaling_cli.register(commands, relay_starter=start_embedded_relay)
    peer_args.register(commands)
    relay_cli.register(commands)
    simulations_cli.register(commands)
    demo.register(commands)
    extension.register(commands)
    for command in commands.choices.values():  # `pagemesh chat URL -v` reads naturally too
        command.add_argument(
            "-v",
            "--verbose",
            action="count",
            default=0,
            dest="command_verbose",
            help="more logging: -v info, -vv debug",
        )
        command.add_argument("--version", action="version", version=VERSION, help=VERSION_HELP)
    return parser


VERSION = f"pagemesh {PACKAGE_VERSION}"
VERSION_HELP = "print the installed pagemesh's version (as /healthz says it) and exit"


QUIET_LOGGERS = ("aioice", "aiortc")
"""Libraries whose warnings a person at a prompt cannot act on: errors only, unless -v."""


def log_level(verbose: int, quiet: bool) -> int:
    """The root logger's level. Commands a person types at (chat, send, receive, demo)
    are `quiet`: warnings only, -v for info, -vv for debug. Servers log info, -v debug."""
    if quiet:
        return {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    return logging.DEBUG if verbose else logging.INFO


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        import json

        return json.dumps(
            {
                "ts": round(record.created, 3),
                "level": record.levelname.lower(),
                "logger": record.name,
                "msg": record.getMessage(),
            }
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    if args.log_json:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    verbose = args.verbose + getattr(args, "command_verbose", 0)
    quiet = bool(getattr(args, "quiet_logs", False))
    logging.basicConfig(level=log_level(verbose, quiet), handlers=[handler])
    if quiet and not verbose:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
