"""Huge pages for the simulator's heap: fewer address translations for a run bound by
memory reads.

A 10^6-node run keeps some 12 GB of nodes, cores, tables and contacts and reads them
at random: each answer to a find_node touches a few dozen contacts of another node,
each a first touch somewhere in the heap (docs/simulation.md, "Scale and cost").
With the kernel's 4 KiB pages nearly every such read also misses the TLB, and the page
walk itself misses the cache (the page tables of 12 GB are 24 MB). Linux backs an
anonymous mapping with 2 MiB pages when asked (`madvise(MADV_HUGEPAGE)`, honoured when
/sys/kernel/mm/transparent_hugepage/enabled is `always` or `madvise`, Debian's
default) and since 6.1 collapses what is already there (`MADV_COLLAPSE`).

`use_huge_pages` asks for both on every private, writable, anonymous mapping of the
process big enough to hold a huge page: pymalloc's arenas, malloc's heap and its large
blocks. Nothing a run computes depends on it; it only moves time and resident memory
(a huge page is resident whole). Elsewhere than Linux, or where the kernel refuses, it
does nothing and says so in what it returns. `PAGEMESH_HUGE_PAGES=0` turns it off (the
benchmark's before/after).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from dataclasses import dataclass

HUGE_PAGE = 2 << 20
MADV_HUGEPAGE = 14
MADV_COLLAPSE = 25
ENV = "PAGEMESH_HUGE_PAGES"


@dataclass(frozen=True)
class Advised:
    """What one call did: bytes advised, and of them the ranges the kernel refused."""

    bytes: int = 0
    mappings: int = 0
    refused: int = 0
    why_not: str = ""


def enabled() -> bool:
    return os.environ.get(ENV, "1") != "0"


def anonymous_ranges(maps: str) -> list[tuple[int, int]]:
    """Huge-page-aligned [start, end) within each private, writable, anonymous mapping
    of a /proc/PID/maps text (`[heap]` included; files, stacks and vdso not)."""
    ranges = []
    for line in maps.splitlines():
        fields = line.split()
        if len(fields) < 5 or not fields[1].startswith("rw") or fields[1][3:4] != "p":
            continue
        name = fields[5] if len(fields) > 5 else ""
        if name and name != "[heap]":
            continue
        low, _, high = fields[0].partition("-")
        try:
            start = -(-int(low, 16) // HUGE_PAGE) * HUGE_PAGE
            end = int(high, 16) // HUGE_PAGE * HUGE_PAGE
        except ValueError:
            continue
        if end - start >= HUGE_PAGE:
            ranges.append((start, end))
    return ranges


def use_huge_pages() -> Advised:
    """Ask for huge pages on the heap as it is now (module docstring)."""
    if not enabled():
        return Advised(why_not=f"{ENV}=0")
    if not sys.platform.startswith("linux"):
        return Advised(why_not=sys.platform)
    try:
        with open("/proc/self/maps") as maps:
            ranges = anonymous_ranges(maps.read())
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except OSError as exc:
        return Advised(why_not=str(exc))
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    total = refused = 0
    for start, end in ranges:
        # MADV_HUGEPAGE: later faults in the mapping get huge pages; MADV_COLLAPSE: the
        # pages already there are copied into huge ones now (6.1 and later).
        if madvise(start, end - start, MADV_HUGEPAGE) or madvise(start, end - start, MADV_COLLAPSE):
            refused += 1
        total += end - start
    return Advised(total, len(ranges), refused)


__all__ = ["Advised", "anonymous_ranges", "enabled", "use_huge_pages"]
