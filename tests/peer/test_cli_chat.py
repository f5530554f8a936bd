"""`pagemesh chat`, `send` and `receive` as a person runs them: real processes on a
loopback mesh, their output read line by line as it comes (every wait bounded)."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from peer.chatscreen import ChatScreen, member_label
from peer.cli import _show_events
from peer.files import FileOffer
from peer.peer import (
    Connected,
    Device,
    FileDone,
    FileOffered,
    MemberJoined,
    MemberLeft,
    Message,
    Peer,
    Profile,
    Room,
)
from tests.signaling.conftest import NodeFactory

from .conftest import PeerFactory

URL = "https://example.org/a-page"


class Pagemesh:
    """A `pagemesh` process; `expect` reads its output up to a line that matches."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._next = 0  # the first line `expect` has not yet matched past

    @classmethod
    async def start(cls, *args: str, cwd: Path | None = None) -> Pagemesh:
        env = {**os.environ, "PAGEMESH_ICE_HOSTS": "127.0.0.1"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pagemesh",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            cwd=cwd,
        )
        return cls(proc)

    async def expect(self, pattern: str, within: float = 30.0) -> str:
        """The next line (after the last one expected) that `pattern` finds."""
        assert self.proc.stdout is not None
        found = re.compile(pattern)
        try:
            async with asyncio.timeout(within):
                while True:
                    while self._next < len(self.lines):
                        line = self.lines[self._next]
                        self._next += 1
                        if found.search(line):
                            return line
                    raw = await self.proc.stdout.readline()
                    if not raw:
                        raise AssertionError(f"ended before {pattern!r}:\n{self.text}")
                    self.lines.append(raw.decode().rstrip("\n"))
        except TimeoutError:
            raise AssertionError(f"no {pattern!r} within {within} s:\n{self.text}") from None

    async def type(self, *lines: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(f"{line}\n" for line in lines).encode())
        await self.proc.stdin.drain()

    async def finish(self, within: float = 30.0) -> int:
        """Wait for the process to end (reading the rest of its output); its exit code."""
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(within):
                rest = await self.proc.stdout.read()
                self.lines += rest.decode().splitlines()
                return await self.proc.wait()
        except TimeoutError:
            raise AssertionError(f"still running after {within} s:\n{self.text}") from None

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def count(self, line: str) -> int:
        return sum(1 for seen in self.lines if seen.endswith(line))

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


def chat(node: str, data_dir: Path, *args: str) -> list[str]:
    return ["chat", URL, "--node", node, "--data-dir", str(data_dir), *args]


