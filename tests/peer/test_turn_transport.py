"""Which TURN URL an aiortc link uses: aiortc takes the first one it finds, so
`PeerConfig.turn_transport` puts the node's URL of that transport first."""

from __future__ import annotations

import pytest

from peer.webrtc import ice_configuration, turn_kind

NODE = [
    {"urls": ["stun:relay.example.net:3478"]},
    {
        "urls": [
            "turn:relay.example.net:3478?transport=udp",
            "turn:relay.example.net:3478?transport=tcp",
            "turns:relay.example.net:443?transport=tcp",
        ],
        "username": "1700000000:ab",
        "credential": "c2VjcmV0",
    },
]


def first_turn(servers: list[dict[str, object]], transport: str = "") -> str:
    config = ice_configuration(servers, turn_transport=transport)
    for server in config.iceServers or []:
        urls = [server.urls] if isinstance(server.urls, str) else server.urls
        for url in urls:
            if url.startswith("turn"):
                return url
    raise AssertionError("no TURN URL")


@pytest.mark.parametrize(
    ("transport", "expected"),
    [
        ("", "turn:relay.example.net:3478?transport=udp"),
        ("udp", "turn:relay.example.net:3478?transport=udp"),
        ("tcp", "turn:relay.example.net:3478?transport=tcp"),
        ("tls", "turns:relay.example.net:443?transport=tcp"),
    ],
)
def test_the_chosen_transport_comes_first(transport: str, expected: str) -> None:
    assert first_turn(NODE, transport) == expected  # type: ignore[arg-type]


def test_credentials_stay_with_their_urls() -> None:
    config = ice_configuration(NODE, turn_transport="tls")
    turn = next(s for s in config.iceServers or [] if s.username)
    assert turn.credential == "c2VjcmV0" and len(turn.urls) == 3


def test_a_server_offering_the_transport_goes_before_one_that_does_not() -> None:
    servers = [
        {"urls": ["turn:a.example:3478?transport=udp"], "username": "u", "credential": "p"},
        {"urls": ["turns:b.example:443?transport=tcp"], "username": "v", "credential": "q"},
    ]
    assert first_turn(servers, "tls") == "turns:b.example:443?transport=tcp"  # type: ignore[arg-type]
    assert first_turn(servers, "tcp") == "turn:a.example:3478?transport=udp"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("turn:h:3478", "udp"),
        ("turn:h:3478?transport=udp", "udp"),
        ("turn:h:3478?transport=tcp", "tcp"),
        ("turns:h:443?transport=tcp", "tls"),
        ("turns:h", "tls"),
        ("stun:h:3478", None),
    ],
)
def test_turn_kind(url: str, kind: str | None) -> None:
    assert turn_kind(url) == kind
