"""The demo's greeter decides whom to greet on virtual time: once per key, in this run
or an earlier one (the demo keeps its ports, so a browser keeps its key across
restarts), never again for a person back within `REJOIN_QUIET`, bounded memory; in a
room, it greets a member once whatever its name does, and names the file bot only
where it is."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pagemesh.demo_bots import (
    MAX_GREETED,
    REJOIN_QUIET,
    ROOM_URL,
    Greetings,
    greet,
    parse_greeted,
    serialize_greeted,
    welcome,
)
from peer.peer import Message
from tests.peer.conftest import PeerFactory, loopback_ice, next_of, peers  # noqa: F401
from tests.signaling.conftest import NodeFactory, signaling_mesh  # noqa: F401  (fixture)

ANA, ANA_PHONE, BO = (bytes([n]) * 32 for n in range(3))


def test_a_reload_or_a_rejoin_is_not_greeted_again() -> None:
    greetings = Greetings()
    assert greetings.should_greet(ANA, ANA, now=0.0)
    greetings.left(ANA, now=5.0)
    assert not greetings.should_greet(ANA, ANA, now=6.0)  # a reload: same key
    greetings.left(ANA, now=7.0)
    assert not greetings.should_greet(ANA, ANA, now=7.0 + 10 * REJOIN_QUIET)  # once a run


def test_a_person_back_on_another_device_within_minutes_is_not_greeted() -> None:
    greetings = Greetings()
    assert greetings.should_greet(ANA, ANA, now=0.0)
    assert not greetings.should_greet(ANA_PHONE, ANA, now=30.0)  # while her laptop is here
    greetings.left(ANA, now=60.0)
    assert not greetings.should_greet(bytes([9]) * 32, ANA, now=60.0 + REJOIN_QUIET - 1)
    greetings.left(ANA, now=70.0 + REJOIN_QUIET)
    assert greetings.should_greet(bytes([8]) * 32, ANA, now=71.0 + 2 * REJOIN_QUIET)
    assert greetings.should_greet(BO, BO, now=61.0)


def test_a_key_greeted_in_an_earlier_run_is_not_greeted_again() -> None:
    earlier = Greetings()
    assert earlier.should_greet(ANA, ANA, now=0.0)
    again = Greetings(greeted=parse_greeted(serialize_greeted(earlier.greeted)))
    assert not again.should_greet(ANA, ANA, now=0.0)
    assert again.should_greet(BO, BO, now=0.0)
    assert again.greeted == (ANA, BO)


@given(st.lists(st.binary(min_size=32, max_size=32), max_size=2 * MAX_GREETED))
def test_the_greeted_keys_read_back_as_written_the_newest_kept(keys: list[bytes]) -> None:
    assert parse_greeted(serialize_greeted(keys)) == tuple(keys[-MAX_GREETED:])


@given(st.text(max_size=3000))
def test_a_damaged_memory_reads_as_the_keys_it_still_holds(text: str) -> None:
    keys = parse_greeted(text)
    assert len(keys) <= MAX_GREETED and all(len(key) == 32 for key in keys)


def test_the_bots_themselves_are_never_greeted() -> None:
    greetings = Greetings(never={BO})
    assert not greetings.should_greet(BO, BO, now=0.0)


@given(st.lists(st.tuples(st.integers(0, 3000), st.booleans()), max_size=4000))
def test_memory_stays_bounded_and_a_key_is_greeted_at_most_once(
    steps: list[tuple[int, bool]],
) -> None:
    greetings = Greetings()
    greeted: list[int] = []
    now = 0.0
    for n, leaves in steps:
        key = n.to_bytes(32, "big")
        now += 1.0
        if leaves:
            greetings.left(key, now)
        elif greetings.should_greet(key, key, now):
            greeted.append(n)
        assert greetings.size <= 2 * MAX_GREETED
    recent = greeted[-MAX_GREETED:]
    assert len(set(recent)) == len(recent)  # no key twice among the last MAX_GREETED


async def _hellos(room_url: str, file_bot: bool, start: PeerFactory, nodes: list[str]) -> list[str]:
    """What a greeter in `room_url` says to nina, who renames herself twice (as the
    page's name box sends each change) and rejoins."""
    greeter = await start("greeter", nodes)
    nina = await start("nina", nodes)
    task = asyncio.create_task(greet(await greeter.join(room_url), set(), room_url, file_bot))
    try:
        room = await nina.join(room_url)
        said = [(await next_of(room, Message, within=20)).text]
        for name in ("nin", "nina m"):
            for link in room.links.values():
                link.send({"t": "profile", "name": name})
        await nina.leave(room)
        room = await nina.join(room_url)
        with contextlib.suppress(TimeoutError):  # nothing more: all said is counted
            while True:
                event = await next_of(room, Message, within=3)
                said.append(event.text)
        return [text for text in dict.fromkeys(said) if text.startswith("hello")]
    finally:
        task.cancel()


@pytest.mark.integration
async def test_a_member_is_greeted_once_whatever_its_name_does(
    signaling_mesh: NodeFactory,  # noqa: F811
    peers: PeerFactory,  # noqa: F811
) -> None:
    nodes = [n.url for n in await signaling_mesh(1)]
    site = "http://127.0.0.1:8478/"
    (hello,) = await _hellos(site, False, peers, nodes)
    assert hello.startswith(f"hello nina, welcome to the room of {site}!")
    assert "file bot" not in hello  # it sits in the main room only


def test_the_file_bot_is_named_where_it_is() -> None:
    assert "the file bot sends back any file" in welcome("nina", ROOM_URL, file_bot=True)
    assert "file bot" not in welcome("nina", "http://127.0.0.1:8478/", file_bot=False)


@pytest.mark.integration
async def test_a_restarted_demo_does_not_greet_a_key_again(
    signaling_mesh: NodeFactory,  # noqa: F811
    peers: PeerFactory,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The demo keeps its ports, so a browser comes back to a restarted demo (a new
    greeter key, the memory file kept) with the key it had: one hello over both runs."""
    nodes = [n.url for n in await signaling_mesh(1)]
    memory = tmp_path / "greeted.txt"
    nina = await peers("nina", nodes)
    hellos = []
    for run in range(2):
        greeter = await peers(f"greeter-{run}", nodes)
        at = await greeter.join(ROOM_URL)
        task = asyncio.create_task(greet(at, set(), ROOM_URL, memory=memory))
        try:
            room = await nina.join(ROOM_URL)
            with contextlib.suppress(TimeoutError):
                while True:  # the first run's hello comes at once; none in 3 s is none
                    said = await next_of(room, Message, within=20 if run == 0 else 3)
                    if said.author == greeter.public_key and said.text.startswith("hello"):
                        hellos.append(run)
                        break
            await nina.leave(room)
            await greeter.leave(at)
        finally:
            task.cancel()
    assert hellos == [0]


def test_a_new_run_wipes_the_mesh_but_keeps_whom_the_greeter_greeted(tmp_path: Path) -> None:
    from pagemesh.demo import GREETED, GREETED_FILES, fresh_data_dir

    data = tmp_path / "demo-data"
    fresh_data_dir(data)
    memory = data / GREETED / GREETED_FILES[0]
    memory.write_text(serialize_greeted([ANA]))
    (data / "node-0").mkdir()
    fresh_data_dir(data)
    assert parse_greeted(memory.read_text()) == (ANA,)
    assert not (data / "node-0").exists()
