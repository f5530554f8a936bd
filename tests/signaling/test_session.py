"""The client session core on a virtual clock: hello, limits, error frames, idle timeout."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dht.identity import Identity, verify_signature
from signaling.protocol import (
    MIN_CLIENT_VERSION,
    PROTOCOL_VERSION,
    ErrorCode,
    FrameError,
    Join,
    Leave,
    Ping,
    Signal,
    hello_message,
    parse_client_frame,
    serialize,
)
from signaling.session import (
    CLOSE_IDLE,
    CLOSE_POLICY,
    CLOSE_TOO_OLD,
    Authenticated,
    ClientSession,
    SessionLimits,
    State,
)

NODE_ID = bytes(range(20))
NONCE = b"\x07" * 32
ROOM = "ab" * 20
CLIENT = Identity.from_seed(b"k" * 32)


def frames(session: ClientSession) -> list[dict[str, object]]:
    return [json.loads(serialize(f)) for f in session.frames_to_send()]


def hello(
    identity: Identity = CLIENT, nonce: bytes = NONCE, node: bytes = NODE_ID, v: object = None
) -> str:
    """A hello; `v` the protocol version it announces (None: none, as version 1 clients)."""
    sig = identity.sign(hello_message(nonce, node))
    frame = {
        "type": "hello",
        "key": identity.public_key.hex(),
        "sig": base64.b64encode(sig).decode(),
    }
    if v is not None:
        frame["v"] = v
    return json.dumps(frame)


def session(limits: SessionLimits | None = None, now: float = 0.0) -> ClientSession:
    return ClientSession(NODE_ID, NONCE, limits or SessionLimits(), verify_signature, now)


def open_session(limits: SessionLimits | None = None) -> ClientSession:
    s = session(limits)
    s.receive(hello(), 0.0)
    assert s.next_event() == Authenticated(CLIENT.public_key, None)
    s.frames_to_send()
    return s


def test_challenge_then_hello_authenticates() -> None:
    s = session()
    (challenge,) = frames(s)
    assert challenge == {
        "type": "challenge",
        "version": PROTOCOL_VERSION,
        "nonce": NONCE.hex(),
        "node": NODE_ID.hex(),
    }
    s.receive(hello(), 1.0)
    assert s.state is State.OPEN and s.key == CLIENT.public_key


@pytest.mark.parametrize(
    "text",
    [
        hello(nonce=b"\x08" * 32),  # signed another nonce
        hello(node=b"\x01" * 20),  # signed for another node
        hello().replace(CLIENT.public_key.hex(), Identity.from_seed(b"x" * 32).public_key.hex()),
    ],
)
def test_forged_hello_is_refused(text: str) -> None:
    s = session()
    s.frames_to_send()
    s.receive(text, 1.0)
    assert s.state is State.AWAIT_HELLO and s.next_event() is None
    assert [f["code"] for f in frames(s)] == ["bad-signature"]


def test_nothing_but_hello_before_authentication() -> None:
    s = session()
    s.frames_to_send()
    s.receive(json.dumps({"type": "join", "room": ROOM}), 1.0)
    s.receive(json.dumps({"type": "ping"}), 1.0)
    assert [f["code"] for f in frames(s)] == ["not-authenticated"] * 2
    assert s.next_event() is None


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        ("{not json", ErrorCode.BAD_JSON, "not JSON"),
        ("[1, 2]", ErrorCode.BAD_FRAME, "JSON object"),
        ('{"type": 7}', ErrorCode.BAD_FRAME, "string field 'type'"),
        ('{"type": "dance"}', ErrorCode.UNKNOWN_TYPE, "unknown frame type 'dance'"),
        ('{"type": "join"}', ErrorCode.BAD_FIELD, "join: missing field 'room'"),
        ('{"type": "join", "room": "zz"}', ErrorCode.BAD_FIELD, "join.room: expected 40 hex"),
        (f'{{"type": "join", "room": "{ROOM}", "layer": -1}}', ErrorCode.BAD_FIELD, "join.layer"),
        (f'{{"type": "join", "room": "{ROOM}", "layer": true}}', ErrorCode.BAD_FIELD, "join.layer"),
        (
            '{"type": "signal", "to": "' + "cd" * 32 + '", "payload": 5}',
            ErrorCode.BAD_FIELD,
            "payload",
        ),
        ('{"type": "ping", "id": "' + "x" * 65 + '"}', ErrorCode.BAD_FIELD, "ping.id"),
        ('{"type": "signed", "id": 1, "sig": "!!"}', ErrorCode.BAD_FIELD, "signed.sig"),
    ],
)
def test_bad_frames_get_typed_errors_and_the_connection_stays(
    text: str, code: ErrorCode, message: str
) -> None:
    with pytest.raises(FrameError, match=message) as caught:
        parse_client_frame(text, 65536)
    assert caught.value.code is code
    s = open_session()
    s.receive(text, 1.0)
    (error,) = frames(s)
    assert error["type"] == "error" and error["code"] == code.value
    s.receive('{"type": "ping", "id": 9}', 1.0)
    assert frames(s) == [{"type": "pong", "id": 9}]
    assert s.state is State.OPEN


def test_error_echoes_the_request_id() -> None:
    s = open_session()
    s.receive('{"type": "join", "id": "j1", "room": "short"}', 1.0)
    assert frames(s)[0]["id"] == "j1"


def test_frame_size_limit() -> None:
    s = open_session(SessionLimits(max_frame_bytes=200))
    s.receive(json.dumps({"type": "ping", "id": "x" * 300}), 1.0)
    assert frames(s)[0]["code"] == "too-large"
    s.receive('{"type": "ping"}', 1.0)
    assert frames(s) == [{"type": "pong"}]


def test_frames_per_second_on_virtual_time() -> None:
    s = open_session(SessionLimits(frames_per_second=10, frame_burst=5, error_burst=100))
    for _ in range(5):
        s.receive('{"type": "ping"}', 10.0)
    s.receive('{"type": "ping"}', 10.0)
    assert [f["type"] for f in frames(s)] == ["pong"] * 5 + ["error"]
    s.receive('{"type": "ping"}', 10.05)  # half a token: still limited
    assert frames(s)[0]["code"] == "rate-limited"
    s.receive('{"type": "ping"}', 10.2)  # refilled
    assert frames(s) == [{"type": "pong"}]


def test_repeated_abuse_closes_with_a_reason() -> None:
    s = open_session(SessionLimits(error_burst=3, frame_burst=100))
    for _ in range(3):
        s.receive("junk", 5.0)
    assert s.state is State.OPEN
    s.receive("junk", 5.0)
    assert s.state is State.CLOSED
    assert s.close_reason is not None and s.close_reason[0] == CLOSE_POLICY
    assert "abuse" in s.close_reason[1]
    s.receive('{"type": "ping"}', 5.0)
    assert [f["code"] for f in frames(s)] == ["bad-json"] * 4


def test_errors_are_forgiven_over_time() -> None:
    s = open_session(SessionLimits(error_burst=3, frame_burst=100))
    for second in range(20):
        s.receive("junk", float(second))
    assert s.state is State.OPEN


def test_rooms_per_connection() -> None:
    s = open_session(SessionLimits(max_rooms=2))
    rooms = [f"{i:040x}" for i in range(3)]
    for room in rooms:
        s.receive(json.dumps({"type": "join", "id": room[-1], "room": room}), 1.0)
    assert [type(e) for e in iter(s.next_event, None)] == [Join, Join]
    assert frames(s)[0]["code"] == "too-many-rooms"
    s.rooms.discard(bytes.fromhex(rooms[0]))  # the node drops a room on leave or failed join
    s.receive(json.dumps({"type": "join", "room": rooms[2]}), 1.0)
    assert isinstance(s.next_event(), Join)


def test_leave_and_signal_need_the_room() -> None:
    s = open_session()
    s.receive(json.dumps({"type": "leave", "room": ROOM}), 1.0)
    s.receive(json.dumps({"type": "signal", "to": "cd" * 32, "payload": {}, "room": ROOM}), 1.0)
    assert [f["code"] for f in frames(s)] == ["not-in-room"] * 2
    s.rooms.add(bytes.fromhex(ROOM))
    s.receive(json.dumps({"type": "leave", "room": ROOM}), 1.0)
    assert isinstance(s.next_event(), Leave)


def test_signal_peers_per_window() -> None:
    limits = SessionLimits(signal_peers=3, signal_window=10.0, frame_burst=100)
    s = open_session(limits)
    s.rooms.add(bytes.fromhex(ROOM))

    def signal(peer: int, payload: str, now: float) -> None:
        frame = {"type": "signal", "to": f"{peer:064x}", "payload": payload, "room": ROOM}
        s.receive(json.dumps(frame), now)

    for peer in range(4):
        signal(peer, "x", 1.0)
    assert len([e for e in iter(s.next_event, None) if isinstance(e, Signal)]) == 3
    assert frames(s)[0]["code"] == "too-many-peers"
    signal(0, "again", 2.0)
    assert isinstance(s.next_event(), Signal)  # a known peer is fine
    signal(9, "x", 12.0)
    assert isinstance(s.next_event(), Signal)  # the window has moved on


def test_a_signal_names_its_room() -> None:
    s = open_session()
    s.receive(json.dumps({"type": "signal", "to": "cd" * 32, "payload": {}}), 1.0)
    assert frames(s)[0]["message"] == "signal: missing field 'room'"


def test_idle_timeout_on_virtual_time() -> None:
    s = open_session(SessionLimits(idle_timeout=30.0))
    s.receive('{"type": "ping"}', 20.0)
    s.frames_to_send()
    assert s.get_timer() == 30.0  # a probe first (see below), the close at 50
    s.handle_timer(30.0)
    s.handle_timer(40.0)
    assert s.get_timer() == 50.0
    s.handle_timer(49.9)
    assert s.state is State.OPEN
    s.handle_timer(50.0)
    assert s.state is State.CLOSED and s.close_reason is not None
    assert s.close_reason[0] == CLOSE_IDLE
    assert frames(s)[0]["code"] == "idle"
    assert s.get_timer() is None


# --- liveness: WebSocket PINGs to a quiet client (docs/protocol.md 3.1) -----------------


def run_timer(s: ClientSession, until: float) -> list[float]:
    """Fire the session's timer whenever it is due up to `until`; when it probed."""
    probes = []
    for _ in range(1000):  # a round limit against a timer that never moves on
        due = s.get_timer()
        if due is None or due > until:
            return probes
        s.handle_timer(due)
        if s.take_probe():
            probes.append(due)
    raise AssertionError("the timer did not move on")


