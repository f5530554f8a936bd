"""A volunteer's node behind a home router, and one on a public address, in the NAT lab.

Both run `pagemesh node --host 0.0.0.0` with no `--public-url`, bootstrapping
from the lab's node 1. The one behind `cone-a`'s NAT (port-restricted, as
home routers are) answers whoever it sends to, so without checks the lab's
nodes would put it in their routing tables and hand it out as a dead contact.
With checks, the lab's nodes dial it back from another port, the router drops
that, and it runs as a DHT client: the tables of nodes 1 and 2 never hold it
(asked with `find_node` for its own id), it advertises its router's address,
not 0.0.0.0, and its log and /healthz say what to open. The node on the open
host is found reachable, advertises 198.18.0.20, and is in both tables.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from .lab import DHT_PORT, HTTP_PORT, NETWORKS, NODE_ADDRESSES, OPEN_ADDRESS, NatLab

pytestmark = [pytest.mark.nat, pytest.mark.integration]

WAN = {network.name: network.wan for network in NETWORKS}
STARTED_WITHIN = 30.0
"""Bootstrap, then one check: the probes' wait (2 s here) after the RPCs (2 s at most)."""
CONFIG = "[dht.reach]\nprobe_wait = 2.0\n"


def start_node(lab: NatLab, where: str, name: str, check: bool = True) -> tuple[str, str]:
    """`pagemesh node` on a wildcard address in `where`; its id and the URL it advertises."""
    config = lab.workdir / f"reach-{name}.toml"
    config.write_text(CONFIG + ("" if check else "check = false\n"))
    args = ["pagemesh", "node", "--host", "0.0.0.0", "--port", str(HTTP_PORT)]
    args += ["--dht-port", str(DHT_PORT), "--bootstrap", f"{NODE_ADDRESSES[0]}:{DHT_PORT}"]
    args += ["--data-dir", str(lab.workdir / name), "--config", str(config)]
    node = lab.spawn(lab.host_namespace(where), name, args)
    line = node.until(lambda line: "pagemesh node" in line.get("text", ""), STARTED_WITHIN)
    words = line["text"].split()
    return words[2], words[4]


def ask(lab: NatLab, where: str, *args: str) -> dict[str, Any]:
    """tests/nat/lab_dht.py in `where`: one JSON line."""
    tag = f"ask-{time.monotonic_ns()}"
    probe = lab.spawn(lab.host_namespace(where), tag, ["tests.nat.lab_dht", *args])
    return probe.until(lambda line: "contacts" in line or "status" in line or "error" in line, 15)


def table_ids(lab: NatLab, node: str, target: str) -> set[str]:
    """The ids node `node` (an address) returns for `find_node(target)`, asked from 'open'."""
    answer = ask(lab, "open", "table", f"{node}:{DHT_PORT}", target)
    assert "contacts" in answer, answer
    return {contact[0] for contact in answer["contacts"]}


def test_a_node_behind_a_nat_stays_out_of_routing_tables_and_says_what_to_open(
    lab: NatLab,
) -> None:
    home_id, home_url = start_node(lab, "cone-a", "home-node")
    public_id, public_url = start_node(lab, "open", "public-node")
    # Neither advertises the wildcard: each, the address the lab's nodes saw.
    assert home_url == f"ws://{WAN['cone-a']}:{HTTP_PORT}", home_url
    assert public_url == f"ws://{OPEN_ADDRESS}:{HTTP_PORT}", public_url

    # The public node announced itself once found reachable: both tables hold it soon.
    deadline = time.monotonic() + 10.0
    while True:
        held = [public_id in table_ids(lab, address, public_id) for address in NODE_ADDRESSES]
        if all(held) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert all(held), held
    # The node behind the NAT has been asking through both for as long: in neither table.
    for address in NODE_ADDRESSES:
        assert home_id not in table_ids(lab, address, home_id), address

    # What the volunteer sees: the log says what to open, and /healthz says why.
    log = (lab.workdir / "home-node.log").read_text()
    assert "open UDP port 4000 (the DHT)" in log, log[-3000:]
    assert f"TCP port {HTTP_PORT}" in log and "DHT client" in log, log[-3000:]
    health = ask(lab, "cone-a", "healthz", f"http://127.0.0.1:{HTTP_PORT}/healthz")
    reach = health["body"]["reachability"]
    assert (reach["dht"], reach["url"], reach["client"]) == ("unreachable", "unreachable", True)
    assert reach["seen_at"] == f"{WAN['cone-a']}:{DHT_PORT}"
    assert health["status"] == 503 and "dht-unreachable" in health["body"]["reasons"], health
    public_health = ask(lab, "open", "healthz", f"http://{OPEN_ADDRESS}:{HTTP_PORT}/healthz")
    reach = public_health["body"]["reachability"]
    assert (reach["dht"], reach["url"], reach["client"]) == ("reachable", "reachable", False)
    assert "dht-unreachable" not in public_health["body"]["reasons"], public_health


def test_without_checks_the_same_node_sits_in_their_tables_as_a_dead_contact(
    lab: NatLab,
) -> None:
    """The control: what the checks prevent. A node behind `cone-b` with `[dht.reach]
    check = false` is added by the nodes it talks to (their identify comes back through
    its NAT, on the flow its own request opened), although nobody else can reach it."""
    home_id, _ = start_node(lab, "cone-b", "unchecked-node", check=False)
    deadline = time.monotonic() + 10.0
    while home_id not in table_ids(lab, NODE_ADDRESSES[0], home_id):
        assert time.monotonic() < deadline, "node 1 never added it"
        time.sleep(0.5)
