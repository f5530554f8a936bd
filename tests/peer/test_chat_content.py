"""Names, replies and reactions between real Python peers: what a chat shows, end to end."""

from __future__ import annotations

import pytest

from peer.messaging import Chat, MessageRef, Reaction
from peer.peer import Connected, Message
from tests.signaling.conftest import NodeFactory

from .conftest import PeerFactory
from .test_recovery import until

pytestmark = pytest.mark.integration

URL = "https://example.org/chat-content"


async def test_names_replies_and_reactions_reach_members_and_newcomers(
    signaling_mesh: NodeFactory, peers: PeerFactory
) -> None:
    (node,) = await signaling_mesh(1)
    ana, ben = await peers("Ana", [node.url]), await peers("Ben", [node.url])
    room_a = await ana.join(URL)
    room_b = await ben.join(URL)
    await until(room_a, Connected)
    hello = await room_a.say("hi all")
    got = await until(room_b, Message, mine=False)
    assert got.text == "hi all" and got.content == Chat("hi all", "Ana")
    ref = MessageRef(hello.author, hello.seq)
    await room_b.say("hi Ana", reply_to=ref)
    reply = await until(room_a, Message, mine=False)
    assert reply.content == Chat("hi Ana", "Ben", ref)
    await room_b.react(ref, "👍")
    reaction = await until(room_a, Message, mine=False)
    assert reaction.content == Reaction(ref, "👍", True, "Ben")
    assert room_a.reactions()[ref] == {"👍": {ben.public_key}}

    # Ana leaves; a newcomer reads her name from history, signed in her envelope.
    await ana.close()
    cleo = await peers("Cleo", [node.url])
    room_c = await cleo.join(URL)
    texts = {}
    while len(texts) < 2:
        message = await until(room_c, Message, mine=False)
        if isinstance(message.content, Chat):
            texts[message.content.text] = message.content.name
    assert texts == {"hi all": "Ana", "hi Ana": "Ben"}
    assert room_c.name_of(hello.author) == "Ana"