def test_a_quiet_client_is_probed_every_third_and_closed_at_the_idle_timeout() -> None:
    s = open_session(SessionLimits(idle_timeout=30.0))
    assert run_timer(s, 100.0) == [10.0, 20.0]
    assert s.close_reason == (CLOSE_IDLE, "idle: no frame in 30 s")
    assert not s.take_probe()


def test_a_pong_keeps_a_client_that_sends_nothing_else() -> None:
    """A hidden page: its timers are asleep, its WebSocket answers every PING."""
    s = open_session(SessionLimits(idle_timeout=30.0))
    probes = []
    for _ in range(30):
        probes += run_timer(s, s.get_timer() or 0.0)
        s.receive_pong(probes[-1] + 0.05)
    assert s.state is State.OPEN and frames(s) == []
    assert probes[:3] == pytest.approx([10.0, 20.05, 30.1])
    assert len(probes) == 30  # one probe per third of the idle timeout, no more


def test_any_frame_postpones_the_probe() -> None:
    s = open_session(SessionLimits(idle_timeout=30.0))
    s.receive('{"type": "ping"}', 8.0)
    assert s.get_timer() == 18.0
    assert s.receive_ping(12.0)
    assert s.get_timer() == 22.0
    s.handle_timer(21.9)
    assert not s.take_probe()


