"""`pagemesh demo` listens on the same ports every run, so the addresses it prints, the
extension it builds for its nodes and what a browser keeps per origin outlive a restart;
a port something else holds gets a free one instead, and only that one."""

from __future__ import annotations

import socket

from pagemesh.demo import DEMO_PORT, choose_ports


def _free_block() -> int:
    """A base whose eight ports nothing here holds (other tests and demos may run)."""
    for base in (DEMO_PORT, *range(20_000, 30_000, 100)):
        if not choose_ports(base, 3).taken:
            return base
    raise AssertionError("no free block of eight ports on 127.0.0.1")


def test_two_starts_in_a_row_get_the_same_ports() -> None:
    base = _free_block()
    first = choose_ports(base, 3)
    assert first.http == (base, base + 1, base + 2)
    assert first.dht == (base + 3, base + 4, base + 5)
    assert (first.relay, first.site, first.taken) == (base + 6, base + 7, ())
    assert choose_ports(base, 3) == first


def test_a_port_in_use_gets_a_free_one_and_is_named() -> None:
    base = _free_block()
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as web,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dht,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as relay,
    ):
        web.bind(("127.0.0.1", base))  # the first node's HTTP port
        web.listen()
        dht.bind(("127.0.0.1", base + 4))
        relay.bind(("127.0.0.1", base + 6))  # the relay's UDP half: TCP alone is no use
        ports = choose_ports(base, 3)
    assert ports.http == (0, base + 1, base + 2)
    assert ports.dht == (base + 3, 0, base + 5)
    assert (ports.relay, ports.site) == (0, base + 7)
    assert ports.taken == (base, base + 4, base + 6)


def test_port_zero_asks_for_free_ports_throughout() -> None:
    ports = choose_ports(0, 2)
    assert ports.http == ports.dht == (0, 0)
    assert (ports.relay, ports.site, ports.taken) == (0, 0, ())
