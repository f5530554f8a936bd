"""Python and Chromium add each other as contacts and see each other online and on which page
(docs/protocol.md 7): a real node, a real aiortc peer, the page every node serves. The page
adds from a member's row with the keyboard, shows an online dot and "Join them", follows the
contact to their page, and sees them go offline when they leave."""

from __future__ import annotations

from typing import Any

from nacl.signing import SigningKey

from peer.friends import ContactCard, x25519_seed
from peer.peer import Connected
from signaling.protocol import canonical_url
from tests.signaling.conftest import NodeFactory

from .conftest import ARTIFACTS, PageFactory, next_of
from .contacts import contacts_on_a_page

URL = "https://example.org/where-we-met"
ELSEWHERE = "https://example.org/somewhere-else"


async def refresh(page: Any) -> None:
    await page.evaluate("window.pagemesh.peer.friends.refresh()")


async def test_python_and_chromium_see_each_other_online_where_and_join_them(
    signaling_mesh: NodeFactory, peers: Any, open_page: PageFactory
) -> None:
    (node,) = await signaling_mesh(1)
    ana = await peers("Ana", [node.url])
    room = await ana.join(URL)
    page = await open_page(node, "Ben", room=URL)
    await page.wait_for_selector("body[data-contacts=ready]")
    ben = bytes.fromhex(await page.evaluate("window.pagemesh.peer.identityHex"))
    await next_of(room, Connected, key=ben)

    # Ben adds Ana from her row, with the keyboard only.
    row = f"#members li[data-key='{ana.public_key.hex()}']"
    add = page.locator(f"{row} button.add-contact")
    # named once her profile is drawn (names are redrawn at most every 200 ms)
    await page.wait_for_selector(f"{row} button.add-contact[aria-label='Add Ana as a contact']")
    await add.focus()
    await page.keyboard.press("Enter")
    await page.locator("#contact-petname").fill("Ana from the walk")
    await page.keyboard.press("Enter")
    # linked in this room: here at once, whatever presence says (no note read yet)
    added = "#contacts li[data-online=true] .petname:text-is('Ana from the walk')"
    await page.wait_for_selector(added)
    assert await add.count() == 0  # a contact already
    # the keyboard is on her new row (its "+ Contact" went with the dialog), not nowhere
    focused = "document.activeElement.getAttribute('aria-label')"
    assert await page.evaluate(focused) in ("Message Ana from the walk", "Rename Ana from the walk")
    await page.select_option("#presence-mode", "with-room")

    # Ana adds Ben, and tells where she is.
    assert ben in ana.cards
    ana.add_contact(ben, "Ben", room)
    ana.set_presence("with-room")
    await ana.refresh_presence()
    await refresh(page)
    row = "#contacts li[data-online=true]"
    await page.wait_for_selector(f"{row} .where:text-is('here, in group 1')")
    seen = await ana.refresh_presence()
    assert seen[ben].online and seen[ben].page == canonical_url(URL)
    assert seen[ben].layer == room.layer and seen[ben].room == room.key

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for width, height in ((1280, 800), (390, 844)):
        await page.set_viewport_size({"width": width, "height": height})
        if width < 600:
            await page.click("#people-toggle")
        await page.locator("#contacts-panel").scroll_into_view_if_needed()
        await page.screenshot(path=str(ARTIFACTS / f"contacts-{width}x{height}.png"))
    # Escape in the opened panel closes it, back to its button
    await page.locator("#contacts li button:text-is('Rename')").focus()
    await page.keyboard.press("Escape")
    assert await page.get_attribute("#people-toggle", "aria-expanded") == "false"
    assert await page.evaluate("document.activeElement.id") == "people-toggle"
    await page.set_viewport_size({"width": 1100, "height": 700})

    # Ana goes to another page: Ben's panel offers to join her there, and does.
    await ana.leave(room)
    elsewhere = await ana.join(ELSEWHERE)
    await ana.refresh_presence()
    await refresh(page)
    where = f"on {canonical_url(ELSEWHERE)}, group {elsewhere.layer + 1}"
    await page.wait_for_selector(f"{row} .where:text-is('{where}')")
    join = page.locator(f"{row} button.join-them")
    assert await join.get_attribute("aria-label") == f"Join Ana from the walk ({where})"
    await join.click()
    await next_of(elsewhere, Connected, key=ben, within=20)
    await page.wait_for_selector("#leave:not([hidden])")  # the join returns after its first link
    assert await page.evaluate("window.pagemesh.room.url") == canonical_url(ELSEWHERE)

    # Rename, then Ana leaves: the dot goes out at Ben's next read.
    await page.click("#contacts li button[aria-label='Rename Ana from the walk']")
    await page.locator("#contact-petname").fill("Ana")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#contacts li .petname:text-is('Ana')")
    assert await page.evaluate(focused) in ("Message Ana", "Rename Ana")
    await ana.close()
    await refresh(page)
    await page.wait_for_selector(
        "#contacts li[data-online=false] .where:text-is('offline · last seen just now')"
    )
    await page.click("#contacts li button[aria-label='Remove Ana']")
    await page.wait_for_selector("#contacts li.hint")
    assert await page.evaluate("window.pagemesh.peer.store.contacts()") == []


