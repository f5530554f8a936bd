"""The node directory (docs/protocol.md 3.7) as a node reads it for `welcome.nodes`.

Anyone with a DHT key may store an entry under the directory key, with any TTL up to
the DHT's maximum. The node used to list entries farthest expiry first and hand the
first eight to every client (and, on a graceful stop, `moving`): a stranger who set
the longest TTL stood first on every list, so clients failed over to its nodes.
"""

from __future__ import annotations

import json
import random

from dht.identity import Identity
from dht.records import Record
from signaling.node import MAX_MOVING_NODES, NODE_DIRECTORY, _directory_urls

NOW = 1_800_000_000


def entry(url: str, ttl: int, seed: int) -> Record:
    value = json.dumps({"v": 1, "url": url}).encode()
    identity = Identity.from_seed(seed.to_bytes(32, "big"))
    return Record.create(identity, NODE_DIRECTORY, value, 1, NOW + ttl)


def test_the_longest_ttl_does_not_buy_the_first_places() -> None:
    honest = [entry(f"wss://node{i}.example.net:443", 600, i) for i in range(8)]
    stranger = [entry(f"wss://evil{i}.example.com:443", 3600, 100 + i) for i in range(8)]
    urls = _directory_urls([*honest, *stranger], random.Random(1))
    assert len(urls) == 16
    first = urls[:MAX_MOVING_NODES]
    assert any("node" in url for url in first), first


def test_one_url_published_by_many_keys_is_listed_once() -> None:
    records = [entry("wss://evil.example.com:443", 3600, i) for i in range(20)]
    records.append(entry("wss://node.example.net:443", 600, 99))
    urls = _directory_urls(records, random.Random(2))
    assert sorted(urls) == ["wss://evil.example.com:443", "wss://node.example.net:443"]
