"""What presence for contacts costs (docs/protocol.md 7); prints ONE JSON object.

* `crypto`: per contact and round, the Python publisher's work (derive the slot,
  seal, sign) and the reader's (derive, check, decrypt), in microseconds.
* `round`: a presence round through real nodes on loopback (`--nodes`, the publisher
  and the reader on different nodes): one put-record and one get-record per contact
  (`--contacts`), as PresenceBook asks, in milliseconds per contact; the baseline in
  the same run is the client API's `ping` round trip on the same connections. Requests
  are paced as the clients pace them; `paced_round_s` is what that pacing alone takes.
* `bytes`: a record's value and its JSON frame on the client API.

    .venv/bin/python benchmarks/presence.py
    .venv/bin/python benchmarks/presence.py --contacts 50 --nodes 5
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nacl.signing import SigningKey

from peer.friends import (
    RECORD_BURST,
    RECORD_RATE,
    ContactCard,
    PresenceNote,
    epoch_of,
    open_presence,
    pair_secret,
    presence_slot,
    seal_presence,
    x25519_seed,
)
from peer.signaling import SignalingClient
from signaling.node import SignalingNode
from signaling.protocol import PutRecord, TokenBucket, serialize
from tests.signaling.conftest import FAST_DHT, FAST_NODE


def person() -> tuple[bytes, bytes, ContactCard]:
    seed = os.urandom(32)
    return seed, x25519_seed(seed), ContactCard.create(SigningKey(seed), x25519_seed(seed))


def crypto(rounds: int) -> dict[str, float]:
    (_, ax, a), (_, bx, b) = person(), person()
    secret_a, secret_b = pair_secret(a.key, ax, b), pair_secret(b.key, bx, a)
    now = time.time()
    note = PresenceNote(True, int(now) + 180, os.urandom(20), 3, "https://example.org/", "ws://n:1")
    started = time.perf_counter()
    records = []
    for n in range(rounds):
        slot = presence_slot(secret_a, a.key, b.key, epoch_of(now))
        records.append(seal_presence(slot, note, n + 1, os.urandom(12)))
    sealed = time.perf_counter() - started
    started = time.perf_counter()
    for record in records:
        open_presence(presence_slot(secret_b, a.key, b.key, epoch_of(now)), record, now)
    opened = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(rounds):
        pair_secret(a.key, ax, b)
    paired = time.perf_counter() - started
    return {
        "publish_us": round(sealed / rounds * 1e6, 1),
        "read_us": round(opened / rounds * 1e6, 1),
        "pair_secret_us": round(paired / rounds * 1e6, 1),
    }


async def network(contacts: int, nodes: int) -> dict[str, object]:
    started_nodes: list[SignalingNode] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for i in range(nodes):
                seeds = (
                    () if not started_nodes else (f"127.0.0.1:{started_nodes[0].dht.address[1]}",)
                )
                config = dataclasses.replace(
                    FAST_NODE, data_dir=str(Path(tmp) / f"n{i}"), bootstrap=seeds
                )
                started_nodes.append(await SignalingNode.start(config, FAST_DHT))
            await asyncio.sleep(1.0)  # routing tables settle
            (a_seed, ax, a), (b_seed, _, _) = person(), person()
            ana = await SignalingClient.connect(started_nodes[0].url, SigningKey(a_seed))
            ben = await SignalingClient.connect(started_nodes[-1].url, SigningKey(b_seed))
            try:
                pings = [await ana.ping() for _ in range(10)]
                pace = TokenBucket(RECORD_RATE, RECORD_BURST - 10, time.time())

                async def paced() -> None:  # as the clients pace them (peer/friends.py)
                    if not pace.take(time.time()):
                        await asyncio.sleep(1.0 / RECORD_RATE)
                        pace.take(time.time())

                now = time.time()
                note = PresenceNote(True, int(now) + 180, os.urandom(20), 0, None, None)
                # One pair per contact: distinct keys, as a person with many contacts.
                slots = []
                for _ in range(contacts):
                    other = person()[2]
                    secret = pair_secret(a.key, ax, other)
                    slots.append(presence_slot(secret, a.key, other.key, epoch_of(now)))
                puts, gets = [], []
                for n, slot in enumerate(slots):
                    record = seal_presence(slot, note, n + 1, os.urandom(12))
                    await paced()
                    t = time.perf_counter()
                    await ana.put_record(record)
                    puts.append(time.perf_counter() - t)
                for slot in slots:
                    await paced()
                    t = time.perf_counter()
                    found = await ben.get_record(slot.dht_key, slot.publisher)
                    gets.append(time.perf_counter() - t)
                    assert found is not None
                frame = len(serialize(PutRecord(record)).encode())
                return {
                    "contacts": contacts,
                    "nodes": nodes,
                    "baseline_ping_ms_p50": round(statistics.median(pings) * 1e3, 2),
                    "put_ms_p50": round(statistics.median(puts) * 1e3, 2),
                    "get_ms_p50": round(statistics.median(gets) * 1e3, 2),
                    "requests_ms_per_contact": round((sum(puts) + sum(gets)) / contacts * 1e3, 2),
                    "paced_round_s": round(max(0, 2 * contacts - RECORD_BURST) / RECORD_RATE, 1),
                    "bytes": {"value": len(record.value), "put_record_frame": frame},
                }
            finally:
                await ana.close()
                await ben.close()
        finally:
            for node in started_nodes:
                await node.stop(moving=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=30)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=500)
    args = parser.parse_args()
    result = {
        "benchmark": "presence",
        "crypto": crypto(args.rounds),
        "round": asyncio.run(network(args.contacts, args.nodes)),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
