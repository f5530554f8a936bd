"""Scenarios: TOML parameter files, overrides, the shared world they run in, their outputs.

A scenario file is flat TOML: `scenario = "growth"` names the model, an
optional `description`, and every other key is a parameter. Each scenario
module declares its parameters and defaults (`DEFAULTS`); a file may set any
of them and `--set name=value` may override any of them, with the value
parsed as TOML and coerced to the default's type. The node count is `nodes`
everywhere.

A run returns a `Result`: the summary (only simulated quantities, so the same
file and seed give a byte-identical summary.json), time series (CSV) and
plots (PNG). Wall-clock measurements belong to the CLI (run.json).
"""

from __future__ import annotations

import gc
import importlib
import json
import random
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dht.core import DHTConfig

from .engine import Engine
from .memory import use_huge_pages
from .metrics import Series
from .network import NetworkModel
from .oracle import IdSpace, fill_near_contacts, fill_routing_tables
from .overlay import EPOCH, Overlay, SimNode

SCENARIOS = ("growth", "churn", "rooms", "nat", "sybil", "messaging")

COMMON: dict[str, Any] = {
    "nodes": 1000,
    "seed": 1,
    "k": 20,
    "alpha": 3,
    "rpc_timeout": 2.0,
    "transport": "message",
    "identities": "sim",
    "loss": 0.0,
    "jitter_ms": 5.0,
    "sample_every": 10.0,
    "fast": False,
}
"""Parameters every scenario takes. `fast` turns on the DHT's and the room core's fast
paths (docs/protocol.md 1.10, docs/simulation.md "Fast paths")."""

Progress = Callable[[float, float, int], None]
"""(simulated seconds done, simulated seconds planned, events so far)."""


class ScenarioError(ValueError):
    """A scenario file or override that cannot be used (the message says why)."""


@dataclass
class Plot:
    """A figure to draw: named lines (x, y) or bars."""

    name: str
    title: str
    xlabel: str
    ylabel: str
    lines: list[tuple[str, list[float], list[float]]] = field(default_factory=list)
    kind: str = "line"
    logy: bool = False


@dataclass
class Result:
    summary: dict[str, Any]
    series: list[Series] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    events: int = 0


@dataclass
class Scenario:
    kind: str
    params: dict[str, Any]
    description: str = ""


def scenario_module(kind: str) -> Any:
    if kind not in SCENARIOS:
        raise ScenarioError(f"unknown scenario {kind!r}; known: {', '.join(SCENARIOS)}")
    return importlib.import_module(f"simulations.scenarios.{kind}")


def defaults(kind: str) -> dict[str, Any]:
    return {**COMMON, **scenario_module(kind).DEFAULTS}


