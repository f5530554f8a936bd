"""What a device delegation costs a member (docs/protocol.md 5.3). Prints one JSON object.

A member checks each device's delegation once per link (and once per renewal,
every 3.5 days by default) and asks the book who a key speaks for on every
message it shows. The baseline, in the same run, is what a member already does
for every message: check an envelope's signature (peer/messaging.py). Also the
sizes on the wire: the delegation, its control frame, a revocation's frame.

    python benchmarks/device_delegation.py [--rounds 2000]

Target: checking a delegation costs about one envelope check (one Ed25519
verification each), and looking a key up in a full book (1024 devices) costs a
hundredth of one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from nacl.signing import SigningKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dht.identity import verify_signature
from peer.device import (
    MAX_BYTES,
    MAX_DEVICES,
    MIN_BYTES,
    Devices,
    check_delegation,
    issue_delegation,
    issue_revocation,
    serialize_delegation,
    serialize_revocation,
)
from peer.messaging import Envelope

NOW = 1_764_000_000_000


def per_call_us(rounds: int, call) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for _ in range(rounds):
        call()
    return (time.perf_counter() - start) / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()

    ana, laptop = SigningKey.generate(), SigningKey.generate()
    ana_key, laptop_key = bytes(ana.verify_key), bytes(laptop.verify_key)
    delegation = issue_delegation(
        lambda m: ana.sign(m).signature, ana_key, laptop_key, NOW, label="laptop"
    )
    data = serialize_delegation(delegation)
    env = Envelope(b"\x01" * 20, laptop_key, 1, NOW, NOW, "text", "hello", b"")
    signature = laptop.sign(env.signed_bytes()).signature

    book = Devices()
    keys = []
    for _ in range(MAX_DEVICES):
        device = bytes(SigningKey.generate().verify_key)
        keys.append(device)
        book.add(issue_delegation(lambda m: ana.sign(m).signature, ana_key, device, NOW, label="x"))
    looked = iter(keys * (args.rounds // len(keys) + 1))

    envelope_us = per_call_us(
        args.rounds, lambda: verify_signature(laptop_key, env.signed_bytes(), signature)
    )
    check_us = per_call_us(
        args.rounds, lambda: check_delegation(data, laptop_key, NOW + 1, verify_signature)
    )
    person_us = per_call_us(args.rounds, lambda: book.person_of(next(looked), NOW + 1))
    revocation = serialize_revocation(
        issue_revocation(lambda m: ana.sign(m).signature, ana_key, laptop_key, NOW)
    )
    print(
        json.dumps(
            {
                "benchmark": "device_delegation",
                "rounds": args.rounds,
                "baseline_envelope_check_us": round(envelope_us, 1),
                "delegation_check_us": round(check_us, 1),
                "delegation_check_over_envelope": round(check_us / envelope_us, 2),
                "person_of_full_book_us": round(person_us, 2),
                "person_of_over_envelope": round(person_us / envelope_us, 4),
                "delegation_bytes": {"min": MIN_BYTES, "laptop": len(data), "max": MAX_BYTES},
                "device_frame_chars": len(json.dumps({"t": "device", "cert": data.hex()})),
                "revoke_frame_chars": len(json.dumps({"t": "revoke", "cert": revocation.hex()})),
            }
        )
    )


if __name__ == "__main__":
    main()
