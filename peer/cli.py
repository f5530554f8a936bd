"""`pagemesh chat`, `pagemesh send`, `pagemesh receive`: a person's side of the mesh.

What a person reads names people, never keys (peer/chatscreen.py says how).

A busy page's room is split into groups of about 24 (the protocol's layers,
docs/protocol.md 2.3). People see groups counted from 1, as the browser shows
them: group 1 is layer 0. `--layer N` and `/move N` take that number too; the
JSON lines keep the protocol's `layer` (from 0) beside a `group`.

Files (docs/protocol.md 5.2): `chat` numbers each offer and takes none
unasked (`/get N`); a newcomer sees the files shared before it came as
"shared earlier". `send` offers a file to chosen members (`--to`) or to
everyone present (`--all-present`) and ends when each has verified it;
`receive` takes the files offered after it started (`--include-earlier`:
those before too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from signaling.protocol import canonical_url, load_or_create_seed, verify_signature

from .args import (
    DEFAULT_NODE,
    ICE_HOSTS_ENV,
    PASSPHRASE_ENV,
    default_data_dir,
    group_number,
    member_key,
)
from .blocks_cli import COMMANDS as BLOCK_COMMANDS
from .blocks_cli import HELP as BLOCK_HELP
from .blocks_cli import block_command
from .chatscreen import (
    SETTLE,
    ChatScreen,
    human_size,
    member_label,
    my_label,
    printable,
    seat_sentence,
)
from .contacts_cli import COMMANDS as CONTACT_COMMANDS
from .contacts_cli import HELP as CONTACT_HELP
from .contacts_cli import Elsewhere, contact_command, join_target
from .device import MAX_BYTES as MAX_DELEGATION_BYTES
from .device import (
    DelegationError,
    check_delegation,
    issue_delegation,
    issue_revocation,
    serialize_delegation,
)
from .dm_cli import COMMANDS as DM_COMMANDS
from .dm_cli import HELP as DM_HELP
from .dm_cli import dm_command, dm_line
from .files import AcceptRule, local_name
from .identity_file import (
    FileContact,
    IdentityFileError,
    export_identity,
    parse_identity_file,
    read_identity,
    read_identity_file,
    write_identity_file,
)
from .messaging import MessagingError, short_tag
from .peer import (
    Census,
    Connected,
    Device,
    FileDone,
    FileFailed,
    FileOffered,
    FileProgress,
    Flooding,
    Gap,
    MemberJoined,
    MemberLeft,
    Message,
    Moved,
    Peer,
    PeerProblem,
    Profile,
    Rejoined,
    Room,
)
from .signaling import SignalingError
from .store import KEY_FILE, Contact, PeerStore, StoreVersionError
from .webrtc import restrict_host_candidates

TAG_MARK = short_tag(bytes(32))[0]
"""What a key's tag begins with (`·3fa9`)."""

HELP = [
    "type a line and press Enter to say it to your group; //text says /text",
    "/who            who is in your group, and how you reach each (direct or relayed)",
    "/get N          download the file numbered N (/get alone lists them)",
    "/send PATH      offer a file to your group",
    "/layers         the groups of this page and how many sit in each",
    "/move N         move to group N",
    "/friend KEY     move to the group of the member with this key",
    "/key            your key, for a friend's /friend",
    *CONTACT_HELP,
    *DM_HELP,
    *BLOCK_HELP,
    "/leave          leave the room and quit (also /quit, or Ctrl-D)",
    "/help           this list (nothing you type after / is sent to the room)",
]


def _peer(args: argparse.Namespace, accept_files_to: Path | None = None) -> Peer:
    hosts = args.ice_host or [h for h in os.environ.get(ICE_HOSTS_ENV, "").split(",") if h]
    if hosts:
        restrict_host_candidates(hosts)
    data_dir = args.data_dir or default_data_dir() / "peer"
    peer = Peer(
        data_dir,
        args.node or [DEFAULT_NODE],
        name=args.name,
        accept_files_to=accept_files_to,
        device=getattr(args, "device", None),
    )

    def problem(text: str) -> None:
        # Until a room is joined nothing else would say why nothing happens (a joined
        # room's events say it from then on).
        if not any(r.seated is not None and r.seated.done() for r in peer.rooms.values()):
            print(f"pagemesh: {text}", file=sys.stderr, flush=True)

    peer.on_node_problem = problem
    return peer


# --- JSON lines, sentences --------------------------------------------------------------


