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
from peer import cli as peer_cli
from relay import cli as relay_cli
from signaling import cli as signaling_cli
from simulations import cli as simulations_cli

from . import demo
from .embedded_relay import start_embedded_relay


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pagemesh",
        description="Chat with the other people on the same web page, "
        "with no company in the middle.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    dht_cli.register(commands)
    signaling_cli.register(commands, relay_starter=start_embedded_relay)
    peer_cli.register(commands)
    relay_cli.register(commands)
    simulations_cli.register(commands)
    demo.register(commands)
    return parser


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
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
