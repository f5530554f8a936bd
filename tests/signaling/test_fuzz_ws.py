"""Random and mutated frames at a node's WebSocket: the node keeps serving everyone else."""

from __future__ import annotations

import base64
import json
import random

import aiohttp
import pytest
from nacl.signing import SigningKey

from peer.signaling import PeerJoined, SignalFrom
from signaling.protocol import hello_message
from signaling.rooms import canonical_url, room_key

from .conftest import ClientFactory, NodeFactory

pytestmark = pytest.mark.integration

ROOM = room_key(canonical_url("https://example.org/fuzz"))
FRAMES = 400


def mutated(rng: random.Random, templates: list[str]) -> str | bytes:
    raw = bytearray(rng.choice(templates).encode())
    for _ in range(rng.randint(1, 6)):
        pos = rng.randrange(len(raw)) if raw else 0
        op = rng.choice(["flip", "cut", "insert", "dup"])
        if op == "flip" and raw:
            raw[pos] ^= 1 << rng.randrange(8)
        elif op == "cut":
            del raw[pos:]
        elif op == "insert":
            raw[pos:pos] = rng.randbytes(rng.randint(1, 16))
        else:
            raw += raw[: rng.randint(0, 64)]
    if rng.random() < 0.2:
        return bytes(raw)  # binary frames too
    return raw.decode("utf-8", "replace")


async def test_fuzzed_frames_do_not_disturb_other_clients(
    signaling_mesh: NodeFactory, connect: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = await signaling_mesh(2)
    alice, bob = await connect(a), await connect(b)
    await alice.join(ROOM)
    await bob.join(ROOM)
    assert isinstance(await alice.next_event(), PeerJoined)

    rng = random.Random(1234)
    key = SigningKey.generate()
    async with aiohttp.ClientSession() as http:
        for round_ in range(4):  # the fuzzer reconnects when the node closes it for abuse
            async with http.ws_connect(a.url + "/v1/ws") as ws:
                challenge = json.loads((await ws.receive()).data)
                sig = key.sign(
                    hello_message(
                        bytes.fromhex(challenge["nonce"]), bytes.fromhex(challenge["node"])
                    )
                ).signature
                hello = {
                    "type": "hello",
                    "key": bytes(key.verify_key).hex(),
                    "sig": base64.b64encode(sig).decode(),
                }
                templates = [
                    json.dumps(hello),
                    json.dumps({"type": "join", "room": ROOM.hex(), "id": 1}),
                    json.dumps({"type": "signal", "to": alice.key.hex(), "payload": {"x": 1}}),
                    json.dumps({"type": "members", "room": ROOM.hex()}),
                    json.dumps({"type": "signed", "id": "sign-1", "sig": "AAAA"}),
                    json.dumps({"type": "leave", "room": ROOM.hex()}),
                    '{"type":"ping"}',
                ]
                if round_ % 2:
                    await ws.send_str(json.dumps(hello))
                for _ in range(FRAMES // 4):
                    frame = mutated(rng, templates)
                    if ws.closed:
                        break
                    if isinstance(frame, bytes):
                        await ws.send_bytes(frame)
                    else:
                        await ws.send_str(frame)

    # the node still serves: a signal crosses both ways, members answer
    await bob.signal(alice.key, {"after": "fuzz"}, ROOM)
    event = await alice.next_event()
    while not isinstance(event, SignalFrom):  # the fuzzer may have sent alice signals
        event = await alice.next_event()
    while event.payload != {"after": "fuzz"}:
        event = await alice.next_event()
    assert event.sender == bob.key
    assert bob.key in {m.key for m in await alice.members(ROOM)}
    assert await alice.ping() < 5
    assert not [r for r in caplog.records if r.levelname == "ERROR"]  # no handler raised
    assert a.metrics.errors.labels("bad-json")._value.get() > 0
