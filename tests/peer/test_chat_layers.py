"""Groups in `pagemesh chat`: the sentence after joining, /layers, /move N, /friend KEY,
--layer and --friend (groups counted from 1 for people, layers from 0 on the wire)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from peer.cli import census_lines, command, seat_sentence
from peer.peer import Census, Connected
from peer.signaling import LayerCount

from .conftest import PeerFactory, next_of
from .layernode import LayerNode
from .test_layers import ROOM, URL

pytestmark = pytest.mark.integration


def test_the_sentence_people_read() -> None:
    assert seat_sentence(6, 412, 9800) == (
        "you are in group 7 of 412, about 9,800 people on this page"
    )
    assert seat_sentence(0, 1, 1) == "you are in group 1 of 1, about 1 person on this page"
    assert seat_sentence(4, 2, 9) == "you are in group 5 of 5, about 9 people on this page"
    census = Census(6, 412, 9800, (LayerCount(9, 1), LayerCount(6, 23), LayerCount(2, 20)))
    assert census_lines(census) == [
        "you are in group 7 of 412, about 9,800 people on this page",
        "  group 3: 20 people  /move 3",
        "  group 7: 23 people (yours)",
        "  group 10: 1 person  /move 10",
    ]


@pytest.fixture
async def node() -> AsyncIterator[LayerNode]:
    started = await LayerNode.start(layer_size=2)
    yield started
    await started.stop()


async def test_chat_commands_list_and_move(peers: PeerFactory, node: LayerNode) -> None:
    a, b, c = [await peers(name, [node.url]) for name in "abc"]
    room_a, room_b, room_c = [await p.join(URL) for p in (a, b, c)]
    await next_of(room_a, Connected, key=b.public_key)
    assert await command(room_a, "/layers") == [
        "* you are in group 1 of 2, about 3 people on this page",
        "*   group 1: 2 people (yours)",
        "*   group 2: 1 person  /move 2",
    ]
    assert await command(room_a, "/move 2") == []
    assert node.layer_of(ROOM, a.public_key) == 1
    assert await command(room_b, "/move 2") == ["* not moved: group 2 is full"]
    assert await command(room_b, "/move 0") == ["* groups are numbered 1 to 65536"]
    assert await command(room_b, "/friend 12") == ["* a key is 64 hex digits (the friend's /key)"]
    assert await command(room_b, f"/friend {'00' * 32}") == [
        "* not moved: nobody with that key is on this page"
    ]
    assert await command(room_c, f"/friend {b.public_key.hex()}") == []
    assert node.layer_of(ROOM, c.public_key) == 0
    assert await command(room_c, "/key") == [f"* your key: {c.public_key.hex()}"]
    assert (await command(room_c, "/nope"))[0].startswith("* unknown command /nope")


async def chat(node: LayerNode, data_dir: Path, *args: str, stdin: bytes | None = None) -> str:
    env = {**os.environ, "PAGEMESH_ICE_HOSTS": "127.0.0.1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pagemesh",
        "chat",
        URL,
        "--node",
        node.url,
        "--data-dir",
        str(data_dir),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    out, _ = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode == 0, out.decode()[-2000:]
    return out.decode()


async def test_chat_sits_in_a_group_or_beside_a_friend(
    peers: PeerFactory, node: LayerNode, tmp_path: Path
) -> None:
    friend = await peers("friend", [node.url])
    await friend.join(URL, layer=4)
    out = await chat(node, tmp_path / "one", "--layer", "3", "--say", "hi", "--wait", "0.1")
    assert out.splitlines()[0] == "you are in group 3 of 5, about 2 people on this page"
    seated = json.loads(
        (
            await chat(
                node,
                tmp_path / "two",
                "--friend",
                friend.public_key.hex(),
                "--json",
                "--say",
                "hi",
                "--wait",
                "0.1",
            )
        ).splitlines()[0]
    )
    assert seated == {"event": "seated", "layer": 4, "group": 5, "layers": 5, "total": 2}


async def test_an_interactive_chat_moves_and_tells_where_it_sits(
    node: LayerNode, tmp_path: Path
) -> None:
    typed = b"/layers\n/move 2\n/layers\n/quit\n"
    out = (await chat(node, tmp_path / "me", stdin=typed)).splitlines()
    assert out[1] == "you are in group 1 of 1, about 1 person on this page"
    assert "* you are in group 1 of 1, about 1 person on this page" in out
    assert "* moved: you are in group 2 of 2, about 1 person on this page" in out
    assert out[-2:] == [
        "* you are in group 2 of 2, about 1 person on this page",
        "*   group 2: 1 person (yours)",
    ]