def test_what_a_client_sends_never_makes_a_probe() -> None:
    s = open_session(SessionLimits(idle_timeout=30.0, frame_burst=1000.0))
    for i in range(500):
        now = i * 0.01
        s.receive_pong(now)
        s.receive_ping(now)
        s.receive('{"type": "ping"}', now)
        s.handle_timer(now)
        assert not s.take_probe()
    assert run_timer(s, 100.0) == pytest.approx([14.99, 24.99])


def test_before_the_hello_there_are_no_probes_and_pongs_do_not_count() -> None:
    s = session(SessionLimits(idle_timeout=30.0))
    s.frames_to_send()
    s.receive_pong(20.0)
    assert s.receive_ping(25.0)  # answered, but it is no hello either
    assert s.get_timer() == 30.0
    assert run_timer(s, 100.0) == []
    assert s.close_reason is not None and s.close_reason[0] == CLOSE_IDLE


def test_client_pings_cost_the_frame_rate_and_a_flood_is_closed() -> None:
    s = open_session(SessionLimits(frames_per_second=20.0, frame_burst=40.0, error_burst=5.0))
    answered = sum(s.receive_ping(1.0) for _ in range(100))
    assert answered == 40
    assert {f["code"] for f in frames(s)} == {"rate-limited"}
    assert s.close_reason is not None and s.close_reason[0] == CLOSE_POLICY
    assert not s.receive_ping(100.0)  # closed: nothing more is answered


