"""Reachability checks between DHT cores in memory, on virtual time (dht/reach.py, core.py).

A node behind a home router's NAT (`Nat(filtering=True)`) answers whoever it
sent to, so without checks it enters the tables of the nodes it talks to and
is a dead contact for everyone they tell. With checks it finds out, runs as a
DHT client, and nobody's table holds it; a public node is found reachable and
joins. Helpers are looked at as an attacker would: where their probes go, how
many, and how big.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from dht.core import DHTConfig, DHTCore, ReachChecked
from dht.identity import Identity, verify_signature
from dht.ids import key_for
from dht.reach import (
    Reachability,
    ReachConfig,
    ReachStatus,
    TlsFailure,
    UrlOutcome,
    UrlProbeResult,
)
from dht.wire import (
    CLIENT_ID,
    Ping,
    Reach,
    ReachProbe,
    ReachReply,
    ReachResult,
    parse_frame,
    parse_reply,
    parse_request,
    reach_request_payload,
    reach_result_payload,
    serialize_request,
)

from .memnet import MemoryNetwork, Nat

FAST = DHTConfig(maintenance_interval=5.0, bucket_refresh_interval=60.0)
CHECKING = dataclasses.replace(FAST, reach=ReachConfig(check=True))


def checked(net: MemoryNetwork, core: DHTCore, op: int) -> ReachChecked:
    event = net.wait(core, op, timeout=30)
    assert isinstance(event, ReachChecked)
    return event


def join(net: MemoryNetwork, core: DHTCore, seed: DHTCore) -> None:
    net.wait(core, core.bootstrap([net.public_addr(seed)], net.now))
    net.run_for(1)  # the contacts the join found prove their ids


def holders(net: MemoryNetwork, core: DHTCore) -> list[DHTCore]:
    return [n for n in net.cores.values() if n is not core and core.node_id in n.table]


def test_a_node_behind_a_nat_is_found_unreachable_and_kept_out_of_every_table() -> None:
    net = MemoryNetwork(seed=41)
    nodes = net.build_mesh(12, FAST)
    home = net.add_node(CHECKING, nat=Nat(("192.0.2.77", 4000)))
    join(net, home, nodes[0])
    assert home.client, "a node with seeds is a client until a check says otherwise"
    event = checked(net, home, home.check_reach(net.now))
    verdict = event.verdict
    assert event.client and verdict.dht is Reachability.UNREACHABLE
    assert verdict.missed >= 2 and verdict.confirmed == 0
    assert verdict.observed == ("192.0.2.77", 4000)
    # It still reads and writes through the mesh...
    key = key_for("from behind a nat")
    record = home.create_record(key, b"hello", ttl=600, seq=1, now=net.now)
    stored = net.wait(home, home.put_record(record, net.now))
    assert stored.stored >= 10  # type: ignore[union-attr]
    # ...for a long while, through refreshes and republishing, and nobody holds it.
    net.run_for(1800)
    assert holders(net, home) == []
    assert not home.local_records(key, net.now) and len(home.records) == 0
    assert net.nat_dropped > 0
    assert home.counters["reach.verdict.unreachable"] >= 2, "checked again meanwhile"


def test_a_check_right_after_joining_waits_for_the_contacts_the_join_found() -> None:
    net = MemoryNetwork(seed=42)
    nodes = net.build_mesh(12, FAST)
    home = net.add_node(CHECKING, nat=Nat(("192.0.2.76", 4000)))
    net.wait(home, home.bootstrap([net.addr_of(nodes[0])], net.now))
    verdict = checked(net, home, home.check_reach(net.now)).verdict
    assert verdict.helpers == 3 and verdict.dht is Reachability.UNREACHABLE


def test_without_checks_the_same_node_ends_up_in_tables_as_a_dead_contact() -> None:
    """What the checks are for: the NAT lets answers in, so the nodes it talks to add it."""
    net = MemoryNetwork(seed=41)
    nodes = net.build_mesh(12, FAST)
    home = net.add_node(FAST, nat=Nat(("192.0.2.77", 4000)))
    join(net, home, nodes[0])
    assert holders(net, home)


def test_a_public_node_is_found_reachable_and_joins() -> None:
    net = MemoryNetwork(seed=43)
    nodes = net.build_mesh(12, FAST)
    public = net.add_node(CHECKING)
    url = net.serve_http(public, 8000)
    for node in nodes:
        node.dials_urls = True
    join(net, public, nodes[0])
    assert public.client and not holders(net, public)
    event = checked(net, public, public.check_reach(net.now, url))
    verdict = event.verdict
    assert not event.client
    assert verdict.dht is verdict.url is Reachability.REACHABLE
    assert verdict.confirmed == verdict.url_confirmed == 3
    assert verdict.observed == net.addr_of(public)
    net.run_for(5)
    assert len(holders(net, public)) >= 3


def test_a_url_with_no_host_is_dialled_at_the_requesters_address() -> None:
    """`--host 0.0.0.0`: the node does not know its address; helpers dial where it is."""
    net = MemoryNetwork(seed=45)
    nodes = net.build_mesh(6, FAST)
    public = net.add_node(CHECKING)
    net.serve_http(public, 8000)
    for node in nodes:
        node.dials_urls = True
    join(net, public, nodes[0])
    verdict = checked(net, public, public.check_reach(net.now, "ws://:8000")).verdict
    assert verdict.url is Reachability.REACHABLE and verdict.observed == net.addr_of(public)


def test_opening_the_port_is_noticed_at_the_next_check() -> None:
    net = MemoryNetwork(seed=47)
    nodes = net.build_mesh(8, FAST)
    nat = Nat(("192.0.2.78", 4000))
    home = net.add_node(CHECKING, nat=nat)
    join(net, home, nodes[0])
    assert checked(net, home, home.check_reach(net.now)).client
    nat.filtering = False  # the volunteer forwards the port
    opened = net.now
    net.run_until(lambda: not home.client, timeout=400)
    assert net.now - opened <= ReachConfig().unreachable_interval + 10
    net.run_for(5)
    assert holders(net, home)


def test_a_change_of_address_brings_the_next_check_forward() -> None:
    net = MemoryNetwork(seed=49)
    nodes = net.build_mesh(8, FAST)
    nat = Nat(("192.0.2.79", 4000), filtering=False)  # a forwarded port
    public = net.add_node(CHECKING, nat=nat)
    join(net, public, nodes[0])
    first = checked(net, public, public.check_reach(net.now)).verdict
    assert first.dht is Reachability.REACHABLE and first.observed == nat.public
    net.renumber(public, ("192.0.2.80", 4000))
    changed = net.now
    net.run_until(lambda: public.counters["reach.verdict.reachable"] >= 2, timeout=700)
    assert net.now - changed <= ReachConfig().address_interval + 10  # not the 30 minutes
    assert public.counters["reach.address_changed"] >= 1
    latest = public.reach_verdict
    assert latest is not None and latest.observed == ("192.0.2.80", 4000)
    assert latest.address_changed


def test_the_first_node_serves_although_nobody_can_check_it() -> None:
    net = MemoryNetwork(seed=51)
    first = net.add_node(CHECKING)
    event = checked(net, first, first.check_reach(net.now))
    assert not event.client and event.verdict.no_helpers
    # And a network restarted all at once, every node a client of the others, recovers:
    # nobody answers, so nobody can be asked, so each serves.
    others = [net.add_node(CHECKING) for _ in range(3)]
    for core in others:
        core.set_client(True, net.now)
    for core in others:
        seeds = [net.addr_of(c) for c in others if c is not core]
        net.wait(core, core.bootstrap(seeds, net.now))
        assert not checked(net, core, core.check_reach(net.now)).client


# --- the helper, as an attacker sees it ---------------------------------------------------


def _reach_request(identity: Identity, helper: DHTCore, url: str, nonce: bytes) -> Reach:
    payload = reach_request_payload(nonce, helper.node_id, url)
    return Reach(identity.node_id, nonce, url, identity.public_key, identity.sign(payload))


def test_a_helper_dials_only_the_requesters_own_address_once_a_minute() -> None:
    rng = random.Random(5)
    helper = DHTCore(Identity.from_seed(b"h" * 32), rng, 1000.0)
    helper.dials_urls = True
    asker = Identity.from_seed(b"a" * 32)
    source = ("198.51.100.7", 5555)
    answers = []
    for i in range(20):
        # Each time a URL at a third party's address; the port, and only it, is free.
        request = _reach_request(asker, helper, f"ws://203.0.113.{i}:{80 + i}", bytes([i]) * 16)
        data = serialize_request(bytes([i]) * 20, request)
        helper.receive(data, source, 1000.0 + i)
        (out, to), *rest = helper.datagrams_to_send(1000.0 + i)
        assert not rest and to == source and len(out) < len(data)
        answers.append(parse_reply(request, parse_frame(out).body))
    dials = helper.dial_backs()
    assert len(dials) == 1, "one dial-back a minute per source"
    assert dials[0].to == source and dials[0].http is None  # the URL's host was not its own
    statuses = [ReachStatus(a.status) for a in answers if isinstance(a, ReachReply)]
    assert statuses == [ReachStatus.URL_REFUSED] + [ReachStatus.BUSY] * 19
    assert all(a.host == source[0] and a.port == source[1] for a in answers)  # type: ignore[union-attr]


def test_a_helper_dials_at_most_its_total_from_many_sources() -> None:
    helper = DHTCore(Identity.from_seed(b"h" * 32), random.Random(6), 0.0)
    asker = Identity.from_seed(b"a" * 32)
    for i in range(200):
        request = _reach_request(asker, helper, "", bytes([i % 256]) * 16)
        data = serialize_request(bytes([i % 256]) * 20, request)
        helper.receive(data, (f"10.{i}.0.1", 4000), 1.0)
    helper.datagrams_to_send(1.0)
    assert len(helper.dial_backs()) == ReachConfig().dial_backs_per_minute
    assert helper.counters["reach.busy"] == 200 - ReachConfig().dial_backs_per_minute


def test_an_unsigned_or_misattributed_request_is_dropped() -> None:
    helper = DHTCore(Identity.from_seed(b"h" * 32), random.Random(7), 0.0)
    asker, other = Identity.from_seed(b"a" * 32), Identity.from_seed(b"o" * 32)
    good = _reach_request(asker, helper, "", b"n" * 16)
    for bad in (
        dataclasses.replace(good, signature=bytes(64)),
        dataclasses.replace(good, sender_id=other.node_id),
        dataclasses.replace(good, url="ws://:9"),  # the signature covers the URL
        _reach_request(asker, DHTCore(other, random.Random(1), 0.0), "", b"n" * 16),
    ):
        helper.receive(serialize_request(b"m" * 20, bad), ("198.51.100.7", 4000), 1.0)
    assert helper.datagrams_to_send(1.0) == [] and helper.dial_backs() == []
    assert helper.counters["drop.reach_signature"] == 4


def test_a_probe_from_the_address_the_request_went_to_proves_nothing() -> None:
    """A helper that 'dials back' from its DHT socket gets through any NAT (the request
    opened that way in); such a probe is not counted."""
    net = MemoryNetwork(seed=53)
    nodes = net.build_mesh(4, FAST)
    home = net.add_node(CHECKING, nat=Nat(("192.0.2.81", 4000)))
    join(net, home, nodes[0])
    op = home.check_reach(net.now)
    net.touch_all()
    net.step()  # the requests are out; "probe" from each helper's DHT socket
    for pending in list(home._pending.values()):
        if isinstance(pending.request, Reach):
            probe = serialize_request(b"p" * 20, ReachProbe(pending.request.nonce))
            net.inject(probe, pending.addr, net.public_addr(home))
    verdict = checked(net, home, op).verdict
    assert verdict.confirmed == 0 and verdict.dht is Reachability.UNREACHABLE
    assert home.counters["reach.probe_same_socket"] >= 1


def test_a_clients_requests_carry_the_client_id_and_it_answers_nothing() -> None:
    net = MemoryNetwork(seed=55)
    nodes = net.build_mesh(4, FAST)
    client = net.add_node(FAST)
    client.set_client(True, net.now)
    join(net, client, nodes[0])
    sent = [m for m, _ in client.messages_to_send(net.now)]  # nothing pending now
    assert sent == []
    client.find_node(b"x" * 20, net.now)
    for message, _ in client.messages_to_send(net.now):
        assert getattr(message.body, "sender_id", CLIENT_ID) == CLIENT_ID
    net.touch_all()
    net.run_for(5)
    ping = serialize_request(b"q" * 20, Ping(b"z" * 20))
    client.receive(ping, net.addr_of(nodes[1]), net.now)
    assert client.datagrams_to_send(net.now) == []
    assert client.counters["drop.client"] >= 1
    assert holders(net, client) == []


def test_a_url_that_was_not_up_yet_is_checked_again_a_minute_later() -> None:
    """A node started before its proxy: the DHT answers, the URL does not yet. With one
    helper a missed probe decides nothing (unknown), and an undecided URL is asked
    again after `retry_interval`, not after the reachable DHT's half hour."""
    net = MemoryNetwork(seed=57)
    seed = net.add_node(FAST)
    seed.dials_urls = True
    public = net.add_node(CHECKING)
    join(net, public, seed)
    url = f"ws://{net.public_addr(public)[0]}:8443"
    first = checked(net, public, public.check_reach(net.now, url)).verdict
    assert first.dht is Reachability.REACHABLE and first.url is Reachability.UNKNOWN
    assert first.url_missed == 1
    net.serve_http(public, 8443)  # the proxy comes up
    net.run_until(lambda: public.reach_verdict is not first, timeout=120)
    second = public.reach_verdict
    assert second is not None and second.url is Reachability.REACHABLE
    assert second.at - first.at == pytest.approx(ReachConfig().retry_interval, abs=10)


