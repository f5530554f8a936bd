"""Every `pagemesh_*` metric the docs name is one a running node exports, so that an
operator's alert or dashboard written from the docs matches what Prometheus scrapes.

A node with an embedded relay runs in-process on loopback (its /metrics holds the
node's, the DHT's and the relay's families; a standalone relay exports the same relay
families). The names are read from the scrape's `# TYPE` lines: a counter's is
`NAME_total` (the only name its samples have), a histogram's `NAME_bucket`, `NAME_sum`,
`NAME_count` (and `NAME` for the family), a gauge's `NAME`. A label the docs put on a
name (`NAME{label=...}`) must be one of that family's labels where the scrape shows any
sample of it. `NAME_*` stands for the names it begins.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from pagemesh.embedded_relay import start_embedded_relay
from signaling.node import SignalingNode
from tests.signaling.conftest import FAST_DHT, FAST_NODE

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
MENTION = re.compile(r"\b(pagemesh_[a-z0-9_]+)(\*?)(\{([a-z_]+)=)?")
TYPE_LINE = re.compile(r"^# TYPE (pagemesh_[a-z0-9_]+) (\w+)$", re.MULTILINE)
SAMPLE = re.compile(r"^(pagemesh_[a-z0-9_]+)\{([^}]*)\}", re.MULTILINE)
SUFFIXES = {
    "counter": ("",),  # the text format's TYPE line already names NAME_total
    "gauge": ("",),
    "histogram": ("", "_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}


@pytest.fixture
async def scrape(tmp_path: Path) -> AsyncIterator[str]:
    config = dataclasses.replace(FAST_NODE, data_dir=str(tmp_path / "n"), relay_port=0)
    relay = await start_embedded_relay(config, None)
    node = await SignalingNode.start(config, FAST_DHT, relay)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(node.page_url + "/metrics") as response,
        ):
            assert response.status == 200
            yield await response.text()
    finally:
        await node.stop(moving=False)


def exported(text: str) -> tuple[set[str], dict[str, set[str]]]:
    """The sample names a scrape's families stand for, and the labels seen per name."""
    names: set[str] = set()
    for family, kind in TYPE_LINE.findall(text):
        names.update(family + suffix for suffix in SUFFIXES.get(kind, ("",)))
    labels: dict[str, set[str]] = {}
    for name, pairs in SAMPLE.findall(text):
        keys = {pair.split("=", 1)[0] for pair in pairs.split(",") if "=" in pair}
        labels.setdefault(name, set()).update(keys - {"le"})
    return names, labels


async def test_every_metric_the_docs_name_is_exported(scrape: str) -> None:
    names, labels = exported(scrape)
    assert "pagemesh_relay_allocations" in names and "pagemesh_clients" in names
    wrong = []
    for document in DOCUMENTS:
        for number, line in enumerate(document.read_text().splitlines(), 1):
            for name, star, _, label in MENTION.findall(line):
                where = f"{document.relative_to(ROOT)}:{number}"
                if star:  # `pagemesh_relay_*`: a prefix some exported name has
                    if not any(known.startswith(name) for known in names):
                        wrong.append(f"{where}: no exported name starts with {name}")
                elif name not in names:
                    wrong.append(f"{where}: {name} is not exported")
                elif label and name in labels and label not in labels[name]:
                    wrong.append(f"{where}: {name} has no label {label!r}")
    assert not wrong, "\n".join(wrong)
