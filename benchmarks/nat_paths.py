"""Which pairs of NATs connect directly, which through the relay, and how fast.

Builds the NAT lab of tests/nat/lab.py (network namespaces: needs root, `ip`
and `iptables`; docs/nat-lab.md), then for every pair of NAT kinds opens
`--runs` rooms: a peer behind the first kind joins through signaling node 1,
and once it sits in the room a peer behind the second joins through node 2
and offers. The newcomer measures, in its own process, the time from calling
`join` to its Connected event (signaling, candidate gathering with STUN and
TURN at the relay, ICE, DTLS, SCTP). Prints one JSON object.

    .venv/bin/python benchmarks/nat_paths.py [--runs 5] [--pairs symmetric-tcp443 ...]

`symmetric-tcp443`: the newcomer's network lets out only TCP to 443 (and the lab's
signaling port); it uses node 2's `turns:` URL (`--turn-transport tls`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.nat.lab import NatLab, is_event, missing_requirements

PAIRS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "cone-cone": ("cone-a", "cone-b", ()),
    "cone-symmetric": ("cone-a", "sym-b", ()),
    "symmetric-cone": ("sym-a", "cone-b", ()),
    "symmetric-symmetric": ("sym-a", "sym-b", ()),
    "open-cone": ("open", "cone-a", ()),
    "open-symmetric": ("open", "sym-a", ()),
    "symmetric-tcp443": ("sym-a", "tcp-443", ("--turn-transport", "tls")),
}


def measure(
    lab: NatLab, name: str, first: str, newcomer: str, options: tuple[str, ...], runs: int
) -> dict[str, Any]:
    paths: Counter[str] = Counter()
    pairs: Counter[str] = Counter()
    times: list[float] = []
    for run in range(runs):
        a, b = lab.pair(first, newcomer, f"{name}-{run}", newcomer_options=options)
        try:
            seen = b.until(is_event("connected"), 30)
        finally:
            a.stop()
            b.stop()
        paths[seen["path"]] += 1
        pairs["/".join(seen["pair"])] += 1
        times.append(seen["t"])
    return {
        "paths": dict(paths),
        "candidates": dict(pairs),
        "join_to_connected_s": {
            "median": round(statistics.median(times), 3),
            "min": min(times),
            "max": max(times),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="rooms per pair of NAT kinds")
    parser.add_argument("--pairs", nargs="*", choices=sorted(PAIRS), help="default: all")
    args = parser.parse_args()
    reason = missing_requirements()
    if reason is not None:
        print(f"nat_paths: {reason}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="natlab-") as workdir:
        started = time.monotonic()
        lab = NatLab.start(Path(workdir))
        try:
            built = time.monotonic() - started
            results = {
                name: measure(lab, name, first, newcomer, options, args.runs)
                for name, (first, newcomer, options) in PAIRS.items()
                if not args.pairs or name in args.pairs
            }
        finally:
            lab.close()
    report = {
        "runs": args.runs,
        "lab_start_s": round(built, 2),
        "aioice": version("aioice"),
        "aiortc": version("aiortc"),
        "pairs": results,
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
