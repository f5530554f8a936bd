"""Peers behind NATs: who connects directly, who through the relay, and who cannot at all.

Each test starts real `peer.Peer` processes (tests/nat/lab_peer.py) in the
lab's namespaces (tests/nat/lab.py, docs/nat-lab.md). The first peer joins
through node 1, the newcomer through node 2 and offers; the newcomer's time
from `join` to its Connected event is recorded for the summary.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from .lab import (
    NETWORKS,
    NODE_ADDRESSES,
    OPEN_ADDRESS,
    RELAY_ADDRESS,
    LabProcess,
    NatLab,
    is_event,
)

pytestmark = [pytest.mark.nat, pytest.mark.integration]

WAN = {network.name: network.wan for network in NETWORKS} | {"open": OPEN_ADDRESS}
CONNECT_WITHIN = 30.0


def connected(first: LabProcess, newcomer: LabProcess) -> tuple[dict[str, Any], dict[str, Any]]:
    seen = newcomer.until(is_event("connected"), CONNECT_WITHIN)
    return first.until(is_event("connected"), CONNECT_WITHIN), seen


def record(times: list[dict[str, Any]], pair: str, seen: dict[str, Any]) -> None:
    times.append(
        {
            "pair": pair,
            "path": seen["path"],
            "candidates": "/".join(seen["pair"]),
            "join_to_connected_s": seen["t"],
        }
    )


def test_cone_peers_punch_a_direct_path(lab: NatLab, nat_times: list[dict[str, Any]]) -> None:
    first, newcomer = lab.pair("cone-a", "cone-b", "cone-cone")
    a, b = connected(first, newcomer)
    assert a["path"] == b["path"] == "direct", (a, b)
    # The newcomer checks from its host candidate to the other side's reflexive one:
    # its router's public address, which that peer learnt from the relay's Binding.
    assert b["pair"] == ["host", "srflx"] and b["remote"] == WAN["cone-a"], b
    assert f"srflx {WAN['cone-b']}" in b["gathered"], b
    assert a["pair"][0] == "host" and a["remote"] == WAN["cone-b"], a
    record(nat_times, "cone-cone", b)


def test_symmetric_peers_chat_and_share_a_file_through_the_relay(
    lab: NatLab, nat_times: list[dict[str, Any]], tmp_path: Path
) -> None:
    content = os.urandom(512 * 1024)
    source = tmp_path / "notes.bin"
    source.write_bytes(content)
    first, newcomer = lab.pair(
        "sym-a",
        "sym-b",
        "sym-sym",
        first_options=["--say", "hello from sym-a", "--accept-to", str(tmp_path / "inbox")],
        newcomer_options=["--say", "hello from sym-b", "--send-file", str(source)],
    )
    a, b = connected(first, newcomer)
    assert a["path"] == b["path"] == "relayed", (a, b)
    assert "relay" in b["pair"] and f"relay {RELAY_ADDRESS}" in b["gathered"], b

    def said(text: str) -> Any:
        return lambda line: line.get("event") == "message" and line.get("text") == text

    assert not first.until(said("hello from sym-b"), 20)["mine"]
    assert not newcomer.until(said("hello from sym-a"), 20)["mine"]
    done = first.until(lambda line: is_event("file-done")(line) and bool(line["path"]), 30)
    assert Path(done["path"]).read_bytes() == content
    record(nat_times, "symmetric-symmetric", b)


@pytest.mark.parametrize(
    ("first", "newcomer", "path"),
    [("cone-a", "sym-b", "relayed"), ("open", "sym-a", "direct"), ("open", "cone-b", "direct")],
    ids=["cone-symmetric", "open-symmetric", "open-cone"],
)
def test_paths_between_other_kinds_of_nat(
    lab: NatLab, nat_times: list[dict[str, Any]], first: str, newcomer: str, path: str
) -> None:
    """A symmetric NAT maps each destination anew, so only a side without one (the open
    host, answering the checks' peer-reflexive source) reaches it directly."""
    a, b = connected(*lab.pair(first, newcomer, f"{first}-{newcomer}"))
    assert a["path"] == b["path"] == path, (a, b)
    kinds = {"cone-a": "cone", "cone-b": "cone", "sym-a": "symmetric", "sym-b": "symmetric"}
    record(nat_times, f"{kinds.get(first, first)}-{kinds.get(newcomer, newcomer)}", b)


def test_a_walled_peer_is_told_it_cannot_connect_instead_of_waiting(
    lab: NatLab, nat_times: list[dict[str, Any]]
) -> None:
    """Symmetric NAT on both sides, and the newcomer's relay dropped by its router."""
    timeout = 8.0
    options = ["--connect-timeout", str(timeout)]
    first, newcomer = lab.pair("sym-b", "walled", "walled", options, options)
    problem = newcomer.until(is_event("unreachable"), timeout + 10)
    assert "no direct path, and the relay is unreachable" in problem["message"], problem
    assert problem["t"] < timeout + 3, problem
    assert problem["key"] == newcomer.until(is_event("joined"), 1)["key"]
    # The other side had a relay candidate, so it says the relay did not help either.
    other = first.until(is_event("unreachable"), timeout + 10)
    assert "none through the relay either" in other["message"], other
    lines = first.reader.lines + newcomer.reader.lines
    assert not any(is_event("connected")(line) for line in lines), lines
    nat_times.append({"pair": "walled-symmetric", "path": None, "join_to_error_s": problem["t"]})


def test_a_peer_that_may_only_reach_tcp_443_connects_through_turn_over_tls(
    lab: NatLab, nat_times: list[dict[str, Any]]
) -> None:
    """No UDP out, TCP only to 443 (and the lab's signaling port): the newcomer's one way
    out is `turns:` to node 2's relay on 443. aiortc uses one TURN URL, so the peer asks
    for that one (`turn_transport="tls"`); the other side, behind a symmetric NAT, has
    its relay candidate at the standalone relay, and the two relays carry it."""
    first, newcomer = lab.pair(
        "sym-a",
        "tcp-443",
        "tcp443-tls",
        first_options=["--say", "hello from sym-a"],
        newcomer_options=["--say", "hello from tcp-443", "--turn-transport", "tls"],
    )
    a, b = connected(first, newcomer)
    assert a["path"] == b["path"] == "relayed", (a, b)
    assert b["pair"][0] == "relay" and f"relay {NODE_ADDRESSES[1]}" in b["gathered"], b
    assert not any(c.startswith("srflx") for c in b["gathered"]), b  # its STUN got nowhere

    def said(text: str) -> Any:
        return lambda line: line.get("event") == "message" and line.get("text") == text

    assert not first.until(said("hello from tcp-443"), 20)["mine"]
    assert not newcomer.until(said("hello from sym-a"), 20)["mine"]
    record(nat_times, "tcp443(turns)-symmetric", b)


def test_the_same_peer_with_turn_over_tcp_to_3478_is_told_it_cannot_connect(
    lab: NatLab, nat_times: list[dict[str, Any]]
) -> None:
    """The control: through the same firewall `turn:...:3478?transport=tcp` is dropped,
    and so would be everything but TLS on 443."""
    timeout = 8.0
    options = ["--connect-timeout", str(timeout)]
    first, newcomer = lab.pair(
        "sym-a", "tcp-443", "tcp443-tcp", options, [*options, "--turn-transport", "tcp"]
    )
    problem = newcomer.until(is_event("unreachable"), timeout + 15)
    assert "the relay is unreachable" in problem["message"], problem
    lines = first.reader.lines + newcomer.reader.lines
    assert not any(is_event("connected")(line) for line in lines), lines
    nat_times.append(
        {"pair": "tcp443(turn tcp)-symmetric", "path": None, "join_to_error_s": problem["t"]}
    )
