"""One person, two devices (docs/protocol.md 5.3), with real aiortc peers on loopback:
both devices are in the room at once, a third member sees one person with two devices
and both devices' messages in the room's one order; a stranger's forged delegation and
an expired one are refused and their keys shown as themselves."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

from peer.chatscreen import member_label
from peer.device import Delegation, Revocation, issue_delegation, issue_revocation
from peer.identity_file import export_identity, import_identity
from peer.peer import Device, Message, Peer, PeerConfig, Replaced, Revoked, Room, load_revocations
from peer.store import KEY_FILE, load_or_create_key
from tests.signaling.conftest import NodeFactory

from .conftest import PeerFactory, next_of

pytestmark = pytest.mark.integration

URL = "https://example.org/devices"
HOUR_MS = 3600 * 1000


def move_identity(source: Path, target: Path) -> None:
    """What `pagemesh identity export` then `import` do (docs/identity.md), with few
    iterations: the identity's seed from one data directory in another."""
    data = export_identity((source / KEY_FILE).read_bytes(), "correct horse", iterations=1000)
    seed, _ = import_identity(data, "correct horse", min_iterations=1)
    target.mkdir(parents=True, exist_ok=True)
    fd = os.open(target / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(seed)


async def ana_devices(
    peers: PeerFactory, tmp_path: Path, laptop_node: str, phone_node: str | None = None
) -> tuple[Peer, Peer]:
    """Ana's laptop and phone: two devices of one identity, whose seed went from the
    laptop's data directory to the phone's (`move_identity`)."""
    laptop = await peers("ana-laptop", [laptop_node], device="laptop")
    move_identity(tmp_path / "ana-laptop", tmp_path / "ana-phone")
    phone = await peers("ana-phone", [phone_node or laptop_node], device="phone")
    return laptop, phone


def show_made_up_identities(room: Room, member: bytes, tag: int, count: int) -> list[bytes]:
    """The attacker's flood: on its link to `member`, `count` delegations of the room's
    own key, each from another made-up identity (seeds told apart by `tag`); those
    identities' keys, in the order shown."""
    from nacl.signing import SigningKey

    from peer.device import serialize_delegation

    now_ms = int(time.time() * 1000)
    device = room.peer.public_key
    made = [SigningKey(i.to_bytes(4, "big") + bytes([tag]) * 28) for i in range(count)]
    for key in made:
        own = issue_delegation(
            lambda m, k=key: k.sign(m).signature, bytes(key.verify_key), device, now_ms, HOUR_MS, ""
        )
        room.links[member].send({"t": "device", "cert": serialize_delegation(own).hex()})
    return [bytes(key.verify_key) for key in made]


async def until_linked(room: Room, keys: set[bytes], within: float = 30.0) -> None:
    """Until `room` has an open link to each of `keys` (its events read meanwhile)."""
    async with asyncio.timeout(within):
        while not keys <= set(room.paths()):
            event = await room.next_event(within)
            assert not isinstance(event, Replaced), event


async def collect(
    room: Room, authors: set[bytes], count: int, within: float = 30.0
) -> list[Message]:
    got: list[Message] = []
    async with asyncio.timeout(within):
        while len(got) < count:
            event = await room.next_event(within)
            if isinstance(event, Message) and event.author in authors:
                got.append(event)
    return got


async def test_two_devices_of_one_identity_are_one_person_with_two_devices(
    signaling_mesh: NodeFactory, peers: PeerFactory, tmp_path: Path
) -> None:
    a, b = await signaling_mesh(2)
    laptop, phone = await ana_devices(peers, tmp_path, a.url, b.url)
    bob = await peers("bob", [a.url])
    ana = laptop.identity_key
    assert phone.identity_key == ana
    assert len({laptop.public_key, phone.public_key, ana}) == 3  # two device keys of their own

    rooms = [await laptop.join(URL), await phone.join(URL), await bob.join(URL)]
    room_l, room_p, room_b = rooms
    await until_linked(room_b, {laptop.public_key, phone.public_key})
    await until_linked(room_l, {phone.public_key, bob.public_key})
    await until_linked(room_p, {laptop.public_key, bob.public_key})
    # both devices are seated at once: the node lists both, neither replaced the other
    assert {laptop.public_key, phone.public_key} <= room_b.members

    # messages from both devices, interleaved
    for i in range(3):
        await room_l.say(f"laptop {i}")
        await room_p.say(f"phone {i}")
    got = await collect(room_b, {laptop.public_key, phone.public_key}, 6)
    assert {m.text for m in got} == {f"laptop {i}" for i in range(3)} | {
        f"phone {i}" for i in range(3)
    }
    # one person with two devices, as Bob sees it, and as each device sees the room
    assert room_b.people() == {
        ana: {laptop.public_key, phone.public_key},
        bob.public_key: {bob.public_key},
    }
    assert room_l.people() == room_b.people() == room_p.people()
    assert {room_b.person_of(m.author) for m in got} == {ana}
    labels = {room_b.devices.delegation(k, int(time.time() * 1000)).label  # type: ignore[union-attr]
              for k in (laptop.public_key, phone.public_key)}  # fmt: skip
    assert labels == {"laptop", "phone"}
    assert member_label(room_b, laptop.public_key) == "ana-laptop [laptop]"  # pagemesh chat
    # ... in the room's one order
    await collect(room_l, {phone.public_key}, 3)
    await collect(room_p, {laptop.public_key}, 3)
    orders = [[(e.author, e.seq) for e in room.transcript()] for room in rooms]
    assert orders[0] == orders[1] == orders[2] and len(orders[0]) == 6


async def test_forged_and_expired_delegations_are_refused(
    signaling_mesh: NodeFactory, peers: PeerFactory
) -> None:
    (node,) = await signaling_mesh(1)
    ana = await peers("ana", [node.url], device="laptop")
    bob = await peers("bob", [node.url])
    # Mallory claims Ana's identity with a delegation her own identity key signed.
    mallory = await peers("mallory", [node.url], device="x")
    own = mallory.delegation
    assert own is not None
    mallory.delegation = Delegation(
        ana.identity_key, own.device, own.not_before, own.expires, "laptop", own.signature
    )
    # Eve shows a delegation of her own identity that expired an hour ago.
    eve = await peers("eve", [node.url], device="old phone")
    now = int(time.time() * 1000)
    eve.delegation = issue_delegation(
        lambda m: eve.store.key.sign(m).signature,
        eve.identity_key, eve.public_key, now - 2 * HOUR_MS, HOUR_MS, "old phone",
    )  # fmt: skip

    room_b = await bob.join(URL)
    for peer in (ana, mallory, eve):
        await peer.join(URL)
    others = {ana.public_key, mallory.public_key, eve.public_key}
    await until_linked(room_b, others)
    for peer in (ana, mallory, eve):
        await peer.rooms[room_b.key].say(f"I am {peer.store.name}")
    # each device frame goes before its sender's first message on one ordered channel
    await collect(room_b, others, 3)

    assert room_b.refused_devices == {"signature": 1, "expired": 1}
    assert room_b.person_of(mallory.public_key) == mallory.public_key
    assert room_b.person_of(eve.public_key) == eve.public_key
    assert room_b.person_of(ana.public_key) == ana.identity_key
    assert room_b.people()[ana.identity_key] == {ana.public_key}  # never Mallory under Ana


async def test_a_key_without_delegation_is_its_own_person(
    signaling_mesh: NodeFactory, peers: PeerFactory
) -> None:
    """Clients that speak with their identity key alone (every client before 5.3) and
    devices see each other as before: the old client is its own person, the device's
    Device event reaches it (a frame it may ignore) and names it under its identity."""
    (node,) = await signaling_mesh(1)
    old = await peers("old", [node.url])
    new = await peers("new", [node.url], device="laptop")
    room_o, room_n = await old.join(URL), await new.join(URL)
    event = None
    async with asyncio.timeout(30):
        while not isinstance(event, Device):
            event = await room_o.next_event(30)
    assert event == Device(new.public_key, new.identity_key, "laptop")
    await until_linked(room_n, {old.public_key})
    assert room_n.person_of(old.public_key) == old.public_key
    assert room_n.people() == {old.public_key: {old.public_key}, new.identity_key: {new.public_key}}


async def test_pagemesh_chat_as_a_device(
    signaling_mesh: NodeFactory, peers: PeerFactory, tmp_path: Path
) -> None:
    """`pagemesh chat --device phone` beside the same identity's laptop: both in the room,
    the process names the laptop as the person's device, the laptop gets its words."""
    a, b = await signaling_mesh(2)
    laptop = await peers("ana-laptop", [a.url], device="laptop")
    room_l = await laptop.join("https://example.org/")
    move_identity(tmp_path / "ana-laptop", tmp_path / "ana-phone")
    env = {**os.environ, "PAGEMESH_ICE_HOSTS": "127.0.0.1"}
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "pagemesh", "chat", "https://example.org/", "--node", b.url),
        *("--data-dir", str(tmp_path / "ana-phone"), "--device", "phone", "--name", "Ana"),
        *("--say", "from the phone", "--wait", "6", "--json"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    event = await next_of(room_l, Device, within=30)
    assert event.identity == laptop.identity_key and event.label == "phone"
    (said,) = await collect(room_l, {event.key}, 1)
    assert said.text == "from the phone" and room_l.person_of(said.author) == laptop.identity_key
    out, err = await asyncio.wait_for(proc.communicate(), 40)
    assert proc.returncode == 0, err.decode()[-2000:]
    lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    assert {
        "event": "device",
        "key": laptop.public_key.hex(),
        "identity": laptop.identity_key.hex(),
        "label": "laptop",
    } in lines


async def test_a_revoked_device_is_its_own_person_and_a_forged_revocation_changes_nothing(
    signaling_mesh: NodeFactory, peers: PeerFactory, tmp_path: Path
) -> None:
    (node,) = await signaling_mesh(1)
    laptop, phone = await ana_devices(peers, tmp_path, node.url)
    ana = laptop.identity_key
    # Mallory shows a revocation of Ana's phone that Mallory's own identity signed
    mallory = await peers("mallory", [node.url])
    own = issue_revocation(
        lambda m: mallory.store.key.sign(m).signature, mallory.identity_key, phone.public_key, 1
    )
    mallory.revocations = [Revocation(ana, own.device, own.revoked_at, own.signature)]
    bob = await peers("bob", [node.url])
    room_b = await bob.join(URL)
    rooms = {p: await p.join(URL) for p in (laptop, phone, mallory)}
    devices = {laptop.public_key, phone.public_key}
    await until_linked(room_b, devices | {mallory.public_key})
    await rooms[mallory].say("hi")
    await collect(room_b, {mallory.public_key}, 1)  # its revoke frame came before
    assert room_b.refused_devices == {"revoke.signature": 1}
    await rooms[laptop].say("hi")
    await rooms[phone].say("hi")
    await collect(room_b, devices, 2)
    assert room_b.people()[ana] == devices

    # the laptop is stolen: the phone takes it back
    phone.revoke_device(laptop.public_key)
    event = await next_of(room_b, Revoked, within=20)
    assert event == Revoked(laptop.public_key, ana)
    assert room_b.person_of(laptop.public_key) == laptop.public_key
    assert room_b.people()[ana] == {phone.public_key}
    # a renewal from the thief's side counts no more, and the revocation outlives a restart
    laptop._renew_delegation()
    await rooms[laptop].say("still me")
    await collect(room_b, {laptop.public_key}, 1)
    assert room_b.refused_devices.get("revoked") == 1
    assert room_b.person_of(laptop.public_key) == laptop.public_key
    assert load_revocations(tmp_path / "ana-phone", ana)[0].device == laptop.public_key
    assert (tmp_path / "ana-phone" / "revoked").stat().st_mode & 0o777 == 0o600


async def pagemesh(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "pagemesh", *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    return out.decode()


async def test_a_device_whose_identity_key_stays_home(
    signaling_mesh: NodeFactory, peers: PeerFactory, tmp_path: Path
) -> None:
    """The identity key never reaches the tablet: `identity device` there, `delegate` at
    home, `adopt` on the tablet; Bob sees Ana's tablet; the tablet cannot revoke; home
    `revoke`s it and, once home is in the room, Bob sees the tablet as its own key."""
    (node,) = await signaling_mesh(1)
    home, tablet = tmp_path / "ana-home", tmp_path / "ana-tablet"
    home.mkdir()
    ana = bytes(load_or_create_key(home).verify_key)  # the identity, at home only
    device = (await pagemesh("identity", "device", "--data-dir", str(tablet))).split()[0]
    cert = tmp_path / "tablet.cert"
    args = ("--label", "tablet", "--days", "1", "--out", str(cert), "--data-dir", str(home))
    assert (await pagemesh("identity", "delegate", device, *args)).split()[0] == ana.hex()
    assert cert.stat().st_mode & 0o777 == 0o600
    adopted = await pagemesh("identity", "adopt", str(cert), "--data-dir", str(tablet))
    assert adopted.split()[0] == ana.hex()
    shown = await pagemesh("identity", "device", "--data-dir", str(tablet))
    assert f"device of {ana.hex()} until" in shown

    peer = await peers("ana-tablet", [node.url], device="anything")
    assert peer.public_key.hex() == device and peer.identity_key == ana
    assert peer.delegation is not None and peer.delegation.label == "tablet"
    assert peer.identity_key != bytes(peer.store.key.verify_key)  # the tablet's own seed
    with pytest.raises(ValueError):
        peer.revoke_device(peer.public_key)
    bob = await peers("bob", [node.url])
    room_b = await bob.join(URL)
    room_t = await peer.join(URL)
    event = await next_of(room_b, Device, within=60)  # a loaded machine: slow CLI starts
    assert event == Device(peer.public_key, ana, "tablet")

    assert (await pagemesh("identity", "revoke", device, "--data-dir", str(home))).strip() == device
    at_home = await peers("ana-home", [node.url])  # the identity key itself, no device
    assert at_home.public_key == ana and len(at_home.revocations) == 1
    await at_home.join(URL)
    assert await next_of(room_b, Revoked, within=60) == Revoked(peer.public_key, ana)
    assert room_b.people() == {
        ana: {ana},
        peer.public_key: {peer.public_key},
        bob.public_key: {bob.public_key},
    }
    assert room_t.person_of(peer.public_key) == peer.public_key  # the tablet hears it too


async def test_a_delegation_is_renewed_before_it_expires(
    signaling_mesh: NodeFactory, peers: PeerFactory
) -> None:
    """A 3 s delegation: renewed at half its life and shown again on the open link, so a
    member still sees the person after the first one has expired."""
    (node,) = await signaling_mesh(1)
    laptop = await peers("ana-laptop", [node.url], PeerConfig(device_lifetime_ms=3000), device="")
    bob = await peers("bob", [node.url])
    room_b = await bob.join(URL)
    await laptop.join(URL)
    await next_of(room_b, Device, within=30)
    first = room_b.devices.delegation(laptop.public_key, int(time.time() * 1000))
    assert first is not None
    # past the first one's expiry, in real time: the renewal timer is the peer's own
    await asyncio.sleep(max(0.0, (first.expires + 200) / 1000 - time.time()))
    assert room_b.person_of(laptop.public_key) == laptop.identity_key
    renewed = room_b.devices.delegation(laptop.public_key, int(time.time() * 1000))
    assert renewed is not None and renewed.not_before > first.not_before


async def test_a_revocation_heard_in_one_room_holds_in_every_room(
    signaling_mesh: NodeFactory, peers: PeerFactory, tmp_path: Path
) -> None:
    """The attacker: the thief of Ana's laptop (its device key and delegation) sits
    with Bob in another room than the one where Ana's phone showed Bob the revocation,
    or in a DM room with him. A revocation is of the device, wherever Bob heard it:
    Bob's every room shows the laptop as its own key, now and after a renewal, and a
    room Bob opens later knows it from the start."""
    (node,) = await signaling_mesh(1)
    laptop, phone = await ana_devices(peers, tmp_path, node.url)
    ana = laptop.identity_key
    bob = await peers("bob", [node.url])
    where_phone, where_thief = URL + "/phone", URL + "/thief"
    bob_x, bob_y = await bob.join(where_phone), await bob.join(where_thief)
    phone_x, laptop_y = await phone.join(where_phone), await laptop.join(where_thief)
    await until_linked(bob_x, {phone.public_key})
    await until_linked(bob_y, {laptop.public_key})
    await laptop_y.say("hi")
    await collect(bob_y, {laptop.public_key}, 1)
    assert bob_y.person_of(laptop.public_key) == ana

    phone.revoke_device(laptop.public_key)  # heard by Bob in the phone's room only
    async with asyncio.timeout(20):  # the book is no event: polled
        while not bob_x.devices.revoked(ana, laptop.public_key):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert await next_of(bob_y, Revoked, within=5) == Revoked(laptop.public_key, ana)
    assert bob_y.person_of(laptop.public_key) == laptop.public_key
    laptop._renew_delegation()  # the thief shows it again where the phone is not
    await laptop_y.say("still me")
    await collect(bob_y, {laptop.public_key}, 1)
    assert bob_y.refused_devices.get("revoked") == 1
    assert bob_y.person_of(laptop.public_key) == laptop.public_key
    later = await bob.join(URL + "/later")
    assert later.devices.revoked(ana, laptop.public_key)
    assert bob.device_identity(laptop.public_key) is None  # no DM admits it as Ana
    phone_x  # noqa: B018  (the phone stays in its room)


async def test_a_member_cannot_change_its_person_without_bound(
    signaling_mesh: NodeFactory, peers: PeerFactory
) -> None:
    """The attacker: a member shows, on its one link, delegations to its key from one
    made-up identity after another; each one was a new person (a `Device` event, the
    page relabelling every row, the terminal a line). A link's person or label changes
    at most MAX_DEVICE_CHANGES times; past that it stays who it was (`changes`)."""
    from peer.peer import MAX_DEVICE_CHANGES

    (node,) = await signaling_mesh(1)
    ben = await peers("ben", [node.url])
    rogue = await peers("rogue", [node.url])
    room_b, room_r = await ben.join(URL), await rogue.join(URL)
    await until_linked(room_r, {ben.public_key})
    await until_linked(room_b, {rogue.public_key})
    made = show_made_up_identities(room_r, ben.public_key, 5, MAX_DEVICE_CHANGES + 20)
    await rooms_say(room_r)
    await collect(room_b, {rogue.public_key}, 1)
    assert room_b.refused_devices.get("changes") == len(made) - 1 - MAX_DEVICE_CHANGES
    assert room_b.person_of(rogue.public_key) == made[MAX_DEVICE_CHANGES]


async def rooms_say(room: Room) -> None:
    await room.say("after the delegations")