async def test_on_a_phone_outside_any_room_the_contacts_are_shown(
    signaling_mesh: NodeFactory, open_page: PageFactory
) -> None:
    (node,) = await signaling_mesh(1)
    page = await open_page(node, "Ben")
    await page.wait_for_selector("body[data-contacts=ready]")
    await page.set_viewport_size({"width": 390, "height": 844})
    assert await page.locator("#contacts-panel").is_visible()
    assert await page.locator("#presence-mode").is_visible()
    # what the page is for first, the contacts under it, all on the screen
    hint = await page.locator("#empty-hint").bounding_box()
    contacts = await page.locator("#contacts-panel").bounding_box()
    assert hint is not None and contacts is not None
    assert hint["y"] + hint["height"] <= contacts["y"]
    assert contacts["y"] + contacts["height"] <= 844
    await page.focus("#presence-mode")
    assert await page.evaluate("document.activeElement.id") == "presence-mode"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "contacts-390x844-no-room.png"))


async def test_overlapping_reloads_end_with_what_is_stored(
    signaling_mesh: NodeFactory, open_page: PageFactory
) -> None:
    # A card saved while a contact was being added: two reloads overlapped, and the one
    # that read the store first finished last, leaving the contacts (and their secrets)
    # as they were before. Reloads now take turns, each reading the store in its turn.
    (node,) = await signaling_mesh(1)
    page = await open_page(node, "Ben")
    await page.wait_for_selector("body[data-contacts=ready]")
    got = await page.evaluate(
        """async () => {
            const f = window.pagemesh.peer.friends;
            const store = f.peer.store;
            const read = store.contacts.bind(store);
            let calls = 0;
            store.contacts = async () => {
                const first = calls++ === 0;
                const found = await read();
                if (first) await new Promise((r) => setTimeout(r, 200)); // read early, slow
                return found;
            };
            const first = f.reload(); // reads the store before the contact is saved
            await new Promise((r) => setTimeout(r, 20));
            await store.saveContact({ key: '03'.repeat(32), petname: 'Zoë', x: null,
                sig: null, room: null, page: null, addedAt: 1 });
            await Promise.all([first, f.reload()]);
            store.contacts = read;
            return f.contacts.map((c) => c.petname);
        }"""
    )
    assert got == ["Zoë"]


async def test_a_card_that_comes_while_its_contact_is_added_is_taken(
    signaling_mesh: NodeFactory, open_page: PageFactory
) -> None:
    # Ana's card reached the page while the page was adding her (her link's card right
    # after the link came up): the card found no contact yet and the contact was saved
    # without it, so no pair secret and no "Message" for her. The next reload takes it.
    (node,) = await signaling_mesh(1)
    page = await open_page(node, "Ben")
    await page.wait_for_selector("body[data-contacts=ready]")
    seed = bytes(range(32))
    ana = SigningKey(seed)
    card = ContactCard.create(ana, x25519_seed(seed))
    got = await page.evaluate(
        """async ([key, frame]) => {
            const f = window.pagemesh.peer.friends;
            const store = f.peer.store;
            const save = store.saveContact.bind(store);
            store.saveContact = async (c) => {
                await save(c);
                await new Promise((r) => setTimeout(r, 100)); // a slow disk
            };
            const adding = f.add(key, 'Ana');
            await new Promise((r) => setTimeout(r, 20)); // saving, not yet reloaded
            await f.onCard(key, frame, '07'.repeat(32));
            await adding;
            await f.reloading;
            store.saveContact = save;
            const stored = (await store.contacts()).find((c) => c.key === key);
            return [f.secrets.has(key), stored.x !== null];
        }""",
        [ana.verify_key.encode().hex(), card.to_frame()],
    )
    assert got == [True, True]


