"""What a direct message costs (docs/protocol.md 7.4); prints ONE JSON object.

Two Python peers (real aiortc, ICE on 127.0.0.1) on two loopback nodes, contacts of
each other. In the same run, for a page's room (the baseline) and for their DM room:

* `open_to_first_ms`: from both joining to the first message delivered (join, offer,
  answer, ICE, DTLS, SCTP, then the message), median of `--rounds`;
* `message_ms_p50`: a message said on an open link until the other side delivers it.

And `waiting_to_delivered_ms`: Ben is away while Ana writes; he starts again, reads
his contacts' notes once (a reader does every 60 s; not counted), sees the `dm`, joins
the DM room, and has the message: from his start to the message, median.

    .venv/bin/python benchmarks/dm.py --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dataclasses

from peer.peer import Connected, Message, Peer, Room
from peer.webrtc import restrict_host_candidates
from signaling.node import SignalingNode
from tests.signaling.conftest import FAST_DHT, FAST_NODE

URL = "https://example.org/benchmark-dm"


async def until(check: Callable[..., bool]) -> None:
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def theirs(room: Room) -> str:
    while True:
        event = await room.next_event(30)
        if isinstance(event, Message) and not event.mine:
            return str(event.text)


async def linked(room: Room) -> None:
    while not isinstance(await room.next_event(30), Connected):
        pass


async def first_message(ana_room: Room, ben_room: Room, started: float) -> float:
    await linked(ana_room)
    await ana_room.say("first")
    assert await theirs(ben_room) == "first"
    return time.perf_counter() - started


async def messages(a: Room, b: Room, count: int) -> list[float]:
    out = []
    for n in range(count):
        t = time.perf_counter()
        await a.say(f"m{n}")
        assert await theirs(b) == f"m{n}"
        out.append(time.perf_counter() - t)
    return out


async def run(rounds: int) -> dict[str, object]:
    restrict_host_candidates(["127.0.0.1"])
    nodes: list[SignalingNode] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for i in range(2):
                seeds = () if not nodes else (f"127.0.0.1:{nodes[0].dht.address[1]}",)
                config = dataclasses.replace(
                    FAST_NODE, data_dir=str(Path(tmp) / f"n{i}"), bootstrap=seeds
                )
                nodes.append(await SignalingNode.start(config, FAST_DHT))
            await asyncio.sleep(1.0)
            page_open, dm_open, page_msg, dm_msg, waited = [], [], [], [], []
            for r in range(rounds):
                base = Path(tmp) / f"r{r}"
                ana = await Peer(base / "ana", [nodes[0].url], name="ana").__aenter__()
                ben = await Peer(base / "ben", [nodes[1].url], name="ben").__aenter__()
                try:
                    t = time.perf_counter()
                    ra, rb = await ana.join(URL), await ben.join(URL)
                    page_open.append(await first_message(ra, rb, t))
                    page_msg += await messages(ra, rb, 20)
                    await until(
                        lambda a=ana, b=ben: b.identity_key in a.cards and a.identity_key in b.cards
                    )
                    ana.add_contact(ben.identity_key, "ben", ra)
                    ben.add_contact(ana.identity_key, "ana", rb)
                    await ana.leave(ra)
                    await ben.leave(rb)
                    t = time.perf_counter()
                    da, db = (
                        await ana.open_dm(ben.identity_key),
                        await ben.open_dm(ana.identity_key),
                    )
                    dm_open.append(await first_message(da, db, t))
                    dm_msg += await messages(da, db, 20)
                    await ben.close()
                    await ana.close_dm(ben.identity_key)
                    da = await ana.open_dm(ben.identity_key, keep=False)
                    await da.say("waiting")
                    await until(lambda a=ana, b=ben: b.identity_key in a.presence._knocks)
                    await asyncio.sleep(0.3)  # the knock is published
                    t = time.perf_counter()
                    ben = await Peer(base / "ben", [nodes[1].url], name="ben").__aenter__()
                    await ben.refresh_presence()
                    ben._dm_tick()
                    room = await asyncio.wait_for(ben.dm_opened.get(), 30)
                    assert await theirs(room) == "waiting"
                    waited.append(time.perf_counter() - t)
                finally:
                    await ben.close()
                    await ana.close()
            ms = lambda xs: round(statistics.median(xs) * 1e3, 1)  # noqa: E731
            return {
                "rounds": rounds,
                "page_room": {"open_to_first_ms": ms(page_open), "message_ms_p50": ms(page_msg)},
                "dm_room": {"open_to_first_ms": ms(dm_open), "message_ms_p50": ms(dm_msg)},
                "waiting_to_delivered_ms": ms(waited),
            }
        finally:
            for node in nodes:
                await node.stop(moving=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    print(json.dumps({"benchmark": "dm", **asyncio.run(run(args.rounds))}))


if __name__ == "__main__":
    main()
