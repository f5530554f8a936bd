"""The session's bounds on opaque record requests (docs/protocol.md 7.3), on virtual time:
their own bucket, at most `max_record_ops` being answered, typed errors; a hello first."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from signaling.protocol import GetRecord, PutRecord, serialize
from signaling.session import SessionLimits

from .test_session import frames, open_session, session

KEY, PUBLISHER = "11" * 20, "22" * 32


def get(n: int) -> str:
    return json.dumps({"type": "get-record", "key": KEY, "publisher": PUBLISHER, "id": n})


def test_before_the_hello_nothing_is_asked_of_the_dht() -> None:
    s = session()
    s.frames_to_send()
    s.receive(get(1), 0.0)
    assert s.next_event() is None
    assert [f["code"] for f in frames(s)] == ["not-authenticated"]


def test_at_most_max_record_ops_at_once_and_the_bucket_over_time() -> None:
    limits = SessionLimits(max_record_ops=3, records_per_second=1.0, record_burst=5)
    s = open_session(limits)
    for n in range(5):
        s.receive(get(n), 0.0)
    handed = []
    while (event := s.next_event()) is not None:
        handed.append(event)
    assert [type(e) for e in handed] == [GetRecord] * 3 and s.record_ops == 3
    assert [(f["code"], f["id"]) for f in frames(s)] == [("rate-limited", 3), ("rate-limited", 4)]
    for _ in handed:
        s.record_done()
    assert s.record_ops == 0
    for n in (5, 6, 7):  # two tokens left of the burst: those refused at the cap cost none
        s.receive(get(n), 0.0)
    assert [(f["code"], f["id"]) for f in frames(s)] == [("rate-limited", 7)]
    assert isinstance(s.next_event(), GetRecord) and isinstance(s.next_event(), GetRecord)
    s.receive(get(8), 1.01)  # a token a second
    assert isinstance(s.next_event(), GetRecord) and frames(s) == []


@settings(max_examples=100)
@given(st.lists(st.tuples(st.floats(0, 5), st.booleans()), max_size=60))
def test_never_more_ops_than_allowed_whatever_the_client_does(
    steps: list[tuple[float, bool]],
) -> None:
    limits = SessionLimits(max_record_ops=4, records_per_second=2.0, record_burst=8)
    s, now, outstanding = open_session(limits), 0.0, 0
    for gap, done in steps:
        now += gap
        if done and outstanding:
            s.record_done()
            outstanding -= 1
        s.receive(get(1), now)
        while (event := s.next_event()) is not None:
            assert isinstance(event, GetRecord | PutRecord)
            outstanding += 1
        assert s.record_ops == outstanding <= limits.max_record_ops
        s.frames_to_send()
    assert serialize  # the codec the session answers with