# --- certificates other nodes refuse -----------------------------------------------------


def test_a_certificate_the_helpers_refuse_is_reported_with_why_and_rechecked() -> None:
    """Helpers verify the URL's certificate as links do; one they refuse (expired, say)
    is neither reachable nor silence: each helper says so, signed, and the node hears
    why. The fix (a renewed certificate) is seen at the next check, within 5 minutes."""
    net = MemoryNetwork(seed=59)
    nodes = net.build_mesh(8, FAST)
    public = net.add_node(CHECKING)
    url = net.serve_http(public, 8443, tls=TlsFailure.EXPIRED)
    for node in nodes:
        node.dials_urls = True
    join(net, public, nodes[0])
    started = net.now
    event = checked(net, public, public.check_reach(net.now, url))
    verdict = event.verdict
    assert verdict.dht is Reachability.REACHABLE and not event.client
    assert verdict.url is Reachability.TLS_UNTRUSTED and verdict.url_tls is TlsFailure.EXPIRED
    assert verdict.url_untrusted == 3 and verdict.url_confirmed == 0
    assert verdict.at - started < 1.0, "no waiting for probes the helpers said will not come"
    assert public.counters["reach.result_in.tls_untrusted"] == 3
    assert sum(n.counters["reach.result_out.tls_untrusted"] for n in nodes) == 3
    net.serve_http(public, 8443)  # renewed
    net.run_until(lambda: public.reach_verdict is not verdict, timeout=400)
    fixed = public.reach_verdict
    assert fixed is not None and fixed.url is Reachability.REACHABLE
    assert fixed.at - verdict.at == pytest.approx(ReachConfig().unreachable_interval, abs=10)
    # Helpers' word that their probes went through comes after the probes ended the check.
    net.run_for(1)
    assert public.counters["reach.result_unknown"] == 3


