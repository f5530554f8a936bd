"""Huge pages for large runs (simulations/memory.py): which mappings are advised, and a
real call on this process."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulations.memory import HUGE_PAGE, anonymous_ranges, use_huge_pages

MAPS = """\
00400000-00421000 r-xp 00000000 fd:01 1234   /usr/bin/python3.11
00621000-00822000 rw-p 00021000 fd:01 1234   /usr/bin/python3.11
01000000-05000000 rw-p 00000000 00:00 0      [heap]
7f0000000000-7f0000600000 rw-p 00000000 00:00 0
7f0000600000-7f0000700000 rw-p 00000000 00:00 0
7f0000800000-7f0000c00000 rw-s 00000000 00:05 77   /dev/shm/x
7f0001000000-7f0001400000 r--p 00000000 00:00 0
7ffd00000000-7ffd00400000 rw-p 00000000 00:00 0      [stack]
"""


def test_only_private_writable_anonymous_mappings_and_the_heap_are_advised() -> None:
    assert anonymous_ranges(MAPS) == [
        (0x01000000, 0x05000000),  # [heap]
        (0x7F0000000000, 0x7F0000600000),  # anonymous, three huge pages
        # a 1 MiB mapping holds no huge page; shared, read-only, file and stack: never
    ]


@given(st.integers(0, 2**40), st.integers(0, 2**26))
def test_advised_ranges_are_aligned_and_inside_their_mapping(start: int, size: int) -> None:
    line = f"{start:x}-{start + size:x} rw-p 00000000 00:00 0\n"
    for low, high in anonymous_ranges(line):
        assert low % HUGE_PAGE == 0 and high % HUGE_PAGE == 0
        assert start <= low < high <= start + size


def test_a_line_that_is_not_a_mapping_is_skipped() -> None:
    assert anonymous_ranges("garbage\n\n7f-7e\nzz-yy rw-p 0 00:00 0\n1-2 rw 0 0 0\n") == []


@given(st.text())
def test_any_text_is_read_without_an_error(text: str) -> None:
    anonymous_ranges(text)


def test_turned_off_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAGEMESH_HUGE_PAGES", "0")
    advised = use_huge_pages()
    assert advised.bytes == 0 and advised.why_not == "PAGEMESH_HUGE_PAGES=0"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's madvise")
def test_this_process_heap_is_advised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAGEMESH_HUGE_PAGES", raising=False)
    keep = bytearray(8 * HUGE_PAGE)  # a malloc'd block of its own mapping, at least
    advised = use_huge_pages()
    assert advised.why_not == "" and advised.mappings >= 1
    assert advised.bytes >= 4 * HUGE_PAGE and advised.refused <= advised.mappings
    del keep