def test_ping_is_answered_by_the_core() -> None:
    s = open_session()
    s.receive('{"type": "ping", "id": "p"}', 1.0)
    assert frames(s) == [{"type": "pong", "id": "p"}]
    assert s.next_event() is None
    assert not isinstance(s.next_event(), Ping)


# --- protocol versions (docs/protocol.md 3.1) -------------------------------------------


@pytest.mark.parametrize("v", [None, MIN_CLIENT_VERSION, PROTOCOL_VERSION, PROTOCOL_VERSION + 5])
def test_versions_from_the_oldest_served_up_are_welcome(v: int | None) -> None:
    """A hello without `v` is a version 1 client; a client newer than the node is served
    too (it speaks the node's version, which the challenge and welcome name)."""
    s = session()
    s.frames_to_send()
    s.receive(hello(v=v), 1.0)
    assert s.state is State.OPEN
    assert s.next_event() == Authenticated(CLIENT.public_key, None)
    assert frames(s) == []


def test_a_client_older_than_the_node_serves_gets_too_old_and_is_closed() -> None:
    limits = SessionLimits(min_client_version=PROTOCOL_VERSION)
    for v in (None, PROTOCOL_VERSION - 1):
        announced = 1 if v is None else v
        s = session(limits)
        s.frames_to_send()
        s.receive(hello(v=v), 1.0)
        assert frames(s) == [
            {
                "type": "error",
                "code": "too-old",
                "message": f"protocol version {announced} is older than this node "
                f"serves ({PROTOCOL_VERSION} to {PROTOCOL_VERSION})",
            }
        ]
        assert s.state is State.CLOSED and s.key is None
        assert s.close_reason is not None and s.close_reason[0] == CLOSE_TOO_OLD
        assert s.next_event() is None


@pytest.mark.parametrize("v", [0, -1, "2", True, 1.5, 2**31])
def test_a_malformed_version_is_a_bad_field(v: object) -> None:
    s = session()
    s.frames_to_send()
    s.receive(hello(v=v), 1.0)
    (frame,) = frames(s)
    assert frame["code"] == "bad-field" and "hello.v" in str(frame["message"])
    assert s.state is State.AWAIT_HELLO


# --- fuzz: any input gives an error frame or an event, never an exception --------------

VALID = [
    hello(),
    json.dumps({"type": "join", "room": ROOM, "layer": 2, "id": 1}),
    json.dumps({"type": "signal", "to": "cd" * 32, "payload": {"sdp": "v=0"}, "id": "s"}),
    json.dumps({"type": "members", "room": ROOM}),
    json.dumps({"type": "signed", "id": "sign-1", "sig": base64.b64encode(b"s" * 64).decode()}),
    json.dumps({"type": "ice-servers"}),
]


def mutate(text: str, data: st.DataObject) -> str:
    raw = bytearray(text.encode())
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del raw[pos:]
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    return raw.decode("utf-8", "replace")


@settings(max_examples=300)
@given(st.data())
def test_mutated_frames_never_raise(data: st.DataObject) -> None:
    s = open_session(SessionLimits(frame_burst=1000, error_burst=1000))
    for _ in range(data.draw(st.integers(1, 5))):
        s.receive(mutate(data.draw(st.sampled_from(VALID)), data), 1.0)
    for frame in frames(s):
        assert frame["type"] in {"error", "pong"}


@settings(max_examples=300)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_any_json_value_never_raises(value: object) -> None:
    s = open_session(SessionLimits(frame_burst=1000, error_burst=1000))
    s.receive(json.dumps(value), 1.0)
    if isinstance(value, dict):
        s.receive(json.dumps({**value, "type": "join"}), 1.0)
        s.receive(json.dumps({**value, "type": "signal"}), 1.0)