async def test_a_contacts_button_keeps_the_focus_when_the_list_is_drawn_again(
    signaling_mesh: NodeFactory, open_page: PageFactory, peers: Any
) -> None:
    # The list is drawn anew at each presence round and card: the button a keyboard user
    # had reached lost the focus, and Enter then went nowhere.
    (node,) = await signaling_mesh(1)
    ana = await peers("Ana", [node.url])
    _room, page, _ben = await contacts_on_a_page(node, open_page, ana, URL)
    message = page.locator("#contacts li .dm-open")
    await message.wait_for()
    for what in ("Message", "Rename", "Remove"):
        button = page.locator(f"#contacts li button:text-is('{what}')")
        await button.focus()
        await page.evaluate("window.pagemesh.peer.friends.changed()")
        await refresh(page)
        assert await page.evaluate("document.activeElement.textContent") == what
    await page.keyboard.press("Shift+Tab")  # Rename, from Remove
    await page.keyboard.press("Shift+Tab")  # Message
    await page.evaluate("window.pagemesh.peer.friends.changed()")
    await page.keyboard.press("Enter")
    # Ana is in the room, not in the conversation: whether she keeps Ben (and so hears
    # that a message waits) the page cannot know before a note of hers says so (7.4)
    await page.wait_for_selector(
        "#dm-status:text-is('Ana is online; what you write reaches them once their side"
        " joins this conversation, which it does if they keep you as a contact too.')"
    )


async def test_contacts_move_with_the_identity_file_both_ways(
    signaling_mesh: NodeFactory, open_page: PageFactory
) -> None:
    from peer.identity_file import FileContact, export_identity, read_identity

    (node,) = await signaling_mesh(1)
    page = await open_page(node, "Ben")
    await page.wait_for_selector("body[data-contacts=ready]")
    await page.evaluate(
        """async () => {
            const f = window.pagemesh.peer.friends;
            await f.peer.store.saveContact({ key: '03'.repeat(32), petname: 'Zoë', x: null,
                sig: null, room: '07'.repeat(20), page: 'https://e.com/', addedAt: 1 });
            await f.reload();
        }"""
    )
    text = await page.evaluate("window.pagemesh.peer.exportIdentity('correct horse')")
    got = read_identity(text.encode(), "correct horse")
    assert got.contacts == (
        FileContact(b"\x03" * 32, "Zoë", None, None, b"\x07" * 20, "https://e.com/"),
    )

    seed = bytes(range(32))
    ben = FileContact(b"\x02" * 32, "Ben", None, None, None, None)
    data = export_identity(seed, "correct horse", "Ana", contacts=[ben], iterations=100_000)
    await page.evaluate(
        "([text]) => window.pagemesh.peer.importIdentity(text, 'correct horse')", [data.decode()]
    )
    keys = await page.evaluate(
        "async () => (await window.pagemesh.peer.store.contacts()).map((c) => [c.key, c.petname])"
    )
    assert ["02" * 32, "Ben"] in keys


async def test_one_member_cycling_identities_cannot_flush_the_pages_cards(
    signaling_mesh: NodeFactory, open_page: PageFactory
) -> None:
    """As tests/peer/test_contacts_e2e.py: one member's link gives card after card, each
    of a made-up identity it speaks for; Carol's card, given by her link, stays, and the
    rogue's link holds one card. The page's contacts core, fed the frames as its glue
    is (person, frame, the member whose link carried it)."""
    (node,) = await signaling_mesh(1)
    page = await open_page(node, "Ben")

    def card(seed: bytes) -> tuple[str, dict[str, str]]:
        key = SigningKey(seed)
        return bytes(key.verify_key).hex(), ContactCard.create(key, x25519_seed(seed)).to_frame()

    carol = card(b"c" * 32)
    rogue = bytes(SigningKey(b"r" * 32).verify_key).hex()
    made = [card(i.to_bytes(4, "big") + b"\4" * 28) for i in range(60)]
    got = await page.evaluate(
        """async ([carol, rogue, made]) => {
            const f = window.pagemesh.peer.friends;
            await f.onCard(carol[0], carol[1], carol[0]);
            for (const [person, frame] of made) await f.onCard(person, frame, rogue);
            return [f.cards.has(carol[0]), f.cards.has(made[made.length - 1][0]), f.cards.size];
        }""",
        [carol, rogue, made],
    )
    assert got == [True, True, 2]
