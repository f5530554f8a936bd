"""The command line of `pagemesh chat|send|receive|identity`: the parsers alone.

`pagemesh` builds every command's parser at each start, a node's included, so this
module imports nothing of WebRTC: each command's body (peer/cli.py, which brings aiortc
and PyAV's codecs under it, about 35 MB and a second) is imported when it runs.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from signaling.protocol import MAX_LAYER

DEFAULT_NODE = "ws://127.0.0.1:8000"
PASSPHRASE_ENV = "PAGEMESH_PASSPHRASE"
ICE_HOSTS_ENV = "PAGEMESH_ICE_HOSTS"


def later(command: str) -> Callable[[argparse.Namespace], int]:
    """What `command` runs (peer/cli.py's COMMANDS), imported when it runs."""

    def run(args: argparse.Namespace) -> int:
        from .cli import COMMANDS

        return COMMANDS[command](args)

    return run


def default_data_dir() -> Path:
    env = os.environ.get("PAGEMESH_DATA_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "pagemesh"


def common(parser: argparse.ArgumentParser, url: bool = True) -> None:
    if url:
        parser.add_argument("url", help="the page whose room to join")
    parser.add_argument(
        "--node",
        action="append",
        default=[],
        metavar="ws://HOST:PORT",
        help=f"a signaling node (repeat for fail-over; default {DEFAULT_NODE})",
    )
    parser.add_argument(
        "--data-dir", type=Path, help="identity and history (default: PAGEMESH_DATA_DIR or XDG)"
    )
    parser.add_argument("--name", help="the name others see")
    parser.add_argument(
        "--device",
        metavar="LABEL",
        help="speak as a device of this identity, with a key of its own certified by it, so "
        "another device of yours can be in the room at once (docs/protocol.md 5.3)",
    )
    parser.add_argument(
        "--ice-host",
        action="append",
        default=[],
        metavar="ADDR",
        help=f"offer only these local addresses to ICE (env {ICE_HOSTS_ENV}, comma-separated)",
    )
    parser.set_defaults(quiet_logs=True)  # library logs only with -v (pagemesh/cli.py)


def group_number(text: str) -> int:
    """A group number as people see it (from 1)."""
    try:
        group = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a group number: {text!r}") from None
    if not 1 <= group <= MAX_LAYER + 1:
        raise argparse.ArgumentTypeError(f"groups are numbered 1 to {MAX_LAYER + 1}")
    return group


def member_key(text: str) -> bytes:
    """A member's public key: 64 hex digits."""
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise argparse.ArgumentTypeError("a key is 64 hex digits (the friend's /key)")
    return key


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("a timeout is more than 0 seconds")
    return value


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    chat = commands.add_parser(
        "chat",
        help="chat in a page's room from the terminal",
        description="Chat in a page's room; /help lists the commands.",
    )
    common(chat)
    where = chat.add_mutually_exclusive_group()
    where.add_argument(
        "--layer",
        "--group",
        type=group_number,
        metavar="N",
        help="sit in group N of the page (groups count from 1, as /layers shows them)",
    )
    where.add_argument(
        "--friend",
        type=member_key,
        metavar="KEY",
        help="sit in the group of the member with this key (64 hex digits: their /key)",
    )
    chat.add_argument(
        "--out", type=Path, default=Path("."), metavar="DIR", help="where /get saves files (.)"
    )
    chat.add_argument("--say", help="send this, then print events until --wait seconds pass")
    chat.add_argument("--wait", type=float, default=10.0, help="seconds to stay with --say")
    chat.add_argument("--json", action="store_true", help="print events as JSON lines")
    chat.set_defaults(run=later("chat"))

    send = commands.add_parser(
        "send",
        help="offer a file to people in a page's room",
        usage="%(prog)s [options] FILE URL",
        description="Offer FILE in the room of URL and wait until each recipient has "
        "verified it. Exit 0 when all did; 1 when one declined, left, or cannot be "
        "named; 3 when --timeout passed first.",
    )
    send.add_argument("file_and_url", nargs=2, metavar="FILE URL", help=argparse.SUPPRESS)
    common(send, url=False)
    to = send.add_mutually_exclusive_group()
    to.add_argument(
        "--to",
        action="append",
        default=[],
        metavar="NAME|KEY",
        help="offer it to this member only, waiting for it to come (repeat for more); "
        "a name, a key's tag as chat shows it (·3fa9), or a key (64 hex digits)",
    )
    to.add_argument(
        "--all-present",
        action="store_true",
        help="offer it to everyone in the room when it is offered (the default)",
    )
    send.add_argument(
        "--timeout",
        "--wait",
        type=seconds,
        default=300.0,
        metavar="SECONDS",
        help="give up after this long, waiting for recipients to come and to accept (default 300)",
    )
    send.set_defaults(run=later("send"))

    receive = commands.add_parser(
        "receive",
        help="take the files offered in a page's room",
        description="Take the files offered in the room of URL after this started, "
        "into --out; exit 0 once --count files arrived verified.",
    )
    common(receive)
    receive.add_argument("--out", type=Path, required=True, help="directory for the files")
    receive.add_argument("--count", type=int, default=1, help="exit after this many files")
    receive.add_argument(
        "--include-earlier",
        action="store_true",
        help="also take the files offered before this started",
    )
    receive.add_argument(
        "--timeout",
        "--wait",
        type=seconds,
        default=3600.0,
        metavar="SECONDS",
        help="give up after this long (default 3600)",
    )
    receive.set_defaults(run=later("receive"))

    _register_identity(commands)


def _register_identity(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    identity = commands.add_parser(
        "identity",
        help="show, export or import this client's key (docs/identity.md)",
        description="Move your key between clients in a passphrase-encrypted file. "
        f"The passphrase is asked twice at the terminal, or taken from the environment "
        f"variable {PASSPHRASE_ENV} (for scripts; it is visible to other processes of yours).",
    )
    actions = identity.add_subparsers(dest="identity_command", required=True, metavar="ACTION")
    data_dir_help = (
        "the identity's directory, as chat's --data-dir (default: PAGEMESH_DATA_DIR or XDG)"
    )

    show = actions.add_parser("show", help="print this client's public key and name")
    show.add_argument("--data-dir", type=Path, help=data_dir_help)
    show.set_defaults(run=later("identity show"))

    export = actions.add_parser(
        "export",
        help="write this client's key (and name) to FILE, encrypted under a passphrase",
        description="Write this client's key and name to FILE (mode 0600), encrypted "
        "under a passphrase, and print the public key. The passphrase is asked twice, "
        f"or read from the environment variable {PASSPHRASE_ENV}.",
    )
    export.add_argument("file", type=Path, metavar="FILE", help="the identity file to write")
    export.add_argument("--data-dir", type=Path, help=data_dir_help)
    export.add_argument("--force", action="store_true", help="replace FILE if it exists")
    export.set_defaults(run=later("identity export"))

    imp = actions.add_parser(
        "import",
        help="make the key in FILE this client's key",
        description="Show the public key in FILE, ask its passphrase (or read the "
        f"environment variable {PASSPHRASE_ENV}) and make that key and name this "
        "client's. A different key already here is replaced only with --force "
        "(export it first if you may want it back).",
    )
    imp.add_argument("file", type=Path, metavar="FILE", help="the identity file to read")
    imp.add_argument("--data-dir", type=Path, help=data_dir_help)
    imp.add_argument("--force", action="store_true", help="replace a different key here")
    imp.set_defaults(run=later("identity import"))

    device = actions.add_parser(
        "device",
        help="print this client's device key (made on first use), for `delegate` elsewhere",
        description="Print the key this client speaks with as a device (docs/protocol.md "
        "5.3), and the identity and expiry of the delegation it adopted, if any.",
    )
    device.add_argument("--data-dir", type=Path, help=data_dir_help)
    device.set_defaults(run=later("identity device"))

    delegate = actions.add_parser(
        "delegate",
        help="certify another client's device key for this identity (a delegation file)",
        description="On the client that holds the identity key: write a delegation to "
        "DEVICE_KEY (the other client's `identity device`) valid for --days, for that "
        "client to `adopt`. It speaks for you until it expires or you `revoke` it.",
    )
    delegate.add_argument("device_key", type=member_key, metavar="DEVICE_KEY")
    delegate.add_argument("--out", type=Path, required=True, metavar="FILE")
    delegate.add_argument("--label", default="", help="what you call that device")
    delegate.add_argument(
        "--days", type=float, default=7.0, help="how long it lasts (at most 30; default 7)"
    )
    delegate.add_argument("--data-dir", type=Path, help=data_dir_help)
    delegate.set_defaults(run=later("identity delegate"))

    adopt = actions.add_parser(
        "adopt",
        help="speak as a device of the identity whose delegation FILE holds",
        description="Check that FILE is a delegation to this client's device key, valid "
        "now, and keep it: `chat --device` then speaks under that identity, whose key "
        "never comes here.",
    )
    adopt.add_argument("file", type=Path, metavar="FILE")
    adopt.add_argument("--data-dir", type=Path, help=data_dir_help)
    adopt.set_defaults(run=later("identity adopt"))

    revoke = actions.add_parser(
        "revoke",
        help="take back every delegation this identity gave DEVICE_KEY (a lost device)",
        description="Sign a revocation of DEVICE_KEY with the identity key and keep it: "
        "this client shows it to every member it links to from then on.",
    )
    revoke.add_argument("device_key", type=member_key, metavar="DEVICE_KEY")
    revoke.add_argument("--data-dir", type=Path, help=data_dir_help)
    revoke.set_defaults(run=later("identity revoke"))