def event_json(event: Any, room: Room | None = None) -> dict[str, Any]:
    """One room event as a JSON-ready object (the --json output, one per line). With
    `room`, members are named too (`name`: their name, or null)."""

    def named(key: bytes, field: str = "name") -> dict[str, Any]:
        return {field: room.name_of(key)} if room is not None else {}

    if isinstance(event, Message):
        return {
            "event": "message",
            "author": event.author.hex(),
            **named(event.author),
            "text": event.text,
            "seq": event.seq,
            "lamport": event.lamport,
            "sent_at": event.sent_at,
            "mine": event.mine,
        }
    if isinstance(event, MemberJoined | MemberLeft):
        kind = "joined" if isinstance(event, MemberJoined) else "left"
        return {"event": kind, "key": event.key.hex(), **named(event.key)}
    if isinstance(event, Connected):
        return {
            "event": "connected",
            "key": event.key.hex(),
            **named(event.key),
            "path": event.path,
        }
    if isinstance(event, Profile):
        return {"event": "profile", "key": event.key.hex(), "name": event.name}
    if isinstance(event, Device):
        return {
            "event": "device",
            "key": event.key.hex(),
            "identity": event.identity.hex(),
            "label": event.label,
        }
    if isinstance(event, FileOffered):
        offer = event.offer
        return {
            "event": "file-offered",
            "id": offer.id,
            "file": offer.name,
            "size": offer.size,
            "mime": offer.mime,
            "from": event.sender.hex(),
            "earlier": event.earlier,
        }
    if isinstance(event, FileDone):
        path = str(event.path) if event.path is not None else None
        return {"event": "file-done", "id": event.id, "path": path, "member": event.sender.hex()}
    if isinstance(event, FileFailed):
        return {"event": "file-failed", "id": event.id, "reason": event.reason}
    if isinstance(event, FileProgress):
        return {"event": "file-progress", "id": event.id, "done": event.done, "size": event.size}
    if isinstance(event, Gap):
        return {
            "event": "discontinuity",
            "author": event.author.hex(),
            "first": event.first,
            "last": event.last,
        }
    if isinstance(event, PeerProblem):
        return {"event": "problem", "message": event.message}
    if isinstance(event, Flooding):
        return {"event": "flooding", "author": event.author.hex(), "dropped": event.dropped}
    if isinstance(event, Rejoined):
        return {"event": "rejoined", "node": event.node, "layer": event.layer}
    if isinstance(event, Moved):
        return {"event": "moved", **seat_json(event.layer, event.layers, event.total)}
    return {"event": type(event).__name__.lower()}


def seat_json(layer: int, layers: int, total: int) -> dict[str, Any]:
    """Where we sit, for the JSON lines: the protocol's layer and the group people see."""
    return {"layer": layer, "group": layer + 1, "layers": layers, "total": total}


def census_lines(census: Census) -> list[str]:
    """What /layers prints: the sentence, then each listed group and its count."""
    lines = [seat_sentence(census.layer, census.layers, census.total)]
    for entry in sorted(census.counts, key=lambda c: c.layer):
        people = "person" if entry.count == 1 else "people"
        mark = " (yours)" if entry.layer == census.layer else f"  /move {entry.layer + 1}"
        lines.append(f"  group {entry.layer + 1:,}: {entry.count:,} {people}{mark}")
    return lines


def refusal(exc: SignalingError, group: int | None = None) -> str:
    """A node's refusal of a join or a move, for a person."""
    if exc.code == "layer-full":
        return f"group {group:,} is full" if group is not None else "that group is full"
    if exc.code == "unknown-peer":
        return "nobody with that key is on this page"
    return str(exc)


# --- running a command --------------------------------------------------------------------


def _run(name: str, coro: Any) -> int:
    try:
        return int(asyncio.run(coro))
    except TimeoutError:  # before OSError, of which it is a subclass
        print(f"pagemesh {name}: timed out", file=sys.stderr)
        return 3
    except (ValueError, OSError, StoreVersionError) as exc:
        print(f"pagemesh {name}: {exc}", file=sys.stderr)
        return 1
    except SignalingError as exc:
        print(f"pagemesh {name}: {refusal(exc)}", file=sys.stderr)
        return 1


def _run_chat(args: argparse.Namespace) -> int:
    return _run("chat", _chat(args))


def _run_send(args: argparse.Namespace) -> int:
    """`send FILE URL` (or, as older versions took it, `send URL FILE`)."""
    first, second = args.file_and_url
    if "://" in first and "://" not in second:
        first, second = second, first
    args.file, args.url = Path(first), second
    if not args.file.is_file():
        print(f"pagemesh send: no such file {args.file}", file=sys.stderr)
        return 2
    args.size = args.file.stat().st_size
    return _run("send", _send(args))


def _run_receive(args: argparse.Namespace) -> int:
    return _run("receive", _receive(args))


def _say(text: str) -> None:
    print(text, flush=True)


