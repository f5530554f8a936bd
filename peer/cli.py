"""`pagemesh chat`, `pagemesh send`, `pagemesh receive`: a person's side of the mesh.

A busy page's room is split into groups of about 24 (the protocol's layers,
docs/protocol.md 2.3). People see groups counted from 1, as the browser shows
them: group 1 is layer 0. `--layer N` and `/move N` take that number too; the
JSON lines keep the protocol's `layer` (from 0) beside a `group`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from signaling.protocol import MAX_LAYER

from .files import local_name
from .peer import (
    Census,
    Connected,
    FileDone,
    FileFailed,
    FileOffered,
    FileProgress,
    Gap,
    MemberJoined,
    MemberLeft,
    Message,
    Moved,
    Peer,
    PeerProblem,
    Rejoined,
    Room,
)
from .signaling import SignalingError
from .webrtc import restrict_host_candidates

DEFAULT_NODE = "ws://127.0.0.1:8000"
ICE_HOSTS_ENV = "PAGEMESH_ICE_HOSTS"


def default_data_dir() -> Path:
    env = os.environ.get("PAGEMESH_DATA_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "pagemesh"


def _common(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument("--name", help="display name")
    parser.add_argument(
        "--ice-host",
        action="append",
        default=[],
        metavar="ADDR",
        help=f"offer only these local addresses to ICE (env {ICE_HOSTS_ENV}, comma-separated)",
    )


def _group(text: str) -> int:
    """A group number as people see it (from 1)."""
    try:
        group = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a group number: {text!r}") from None
    if not 1 <= group <= MAX_LAYER + 1:
        raise argparse.ArgumentTypeError(f"groups are numbered 1 to {MAX_LAYER + 1}")
    return group


def _key(text: str) -> bytes:
    """A member's public key: 64 hex digits."""
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise argparse.ArgumentTypeError("a key is 64 hex digits (the friend's /key)")
    return key


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    chat = commands.add_parser("chat", help="chat in a page's room from the terminal")
    _common(chat)
    where = chat.add_mutually_exclusive_group()
    where.add_argument(
        "--layer",
        "--group",
        type=_group,
        metavar="N",
        help="sit in group N of the page (groups count from 1, as /layers shows them)",
    )
    where.add_argument(
        "--friend",
        type=_key,
        metavar="KEY",
        help="sit in the group of the member with this key (64 hex digits: their /key)",
    )
    chat.add_argument("--say", help="send this, then print events until --wait seconds pass")
    chat.add_argument("--wait", type=float, default=10.0, help="seconds to stay with --say")
    chat.add_argument("--json", action="store_true", help="print events as JSON lines")
    chat.set_defaults(run=_run_chat)

    send = commands.add_parser("send", help="offer a file to a page's room")
    _common(send)
    send.add_argument("file", type=Path)
    send.add_argument("--wait", type=float, default=300.0, help="seconds to wait for receivers")
    send.add_argument("--count", type=int, default=1, help="exit after this many receivers got it")
    send.set_defaults(run=_run_send)

    receive = commands.add_parser("receive", help="take the files offered in a page's room")
    _common(receive)
    receive.add_argument("--out", type=Path, required=True, help="directory for the files")
    receive.add_argument("--count", type=int, default=1, help="exit after this many files")
    receive.add_argument("--wait", type=float, default=3600.0, help="give up after seconds")
    receive.set_defaults(run=_run_receive)


def _peer(args: argparse.Namespace, accept_files_to: Path | None = None) -> Peer:
    hosts = args.ice_host or [h for h in os.environ.get(ICE_HOSTS_ENV, "").split(",") if h]
    if hosts:
        restrict_host_candidates(hosts)
    data_dir = args.data_dir or default_data_dir() / "peer"
    return Peer(
        data_dir, args.node or [DEFAULT_NODE], name=args.name, accept_files_to=accept_files_to
    )


