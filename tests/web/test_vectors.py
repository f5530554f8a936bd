"""The browser computes what Python computes, byte for byte (canonical URLs, keys,
the presence payload it signs, message envelopes, chunk frames, SDP fingerprints)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peer.chatscreen import human_size
from peer.files import chunk_frame
from peer.messaging import Envelope
from peer.sdp import fingerprints
from signaling.protocol import presence_payload
from signaling.rooms import (
    HomeNode,
    RoomError,
    canonical_url,
    layer_key,
    presence_value,
    room_key,
)
from tests.signaling.conftest import NodeFactory
from tests.signaling.test_rooms import CANONICAL, URLS, tracking_left

from .conftest import PageFactory

MODULES = """async () => {
    const m = {};
    for (const name of ['bytes', 'rooms', 'messaging', 'files', 'sdp', 'transfer', 'mesh']) {
        Object.assign(m, await import(`/web/js/${name}.js`));
    }
    window.m = m;
}"""


@pytest.fixture
async def page(signaling_mesh: NodeFactory, open_page: PageFactory) -> Any:
    (node,) = await signaling_mesh(1)
    page = await open_page(node, "vectors")
    await page.evaluate(MODULES)
    return page


async def test_canonical_urls_and_room_keys(page: Any) -> None:
    urls = [url for url, _ in CANONICAL] + [
        "https://example.com/a?x=%7e&y=%2f&utm_x=1#f",
        "https://e.com/a%3Ab%40c%2Fd%27e%5B%7C?x=%2f&y=%3a%40%27%5b&z=a+b%20c",
        "https://e.com/a'b[c]|d^e`f{g}?q='[]|^`{}",
        "https://e.com/caf%C3%A9/caf\u00e9?q=caf\u00e9&r=%c3%a9",
        "https://e.com/%zz?%zz=1&a=%26%3D%2B",
        'https://e.com/"quoted"<x>?a="b"<c>',
    ]
    got = await page.evaluate(
        """async (urls) => Promise.all(urls.map(async (u) => {
            const c = window.m.canonicalUrl(u);
            return [c, window.m.hex(await window.m.roomKey(c)), window.m.canonicalUrl(c)];
        }))""",
        urls,
    )
    for url, (canonical, key, again) in zip(urls, got, strict=True):
        assert canonical == canonical_url(url), url
        assert key == room_key(canonical).hex()
        assert again == canonical, url  # the page applies the rule to what it made


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "example.com/page",
        "https:///path",
        "http://1.2.3.4.5/",
        "http://256.0.0.1/",
        "http://1.2.3.0x100/",
        "http://09.0.0.1/",
    ],
)
async def test_urls_without_rooms_are_refused_in_both(page: Any, url: str) -> None:
    with pytest.raises(RoomError):
        canonical_url(url)
    code = await page.evaluate(
        "(u) => { try { window.m.canonicalUrl(u); return null } catch (e) { return e.code } }", url
    )
    assert code == "bad-url"


async def test_private_room_layer_key_and_presence_payload(page: Any) -> None:
    room = room_key("https://example.org/", b"s3cret")
    home = HomeNode(bytes(range(20)), "ws://127.0.0.1:8080")
    peer = bytes(range(100, 132))
    for layer, seq, expires in [(0, 1, 1_763_880_060), (300, 2**40, 2**33), (65535, 127, 128)]:
        got = await page.evaluate(
            """async ([room, layer, node, url, peer, seq, expires]) => {
                const {fromHex, hex, roomKey, layerKey, presenceValue, presencePayload} = window.m;
                const r = await roomKey('https://example.org/', new TextEncoder().encode('s3cret'));
                return [hex(r), hex(await layerKey(r, layer)),
                        new TextDecoder().decode(presenceValue(r, layer, fromHex(node), url)),
                        hex(await presencePayload(fromHex(peer), r, layer, fromHex(node), url,
                                                  seq, expires))];
            }""",
            [room.hex(), layer, home.node_id.hex(), home.url, peer.hex(), seq, expires],
        )
        assert got[0] == room.hex()
        assert got[1] == layer_key(room, layer).hex()
        assert got[2] == presence_value(room, layer, home).decode()
        assert got[3] == presence_payload(peer, room, layer, home, seq, expires).hex()


async def test_envelope_bytes_with_unusual_text(page: Any) -> None:
    bodies = ["plain", "naïve café ☕ 🐈", 'quotes " and \\ back', "tab\tnew\nline\x01\x7f", ""]
    for body in bodies:
        env = Envelope(bytes(20), bytes(range(32)), 3, 9, 1_763_880_000_123, "text", body)
        got = await page.evaluate(
            "(e) => window.m.hex(window.m.signedBytes(e))",
            {**env.to_json(), "sig": "00" * 64},
        )
        assert got == env.signed_bytes().hex(), body


async def test_chunk_frames_and_fingerprints(page: Any) -> None:
    data = bytes(range(256)) * 5
    got = await page.evaluate(
        "async ([o, d]) => window.m.hex(await window.m.chunkFrame(o, window.m.fromHex(d)))",
        [2**40 + 7, data.hex()],
    )
    assert got == chunk_frame(2**40 + 7, data).hex()
    sdp = "v=0\r\na=fingerprint:SHA-256 ab:cd:ef\r\na=fingerprint:sha-1 01:02\r\n"
    assert await page.evaluate("(s) => window.m.fingerprints(s)", sdp) == fingerprints(sdp)
    assert json.dumps(fingerprints(sdp))  # the list signed is plain JSON in both


NUMERIC_LABEL = st.one_of(
    st.integers(0, 2**33).map(str),
    st.integers(0, 2**33).map(lambda n: f"0x{n:x}"),
    st.integers(0, 2**33).map(lambda n: f"0{n:o}"),
    st.sampled_from(["0", "00", "0x", "09", "0x1g", "1e2", "a", "x1"]),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.lists(NUMERIC_LABEL, min_size=1, max_size=6), min_size=30, max_size=30))
async def test_hosts_that_end_in_a_number_read_alike(page: Any, hosts: list[list[str]]) -> None:
    """IPv4 in every spelling a browser reads (hex, octal, fewer parts) canonicalises alike,
    and what one refuses the other refuses."""
    urls = ["http://" + ".".join(labels) + "/" for labels in hosts]
    got = await page.evaluate(
        """(urls) => urls.map((u) => {
            try { return window.m.canonicalUrl(u); } catch (e) { return 'refused'; }
        })""",
        urls,
    )
    for url, browser in zip(urls, got, strict=True):
        try:
            python = canonical_url(url)
        except RoomError:
            python = "refused"
        assert python == browser, url


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(URLS, min_size=50, max_size=50))
async def test_escaped_names_values_and_separators_read_alike(page: Any, urls: list[str]) -> None:
    """Escaped tracking names, escapes in either case, escaped "&", "=", "+", "#",
    backslashes, spaces and trailing dots: the page's rule is Python's, and applying
    it to its own result changes nothing (the page and the extension apply it twice)."""
    got = await page.evaluate(
        """(urls) => urls.map((u) => {
            try {
                const once = window.m.canonicalUrl(u);
                return [once, window.m.canonicalUrl(once)];
            } catch (e) { return ['refused', 'refused']; }
        })""",
        urls,
    )
    for url, (once, twice) in zip(urls, got, strict=True):
        try:
            python = canonical_url(url)
        except RoomError:
            python = "refused"
        assert once == python, url
        assert twice == once, url
        assert tracking_left(once) == [], url


SIZES = """async (counts) => {
    const { size } = await import('/web/js/dom.js');
    return counts.map(size);
}"""


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    counts=st.lists(
        st.integers(0, 2**49)
        | st.integers(0, 14).map(lambda e: 10**e)
        | st.sampled_from([999, 1049, 1050, 1250, 999_949, 999_950, 999_999, 1_000_000]),
        min_size=1,
        max_size=40,
    )
)
async def test_sizes_read_the_same_on_the_page_and_in_a_terminal(
    page: Any,
    counts: list[int],
) -> None:
    # "14.3 KB" (1024s) on the page, "14.6 kB" (1000s) in pagemesh chat, for one file.
    assert await page.evaluate(SIZES, counts) == [human_size(n) for n in counts]