async def _next_event(room: Room) -> Any:
    """The room's next event, however long it takes (a caller bounds the whole)."""
    while True:
        with contextlib.suppress(TimeoutError):
            return await room.next_event(within=3600.0)


# --- pagemesh send ---------------------------------------------------------------------------


def _match(room: Room, wanted: str, among: Iterable[bytes]) -> list[bytes]:
    """The members `wanted` names: by key (64 hex digits), by a key's tag (·3fa9), or
    by the name they give themselves."""
    text = wanted.strip()
    with contextlib.suppress(ValueError):
        if len(text) == 64:
            key = bytes.fromhex(text)
            return [key]
    found = [k for k in among if room.name_of(k) == text]
    if not found and text.startswith(TAG_MARK):
        found = [k for k in among if short_tag(k) == text]
    return found


class _Recipients:
    """Whom a `send` waits for, and how each ended."""

    def __init__(self, room: Room, wanted: list[str]) -> None:
        self.room = room
        self.unnamed = list(dict.fromkeys(wanted))
        """`--to` names not matched to a member yet."""
        self.waiting: set[bytes] = set()
        self.accepted: set[bytes] = set()
        """Of `waiting`, those whose download began."""
        self.done: list[bytes] = []
        self.failed: dict[bytes, str] = {}

    def name_more(self) -> tuple[list[bytes], list[str]]:
        """Match the unmatched names to members here (linked ones have said their names).
        Returns the members newly named and the names that name more than one."""
        here = self.room.members | set(self.room.links)
        found: list[bytes] = []
        ambiguous: list[str] = []
        for wanted in list(self.unnamed):
            keys = _match(self.room, wanted, here)
            if len(keys) > 1:
                ambiguous.append(wanted)
            elif keys:
                self.unnamed.remove(wanted)
                if keys[0] not in self.waiting and keys[0] not in self.done:
                    self.waiting.add(keys[0])
                    found.append(keys[0])
        return found, ambiguous

    @property
    def finished(self) -> bool:
        return not self.unnamed and not self.waiting


async def _send(args: argparse.Namespace) -> int:
    """Offer the file; print each recipient as it verifies it; end when all did."""
    name = printable(args.file.name)
    async with _peer(args) as peer:
        room = await peer.join(args.url)
        recipients = _Recipients(room, args.to)
        me = peer.public_key
        if args.to:
            file_id = await room.send_file(args.file, to=())
            _say(f"offering {name} ({human_size(args.size)}) to {', '.join(args.to)}")
        else:
            recipients.waiting = room.members - {me}
            if not recipients.waiting:
                print(
                    f"pagemesh send: nobody else is in the room of {args.url}; "
                    "--to NAME waits for someone",
                    file=sys.stderr,
                )
                return 1
            file_id = await room.send_file(args.file)
            people = len(recipients.waiting)
            _say(
                f"offering {name} ({human_size(args.size)}) to the "
                f"{people} {'person' if people == 1 else 'people'} here now"
            )
        if recipients.waiting:  # not named yet: their names come as their links open
            people = len(recipients.waiting)
            who = f"the {people} {'person' if people == 1 else 'people'} here"
            _say(_to_accept(who, name, args.timeout))
        try:
            async with asyncio.timeout(args.timeout):
                return await _until_received(room, file_id, name, recipients, args.timeout)
        except TimeoutError:
            missing = [member_label(room, k) for k in recipients.waiting] + recipients.unnamed
            print(
                f"pagemesh send: timed out after {args.timeout:g} s; "
                f"{', '.join(missing)} did not get {name}",
                file=sys.stderr,
            )
            return 3


def _to_accept(who: str, name: str, timeout: float) -> str:
    """What `send` waits for once `who` have the offer: each to take it."""
    return (
        f"waiting for {who} to accept: they type /get N in their chat (N is the number "
        f"it shows beside {name}), or run pagemesh receive; giving up after "
        f"{timeout:g} s (--timeout)"
    )