def event_json(event: Any) -> dict[str, Any]:
    """One room event as a JSON-ready object (the --json output, one per line)."""
    if isinstance(event, Message):
        return {
            "event": "message",
            "author": event.author.hex(),
            "text": event.text,
            "seq": event.seq,
            "lamport": event.lamport,
            "sent_at": event.sent_at,
            "mine": event.mine,
        }
    if isinstance(event, MemberJoined | MemberLeft):
        kind = "joined" if isinstance(event, MemberJoined) else "left"
        return {"event": kind, "key": event.key.hex()}
    if isinstance(event, Connected):
        return {"event": "connected", "key": event.key.hex(), "path": event.path}
    if isinstance(event, Gap):
        return {
            "event": "discontinuity",
            "author": event.author.hex(),
            "first": event.first,
            "last": event.last,
        }
    if isinstance(event, PeerProblem):
        return {"event": "problem", "message": event.message}
    if isinstance(event, Rejoined):
        return {"event": "rejoined", "node": event.node, "layer": event.layer}
    if isinstance(event, Moved):
        return {"event": "moved", **seat_json(event.layer, event.layers, event.total)}
    return {"event": type(event).__name__.lower()}


def seat_json(layer: int, layers: int, total: int) -> dict[str, Any]:
    """Where we sit, for the JSON lines: the protocol's layer and the group people see."""
    return {"layer": layer, "group": layer + 1, "layers": layers, "total": total}


def seat_sentence(layer: int, layers: int, total: int) -> str:
    """ "you are in group 7 of 412, about 9,800 people on this page": groups from 1.

    Both numbers after the group are the node's estimates; the group count never
    reads below our own group."""
    people = "person" if total == 1 else "people"
    return (
        f"you are in group {layer + 1:,} of {max(layers, layer + 1):,}, "
        f"about {total:,} {people} on this page"
    )


def census_lines(census: Census) -> list[str]:
    """What /layers prints: the sentence, then each listed group and its count."""
    lines = [seat_sentence(census.layer, census.layers, census.total)]
    for entry in sorted(census.counts, key=lambda c: c.layer):
        people = "person" if entry.count == 1 else "people"
        mark = " (yours)" if entry.layer == census.layer else f"  /move {entry.layer + 1}"
        lines.append(f"  group {entry.layer + 1:,}: {entry.count:,} {people}{mark}")
    return lines


def event_line(event: Any, names: dict[bytes, str] | None = None) -> str:
    """One room event for a person."""
    if isinstance(event, Message):
        who = "me" if event.mine else (names or {}).get(event.author, event.author.hex()[:8])
        stamp = time.strftime("%H:%M", time.localtime(event.sent_at))
        return f"[{stamp}] <{who}> {event.text}"
    if isinstance(event, Moved):
        return f"* moved: {seat_sentence(event.layer, event.layers, event.total)}"
    if isinstance(event, Rejoined):
        return f"* seated again through {event.node}, in group {event.layer + 1:,}"
    data = event_json(event)
    kind = data.pop("event")
    return f"* {kind} " + " ".join(f"{k}={str(v)[:16]}" for k, v in data.items())


def _run(name: str, coro: Any) -> int:
    try:
        return int(asyncio.run(coro))
    except TimeoutError:  # before OSError, of which it is a subclass
        print(f"pagemesh {name}: timed out", file=sys.stderr)
        return 3
    except (ValueError, OSError) as exc:
        print(f"pagemesh {name}: {exc}", file=sys.stderr)
        return 1
    except SignalingError as exc:
        print(f"pagemesh {name}: {refusal(exc)}", file=sys.stderr)
        return 1


def refusal(exc: SignalingError, group: int | None = None) -> str:
    """A node's refusal of a join or a move, for a person."""
    if exc.code == "layer-full":
        return f"group {group:,} is full" if group is not None else "that group is full"
    if exc.code == "unknown-peer":
        return "nobody with that key is on this page"
    return str(exc)


def _run_chat(args: argparse.Namespace) -> int:
    return _run("chat", _chat(args))