def parse_value(text: str) -> Any:
    """A `--set` value: TOML syntax when it parses (numbers, booleans, lists), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def coerce(name: str, value: Any, default: Any) -> Any:
    """`value` as the type of `default` (an int where a float is expected is fine)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ScenarioError(f"{name} is true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ScenarioError(f"{name} is an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ScenarioError(f"{name} is a number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ScenarioError(f"{name} is a string, got {value!r}")
        return value
    if isinstance(default, list):
        if not isinstance(value, list):
            raise ScenarioError(f"{name} is a list, got {value!r}")
        return value
    return value


def make_scenario(kind: str, values: Mapping[str, Any], description: str = "") -> Scenario:
    known = defaults(kind)
    params = dict(known)
    for name, value in values.items():
        if name not in known:
            raise ScenarioError(
                f"{kind} has no parameter {name!r}; known: {', '.join(sorted(known))}"
            )
        params[name] = coerce(name, value, known[name])
    return Scenario(kind, params, description)


def parse_sets(sets: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in sets:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise ScenarioError(f"--set takes name=value, got {item!r}")
        values[name.strip()] = parse_value(text.strip())
    return values


def load_scenario(path: Path, overrides: Mapping[str, Any] | None = None) -> Scenario:
    """Read a scenario file and apply `overrides` (already parsed values)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc}") from None
    kind = data.pop("scenario", None)
    if not isinstance(kind, str):
        raise ScenarioError(f'{path}: missing `scenario = "NAME"`')
    description = str(data.pop("description", ""))
    return make_scenario(kind, {**data, **(overrides or {})}, description)


def run(scenario: Scenario, progress: Progress | None = None) -> Result:
    collector = gc.isenabled(), gc.get_threshold()  # `World` tunes the collector
    try:
        result: Result = scenario_module(scenario.kind).run(scenario.params, progress)
    finally:
        gc.unfreeze()
        gc.set_threshold(*collector[1])
        if collector[0]:
            gc.enable()
    result.summary = {
        "scenario": scenario.kind,
        "params": dict(sorted(scenario.params.items())),
        **result.summary,
        "events": result.events,
    }
    return result


def summary_json(result: Result) -> str:
    return json.dumps(result.summary, sort_keys=True, indent=2) + "\n"


def write_outputs(result: Result, out: Path) -> list[Path]:
    """summary.json, one CSV per series, one PNG per plot; returns the files written."""
    from .plots import render

    out.mkdir(parents=True, exist_ok=True)
    written = [out / "summary.json"]
    written[0].write_text(summary_json(result))
    for series in result.series:
        path = out / f"{series.name}.csv"
        path.write_text(series.to_csv())
        written.append(path)
    for plot in result.plots:
        path = out / f"{plot.name}.png"
        render(plot, path)
        written.append(path)
    return written


COLLECT_WHILE_RUNNING_BELOW = 20_000
"""Nodes below which the cyclic collector runs while events run (young objects every
`YOUNG_COLLECTION_EVERY` allocations). From this size on it stays paused until the
scenario returns: growth, churn and rooms runs leave next to no cyclic garbage (at 10^5
nodes and 2*10^4 lookups, 8 young collections freed 14 objects in 3.9 CPU s; churn at
2,000 nodes none in 11; rooms at 500 nodes 45 in 21), while each collection walks every
object made since the last one and touches what it refers to, all over a heap of many
gigabytes: a 10-second sample late in a 10^6-node run found 27% of it in the collector."""

YOUNG_COLLECTION_EVERY = 200_000
"""Allocations between two collections of the youngest generation while events run
(Python's default, 700, spent a fifth of a 10^4-node run in the collector; 50,000 still
took 1.5 of 28 CPU seconds at 3·10^4 nodes and 5,000 lookups, 200,000 takes 0.4: a
growth run's collections find nothing to free, and each walks what the run built since)."""


HUGE_PAGES_FROM = 20_000
"""Nodes from which a world asks for huge pages (simulations/memory.py): large runs read
gigabytes at random. Below, a run's heap is small and the copy into huge pages would
cost a test suite more than it saves."""


class World:
    """What every scenario runs in: one engine, one seed, the network and the overlay.

    The cyclic garbage collector is paused from creation to the first
    `run_until`: building 10^5..10^6 nodes allocates tens of millions of
    objects that live for the whole run, and each full collection would walk
    them all again (half the setup time at 10^5 nodes). When time starts to
    move, what was built is frozen (`gc.freeze`: never scanned again) and the
    collector resumes, collecting young objects less often, in worlds smaller than
    `COLLECT_WHILE_RUNNING_BELOW` nodes; larger ones run without it. `run` undoes
    all of this when the scenario returns. A world of `HUGE_PAGES_FROM` nodes or more
    asks for huge pages (simulations/memory.py) before its warm start and when
    time starts to move: such runs are bound by random reads of memory.
    """

    def __init__(self, params: Mapping[str, Any], progress: Progress | None = None) -> None:
        self.params = params
        self.progress = progress
        self._collect_later = gc.isenabled()
        gc.disable()
        if gc.get_freeze_count():
            gc.unfreeze()
            gc.collect()  # a previous world of the same run (rooms has two) is garbage now
        root = random.Random(params["seed"])
        self.rng = random.Random(root.getrandbits(64))
        """Workload draws (arrivals, sessions, pages, lookup targets)."""
        self.engine = Engine(EPOCH)
        self.network = NetworkModel(loss=params["loss"], jitter_ms=params["jitter_ms"])
        config = DHTConfig(k=params["k"], alpha=params["alpha"], rpc_timeout=params["rpc_timeout"])
        self.fast = bool(params.get("fast", False))
        self.config = config.with_fast_paths() if self.fast else config
        self.overlay = Overlay(
            self.engine,
            random.Random(root.getrandbits(64)),
            self.network,
            self.config,
            transport=params["transport"],
            identities=params["identities"],
        )

    def warm_tables(self, nodes: list[SimNode], space: IdSpace | None = None) -> None:
        """Routing tables of a network that has been running (`fill_routing_tables`), and,
        with proximity neighbour selection on, the near contacts it would have taken
        (`fill_near_contacts`)."""
        space = space or IdSpace(nodes)
        overlay = self.overlay
        k = self.config.k
        self._huge_pages()
        fill_routing_tables(nodes, space, overlay.nodes, k, self.rng)
        if self.config.pns:
            base = self.network.base_delay

            def rtt(a: SimNode, b: SimNode) -> float:
                return 2 * base(a.region, b.region)

            # Its own generator: the workload's draws that follow stay those of the same
            # seed without proximity, so both behaviours meet the same workload.
            near_rng = random.Random(f"near-contacts/{self.params['seed']}")
            share = self.config.pns_share
            fill_near_contacts(nodes, space, overlay.nodes, k, near_rng, rtt, share)

    @property
    def t(self) -> float:
        """Seconds since the start of the simulation."""
        return self.engine.now - EPOCH

    def at(self, t: float, fn: Callable[[Any], None], arg: Any = None) -> None:
        self.engine.schedule(EPOCH + t, fn, arg)

    def every(self, period: float, fn: Callable[[float], None], until: float) -> None:
        """Call `fn(t)` at 0, period, 2*period... up to `until` (inclusive)."""

        def tick(t: Any) -> None:
            fn(t)
            if t + period <= until + 1e-9:
                self.at(t + period, tick, t + period)

        self.at(0.0, tick, 0.0)

    def _huge_pages(self) -> None:
        if len(self.overlay.nodes) >= HUGE_PAGES_FROM:
            use_huge_pages()

    def run_until(self, t: float, planned: float | None = None) -> None:
        """Advance to `t` simulated seconds, reporting progress about 200 times."""
        if self._collect_later:
            self._collect_later = False
            gc.freeze()
            if len(self.overlay.nodes) < COLLECT_WHILE_RUNNING_BELOW:
                gc.set_threshold(YOUNG_COLLECTION_EVERY, *gc.get_threshold()[1:])
                gc.enable()
            self._huge_pages()
        planned = planned if planned is not None else t
        step = max(planned / 200.0, 1e-3)
        end = EPOCH + t
        while self.engine.now < end:
            self.engine.run(until=min(end, self.engine.now + step))
            if self.progress is not None:
                self.progress(self.t, planned, self.engine.events)


__all__ = [
    "COMMON",
    "SCENARIOS",
    "Plot",
    "Result",
    "Scenario",
    "ScenarioError",
    "World",
    "defaults",
    "load_scenario",
    "make_scenario",
    "parse_sets",
    "run",
    "summary_json",
    "write_outputs",
]