async def _until_received(
    room: Room, file_id: str, name: str, recipients: _Recipients, give_up_after: float
) -> int:
    def address() -> int | None:
        found, ambiguous = recipients.name_more()
        if ambiguous:
            for wanted in ambiguous:
                tags = [short_tag(k) for k in _match(room, wanted, room.members)]
                print(
                    f"pagemesh send: {len(tags)} members call themselves {wanted} "
                    f"({', '.join(tags)}); name one by its tag or key",
                    file=sys.stderr,
                )
            return 1
        room.transfers.offer_to(file_id, found, room.paths())
        if found:
            who = ", ".join(member_label(room, k) for k in found)
            _say(_to_accept(who, name, give_up_after))
        return None

    if recipients.unnamed:
        if (code := address()) is not None:
            return code
        if recipients.unnamed:
            wanted = ", ".join(recipients.unnamed)
            others = room.members - {room.peer.public_key}
            if any(room.name_of(k) is None for k in others):  # their names are on the way
                people = "person" if len(others) == 1 else "people"
                here = f"{len(others)} {people} here"
                where = f": still hearing the names of the {here}, or yet to come"
            else:
                where = " to come to the room"
            _say(f"waiting for {wanted}{where} (giving up after {give_up_after:g} s: --timeout)")
    while not recipients.finished:
        event = await _next_event(room)
        if isinstance(event, Connected | Profile | MemberJoined) and recipients.unnamed:
            if (code := address()) is not None:
                return code
        elif (
            isinstance(event, FileProgress)
            and event.id == file_id
            and event.member in recipients.waiting
            and event.member not in recipients.accepted
        ):
            recipients.accepted.add(event.member)
            _say(f"{member_label(room, event.member)} accepted {name}; sending")
        elif isinstance(event, FileDone) and event.id == file_id:
            if event.sender in recipients.waiting:
                recipients.waiting.discard(event.sender)
                recipients.done.append(event.sender)
                _say(f"{member_label(room, event.sender)} has {name} (verified)")
        elif isinstance(event, FileFailed) and event.id == file_id and event.member is not None:
            if event.member in recipients.waiting:
                recipients.waiting.discard(event.member)
                recipients.failed[event.member] = "declined it"
                _say(f"{member_label(room, event.member)} declined {name}")
        elif isinstance(event, MemberLeft) and event.key in recipients.waiting:
            recipients.waiting.discard(event.key)
            recipients.failed[event.key] = "left before it arrived"
            _say(f"{member_label(room, event.key)} left before {name} arrived")
    if recipients.failed:
        failed = ", ".join(f"{member_label(room, k)} {why}" for k, why in recipients.failed.items())
        print(f"pagemesh send: {failed}", file=sys.stderr)
        return 1
    return 0


# --- pagemesh receive -----------------------------------------------------------------------


async def _receive(args: argparse.Namespace) -> int:
    """Take what is offered into --out: the peer's accept policy runs a few downloads at
    once and keeps the other offers waiting, within the bounds of docs/protocol.md 5.2.

    Files shared before we came are told and left alone unless --include-earlier.
    Names are shown as they will be saved (`local_name`), never as markup.
    """
    async with _peer(args, accept_files_to=args.out) as peer:
        room = await peer.join(args.url)
        room.transfers.set_accept_rule(AcceptRule(earlier=args.include_earlier))
        _say(f"waiting for files in the room of {args.url}")
        try:
            async with asyncio.timeout(args.timeout):
                return await _take_files(room, args.count, args.include_earlier)
        except TimeoutError:
            print(f"pagemesh receive: timed out after {args.timeout:g} s", file=sys.stderr)
            return 3


async def _take_files(room: Room, count: int, include_earlier: bool) -> int:
    got = 0
    with _progress() as bars:
        tasks: dict[str, Any] = {}
        senders: dict[str, bytes] = {}

        def say(text: str) -> None:
            bars.console.print(text, markup=False, highlight=False, soft_wrap=True)

        while True:
            event = await _next_event(room)
            if isinstance(event, FileOffered):
                offer = event.offer
                what = f"{printable(local_name(offer.name))} ({human_size(offer.size)})"
                who = member_label(room, event.sender)
                if event.earlier and not include_earlier:
                    say(f"skipping {what} from {who}: shared before this started")
                    continue
                senders[offer.id] = event.sender
                tasks[offer.id] = bars.add_task(escape(local_name(offer.name)), total=offer.size)
            elif isinstance(event, FileProgress) and event.id in tasks:
                bars.update(tasks[event.id], completed=event.done)
            elif isinstance(event, FileDone) and event.path is not None:
                task = tasks.pop(event.id, None)
                if task is not None:
                    bars.update(task, completed=bars.tasks[task].total)
                who = member_label(room, event.sender)
                say(f"received {printable(str(event.path.absolute()))} from {who} (verified)")
                got += 1
                if got >= count:
                    return 0
            elif isinstance(event, FileFailed) and event.id in tasks:
                bars.remove_task(tasks.pop(event.id))
                say(f"failed: {printable(event.reason)}")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )


# --- pagemesh chat ---------------------------------------------------------------------------


