"""Speed work on the simulator and the cores it runs changes no result.

Small runs of growth (oracle warm start, real joins, lookups), churn (crashes,
timeouts, replacements, records) and rooms (the room core on the DHT) are
fingerprinted in full, and each fingerprint is compared with the one the code
gave before the simulator was tuned for speed (commit c2e1269):

* `summary`: summary.json and every CSV series, byte for byte;
* `operations`: every DHT operation the scenario started and how it ended (the
  contacts a lookup returned, in order, the records a read found, the queries);
* `tables`: every node's routing table at the end, bucket by bucket, contacts in
  least-recently-seen order, replacement claims, failure counts, refresh times,
  and every core's counters;
* `trace`: every message sent and delivered, with its virtual time, sender,
  receiver and full contents (a second run, with an observer that sees them).

A protocol change in dht/ or signaling/ that changes results on purpose
regenerates these values (`python tests/simulations/test_golden.py` prints them);
the commit says which change it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

import simulations.scenario as scenario_module
from dht.routing import Contact
from simulations.overlay import MessageObserver, Overlay, SimNode
from simulations.scenario import make_scenario, run, summary_json

RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    "growth": (
        "growth",
        {"nodes": 1500, "prefill": 1480, "lookups": 300, "lookup_rate": 100.0, "settle": 5.0},
    ),
    "churn": (
        "churn",
        {"nodes": 100, "duration": 90.0, "session_scale": 90.0, "records": 4},
    ),
    "rooms": (
        "rooms",
        {"nodes": 30, "users": 80, "pages": 6, "layer_size": 8, "warmup": 10},
    ),
}

GOLDEN: dict[str, dict[str, str]] = {
    "churn": {
        "summary": "8435bb792c3f9e0e6e65f427062cafbe2888e31ba132d8bbc8e6831cdab062e6",
        "operations": "4822751bb8beab7b442218bb2662795c8ebd8913b88330ad801793d09a0c4959",
        "tables": "ed1aeef650f547ead402db12d8bc66e4d40cc1d93d9c072a09eccc7c9921459b",
        "trace": "ce03aa74890746a6433ed1dae1821daf6b5ec43a480066868bcc0aada32535d0",
    },
    "growth": {
        "summary": "be5f471f81c92044cd78653cef46171d289a0a4b067f8d6d15421798d4320d68",
        "operations": "a344d37de99ab0d0f53291b35af241e555af9cab017e332427718c266f12de58",
        "tables": "72493ec08cad778d2f40f12acdbe42be29da76ffc309c26b4a17f859dffd9bce",
        "trace": "1856162438d2622fcd2d944765fa6b08e1cd88d7c507cfbbaf4bd073fc75864a",
    },
    "rooms": {
        "summary": "3098804852aa002af1e2f60c89372eed40acf915734109eb515da6e07c5a9ebe",
        "operations": "1428ef5deffcae1353303730e1dcdab1d809aca3cd6c86705fbd4276cebeb46f",
        "tables": "f60cd4845b41742f381d982fcd82046608ef506823ba63c79220d9e916a65a3f",
        "trace": "dcaa5233bb5f4d62f1eb2cea3595678d2832705c228233fff720ccc55dc22b06",
    },
}
"""Run name -> part -> SHA-256, as the code before the speed work gave them."""


_FIELDS: dict[type, tuple[str, ...]] = {}


def canon(value: Any) -> Any:
    """A value as plain nested tuples of reprs: contacts by id and address, dataclasses by
    type name and fields, so the fingerprint does not depend on how objects are built."""
    if isinstance(value, Contact):
        return ("contact", value.node_id, value.addr)
    if isinstance(value, Enum):
        return (type(value).__name__, value.value)
    if isinstance(value, bytes | str | int | float | bool) or value is None:
        return value
    if isinstance(value, tuple | list):
        if value and all(type(v) is type(value[0]) for v in value) and hasattr(value[0], "addr"):
            # a reply's contacts (most of a trace), in one piece
            return (b"".join(c.node_id for c in value), "|".join(map(str, (c.addr for c in value))))
        return tuple(canon(v) for v in value)
    if isinstance(value, dict):
        return tuple((canon(k), canon(v)) for k, v in value.items())
    kind = type(value)
    names = _FIELDS.get(kind)
    if names is None and dataclasses.is_dataclass(value):
        names = _FIELDS[kind] = tuple(f.name for f in dataclasses.fields(value))
    if names is not None:
        return (kind.__name__, *(canon(getattr(value, name)) for name in names))
    if hasattr(value, "node_id") and hasattr(value, "host"):
        return ("contact", value.node_id, (value.host, value.port))
    raise TypeError(f"no canonical form for {type(value).__name__}")


class Digest:
    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def add(self, *values: Any) -> None:
        self._hash.update(repr(canon(values)).encode())
        self._hash.update(b"\n")

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class Trace(MessageObserver):
    def __init__(self, overlay: Overlay, digest: Digest) -> None:
        self.overlay = overlay
        self.digest = digest

    def sent(self, node: SimNode, message: Any, dst: Any) -> None:
        # Contents are compared where they arrive; a message to a dead node by its id.
        self.digest.add("sent", repr(self.overlay.now), node.index, dst, message.msg_id)

    def delivered(self, node: SimNode, message: Any, src: Any) -> None:
        self.digest.add("delivered", repr(self.overlay.now), node.index, src, message)


@dataclasses.dataclass
class Watch:
    trace: bool
    overlays: list[Overlay] = dataclasses.field(default_factory=list)
    operations: Digest = dataclasses.field(default_factory=Digest)
    messages: Digest = dataclasses.field(default_factory=Digest)


def watched_overlay(watch: Watch) -> type[Overlay]:
    """An `Overlay` that records every operation's ending event (and, with `trace`,
    every message), so results deeper than the summary are compared too."""

    class Watched(Overlay):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            watch.overlays.append(self)
            if watch.trace:
                self.observers.append(Trace(self, watch.messages))

        def call(self, node: SimNode, op: int, done: Callable[..., None] | None) -> None:
            if done is None:
                super().call(node, op, done)
                return
            inner = done

            def recorded(origin: SimNode, event: Any) -> None:
                watch.operations.add(repr(self.now), origin.index, event)
                inner(origin, event)

            super().call(node, op, recorded)

    return Watched


def tables(overlay: Overlay) -> Iterator[tuple[Any, ...]]:
    for node in overlay.nodes:
        core = node.core
        table = core.table
        yield ("node", node.index, node.alive, sorted(core.counters.items()))
        table.open_all()  # buckets still held by position (`RoutingTable.hold`) read as dicts
        for index in sorted(table.buckets):
            bucket = table.buckets[index]
            yield (
                index,
                list(bucket.contacts),
                list(bucket.replacements),
                sorted(bucket.failures.items()),
                repr(bucket.last_refresh),
            )


def fingerprint(name: str, trace: bool) -> dict[str, str]:
    kind, params = RUNS[name]
    watch = Watch(trace)
    patch = pytest.MonkeyPatch()
    patch.setattr(scenario_module, "Overlay", watched_overlay(watch))
    try:
        result = run(make_scenario(kind, params))
    finally:
        patch.undo()
    if trace:
        return {"trace": watch.messages.hexdigest()}
    summary = Digest()
    summary.add(summary_json(result))
    for series in result.series:
        summary.add(series.name, series.to_csv())
    state = Digest()
    for overlay in watch.overlays:
        for row in tables(overlay):
            state.add(row)
    return {
        "summary": summary.hexdigest(),
        "operations": watch.operations.hexdigest(),
        "tables": state.hexdigest(),
    }


@pytest.mark.parametrize("name", sorted(RUNS))
def test_results_are_those_of_the_reference_code(name: str) -> None:
    assert fingerprint(name, trace=False) == {
        part: GOLDEN[name][part] for part in ("summary", "operations", "tables")
    }


@pytest.mark.parametrize("name", sorted(RUNS))
def test_every_message_is_that_of_the_reference_code(name: str) -> None:
    assert fingerprint(name, trace=True) == {"trace": GOLDEN[name]["trace"]}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    for run_name in sorted(RUNS):
        print(run_name, {**fingerprint(run_name, False), **fingerprint(run_name, True)})
