"""`pagemesh simulate ...`: run a scenario file or sweep its parameters.

The only simulator module that reads the wall clock: progress (rich), events
per second and peak memory go to run.json, never into summary.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from .scenario import (
    SCENARIOS,
    ScenarioError,
    defaults,
    load_scenario,
    parse_sets,
    run,
    write_outputs,
)

SCENARIO_DIR = Path(__file__).parent / "scenarios"

SIM_EXTRA = "pip install 'pagemesh[sim]'"
"""Where the packages of runs and sweeps come from: a node's install has none of them."""


def missing_extras(scheduler: str | None) -> list[str]:
    """The optional packages a run or sweep needs and this install lacks: matplotlib draws
    every result's plots, Dask (dask.distributed) runs sweeps on a cluster."""
    needed = {"matplotlib": "matplotlib"}
    if scheduler is not None:
        needed |= {"dask": "dask", "distributed": "dask[distributed]"}
    # find_spec imports nothing: a node's `pagemesh` does not pay for what it lacks.
    return sorted(
        {label for name, label in needed.items() if importlib.util.find_spec(name) is None}
    )


def _refuse_without_extras(command: str, scheduler: str | None = None) -> bool:
    missing = missing_extras(scheduler)
    if missing:
        print(
            f"error: pagemesh simulate {command} needs {' and '.join(missing)}, not installed "
            f"here (a node's install leaves the simulator's packages out): {SIM_EXTRA}",
            file=sys.stderr,
        )
    return bool(missing)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    simulate = commands.add_parser("simulate", help="run the protocol in the simulator")
    sub = simulate.add_subparsers(dest="simulate_command", required=True, metavar="ACTION")

    one = sub.add_parser("run", help="run one scenario file")
    one.add_argument("file", type=Path, help="scenario TOML (see simulations/scenarios/)")
    one.add_argument("--out", type=Path, required=True, help="output directory")
    one.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="override a parameter"
    )
    one.add_argument("--quiet", action="store_true", help="no progress bar")
    one.set_defaults(run=_run_one)

    grid = sub.add_parser("sweep", help="run a scenario over a parameter grid")
    grid.add_argument("file", type=Path)
    grid.add_argument("--out", type=Path, required=True)
    grid.add_argument(
        "--param", action="append", default=[], metavar="NAME=V1,V2", help="a swept parameter"
    )
    grid.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    grid.add_argument("--workers", type=int, default=0, help="local processes (default: cores)")
    grid.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT", help="Dask cluster")
    grid.set_defaults(run=_run_sweep)

    listing = sub.add_parser("list", help="the bundled scenarios and their parameters")
    listing.set_defaults(run=_run_list)


def _peak_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def _run_one(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    if _refuse_without_extras("run"):
        return 2
    try:
        scenario = load_scenario(args.file, parse_sets(args.set))
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    rss_before = _peak_rss_bytes()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[sim]:>9.1f} s simulated"),
        TextColumn("{task.fields[rate]:>10,.0f} events/s"),
        TimeElapsedColumn(),
        disable=args.quiet,
    )
    with progress:
        task = progress.add_task(scenario.kind, total=1.0, sim=0.0, rate=0.0)

        def report(done: float, planned: float, events: int) -> None:
            elapsed = time.perf_counter() - started
            progress.update(
                task,
                completed=min(1.0, done / planned) if planned else 1.0,
                sim=done,
                rate=events / elapsed if elapsed > 0 else 0.0,
            )

        result = run(scenario, report)
    wall = time.perf_counter() - started
    written = write_outputs(result, args.out)
    nodes = result.summary.get("nodes") or scenario.params["nodes"]
    peak = _peak_rss_bytes()
    run_info: dict[str, Any] = {
        "scenario": scenario.kind,
        "file": str(args.file),
        "wall_seconds": round(wall, 3),
        "events": result.events,
        "events_per_second": round(result.events / wall, 1) if wall > 0 else None,
        "peak_rss_bytes": peak,
        "bytes_per_node": round((peak - rss_before) / nodes, 1) if nodes else None,
        "python": sys.version.split()[0],
    }
    (args.out / "run.json").write_text(json.dumps(run_info, indent=2) + "\n")
    if not args.quiet:
        print(f"{result.events} events in {wall:.1f} s -> {args.out}")
        for path in written:
            print(f"  {path}")
    return 0


def _run_sweep(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from .sweep import expand, parse_grid, run_sweep, write_sweep

    if _refuse_without_extras("sweep", args.scheduler):
        return 2
    try:
        base = load_scenario(args.file, parse_sets(args.set))
        grid = parse_grid(args.param)
        points = expand(base, grid)
    except (ScenarioError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    with Progress() as progress:
        task = progress.add_task(f"{base.kind} sweep", total=len(points))
        summaries = run_sweep(
            points,
            workers=args.workers,
            scheduler=args.scheduler,
            on_done=lambda done: progress.update(task, completed=done),
        )
    write_sweep(args.out, grid, summaries)
    wall = time.perf_counter() - started
    run_info = {
        "points": len(points),
        "wall_seconds": round(wall, 3),
        "scheduler": args.scheduler,
        "events": sum(s.get("events", 0) for s in summaries),
    }
    (args.out / "run.json").write_text(json.dumps(run_info, indent=2) + "\n")
    print(f"{len(points)} points in {wall:.1f} s -> {args.out / 'sweep.csv'}")
    return 0


def _run_list(args: argparse.Namespace) -> int:
    for kind in SCENARIOS:
        path = SCENARIO_DIR / f"{kind}.toml"
        params = ", ".join(f"{k}={v}" for k, v in sorted(defaults(kind).items()))
        print(f"{path}\n    {params}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m simulations.cli simulate ...` until pagemesh/cli.py registers us."""
    parser = argparse.ArgumentParser(prog="pagemesh")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