async def _chat(args: argparse.Namespace) -> int:
    async with _peer(args) as peer:
        layer = args.layer - 1 if args.layer is not None else None
        try:
            room = await peer.join(args.url, layer=layer, friend=args.friend)
        except SignalingError as exc:
            print(f"pagemesh chat: {refusal(exc, args.layer)}", file=sys.stderr)
            return 1
        screen = ChatScreen(room, time.time())
        if args.json:
            _say(json.dumps({"event": "seated", **seat_json(room.layer, room.layers, room.total)}))
        if args.say is not None:
            if not args.json:
                _say(seat_sentence(room.layer, room.layers, room.total))
            await room.say(args.say)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(args.wait):
                    await _show_events(room, screen, args.json)
            return 0
        who = f" as {printable(peer.store.name)}" if peer.store.name else ""
        _say(f"joined the room of {args.url}{who}")
        _say(seat_sentence(room.layer, room.layers, room.total))
        _say("type to chat; /help for the commands")
        place = ChatPlace(room, canonical_url(args.url), screen, args.json)
        dms = asyncio.create_task(show_dms(peer))  # direct messages, as they come (7.4)
        try:
            await _read_lines(place, args.out)
        finally:
            for task in (place.printer, dms):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await peer.leave(place.room)
    return 0


MAX_BACK = 32
"""Pages /back remembers (the oldest forgotten first)."""


class ChatPlace:
    """Where `pagemesh chat` sits: the room, its page, the screen that shows it and the
    task printing its events; /join NAME takes it to a contact's page, /back to the
    pages it left that way, newest first (at most `MAX_BACK`)."""

    def __init__(self, room: Room, page: str, screen: ChatScreen, as_json: bool) -> None:
        self.room = room
        self.page = page
        self.screen = screen
        self.as_json = as_json
        self.left: list[tuple[str, int]] = []
        """The pages /join left, with the group (layer) we sat in, oldest first."""
        self.printer = asyncio.create_task(_show_events(room, screen, as_json))

    async def join(self, there: Elsewhere) -> list[str]:
        """/join NAME of a contact on another page: sit with them there (as a friend,
        docs/groups.md; in the group their note names when the node cannot find them)."""
        peer = self.room.peer
        try:
            try:
                room = await peer.join(there.page, friend=there.key)
            except SignalingError as exc:
                if exc.code != "unknown-peer":
                    raise
                room = await peer.join(there.page, layer=there.layer)
        except SignalingError as exc:
            return [f"* not moved: {refusal(exc, there.layer + 1)}"]
        self.left = [*self.left, (self.page, self.room.layer)][-MAX_BACK:]
        await self._switch(room, there.page, f"* you join {printable(there.petname)}")
        return []

    async def back(self) -> list[str]:
        """/back: to the page the last /join left, in the group we sat in if it has a seat."""
        if not self.left:
            return ["* /back returns to the page /join took you from; there is none"]
        page, layer = self.left[-1]
        peer = self.room.peer
        try:
            try:
                room = await peer.join(page, layer=layer)
            except SignalingError as exc:
                if exc.code != "layer-full":
                    raise
                room = await peer.join(page)
        except SignalingError as exc:
            return [f"* not moved: {refusal(exc)}"]
        self.left.pop()
        await self._switch(room, page, "* back where you were before /join")
        return []

    async def _switch(self, room: Room, page: str, intro: str) -> None:
        """Leave the room we are in for `room` (joined already): its own screen (its
        history, files numbered from 1), its own printer. What the old screen held back,
        `intro` and where we sit now are printed before anything of the new room."""
        old, self.room, self.page = self.room, room, page
        self.printer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.printer
        lines = self.screen.settle() if not self.as_json else []
        await room.peer.leave(old)
        seat = f"group {room.layer + 1:,} of {max(room.layers, room.layer + 1):,}"
        if self.as_json:
            seated = {"event": "seated", "page": page}
            lines = [json.dumps({**seated, **seat_json(room.layer, room.layers, room.total)})]
        else:
            lines += [intro, f"* now in {printable(page)}, {seat}"]
        for line in lines:
            print(line, flush=True)
        self.screen = ChatScreen(room, time.time())
        self.printer = asyncio.create_task(_show_events(room, self.screen, self.as_json))


async def show_dms(peer: Peer) -> None:
    """Print every DM room's messages as they come, each line marked with the contact."""
    printers: set[asyncio.Task[None]] = set()
    try:
        while True:
            room = await peer.dm_opened.get()
            task = asyncio.create_task(_show_dm(room))
            printers.add(task)
            task.add_done_callback(printers.discard)
    finally:
        for task in list(printers):
            task.cancel()


async def _show_dm(room: Room) -> None:
    while room.peer.rooms.get(room.key) is room:
        with contextlib.suppress(TimeoutError):
            line = dm_line(room, await room.next_event(within=3600.0))
            if line is not None:
                print(line, flush=True)


