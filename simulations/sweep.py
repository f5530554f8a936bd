"""Parameter sweeps: a grid of scenario runs on local processes or a Dask cluster.

`--param k=8,20 --param nodes=500,1000` expands to the Cartesian product; each
point is one scenario run with those overrides (seed included, so a sweep over
seeds gives replicas). Points run in a process pool by default, or as Dask
tasks when a scheduler address is given. Results merge into one table
(`sweep.csv`, one row per point, every numeric summary metric flattened to a
dotted column name), `sweep.json`, and plots of the headline metrics against
the first swept parameter.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from .scenario import Plot, Scenario, make_scenario, parse_value, run

HEADLINES = {
    "growth": ["lookup.success_rate", "lookup.hops.mean", "lookup.latency_s.p50"],
    "churn": ["lookup.success_rate", "records.availability", "lookup.latency_s.p50"],
    "rooms": ["join.dht_messages.mean", "join.latency_s.p50", "load.served_max_over_mean"],
    "nat": ["connections.relayed_share", "relays.bandwidth_bps.max"],
    "sybil": ["reads.honest_share", "reads.success_rate"],
}


def parse_grid(items: Iterable[str]) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not values:
            raise ValueError(f"--param takes name=v1,v2,..., got {item!r}")
        grid[name.strip()] = [parse_value(v.strip()) for v in values.split(",")]
    return grid


def expand(base: Scenario, grid: dict[str, list[Any]]) -> list[Scenario]:
    names = list(grid)
    points = []
    for values in itertools.product(*(grid[n] for n in names)):
        overrides = {**base.params, **dict(zip(names, values, strict=True))}
        points.append(make_scenario(base.kind, overrides, base.description))
    return points


def run_point(scenario: Scenario) -> dict[str, Any]:
    """One grid point; module-level so process pools and Dask can pickle it."""
    return run(scenario).summary


def flatten(summary: dict[str, Any], prefix: str = "") -> dict[str, float | int]:
    flat: dict[str, float | int] = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = value
    return flat


def run_sweep(
    points: list[Scenario],
    workers: int = 0,
    scheduler: str | None = None,
    on_done: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Summaries of every point, in grid order."""
    if scheduler is not None:
        from dask.distributed import Client, as_completed

        with Client(scheduler) as client:
            futures = client.map(run_point, points, pure=False)
            for done, _ in enumerate(as_completed(futures), 1):
                if on_done is not None:
                    on_done(done)
            return list(client.gather(futures))
    if workers == 1 or len(points) == 1:
        results = []
        for i, point in enumerate(points, 1):
            results.append(run_point(point))
            if on_done is not None:
                on_done(i)
        return results
    with ProcessPoolExecutor(max_workers=workers or None) as pool:
        futures = [pool.submit(run_point, p) for p in points]
        results = []
        for i, future in enumerate(futures, 1):
            results.append(future.result())
            if on_done is not None:
                on_done(i)
        return results


def merge(grid: dict[str, list[Any]], summaries: list[dict[str, Any]]) -> tuple[str, list[Plot]]:
    """The sweep table as CSV text, and headline plots against the first parameter."""
    rows = [flatten(s) for s in summaries]
    swept = [f"params.{name}" for name in grid]
    columns = swept + sorted({c for r in rows for c in r} - set(swept))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    plots = []
    kind = summaries[0]["scenario"] if summaries else ""
    first = swept[0] if swept else None
    for metric in HEADLINES.get(kind, []):
        if first is None or not all(metric in r for r in rows):
            continue
        series: dict[str, tuple[list[float], list[float]]] = {}
        for row in rows:
            label = ", ".join(f"{c[7:]}={row.get(c)}" for c in swept[1:]) or metric
            xs, ys = series.setdefault(label, ([], []))
            xs.append(float(row[first]))
            ys.append(float(row[metric]))
        lines = [(label, xs, ys) for label, (xs, ys) in series.items()]
        plots.append(Plot(f"sweep_{metric}", metric, first[7:], metric, lines))
    return out.getvalue(), plots


def write_sweep(out: Path, grid: dict[str, list[Any]], summaries: list[dict[str, Any]]) -> None:
    from .plots import render

    out.mkdir(parents=True, exist_ok=True)
    table, plots = merge(grid, summaries)
    (out / "sweep.csv").write_text(table)
    body = {"grid": grid, "points": summaries}
    (out / "sweep.json").write_text(json.dumps(body, sort_keys=True, indent=2) + "\n")
    for plot in plots:
        render(plot, out / f"{plot.name}.png")


__all__ = ["expand", "flatten", "merge", "parse_grid", "run_sweep", "write_sweep"]