def _run_send(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        print(f"pagemesh send: no such file {args.file}", file=sys.stderr)
        return 2
    return _run("send", asyncio.wait_for(_send(args), args.wait))


def _run_receive(args: argparse.Namespace) -> int:
    return _run("receive", asyncio.wait_for(_receive(args), args.wait))


async def _send(args: argparse.Namespace) -> int:
    """Offer the file to everyone in the room now and to whoever connects later."""
    async with _peer(args) as peer:
        room = await peer.join(args.url)
        file_id = await room.send_file(args.file)
        received: set[bytes] = set()
        with _progress() as bars:
            tasks: dict[bytes, Any] = {}
            async for event in room.events():
                if isinstance(event, Connected) and event.key not in tasks:
                    tasks[event.key] = bars.add_task(f"to {event.key.hex()[:8]}", total=None)
                elif isinstance(event, FileDone) and event.id == file_id:
                    received.add(event.sender)
                    task = tasks.get(event.sender)
                    if task is not None:
                        bars.update(task, total=1, completed=1)
                    if len(received) >= args.count:
                        return 0
    return 1


async def _receive(args: argparse.Namespace) -> int:
    """Take what is offered into --out: the peer's accept policy runs a few downloads at
    once and keeps the other offers waiting, within the bounds of docs/protocol.md 5.2.

    Offers carry no time, so one made before we started is taken like a new one.
    Names are shown as they will be saved (`local_name`), never as markup.
    """
    async with _peer(args, accept_files_to=args.out) as peer:
        room = await peer.join(args.url)
        got = 0
        with _progress() as bars:
            tasks: dict[str, Any] = {}
            async for event in room.events():
                if isinstance(event, FileOffered):
                    offer = event.offer
                    name = escape(local_name(offer.name))
                    tasks[offer.id] = bars.add_task(name, total=offer.size)
                elif isinstance(event, FileProgress) and event.id in tasks:
                    bars.update(tasks[event.id], completed=event.done)
                elif isinstance(event, FileDone) and event.path is not None:
                    task = tasks.pop(event.id, None)
                    if task is not None:
                        bars.update(task, completed=bars.tasks[task].total)
                    bars.console.print(f"received {event.path}", markup=False, highlight=False)
                    got += 1
                    if got >= args.count:
                        return 0
                elif isinstance(event, FileFailed):
                    task = tasks.pop(event.id, None)
                    if task is not None:
                        bars.remove_task(task)
                    bars.console.print(f"failed: {event.reason}", markup=False, highlight=False)
    return 1


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )


async def _chat(args: argparse.Namespace) -> int:
    async with _peer(args) as peer:
        layer = args.layer - 1 if args.layer is not None else None
        try:
            room = await peer.join(args.url, layer=layer, friend=args.friend)
        except SignalingError as exc:
            print(f"pagemesh chat: {refusal(exc, args.layer)}", file=sys.stderr)
            return 1
        show = (
            (lambda e: json.dumps(event_json(e)))
            if args.json
            else (lambda e: event_line(e, room.names))
        )
        if args.json:
            print(json.dumps({"event": "seated", **seat_json(room.layer, room.layers, room.total)}))
        if args.say is not None:
            if not args.json:
                print(seat_sentence(room.layer, room.layers, room.total))
            await room.send(args.say)
            await _print_events(room, show, args.wait)
            return 0
        print(f"joined the room of {args.url} as {peer.public_key.hex()[:8]}")
        print(seat_sentence(room.layer, room.layers, room.total))
        print("/layers, /move N, /friend KEY, /key, /who; /quit to leave")
        printer = asyncio.create_task(_print_events(room, show, None))
        try:
            await _read_lines(room)
        finally:
            printer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await printer
    return 0


async def _print_events(room: Room, show: Any, seconds: float | None) -> None:
    async def loop() -> None:
        async for event in room.events():
            print(show(event), flush=True)

    if seconds is None:
        await loop()
    else:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(loop(), seconds)


async def _read_lines(room: Room) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        text = line.decode(errors="replace").rstrip("\n")
        if text == "/quit":
            return
        if text.startswith("/"):
            for out in await command(room, text):
                print(out)
            continue
        if text:
            try:
                await room.send(text)
            except ValueError as exc:
                print(f"* not sent: {exc}")


async def command(room: Room, text: str) -> list[str]:
    """One slash command typed in `pagemesh chat`; the lines it prints."""
    name, _, arg = text.strip().partition(" ")
    arg = arg.strip()
    try:
        if name == "/who":
            return [f"* {key.hex()[:8]} {path}" for key, path in room.paths().items()]
        if name == "/key":
            return [f"* your key: {room.peer.public_key.hex()}"]
        if name == "/layers":
            return ["* " + line for line in census_lines(await room.census())]
        if name == "/move":
            group = _group(arg)
            try:
                await room.move(group - 1)
            except SignalingError as exc:
                return [f"* not moved: {refusal(exc, group)}"]
            return []  # the Moved event prints where we sit now
        if name == "/friend":
            try:
                await room.sit_with(_key(arg))
            except SignalingError as exc:
                return [f"* not moved: {refusal(exc)}"]
            return []
    except argparse.ArgumentTypeError as exc:
        return [f"* {exc}"]
    except (SignalingError, TimeoutError) as exc:
        return [f"* the node did not answer: {exc}"]
    return [f"* unknown command {name}; try /layers, /move N, /friend KEY, /key, /who, /quit"]