async def _show_events(room: Room, screen: ChatScreen, as_json: bool) -> None:
    """Print the room's events as they come; what the screen holds back, once the room
    has been quiet for `SETTLE` seconds."""
    while True:
        try:
            event = await room.next_event(within=SETTLE if screen.holding else 3600.0)
        except TimeoutError:
            lines = screen.settle()
        else:
            if as_json:
                if isinstance(event, FileOffered):
                    screen.number(event)
                lines = [json.dumps(event_json(event, room))]
            else:
                lines = screen.feed(event)
        for line in lines:
            print(line, flush=True)


async def _read_lines(place: ChatPlace, out: Path) -> None:
    """Read what the person types until /leave, /quit or the end of input."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    echoed = sys.stdin.isatty() and sys.stdout.isatty()
    while line := await reader.readline():
        text = line.decode(errors="replace").rstrip("\r\n")
        if text.startswith("/") and not text.startswith("//"):
            if text.split(maxsplit=1)[0] in ("/leave", "/quit"):
                return
            for out_line in await command(place.room, text, place.screen, out, place):
                print(out_line, flush=True)
            continue
        if not text.strip():
            continue
        if echoed:  # the terminal showed what was typed: the room's line replaces it
            sys.stdout.write("\x1b[1A\x1b[2K")
        try:
            await place.room.say(text.removeprefix("/"))
        except (MessagingError, ValueError) as exc:
            print(f"* not sent: {exc}", flush=True)


async def command(
    room: Room,
    text: str,
    screen: ChatScreen | None = None,
    out: Path = Path("."),
    place: ChatPlace | None = None,
) -> list[str]:
    """One slash command typed in `pagemesh chat`; the lines it prints. Nothing typed
    after a / reaches the room. With `place`, /join NAME and /back change rooms."""
    name, _, arg = text.strip().partition(" ")
    arg = arg.strip()
    screen = screen or ChatScreen(room, time.time())
    handlers: dict[str, Callable[[], Any]] = {
        "/help": lambda: ["* " + line for line in HELP],
        "/who": lambda: who_lines(room),
        "/key": lambda: [f"* your key: {room.peer.public_key.hex()}"],
        "/get": lambda: get_file(room, screen, arg, out),
    }
    try:
        if name in handlers:
            return list(handlers[name]())
        if name in BLOCK_COMMANDS:
            return block_command(room, name, arg)
        if name == "/join" and place is not None:
            there = await join_target(room, arg)
            return await place.join(there) if isinstance(there, Elsewhere) else there
        if name == "/back":
            if place is None:
                return ["* /back returns to the page /join took you from; there is none"]
            return await place.back()
        if name in CONTACT_COMMANDS:
            return await contact_command(room, name, arg)
        if name in DM_COMMANDS:
            return await dm_command(room, arg, out)
        if name == "/send":
            return await send_file(room, screen, arg)
        if name == "/layers":
            return ["* " + line for line in census_lines(await room.census())]
        if name == "/move":
            group = group_number(arg)
            try:
                await room.move(group - 1)
            except SignalingError as exc:
                return [f"* not moved: {refusal(exc, group)}"]
            return []  # the Moved event prints where we sit now
        if name == "/friend":
            try:
                await room.sit_with(member_key(arg))
            except SignalingError as exc:
                return [f"* not moved: {refusal(exc)}"]
            return []
    except argparse.ArgumentTypeError as exc:
        return [f"* {exc}"]
    except (SignalingError, TimeoutError) as exc:
        return [f"* the node did not answer: {exc}"]
    return [f"* unknown command {printable(name)}; /help lists them"]


def who_lines(room: Room) -> list[str]:
    """/who: us and the members of our group, each with how we reach it."""
    paths = room.paths()
    others = sorted(room.members | set(paths), key=lambda k: member_label(room, k).casefold())
    lines = [f"* {my_label(room)} (you), in group {room.layer + 1:,}"]
    if not others:
        return [*lines, "* nobody else is here"]
    for key in others:
        path = paths.get(key) or "connecting"
        lines.append(f"*   {member_label(room, key)}  {path}")
    return lines


def get_file(room: Room, screen: ChatScreen, arg: str, out: Path) -> list[str]:
    """/get N: download offer N into `out`; /get alone: the offers one may still get."""
    if not arg:
        listed = [
            f"*   /get {n.number}  {printable(n.offer.name)} ({human_size(n.offer.size)}) "
            f"from {member_label(room, n.sender)}"
            for n in screen.on_offer()
        ]
        return ["* files you can get:", *listed] if listed else ["* no files on offer"]
    numbered = screen.take(
        arg,
        out,
        unknown=lambda n: f"* no file numbered {n}",
        gone=lambda n: f"* file {n} is no longer offered (its sender left, or it got old)",
    )
    if isinstance(numbered, str):
        return [numbered]
    sender = member_label(room, numbered.sender)
    return [f"* getting {printable(numbered.offer.name)} from {sender}"]


async def send_file(room: Room, screen: ChatScreen, arg: str) -> list[str]:
    """/send PATH: offer a file to the group."""
    found = _local_file(arg)
    if isinstance(found, str):
        return [found]
    path, size = found
    try:
        file_id = await room.send_file(path)
    except (OSError, ValueError) as exc:
        return [f"* not offered: {printable(str(exc))}"]
    screen.sent(file_id, path.name)
    return [f"* you offer {printable(path.name)} ({human_size(size)})"]


def _local_file(arg: str) -> tuple[Path, int] | str:
    """The file a person named, and its size; or what is wrong with it."""
    if not arg:
        return "* /send takes a file's path"
    path = Path(arg).expanduser()
    try:
        if path.is_file():
            return path, path.stat().st_size
    except OSError:
        pass
    return f"* no such file: {printable(arg)}"


# --- identity files (docs/identity.md) ------------------------------------------------------


class _IdentityError(Exception):
    """A refusal of an identity command, said to the person as is."""


def _identity_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir) if args.data_dir else default_data_dir() / "peer"


def _existing_seed(data_dir: Path) -> bytes | None:
    try:
        seed = (data_dir / KEY_FILE).read_bytes()
    except FileNotFoundError:
        return None
    if len(seed) != 32:
        raise _IdentityError(f"{data_dir / KEY_FILE} is not a 32-byte Ed25519 seed")
    return seed


def _passphrase(confirm: bool) -> str:
    env = os.environ.get(PASSPHRASE_ENV)
    if env is not None:
        return env
    if not sys.stdin.isatty():
        raise _IdentityError(f"no terminal to ask the passphrase; set {PASSPHRASE_ENV}")
    first = getpass.getpass("passphrase: ")
    if confirm and getpass.getpass("passphrase again: ") != first:
        raise _IdentityError("the two passphrases differ")
    return first


def _identity_run(
    action: str, body: Callable[[argparse.Namespace], None]
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            body(args)
        except IdentityFileError as exc:
            print(f"pagemesh identity {action}: {exc} ({exc.code})", file=sys.stderr)
            return 1
        except FileExistsError as exc:
            print(
                f"pagemesh identity {action}: {exc.filename} exists (--force replaces it)",
                file=sys.stderr,
            )
            return 1
        except (_IdentityError, ValueError, OSError, StoreVersionError) as exc:
            print(f"pagemesh identity {action}: {exc}", file=sys.stderr)
            return 1
        return 0

    return run


def _identity_show(args: argparse.Namespace) -> None:
    data_dir = _identity_dir(args)
    seed = _existing_seed(data_dir)
    if seed is None:
        raise _IdentityError(f"no identity in {data_dir}")
    store = PeerStore(data_dir)
    try:
        print(store.key.verify_key.encode().hex())
        if store.name:
            print(f"name: {store.name}")
    finally:
        store.close()


def _identity_export(args: argparse.Namespace) -> None:
    data_dir = _identity_dir(args)
    seed = _existing_seed(data_dir)
    if seed is None:
        raise _IdentityError(f"no identity in {data_dir} to export (none was created there)")
    if args.file.exists() and not args.force:
        raise FileExistsError(17, "exists", str(args.file))
    store = PeerStore(data_dir)
    try:
        name = store.name
        public = store.key.verify_key.encode().hex()
        contacts = [
            FileContact(c.key, c.petname, c.x, c.card_sig, c.room, c.page if c.room else None)
            for c in store.contacts()
        ]
    finally:
        store.close()
    data = export_identity(seed, _passphrase(confirm=True), name, contacts=contacts)
    write_identity_file(args.file, data, overwrite=args.force)
    print(public)


def _identity_import(args: argparse.Namespace) -> None:
    data_dir = _identity_dir(args)
    data = read_identity_file(args.file)
    public = parse_identity_file(data).public_key.hex()
    print(f"key in {args.file}: {public}", file=sys.stderr)
    current = _existing_seed(data_dir)
    same = current is not None and bytes(SigningKey(current).verify_key).hex() == public
    if current is not None and not same and not args.force:
        raise _IdentityError(
            f"{data_dir} already holds another key; export it first, then import with --force"
        )
    seed, name, contacts = _read_identity(data, _passphrase(confirm=False))
    if not same:
        _replace_key(data_dir / KEY_FILE, seed)
    if name or contacts:
        store = PeerStore(data_dir)
        try:
            if name:
                store.name = name
            for c in contacts:  # added to those here; a petname from the file wins
                store.save_contact(Contact(c.key, c.petname, c.x, c.sig, c.room, c.page))
        finally:
            store.close()
    print(public)


def _read_identity(
    data: bytes, passphrase: str
) -> tuple[bytes, str | None, tuple[FileContact, ...]]:
    contents = read_identity(data, passphrase)
    return contents.seed, contents.name, contents.contacts


def _replace_key(path: Path, seed: bytes) -> None:
    """`seed` at `path`, mode 0600, all or nothing (written beside it, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.urandom(4).hex()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(seed)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _identity_device(args: argparse.Namespace) -> None:
    from .peer import DEVICE_KEY_FILE, load_device_cert

    data_dir = _identity_dir(args)
    data_dir.mkdir(parents=True, exist_ok=True)
    device = bytes(SigningKey(load_or_create_seed(data_dir / DEVICE_KEY_FILE)).verify_key)
    print(device.hex())
    adopted = load_device_cert(data_dir, device)
    if adopted is not None:
        until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(adopted.expires / 1000))
        print(f"device of {adopted.identity.hex()} until {until}")