def _owed_result(helper: DHTCore, asker: Identity, source: tuple[str, int]) -> bytes:
    """Ask `helper` to dial a URL at `source`; the nonce of the dial-back it owes."""
    nonce = b"r" * 16
    request = _reach_request(asker, helper, f"wss://{source[0]}:8443", nonce)
    helper.receive(serialize_request(b"q" * 20, request), source, 1.0)
    helper.datagrams_to_send(1.0)
    (dial,) = helper.dial_backs()
    assert dial.http is not None and dial.nonce == nonce
    return nonce


def test_a_helper_tells_what_its_probe_met_once_and_only_to_the_requester() -> None:
    helper = DHTCore(Identity.from_seed(b"h" * 32), random.Random(8), 0.0)
    helper.dials_urls = True
    asker = Identity.from_seed(b"a" * 32)
    source = ("198.51.100.7", 5555)
    nonce = _owed_result(helper, asker, source)
    asked = len(serialize_request(b"q" * 20, _reach_request(asker, helper, "", nonce)))
    result = UrlProbeResult(UrlOutcome.TLS_UNTRUSTED, TlsFailure.SELF_SIGNED)
    helper.url_dialed(nonce, result, 2.0)
    (data, to), *rest = helper.datagrams_to_send(2.0)
    assert not rest and to == source and len(data) < asked
    told = parse_request(parse_frame(data).body)
    assert isinstance(told, ReachResult) and told.nonce == nonce
    assert (told.outcome, told.tls) == (UrlOutcome.TLS_UNTRUSTED, TlsFailure.SELF_SIGNED)
    payload = reach_result_payload(nonce, asker.node_id, told.outcome, told.tls)
    assert verify_signature(told.public_key, payload, told.signature)
    # Told once; a nonce it owes nothing for (never asked, already told) sends nothing.
    helper.url_dialed(nonce, result, 3.0)
    helper.url_dialed(b"x" * 16, result, 3.0)
    assert helper.datagrams_to_send(3.0) == []
    assert helper.counters["reach.result_unowed"] == 2
    # Without a URL to dial, nothing is owed.
    plain = _reach_request(asker, helper, "", b"p" * 16)
    helper.receive(serialize_request(b"w" * 20, plain), ("192.0.2.1", 4000), 4.0)
    helper.datagrams_to_send(4.0)
    helper.url_dialed(b"p" * 16, UrlProbeResult(UrlOutcome.REACHED), 4.0)
    assert helper.datagrams_to_send(4.0) == []


