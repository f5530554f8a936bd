"""A member's control channel (docs/protocol.md 5.0): any input is a JSON object within
the bounds or a ControlFrameRejected, never another exception (hypothesis generates)."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.webrtc import (
    MAX_CONTROL_DEPTH,
    MAX_CONTROL_FRAME,
    ControlFrameRejected,
    parse_control_frame,
)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=30,
)
STRUCTURAL = st.text(alphabet='[]{}",:\\ 01tfn\u00e9', max_size=400)


def parse(data: str | bytes) -> dict[str, object] | str:
    try:
        return parse_control_frame(data)
    except ControlFrameRejected as exc:
        return exc.code


@given(st.text() | STRUCTURAL | st.binary())
def test_any_input_is_an_object_or_a_typed_rejection(data: str | bytes) -> None:
    got = parse(data)
    assert isinstance(got, dict) or got in (
        "too_large",
        "too_deep",
        "not_utf8",
        "not_json",
        "not_object",
    )


@given(st.dictionaries(st.text(), JSON))
def test_objects_within_the_bounds_round_trip(frame: dict[str, object]) -> None:
    text = json.dumps(frame)
    assert parse(text) == frame
    assert parse(text.encode()) == frame


def depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


@given(st.integers(1, 40), st.sampled_from(["[", '{"a":']), st.text(max_size=20))
def test_nesting_is_bounded_and_strings_do_not_count(levels: int, opener: str, s: str) -> None:
    closer = "]" if opener == "[" else "}"
    text = '{"t":' + opener * levels + json.dumps(s) + closer * levels + "}"
    got = parse(text)
    assert (got == "too_deep") == (levels + 1 > MAX_CONTROL_DEPTH)
    if isinstance(got, dict):
        assert depth(got) == levels + 1
    assert isinstance(parse(json.dumps({"t": "[" * 1000 + "{" * 1000})), dict)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 200_000,
        "[" * 100_000 + "]" * 100_000,
        '{"t":' * 40_000 + "1" + "}" * 40_000,
        '{"a":"' + "x" * 100 + '",' + '"b":[' * 50_000,
        "[" * 17 + '"\\' * 100_000,  # an unterminated string after the brackets
        '"\\"' * 80_000 + "[" * 17,
    ],
)
def test_deep_and_pathological_frames_are_refused_quickly(text: str) -> None:
    start = time.perf_counter()
    assert parse(text) in ("too_deep", "not_json")
    assert time.perf_counter() - start < 0.5


def test_sizes() -> None:
    big = json.dumps({"t": "x", "pad": "a" * MAX_CONTROL_FRAME})
    assert parse(big) == "too_large" and parse(big.encode()) == "too_large"
    assert parse("[]") == "not_object" and parse("1") == "not_object"
    assert parse("1" * 5000) == "not_json"  # over Python's integer-string limit
    assert parse(b"\xff") == "not_utf8" and parse("") == "not_json"