def _identity_delegate(args: argparse.Namespace) -> None:
    data_dir = _identity_dir(args)
    seed = _existing_seed(data_dir)
    if seed is None:
        raise _IdentityError(
            f"no identity in {data_dir} to delegate from (--data-dir names the one you chat"
            " with, as `pagemesh chat` was given it)"
        )
    if args.out.exists():
        raise FileExistsError(17, "exists", str(args.out))
    key = SigningKey(seed)
    try:
        delegation = issue_delegation(
            lambda message: key.sign(message).signature,
            bytes(key.verify_key),
            args.device_key,
            int(time.time() * 1000),
            int(args.days * 24 * 3600 * 1000),
            args.label,
        )
    except ValueError as exc:
        raise _IdentityError(str(exc)) from None
    write_identity_file(args.out, serialize_delegation(delegation).hex().encode() + b"\n")
    print(key.verify_key.encode().hex())


def _identity_adopt(args: argparse.Namespace) -> None:
    from .peer import DEVICE_CERT_FILE, DEVICE_KEY_FILE

    data_dir = _identity_dir(args)
    data_dir.mkdir(parents=True, exist_ok=True)
    device = bytes(SigningKey(load_or_create_seed(data_dir / DEVICE_KEY_FILE)).verify_key)
    text = args.file.read_bytes()[: 2 * MAX_DELEGATION_BYTES + 2].decode("ascii", "replace")
    try:
        delegation = check_delegation(
            bytes.fromhex(text.strip()), device, int(time.time() * 1000), verify_signature
        )
    except (ValueError, DelegationError) as exc:
        raise _IdentityError(f"{args.file} is no delegation for this device: {exc}") from None
    write_identity_file(
        data_dir / DEVICE_CERT_FILE, serialize_delegation(delegation).hex().encode() + b"\n",
        overwrite=True,
    )  # fmt: skip
    print(delegation.identity.hex())