Start = Callable[..., Awaitable[Pagemesh]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """`await start(*args)`: a `pagemesh` process, killed at the end if it still runs."""
    started: list[Pagemesh] = []

    async def begin(*args: str, cwd: Path | None = None) -> Pagemesh:
        process = await Pagemesh.start(*args, cwd=cwd)
        started.append(process)
        return process

    yield begin
    for process in started:
        process.kill()
        await process.proc.wait()


async def test_chat_says_so_when_no_node_answers(tmp_path: Path, start: Start) -> None:
    # With no node listening (no --node: the default, or a wrong one), `pagemesh chat`
    # printed nothing at all while its join waited: a person saw a terminal that hung.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))  # a port nothing listens on
        node = f"ws://127.0.0.1:{held.getsockname()[1]}"
        alone = await start(*chat(node, tmp_path / "a"))
        line = await alone.expect(r"^pagemesh: no answer from ", within=15)
    assert line.startswith(f"pagemesh: no answer from {node}; trying again in ")


@pytest.mark.integration
async def test_two_chats_see_names_and_messages_once(
    signaling_mesh: NodeFactory, tmp_path: Path, start: Start
) -> None:
    a, b = await signaling_mesh(2)
    alice = await start(*chat(a.url, tmp_path / "alice", "--name", "alice"))
    bob = await start(*chat(b.url, tmp_path / "bob", "--name", "bob"))
    await alice.expect(r"^\* bob is here \(direct\)$")
    await bob.expect(r"^\* alice is here \(direct\)$")

    await alice.type("hello bob")
    await bob.expect(r"<alice> hello bob$")
    await alice.expect(r"<alice> hello bob$")  # our own line, printed by the room
    await bob.type("/help", "/who", "hi alice")
    await bob.expect(r"^\* /leave +leave the room")
    await bob.expect(r"^\* bob \(you\), in group 1$")
    await bob.expect(r"^\*   alice  direct$")
    await alice.expect(r"<bob> hi alice$")  # sent after /help: /help would have come first

    await bob.type("/leave")
    assert await bob.finish() == 0
    await alice.expect(r"^\* bob left$")
    await alice.type("/leave")
    assert await alice.finish() == 0
    for person in (alice, bob):  # each message once, in one order, and nothing else said
        said = [line.partition("] ")[2] for line in person.lines if line.startswith("[")]
        assert said == ["<alice> hello bob", "<bob> hi alice"], person.text
    assert not re.search(r"\b[0-9a-f]{16,}\b", alice.text + bob.text)  # names, not keys
    assert not re.search(r"aioice|aiortc|INFO|WARNING", alice.text + bob.text)  # no logs


@pytest.mark.integration
async def test_files_are_offered_once_numbered_and_taken_with_get(
    signaling_mesh: NodeFactory, tmp_path: Path, start: Start
) -> None:
    """Three files shared in a chat: a member present sees each offer once; a newcomer
    sees them as shared earlier and downloads nothing until it asks with /get N."""
    a, b = await signaling_mesh(2)
    files = []
    for n, size in enumerate((1_500, 2_100_000, 30)):
        files.append(tmp_path / f"file{n}.bin")
        files[-1].write_bytes(os.urandom(size))
    ana = await start(*chat(a.url, tmp_path / "ana", "--name", "Ana"))
    bo_in = tmp_path / "bo-in"
    bo = await start(*chat(b.url, tmp_path / "bo", "--name", "Bo", "--out", str(bo_in)))
    await ana.expect(r"^\* Bo is here")
    await bo.expect(r"^\* Ana is here")
    await ana.type(*(f"/send {path}" for path in files))
    for n, shown in enumerate(("1.5 kB", "2.1 MB", "30 B")):
        await bo.expect(rf"^\* Ana offers file{n}\.bin \({shown}\) \u2014 /get {n + 1}$")
    await bo.type("/get 2")
    await bo.expect(r"^\* getting file1\.bin from Ana$")
    saved = await bo.expect(r"^\* saved from Ana: ")
    assert saved == f"* saved from Ana: {bo_in / 'file1.bin'} (2.1 MB, verified)"
    assert (bo_in / "file1.bin").read_bytes() == files[1].read_bytes()
    await ana.expect(r"^\* Bo has file1\.bin \(verified\)$")

    newcomer = tmp_path / "cy-in"
    cy = await start(*chat(a.url, tmp_path / "cy", "--name", "Cy", "--out", str(newcomer)))
    for n in range(3):
        await cy.expect(rf"^\* Ana shared file{n}\.bin \(.*\) earlier \u2014 /get {n + 1}$")
    await cy.type("/get")
    await cy.expect(r"^\* files you can get:$")
    await cy.expect(r"^\*   /get 3  file2\.bin \(30 B\) from Ana$")
    assert not newcomer.exists()  # nothing downloaded unasked
    await cy.type("/get 3")
    await cy.expect(r"^\* saved from Ana: ")
    assert [p.name for p in newcomer.iterdir()] == ["file2.bin"]
    for person in (ana, bo, cy):
        await person.type("/leave")
        assert await person.finish() == 0
    assert bo.count("Ana offers file0.bin (1.5 kB) \u2014 /get 1") == 1


@pytest.mark.integration
async def test_send_ends_on_its_rule_with_a_clear_exit(
    signaling_mesh: NodeFactory, tmp_path: Path, start: Start
) -> None:
    a, b = await signaling_mesh(2)
    source = tmp_path / "photo.jpg"
    source.write_bytes(os.urandom(300_000))

    def send(*args: str) -> list[str]:
        where = ["--node", a.url, "--data-dir", str(tmp_path / "sender")]
        return ["send", str(source), *args, *where]

    lonely = await start(*send("https://example.org/empty", "--all-present"))
    assert await lonely.finish() == 1
    await lonely.expect(r"nobody else is in the room of https://example.org/empty")

    inbox = tmp_path / "inbox"
    receiver = ["receive", URL, "--node", b.url, "--out", str(inbox), "--count", "2"]
    bob = await start(*receiver, "--name", "bob", "--data-dir", str(tmp_path / "bob"))
    await bob.expect(r"^waiting for files")
    to_bob = await start(*send(URL, "--to", "bob", "--timeout", "30"))
    await to_bob.expect(r"^offering photo\.jpg \(300\.0 kB\) to bob$")
    await to_bob.expect(
        r"^waiting for bob to accept: they type /get N in their chat .* photo\.jpg\), "
        r"or run pagemesh receive; giving up after 30 s \(--timeout\)$"
    )
    await to_bob.expect(r"^bob accepted photo\.jpg; sending$")
    await to_bob.expect(r"^bob has photo\.jpg \(verified\)$")
    assert await to_bob.finish() == 0
    photo = re.escape(str(inbox / "photo.jpg"))
    await bob.expect(rf"^received {photo} from member ·[0-9a-f]{{4}} \(verified\)$")

    everyone = await start(*send(URL, "--all-present", "--timeout", "30"))
    await everyone.expect(r"^offering photo\.jpg \(300\.0 kB\) to the 1 person here now$")
    await everyone.expect(r"^waiting for the 1 person here to accept: they type /get N ")
    await everyone.expect(r"^bob accepted photo\.jpg; sending$")
    await everyone.expect(r"^bob has photo\.jpg \(verified\)$")
    assert await everyone.finish() == 0
    assert await bob.finish() == 0
    assert sorted(p.name for p in inbox.iterdir()) == ["photo (1).jpg", "photo.jpg"]

    nobody = await start(*send(URL, "--to", "nobody", "--timeout", "3"))
    # bob is here: whether his name came yet is a matter of milliseconds
    heard = r"( to come to the room|: still hearing the names of the 1 person here, or yet to come)"
    await nobody.expect(rf"^waiting for nobody{heard} \(giving up after 3 s")
    assert await nobody.finish() == 3
    await nobody.expect(r"timed out after 3 s; nobody did not get photo\.jpg")


@pytest.mark.integration
async def test_send_to_a_chat_waits_for_its_get_and_says_so(
    signaling_mesh: NodeFactory, tmp_path: Path, start: Start
) -> None:
    """The demo's `send FILE URL --to alice --name carol`: alice's chat sees carol (not a
    key's tag) offer it; the sender says it waits for her /get, then that she took it."""
    a, b = await signaling_mesh(2)
    source = tmp_path / "nc-file.bin"
    source.write_bytes(os.urandom(200_000))
    inbox = tmp_path / "alice-in"  # where she runs it: /get saves to the current folder
    inbox.mkdir()
    alice = await start(*chat(a.url, tmp_path / "alice", "--name", "alice"), cwd=inbox)
    await alice.expect(r"^type to chat")
    where = ["--node", b.url, "--data-dir", str(tmp_path / "carol"), "--name", "carol"]
    carol = await start("send", str(source), URL, "--to", "alice", *where, "--timeout", "60")
    await carol.expect(r"^offering nc-file\.bin \(200\.0 kB\) to alice$")
    await carol.expect(r"^waiting for alice to accept: they type /get N in their chat ")
    await alice.expect(r"^\* carol offers nc-file\.bin \(200\.0 kB\) \u2014 /get 1$")
    await alice.type("/get 1")
    await carol.expect(r"^alice accepted nc-file\.bin; sending$")
    await carol.expect(r"^alice has nc-file\.bin \(verified\)$")
    assert await carol.finish() == 0
    saved = await alice.expect(r"^\* saved from carol: ")
    assert saved == f"* saved from carol: {inbox / 'nc-file.bin'} (200.0 kB, verified)"
    assert (inbox / "nc-file.bin").read_bytes() == source.read_bytes()
    await alice.type("/leave")
    assert await alice.finish() == 0


@pytest.mark.integration
async def test_receive_takes_no_file_shared_before_it_started(
    signaling_mesh: NodeFactory, peers: PeerFactory, tmp_path: Path, start: Start
) -> None:
    """A newcomer to a room where three files were shared downloads none of them; the
    file offered after it came is the one it takes."""
    a, b = await signaling_mesh(2)
    ana = await peers("Ana", [a.url])
    room = await ana.join(URL)
    for n in range(3):
        old = tmp_path / f"old{n}.txt"
        old.write_text(f"shared before {n}")
        await room.send_file(old)
    inbox = tmp_path / "inbox"
    receiver = ["receive", URL, "--node", b.url, "--out", str(inbox), "--count", "1"]
    newcomer = await start(*receiver, "--data-dir", str(tmp_path / "newcomer"))
    await newcomer.expect(r"^waiting for files")
    for n in range(3):
        skipped = rf"^skipping old{n}\.txt \(15 B\) from Ana: shared before this started$"
        await newcomer.expect(skipped)
    assert not inbox.exists()
    new = tmp_path / "new.txt"
    new.write_text("after you came")
    await room.send_file(new)
    await newcomer.expect(r"^received .*new\.txt from Ana \(verified\)$")
    assert await newcomer.finish() == 0
    assert [p.name for p in inbox.iterdir()] == ["new.txt"]


# --- what the chat shows, with no network: events in, lines out -----------------------


class FakeRoom:
    """What ChatScreen reads of a room: names, members, links, our own key."""

    def __init__(self, names: dict[bytes, str]) -> None:
        self.known = names
        self.members = set(names)
        self.links: dict[bytes, object] = {}
        self.peer = SimpleNamespace(public_key=ME, store=SimpleNamespace(name="me"))
        self.core = SimpleNamespace(envelope=lambda ref: None)
        self.persons: dict[bytes, bytes] = {}
        """Devices (docs/protocol.md 5.3): key -> identity; any other key its own person."""
        self.labels: dict[bytes, str] = {}

    def name_of(self, key: bytes) -> str | None:
        return self.known.get(key)

    def person_of(self, key: bytes) -> bytes:
        return self.persons.get(key, key)

    def device_label(self, key: bytes) -> str | None:
        return self.labels.get(key)


ME, ANA, BO, CY = (bytes([n]) * 32 for n in range(4))


def said(author: bytes, lamport: int, seq: int, text: str) -> Message:
    return Message(author, text, lamport, lamport / 1000, seq, author == ME)


def test_history_reads_in_the_rooms_order_and_each_offer_once() -> None:
    room = FakeRoom({ANA: "Ana", BO: "Bo"})
    screen = ChatScreen(room, joined_at=100.0)  # type: ignore[arg-type]
    # Each member passes on its own words first: history comes grouped by author.
    history = [said(BO, 2_000, 1, "b1"), said(BO, 4_000, 2, "b2"), said(ANA, 3_000, 1, "a1")]
    assert [line for m in history for line in screen.feed(m)] == [] and screen.holding
    offer = FileOffer("ab" * 16, "photo.jpg", 2_100_000, "image/jpeg", bytes(32))
    assert screen.feed(FileOffered(ANA, offer, earlier=True)) == []
    assert [line.partition("] ")[2] or line for line in screen.settle()] == [
        "<Bo> b1",
        "<Ana> a1",
        "<Bo> b2",
        "* Ana shared photo.jpg (2.1 MB) earlier \u2014 /get 1",
    ]
    assert screen.feed(FileOffered(ANA, offer, earlier=False)) == []  # told once
    later = FileOffer("cd" * 16, "b.txt", 12, "text/plain", bytes(32))
    assert screen.feed(FileOffered(BO, later)) == ["* Bo offers b.txt (12 B) \u2014 /get 2"]
    assert screen.feed(said(ME, 200_000, 1, "hi\x1b[2J"))[0].endswith("<me> hi\ufffd[2J")


def test_names_that_look_the_same_are_told_apart_as_on_the_page() -> None:
    # "Ana " (a trailing space) read as "Ana" in a terminal with no tag to tell them
    # apart; the page tags both (people.js labelsFor). Only spaces is no name.
    room = FakeRoom({ANA: "Ana", BO: "Ana ", CY: "  "})
    assert member_label(room, ANA) == "Ana\u00b70101"  # type: ignore[arg-type]
    assert member_label(room, BO) == "Ana \u00b70202"  # type: ignore[arg-type]
    assert member_label(room, CY) == "member \u00b70303"  # type: ignore[arg-type]


def test_a_newcomer_is_named_once_its_name_comes() -> None:
    room = FakeRoom({ANA: "Ana"})
    screen = ChatScreen(room, joined_at=100.0)  # type: ignore[arg-type]
    assert screen.feed(MemberJoined(CY)) == [] and screen.feed(Connected(CY, "relayed")) == []
    room.known[CY] = "Ana"  # its profile came, with a name someone here has already
    assert screen.feed(Profile(CY, "Ana")) == ["* Ana\u00b70303 is here (relayed)"]
    assert screen.feed(Connected(BO, "direct")) == [] and screen.holding
    assert screen.settle() == ["* member \u00b70202 is here (direct)"]  # no name came: its tag
    assert screen.feed(Connected(BO, "relayed")) == ["* member \u00b70202 is relayed now"]
    assert screen.feed(MemberLeft(BO)) == ["* member \u00b70202 left"]


async def test_leave_stops_the_printer_even_as_an_event_comes(tmp_path: Path) -> None:
    """/leave cancels the printer; an event that comes in the same turn (a member's
    `file-done` for a file we shared, say) neither swallows that nor is lost."""
    peer = Peer(tmp_path / "me", ["ws://127.0.0.1:9"])  # never started: no network
    room = Room(peer, bytes(32))
    printer = asyncio.create_task(_show_events(room, ChatScreen(room, 100.0), as_json=False))
    try:
        await asyncio.sleep(0)  # the printer now waits for the room's next event
        room._emit(FileDone("ab" * 16, None, ANA))
        printer.cancel()
        await asyncio.wait([printer], timeout=5.0)
        assert printer.cancelled()
        assert isinstance(await room.next_event(within=1.0), FileDone)  # still there
    finally:
        printer.cancel()
        peer.store.close()


def test_a_message_that_sorts_before_printed_lines_says_so() -> None:
    """Alice's terminal hears the greeter's answer (over its link) before Ben's words it
    answers (over Ben's slower link): the answer's lamport is past Ben's, so Ben's line
    comes second and is marked as belonging above. History that arrives after we spoke
    is marked too; lines in order are not."""
    room = FakeRoom({ANA: "greeter", BO: "ben", CY: "cy"})
    screen = ChatScreen(room, joined_at=100.0)  # type: ignore[arg-type]
    (answer,) = screen.feed(said(ANA, 200_010, 1, "ben said: browser ping"))
    assert answer.endswith("<greeter> ben said: browser ping")
    (ping,) = screen.feed(said(BO, 200_000, 1, "!echo browser ping"))
    assert ping.startswith("\u2191 earlier: [") and ping.endswith("<ben> !echo browser ping")
    (next_one,) = screen.feed(said(BO, 200_020, 2, "thanks"))
    assert next_one.startswith("[") and next_one.endswith("<ben> thanks")
    assert screen.feed(said(CY, 90_000, 1, "from before")) == [] and screen.holding
    (old,) = screen.settle()
    assert old.startswith("\u2191 earlier: [") and old.endswith("<cy> from before")


def test_a_second_device_is_named_as_its_person() -> None:
    """Dan's laptop and phone speak for an identity key that is not in the room: the
    phone is Dan's second device, by the name his devices give, never his key's tag."""
    dan, laptop, phone = (bytes([n]) * 32 for n in (7, 8, 9))
    room = FakeRoom({laptop: "dan"})
    room.persons = {laptop: dan, phone: dan}
    room.labels = {laptop: "laptop", phone: "phone"}
    screen = ChatScreen(room, joined_at=100.0)  # type: ignore[arg-type]
    assert screen.feed(Connected(laptop, "direct")) == [
        "* dan [laptop] is here (direct; a device of dan)"
    ]
    # The phone gives no name of its own yet: it is Dan's all the same.
    assert screen.feed(Connected(phone, "direct")) == [
        "* dan [phone] is here (direct; a second device of dan)"
    ]
    # A tablet whose delegation comes after its arrival was told by its tag:
    tablet = bytes([10]) * 32
    assert screen.feed(Connected(tablet, "relayed")) == []
    assert screen.settle() == ["* member \u00b70a0a is here (relayed)"]
    room.persons[tablet], room.labels[tablet] = dan, "tablet"
    assert screen.feed(Device(tablet, dan, "tablet")) == [
        "* dan [tablet] is a second device of dan"
    ]
    assert screen.feed(Profile(tablet, "dan")) == []  # named already


def test_a_member_told_by_its_tag_is_named_when_its_name_comes() -> None:
    room = FakeRoom({ANA: "Ana"})
    screen = ChatScreen(room, joined_at=100.0)  # type: ignore[arg-type]
    assert screen.feed(Connected(CY, "direct")) == []
    assert screen.settle() == ["* member \u00b70303 is here (direct)"]  # no name within the settle
    room.known[CY] = "Cy"
    assert screen.feed(Profile(CY, "Cy")) == ["* \u00b70303 is Cy"]
    assert screen.feed(Profile(CY, "Cy")) == []  # told once
    assert screen.feed(Connected(BO, "direct")) == [] and screen.settle()
    room.known[BO] = "Bo"  # its name came signed in its first message
    lines = screen.feed(said(BO, 200_000, 1, "hi"))
    assert lines[0] == "* \u00b70202 is Bo" and lines[1].endswith("<Bo> hi")
