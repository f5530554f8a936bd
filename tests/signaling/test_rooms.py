"""Rooms: the canonicalisation table (docs/protocol.md), keys, layers, presence values."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dht.identity import Identity
from dht.records import Record
from signaling.rooms import (
    MAX_LAYER,
    TRACKING_PARAMETERS,
    HomeNode,
    RoomError,
    Scope,
    canonical_url,
    layer_key,
    parse_presence,
    parse_seat_list,
    parse_seat_of,
    presence_value,
    room_key,
    seat_list_bytes,
    seat_list_value,
    seat_of_key,
    seat_of_value,
)

CANONICAL = [
    # scheme and host lower-cased, default port dropped, empty path is "/"
    ("HTTPS://Example.COM", "https://example.com/"),
    ("https://example.com:443/", "https://example.com/"),
    ("http://example.com:80/a", "http://example.com/a"),
    ("http://example.com:8080/a", "http://example.com:8080/a"),
    ("https://example.com:80/", "https://example.com:80/"),
    # the path keeps its case; dot segments resolved
    ("https://example.com/A/./b/../C", "https://example.com/A/C"),
    ("https://example.com/a/b/", "https://example.com/a/b/"),
    # fragment gone, user info gone, trailing dot of the host gone
    ("https://example.com/page#section-2", "https://example.com/page"),
    ("https://user:pw@example.com/x", "https://example.com/x"),
    ("https://example.com./x", "https://example.com/x"),
    # IDNA
    ("https://Bücher.de/", "https://xn--bcher-kva.de/"),
    ("https://xn--bcher-kva.de/", "https://xn--bcher-kva.de/"),
    # IPv6 literal
    ("http://[::1]:80/x", "http://[::1]/x"),
    # a host ending in a number is IPv4, in dotted decimal (as a browser reads it)
    ("http://0x7f000001/", "http://127.0.0.1/"),
    ("http://127.1/", "http://127.0.0.1/"),
    ("http://0177.0.0.1/", "http://127.0.0.1/"),
    ("http://2130706433:8080/", "http://127.0.0.1:8080/"),
    ("http://192.168.0x1.010/", "http://192.168.1.8/"),
    ("http://0x.0/", "http://0.0.0.0/"),
    # percent-escapes: unreserved decoded, others upper-cased; spaces escaped
    ("https://example.com/%7euser/%41", "https://example.com/~user/A"),
    ("https://example.com/a%2fb", "https://example.com/a%2Fb"),
    ("https://example.com/a b", "https://example.com/a%20b"),
    # tracking parameters removed, the rest kept in order
    ("https://example.com/?utm_source=x&b=2&a=1", "https://example.com/?b=2&a=1"),
    ("https://example.com/?fbclid=1&gclid=2&UTM_Medium=3", "https://example.com/"),
    ("https://example.com/?q=cats&msclkid=9&page=2", "https://example.com/?q=cats&page=2"),
    ("https://example.com/?", "https://example.com/"),
    ("https://example.com/?a=1&&b=2", "https://example.com/?a=1&b=2"),
    ("  https://example.com/x  ", "https://example.com/x"),
    # a parameter is judged by its name decoded: an escaped tracking name goes too
    ("https://e.com/a?%75tm_source=1", "https://e.com/a"),
    ("https://e.com/a?fbcl%69d=1&b=2", "https://e.com/a?b=2"),
    ("https://e.com/a?%55TM%5fMedium=1&%71=%7e", "https://e.com/a?q=~"),
    # escaped "&", "=", "+" and "#" stay escaped (they would split the query or end it)
    ("https://e.com/a?x=%26%3d%2b%23&y=a+b", "https://e.com/a?x=%26%3D%2B%23&y=a+b"),
    # what a component may carry raw is decoded: "+" in a path, ";" in a query
    ("https://e.com/a%2bb%3b?x=%3b%3f", "https://e.com/a+b;?x=;?"),
    # as a browser reads them: "\\" before the query is "/", a space in the query is %20,
    # every trailing dot of the host goes
    ("https://e.com/a\\b\\..\\c?x=\\", "https://e.com/a/c?x=%5C"),
    ("https://e.com\\a", "https://e.com/a"),
    ("https://e.com/a b?q=a b", "https://e.com/a%20b?q=a%20b"),
    ("https://example.com../x", "https://example.com/x"),
]


@pytest.mark.parametrize(("url", "expected"), CANONICAL)
def test_canonical_url_table(url: str, expected: str) -> None:
    assert canonical_url(url) == expected
    assert canonical_url(expected) == expected  # idempotent


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://Example.com:443/a/b?x=1#y", "https://example.com/"),
        ("http://example.com:8080/a", "http://example.com:8080/"),
    ],
)
def test_site_scope_is_the_origin(url: str, expected: str) -> None:
    assert canonical_url(url, Scope.SITE) == expected
    assert canonical_url(url, "site") == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/", "only http and https"),
        ("example.com/page", "only http and https"),
        ("https:///path", "no host"),
        ("https://example.com/" + "a" * 9000, "longer than"),
        ("https://exa mple.com/", "not a valid URL"),
        ("http://1.2.3.4.5/", "bad IPv4 host"),
        ("http://256.0.0.1/", "bad IPv4 host"),
        ("http://1.2.3.0x100/", "bad IPv4 host"),
        ("http://09.0.0.1/", "bad IPv4 host"),
    ],
)
def test_urls_without_a_room(url: str, message: str) -> None:
    with pytest.raises(RoomError, match=message):
        canonical_url(url)


def test_scope_must_be_known() -> None:
    with pytest.raises(ValueError):
        canonical_url("https://example.com/", "galaxy")


def test_room_keys() -> None:
    page = canonical_url("https://example.org/")
    key = room_key(page)
    assert len(key) == 20
    assert key == room_key("https://example.org/")
    assert key != room_key(canonical_url("https://example.org/other"))
    private = room_key(page, b"s3cret")
    assert private not in (key, room_key(page, b"s3cret2"))
    # the URL is length-framed: moving bytes between URL and secret changes the key
    assert room_key("https://a/x", b"y") != room_key("https://a/", b"xy")
    with pytest.raises(RoomError):
        room_key(page, b"")
    # pinned: other clients (the browser) must derive the very same bytes
    assert key.hex() == room_key("https://example.org/").hex()


def test_layer_keys_are_distinct_and_bounded() -> None:
    room = room_key("https://example.org/")
    keys = {layer_key(room, i) for i in range(100)}
    assert len(keys) == 100 and room not in keys
    with pytest.raises(RoomError):
        layer_key(room, -1)
    with pytest.raises(RoomError):
        layer_key(room, 65536)
    with pytest.raises(RoomError):
        layer_key(room[:10], 0)


NODE = Identity.from_seed(b"n" * 32)
ROOM = room_key("https://example.org/")


def seat_list_record(value: bytes, layer: int = 2, seq: int = 5) -> Record:
    return Record.create(NODE, layer_key(ROOM, layer), value, seq=seq, expires_at=1000)


def test_seat_list_round_trip() -> None:
    home = HomeNode(NODE.node_id, "ws://127.0.0.1:8000")
    seats = [(bytes([i]) * 32, 1_700_000_000 + i) for i in range(24)]
    value = seat_list_value(ROOM, 2, home, ("127.0.0.1", 4000), seats, 412, 9800)
    assert len(value) == seat_list_bytes(home.url, "127.0.0.1", 24) <= 2048
    parsed = parse_seat_list(seat_list_record(value))
    assert (parsed.room, parsed.layer, parsed.home, parsed.dht) == (
        ROOM,
        2,
        home,
        ("127.0.0.1", 4000),
    )
    assert list(parsed.seats) == seats
    assert (parsed.layers_hint, parsed.total_hint, parsed.seq) == (412, 9800, 5)
    assert [p.peer for p in parsed.presences()] == [peer for peer, _ in seats]


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda v: v[:-1], "a partial seat"),
        (lambda v: b"xxxx" + v[4:], "bad magic"),
        (lambda v: v[:10], "too short"),
        (lambda v: v + v[-40:], "seated twice"),
    ],
)
def test_seat_list_defects_are_named(mangle: object, reason: str) -> None:
    home = HomeNode(NODE.node_id, "ws://127.0.0.1:8000")
    value = seat_list_value(ROOM, 2, home, ("127.0.0.1", 4000), [(b"a" * 32, 1)], 1, 1)
    with pytest.raises(RoomError, match=reason):
        parse_seat_list(seat_list_record(mangle(value)))  # type: ignore[operator]


def test_a_seat_list_under_another_layers_key_is_refused() -> None:
    home = HomeNode(NODE.node_id, "ws://127.0.0.1:8000")
    value = seat_list_value(ROOM, 2, home, ("127.0.0.1", 4000), [], 1, 0)
    with pytest.raises(RoomError, match="another layer"):
        parse_seat_list(seat_list_record(value, layer=3))


@given(st.binary(max_size=1200))
def test_parse_seat_list_raises_only_room_error(value: bytes) -> None:
    with contextlib.suppress(RoomError):
        parse_seat_list(seat_list_record(value))


@given(st.binary(max_size=80), st.integers(0, MAX_LAYER))
def test_parse_seat_of_raises_only_room_error(value: bytes, layer: int) -> None:
    peer = b"p" * 32
    good = Record.create(NODE, seat_of_key(ROOM, peer), seat_of_value(ROOM, peer, layer), 1, 10)
    assert parse_seat_of(good, ROOM, peer) == layer
    with contextlib.suppress(RoomError):
        parse_seat_of(Record.create(NODE, seat_of_key(ROOM, peer), value, 1, 10), ROOM, peer)


def test_presence_round_trip_and_checks() -> None:
    client = Identity.from_seed(b"c" * 32)
    room = room_key("https://example.org/")
    home = HomeNode(b"\x01" * 20, "ws://127.0.0.1:8000/v1/node")
    value = presence_value(room, 3, home)
    record = Record.create(client, layer_key(room, 3), value, seq=7, expires_at=1000)
    presence = parse_presence(record)
    assert (presence.room, presence.layer, presence.peer, presence.home) == (
        room,
        3,
        client.public_key,
        home,
    )
    assert presence.key == record.key and presence.expires_at == 1000 and presence.seq == 7
    moved = Record.create(client, layer_key(room, 4), value, seq=7, expires_at=1000)
    with pytest.raises(RoomError, match="another layer"):
        parse_presence(moved)
    junk = Record.create(client, layer_key(room, 3), b"{not json", seq=1, expires_at=1000)
    with pytest.raises(RoomError, match="not a presence"):
        parse_presence(junk)


def _spelled(text: str) -> st.SearchStrategy[str]:
    """`text` with any of its characters percent-escaped, in either case of hex digit."""

    def spell(modes: list[str]) -> str:
        out = []
        for char, mode in zip(text, modes, strict=True):
            if mode == "raw":
                out.append(char)
            else:
                hexes = (f"%{b:02x}" for b in char.encode())
                out.append("".join(h.upper() if mode == "upper" else h for h in hexes))
        return "".join(out)

    modes = st.sampled_from(["raw", "raw", "lower", "upper"])
    return st.lists(modes, min_size=len(text), max_size=len(text)).map(spell)


_CHARS = "abAB09_-.~!$'()*,;:@/?&=+#\\ %\"<>[]|^`{}\u00e9"
_COMPONENT = st.text(alphabet=_CHARS, max_size=8).flatmap(_spelled)
_NAME = st.one_of(
    st.sampled_from(["utm_source", "UTM_Medium", "fbclid", "gclid", "_ga", "mc_cid", "q", "id"]),
    st.text(alphabet=_CHARS, max_size=4),
).flatmap(_spelled)
_PAIR = st.builds(lambda n, sep, v: n + sep + v, _NAME, st.sampled_from(["", "="]), _COMPONENT)
URLS = st.builds(
    lambda host, path, pairs, fragment: f"https://{host}/{path}{pairs}{fragment}",
    st.sampled_from(["example.com", "E.com.", "example.com..", "[::1]", "127.1", "Bücher.de"]),
    _COMPONENT,
    st.one_of(st.just(""), st.lists(_PAIR, max_size=4).map(lambda ps: "?" + "&".join(ps))),
    st.sampled_from(["", "#f", "#a?b&utm_x=1"]),
)
"""Page URLs with escaped names and values (tracking names among them), escapes in either
case, escaped and raw "&", "=", "+", "#", backslashes, spaces, trailing dots."""


def tracking_left(canonical: str) -> list[str]:
    """The names of `canonical`'s query parameters that are tracking parameters."""
    query = canonical.partition("?")[2]
    names = [part.split("=", 1)[0].lower() for part in query.split("&") if part]
    return [n for n in names if n in TRACKING_PARAMETERS or n.startswith("utm_")]


@given(URLS)
def test_canonical_url_is_idempotent_and_leaves_no_tracking(url: str) -> None:
    once = canonical_url(url)
    assert canonical_url(once) == once
    assert tracking_left(once) == []


@given(st.text(max_size=300))
def test_canonical_url_only_raises_room_error(text: str) -> None:
    try:
        once = canonical_url(text)
    except RoomError:
        return
    assert canonical_url(once) == once


@given(st.binary(max_size=400))
def test_parse_presence_only_raises_room_error(value: bytes) -> None:
    client = Identity.from_seed(b"d" * 32)
    record = Record(b"\x00" * 20, client.public_key, 1, 10, value, b"\x00" * 64)
    with contextlib.suppress(RoomError):
        parse_presence(record)