def _identity_revoke(args: argparse.Namespace) -> None:
    from .peer import MAX_OWN_REVOCATIONS, load_revocations, save_revocations

    data_dir = _identity_dir(args)
    seed = _existing_seed(data_dir)
    if seed is None:
        raise _IdentityError(f"no identity in {data_dir} to revoke from")
    key = SigningKey(seed)
    identity = bytes(key.verify_key)
    try:
        revocation = issue_revocation(
            lambda message: key.sign(message).signature,
            identity,
            args.device_key,
            int(time.time() * 1000),
        )
    except ValueError as exc:
        raise _IdentityError(str(exc)) from None
    kept = [r for r in load_revocations(data_dir, identity) if r.device != args.device_key]
    save_revocations(data_dir, [*kept, revocation][-MAX_OWN_REVOCATIONS:])
    print(args.device_key.hex())


_run_identity_show = _identity_run("show", _identity_show)
_run_identity_device = _identity_run("device", _identity_device)
_run_identity_delegate = _identity_run("delegate", _identity_delegate)
_run_identity_adopt = _identity_run("adopt", _identity_adopt)
_run_identity_revoke = _identity_run("revoke", _identity_revoke)
_run_identity_export = _identity_run("export", _identity_export)
_run_identity_import = _identity_run("import", _identity_import)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "chat": _run_chat,
    "send": _run_send,
    "receive": _run_receive,
    "identity show": _run_identity_show,
    "identity export": _run_identity_export,
    "identity import": _run_identity_import,
    "identity device": _run_identity_device,
    "identity delegate": _run_identity_delegate,
    "identity adopt": _run_identity_adopt,
    "identity revoke": _run_identity_revoke,
}
"""What each command of peer/args.py runs."""