def test_a_result_from_anyone_but_the_helper_asked_changes_nothing() -> None:
    """A stranger who saw the nonce (on the path) cannot call a good certificate bad: a
    result counts only signed by the key of the helper that nonce went to."""
    net = MemoryNetwork(seed=61)
    nodes = net.build_mesh(4, FAST)
    public = net.add_node(CHECKING)
    url = net.serve_http(public, 8443)
    for node in nodes:
        node.dials_urls = True
    join(net, public, nodes[0])
    op = public.check_reach(net.now, url)
    net.touch_all()
    net.step()  # the requests are out
    stranger = Identity.from_seed(b"s" * 32)
    for pending in list(public._pending.values()):
        if not isinstance(pending.request, Reach):
            continue
        nonce = pending.request.nonce
        payload = reach_result_payload(nonce, public.node_id, 2, int(TlsFailure.EXPIRED))
        forged = ReachResult(
            nonce, 2, int(TlsFailure.EXPIRED), stranger.public_key, stranger.sign(payload)
        )
        net.inject(serialize_request(b"f" * 20, forged), pending.addr, net.public_addr(public))
        unknown = dataclasses.replace(forged, nonce=b"u" * 16)
        net.inject(serialize_request(b"g" * 20, unknown), pending.addr, net.public_addr(public))
    verdict = checked(net, public, op).verdict
    assert verdict.url is Reachability.REACHABLE and verdict.url_untrusted == 0
    assert public.counters["reach.bad_result"] == 3
    assert public.counters["reach.result_unknown"] == 3
