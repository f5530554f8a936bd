"""Small deterministic statistics for summaries: percentiles, histograms, time series."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 100]) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return float(ordered[rank - 1])


def describe(values: Sequence[float], digits: int = 6) -> dict[str, float | int | None]:
    """count, mean, p50, p90, p99 and max of `values`, rounded to `digits`."""
    if not values:
        return {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    return {
        "count": len(values),
        "mean": rnd(sum(values) / len(values), digits),
        "p50": rnd(percentile(values, 50), digits),
        "p90": rnd(percentile(values, 90), digits),
        "p99": rnd(percentile(values, 99), digits),
        "max": rnd(max(values), digits),
    }


def histogram(values: Iterable[int]) -> dict[str, int]:
    """Counts of each integer value, keys as strings in ascending order (JSON-friendly)."""
    counts: dict[int, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return {str(v): counts[v] for v in sorted(counts)}


def rnd(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)


def ratio(part: float, whole: float, digits: int = 6) -> float | None:
    return None if not whole else round(part / whole, digits)


class Series:
    """A time series: one row (a dict with the same keys) per sample."""

    def __init__(self, name: str, columns: Sequence[str]) -> None:
        self.name = name
        self.columns = list(columns)
        self.rows: list[list[float | int | None]] = []

    def add(self, **values: float | int | None) -> None:
        self.rows.append([values.get(c) for c in self.columns])

    def column(self, name: str) -> list[float | int | None]:
        index = self.columns.index(name)
        return [row[index] for row in self.rows]

    def to_csv(self) -> str:
        lines = [",".join(self.columns)]
        for row in self.rows:
            lines.append(",".join("" if v is None else _fmt(v) for v in row))
        return "\n".join(lines) + "\n"


def _fmt(value: float | int) -> str:
    if isinstance(value, float):
        return repr(round(value, 6))
    return str(value)


__all__ = ["Series", "describe", "histogram", "percentile", "ratio", "rnd"]
