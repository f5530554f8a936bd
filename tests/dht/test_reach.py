"""Reachability rules (dht/reach.py) on virtual time, and the pm_reach messages' codec.

The helper's side first, as an attacker sees it: where a helper can be made to
send (only back to the requester's own address), how often (one dial-back a
minute per source, a bounded total), and how much (never more than was asked
with). Then the requester's side: whom it asks, and what the answers mean.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import random
from collections.abc import Sequence

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dht.identity import Identity
from dht.reach import (
    DialBackLimiter,
    HelperState,
    Reachability,
    ReachConfig,
    ReachRound,
    ReachStatus,
    ReachVerdict,
    TlsFailure,
    UrlOutcome,
    canonical_ip,
    choose_helpers,
    client_after,
    dial_target,
    is_loopback,
    judge,
    judge_url,
    next_check_at,
)
from dht.routing import Contact
from dht.wire import (
    MAX_URL_CHARS,
    Reach,
    ReachProbe,
    ReachReply,
    ReachResult,
    WireError,
    parse_frame,
    parse_reply,
    parse_request,
    serialize_request,
    serialize_response,
)

NONCE = bytes(range(16))
ids = st.binary(min_size=20, max_size=20)
nonces = st.binary(min_size=16, max_size=16)
hosts = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))
urls = st.one_of(
    st.just(""),
    st.text(max_size=MAX_URL_CHARS),
    st.builds(
        lambda scheme, host, port, path: f"{scheme}://{host}:{port}{path}",
        st.sampled_from(["ws", "wss", "http", "https", "ftp", "WS"]),
        st.one_of(hosts, st.just(""), st.from_regex(r"[a-z]{1,12}\.example", fullmatch=True)),
        st.integers(0, 70000),
        st.sampled_from(["", "/", "/base", "/a/b/"]),
    ),
)
reach_requests = st.builds(
    Reach,
    ids,
    nonces,
    urls.filter(lambda u: len(u) <= MAX_URL_CHARS),
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=64, max_size=64),
)
reach_results = st.builds(
    ReachResult,
    nonces,
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=64, max_size=64),
)
reach_replies = st.builds(
    ReachReply,
    st.integers(0, 255),
    hosts,
    st.integers(1, 65535),
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=64, max_size=64),
)


# --- the codec -----------------------------------------------------------------------


@given(ids, st.one_of(reach_requests, st.builds(ReachProbe, nonces), reach_results))
def test_reach_requests_round_trip(msg_id: bytes, request: Reach | ReachProbe) -> None:
    frame = parse_frame(serialize_request(msg_id, request))
    assert frame.is_request and parse_request(frame.body) == request


@given(st.binary(min_size=20, max_size=20), reach_requests, reach_replies)
def test_reach_replies_round_trip(msg_id: bytes, request: Reach, reply: ReachReply) -> None:
    frame = parse_frame(serialize_response(msg_id, reply))
    assert parse_reply(request, frame.body) == reply


any_msgpack = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.text(max_size=300),
        st.binary(max_size=70),
    ),
    lambda inner: st.lists(inner, max_size=6),
    max_leaves=20,
)


@settings(max_examples=500)
@given(
    st.sampled_from(["pm_reach", "pm_reach_probe", "pm_reach_result"]),
    st.lists(any_msgpack, max_size=6),
)
def test_any_reach_arguments_parse_or_raise_wire_error(name: str, args: list[object]) -> None:
    body = msgpack.packb([name, args], use_bin_type=True)
    with contextlib.suppress(WireError):
        parse_request(parse_frame(b"\x00" + b"m" * 20 + body).body)


@settings(max_examples=500)
@given(reach_requests, any_msgpack)
def test_any_reach_reply_body_parses_or_raises_wire_error(request: Reach, body: object) -> None:
    with contextlib.suppress(WireError):
        reply = parse_reply(request, body)
        assert isinstance(reply, ReachReply) and canonical_ip(reply.host) is not None


def test_reach_defects_are_named() -> None:
    good = [b"s" * 20, NONCE, "", b"k" * 32, b"g" * 64]
    cases = [
        (good[:4], "bad_arity"),
        ([b"s" * 20, b"short", "", b"k" * 32, b"g" * 64], "bad_field"),
        ([b"s" * 20, NONCE, "x" * (MAX_URL_CHARS + 1), b"k" * 32, b"g" * 64], "bad_field"),
        ([b"s" * 20, NONCE, b"bytes", b"k" * 32, b"g" * 64], "bad_field"),
    ]
    for args, reason in cases:
        with pytest.raises(WireError) as caught:
            parse_request(["pm_reach", args])
        assert caught.value.reason == reason
    request = Reach(b"s" * 20, NONCE, "", b"k" * 32, b"g" * 64)
    with pytest.raises(WireError, match="IP address"):
        parse_reply(request, [0, "node.example", 4000, b"k" * 32, b"g" * 64])
    result = [NONCE, 2, 4, b"k" * 32, b"g" * 64]
    for args, reason in [
        (result[:4], "bad_arity"),
        ([NONCE, 256, 4, b"k" * 32, b"g" * 64], "bad_field"),
        ([NONCE, 2, "self-signed", b"k" * 32, b"g" * 64], "bad_field"),
        ([NONCE, 2, 4, b"k" * 31, b"g" * 64], "bad_field"),
    ]:
        with pytest.raises(WireError) as caught:
            parse_request(["pm_reach_result", args])
        assert caught.value.reason == reason


@settings(max_examples=300)
@given(
    reach_requests,
    hosts,
    st.integers(1, 65535),
    st.sampled_from(list(ReachStatus)),
    st.sampled_from(list(UrlOutcome)),
    st.integers(0, 255),
)
def test_an_answer_is_never_bigger_than_its_request(
    request: Reach, host: str, port: int, status: ReachStatus, outcome: UrlOutcome, tls: int
) -> None:
    """No reflection: whatever the requester's address and URL (even an empty one), the
    answer, the UDP probe and the result of the HTTP probe (its reason a code, not the
    verifier's words) are each smaller than the request that caused them."""
    msg_id = b"m" * 20
    asked = len(serialize_request(msg_id, request))
    host = str(canonical_ip(host))
    answer = ReachReply(int(status), host, port, b"k" * 32, b"g" * 64)
    assert len(serialize_response(msg_id, answer)) < asked
    assert len(serialize_request(msg_id, ReachProbe(request.nonce))) < asked
    result = ReachResult(request.nonce, int(outcome), tls, b"k" * 32, b"g" * 64)
    assert len(serialize_request(msg_id, result)) < asked


# --- where a helper dials ----------------------------------------------------------------


@settings(max_examples=1000)
@given(urls, hosts)
def test_a_probe_only_ever_goes_to_the_requesters_own_address(url: str, source: str) -> None:
    target = dial_target(url, source, NONCE)
    if target is None:
        return
    assert canonical_ip(target.address) == canonical_ip(source)
    if target.name is None:
        # The URL dialled names the address itself; nothing else to resolve.
        shown = target.url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
        assert ipaddress.ip_address(shown) == canonical_ip(source)
    assert target.url.endswith(f"/healthz?reach={NONCE.hex()}")


@pytest.mark.parametrize(
    ("url", "source", "expected"),
    [
        ("ws://198.51.100.7:8000", "198.51.100.7", "http://198.51.100.7:8000/healthz"),
        ("ws://:8000", "198.51.100.7", "http://198.51.100.7:8000/healthz"),
        ("wss://[2001:db8::1]/base/", "2001:db8::1", "https://[2001:db8::1]:443/base/healthz"),
        ("ws://198.51.100.7:8000", "::ffff:198.51.100.7", "http://198.51.100.7:8000/healthz"),
        ("wss://node.example.net", "198.51.100.7", "https://node.example.net:443/healthz"),
        ("ws://203.0.113.9:8000", "198.51.100.7", None),  # a third party: refused
        ("ws://127.0.0.1:8000", "198.51.100.7", None),
        ("ftp://198.51.100.7:21", "198.51.100.7", None),
        ("ws://user:pw@198.51.100.7:8000", "198.51.100.7", None),
        ("ws://198.51.100.7:0", "198.51.100.7", None),
        ("ws://198.51.100.7:99999", "198.51.100.7", None),
        ("ws://bad_name!:8000", "198.51.100.7", None),
        ("ws://198.51.100.7:8000/#x", "198.51.100.7", None),
    ],
)
def test_dial_targets(url: str, source: str, expected: str | None) -> None:
    target = dial_target(url, source, NONCE)
    if expected is None:
        assert target is None
        return
    assert target is not None and target.url == f"{expected}?reach={NONCE.hex()}"
    assert target.address == str(canonical_ip(source))
    assert target.name == ("node.example.net" if "example" in url else None)


# --- how often a helper dials --------------------------------------------------------------


def test_one_dial_back_a_minute_per_source_and_a_bounded_total() -> None:
    limiter = DialBackLimiter(per_minute=5, source_interval=60.0)
    now = 1000.0
    a = ("198.51.100.7", 4000)
    assert limiter.allow(a, now)
    limiter.served(a, b"1" * 20, ReachStatus.ACCEPTED, now)
    # The same address, even from another port or as an IPv4-mapped IPv6 address: busy.
    for other in (a, ("198.51.100.7", 5000), ("::ffff:198.51.100.7", 4000)):
        assert not limiter.allow(other, now + 59.9)
    # Five a minute in all; the sixth waits for the oldest to leave the window.
    for i in range(4):
        source = (f"203.0.113.{i}", 4000)
        assert limiter.allow(source, now + 1 + i)
        limiter.served(source, b"2" * 20, ReachStatus.ACCEPTED, now + 1 + i)
    assert not limiter.allow(("192.0.2.1", 4000), now + 10)
    assert limiter.allow(("192.0.2.1", 4000), now + 60.0)
    assert limiter.allow(a, now + 60.0)
    assert len(limiter) <= 5


def test_an_ipv6_host_is_one_source_per_64() -> None:
    limiter = DialBackLimiter(per_minute=100, source_interval=60.0)
    limiter.served(("2001:db8:1:2::1", 4000), b"1" * 20, ReachStatus.ACCEPTED, 0.0)
    assert not limiter.allow(("2001:db8:1:2::ffff", 4000), 1.0)
    assert limiter.allow(("2001:db8:1:3::1", 4000), 1.0)


def test_a_retransmission_gets_the_same_answer_without_a_new_dial_back() -> None:
    limiter = DialBackLimiter(per_minute=5, source_interval=60.0)
    a = ("198.51.100.7", 4000)
    limiter.served(a, b"1" * 20, ReachStatus.URL_REFUSED, 0.0)
    assert limiter.answered(a, b"1" * 20, 0.5) is ReachStatus.URL_REFUSED
    assert limiter.answered(a, b"2" * 20, 0.5) is None  # another request: busy, not a replay
    assert limiter.answered(("198.51.100.7", 4001), b"1" * 20, 0.5) is None
    assert limiter.answered(a, b"1" * 20, 61.0) is None


def test_a_loopback_requester_has_only_the_total() -> None:
    """Nodes on one host (a test mesh, a demo) all come from 127.0.0.1; there is nobody
    else behind a loopback address for the per-source limit to protect."""
    limiter = DialBackLimiter(per_minute=3, source_interval=60.0)
    for i in range(3):
        assert limiter.allow(("127.0.0.1", 4000 + i), 0.0)
        limiter.served(("127.0.0.1", 4000 + i), bytes([i]) * 20, ReachStatus.ACCEPTED, 0.0)
    assert not limiter.allow(("127.0.0.1", 5000), 1.0)


@settings(max_examples=200)
@given(st.lists(st.tuples(hosts, st.floats(0, 600)), max_size=300))
def test_no_minute_ever_sees_more_dial_backs_than_the_limits(
    requests: list[tuple[str, float]],
) -> None:
    limiter = DialBackLimiter(per_minute=10, source_interval=60.0)
    made: list[tuple[float, str]] = []
    for host, when in sorted(requests, key=lambda r: r[1]):
        if limiter.allow((host, 4000), when):
            limiter.served((host, 4000), b"m" * 20, ReachStatus.ACCEPTED, when)
            made.append((when, host))
    for when, host in made:
        window = [h for w, h in made if when <= w < when + 60.0]
        assert len(window) <= 10
        ip = canonical_ip(host)
        if ip is not None and not ip.is_loopback:
            # Loopback requesters count only in the total (a test mesh shares one host),
            # so `::1` does not use up the `::/64` unit's dial-back.
            same = [h for h in window if _unit(h) == _unit(host) and not is_loopback(h)]
            assert len(same) == 1
    assert len(limiter) <= 10


def _unit(host: str) -> str:
    ip = canonical_ip(host)
    assert ip is not None
    if ip.version == 4:
        return str(ip)
    return str(ipaddress.ip_network((ip, 64), strict=False))


# --- whom a requester asks, and what it concludes ---------------------------------------------


def _contacts(hosts: list[str]) -> list[Contact[tuple[str, int]]]:
    return [Contact.make(bytes([i + 1]) * 20, (host, 4000)) for i, host in enumerate(hosts)]


def test_helpers_come_from_different_networks_while_there_are_some() -> None:
    contacts = _contacts(["198.51.100.1", "198.51.100.2", "198.51.100.3", "203.0.113.1"])
    for seed in range(20):
        chosen = choose_helpers(contacts, 2, random.Random(seed))
        assert len(chosen) == 2
        assert {c.addr[0].rsplit(".", 1)[0] for c in chosen} == {"198.51.100", "203.0.113"}
    # One network only (a lab, a single provider): different nodes, then.
    same = _contacts(["198.18.0.1", "198.18.0.2", "198.18.0.3"])
    chosen = choose_helpers(same, 3, random.Random(1))
    assert len({c.node_id for c in chosen}) == 3
    assert choose_helpers([], 3, random.Random(1)) == []


@pytest.mark.parametrize(
    ("confirmed", "missed", "expected"),
    [
        (2, 0, Reachability.REACHABLE),
        (3, 0, Reachability.REACHABLE),
        (2, 1, Reachability.REACHABLE),
        (1, 0, Reachability.REACHABLE),  # one helper answered at all (a network of two)
        (1, 1, Reachability.UNKNOWN),
        (1, 2, Reachability.UNKNOWN),  # a helper on the same LAN?
        (0, 1, Reachability.UNKNOWN),  # one lost datagram never decides
        (0, 2, Reachability.UNREACHABLE),
        (0, 3, Reachability.UNREACHABLE),
        (0, 0, Reachability.UNKNOWN),  # everybody busy or silent
    ],
)
def test_judge(confirmed: int, missed: int, expected: Reachability) -> None:
    assert judge(confirmed, missed, 2) is expected


@pytest.mark.parametrize(
    ("confirmed", "missed", "untrusted", "expected"),
    [
        (0, 0, 1, Reachability.TLS_UNTRUSTED),  # the one helper of a network of two
        (0, 0, 2, Reachability.TLS_UNTRUSTED),
        (0, 1, 2, Reachability.TLS_UNTRUSTED),
        (1, 0, 2, Reachability.TLS_UNTRUSTED),  # most of them refuse it: links will fail
        (0, 2, 1, Reachability.UNREACHABLE),  # one liar cannot say it alone
        (0, 1, 1, Reachability.UNREACHABLE),
        (2, 0, 1, Reachability.REACHABLE),
        (1, 0, 1, Reachability.UNKNOWN),
        (3, 0, 0, Reachability.REACHABLE),
        (0, 0, 0, Reachability.UNKNOWN),
    ],
)
def test_judge_url(confirmed: int, missed: int, untrusted: int, expected: Reachability) -> None:
    assert judge_url(confirmed, missed, untrusted, 2) is expected


def _round(
    answers: Sequence[tuple[ReachStatus | None, tuple[str, int] | None, bool, bool]],
    url: str = "ws://198.51.100.7:8000",
    url_hosts: tuple[str, ...] | None = None,
) -> ReachRound:
    helpers = []
    for i, (status, observed, udp, via_url) in enumerate(answers):
        helper = HelperState(bytes([i + 1]) * 20, (f"203.0.11{i}.1", 4000), bytes([i]) * 16)
        helper.status, helper.observed, helper.settled = status, observed, True
        helper.udp, helper.url = udp, via_url
        helpers.append(helper)
    return ReachRound(helpers, url, 0.0, 7.0, url_hosts)


ME = ("198.51.100.7", 4000)


def test_a_round_where_nothing_comes_back_is_unreachable_and_names_the_address() -> None:
    verdict = _round([(ReachStatus.ACCEPTED, ME, False, False)] * 3).verdict(2, 7.0, None)
    assert verdict.dht is verdict.url is Reachability.UNREACHABLE
    assert verdict.observed == ME and verdict.missed == 3 and verdict.url_missed == 3


def test_busy_and_silent_helpers_count_for_nothing() -> None:
    answers = [
        (ReachStatus.BUSY, ME, False, False),
        (None, None, False, False),
        (ReachStatus.ACCEPTED, ME, True, True),
    ]
    verdict = _round(answers).verdict(2, 7.0, None)
    assert verdict.dht is verdict.url is Reachability.REACHABLE
    assert (verdict.answered, verdict.confirmed, verdict.missed) == (2, 1, 0)


def test_a_url_nobody_would_dial_is_not_judged() -> None:
    refused = _round([(ReachStatus.URL_REFUSED, ME, True, False)] * 2).verdict(2, 7.0, None)
    assert refused.dht is Reachability.REACHABLE and refused.url is Reachability.UNKNOWN
    assert refused.url_refused == 2
    # A name that resolves elsewhere (a proxy in front): unknown, not unreachable.
    answers = [(ReachStatus.ACCEPTED, ME, True, False)] * 2
    proxied = _round(answers, "wss://node.example", ("192.0.2.80",)).verdict(2, 7.0, None)
    assert proxied.url is Reachability.UNKNOWN and proxied.url_elsewhere
    direct = _round(answers, "wss://node.example", (ME[0],)).verdict(2, 7.0, None)
    assert direct.url is Reachability.UNREACHABLE and not direct.url_elsewhere


def test_the_observed_address_needs_agreement() -> None:
    other = ("192.0.2.9", 4000)
    split = [(ReachStatus.ACCEPTED, ME, True, True), (ReachStatus.ACCEPTED, other, True, True)]
    assert _round(split).verdict(2, 7.0, None).observed is None
    # A NAT that maps each destination to another port still gives one host.
    ports = [(ReachStatus.ACCEPTED, (ME[0], 4000 + i), False, False) for i in range(3)]
    verdict = _round(ports).verdict(2, 7.0, None)
    assert verdict.observed is not None and verdict.observed[0] == ME[0]
    moved = _round([(ReachStatus.ACCEPTED, other, True, True)] * 2).verdict(2, 9.0, verdict)
    assert moved.address_changed


def test_a_round_is_complete_once_every_promised_probe_is_in() -> None:
    round_ = ReachRound(
        [HelperState(b"a" * 20, ("203.0.113.1", 4000), b"1" * 16)],
        "ws://198.51.100.7:8000",
        0.0,
        7.0,
    )
    assert not round_.complete()
    round_.answered(b"1" * 16, ReachStatus.ACCEPTED, ME)
    assert not round_.complete()
    assert round_.probe_arrived(b"1" * 16, via_url=False)
    assert not round_.complete()  # the HTTP probe was promised too
    assert not round_.probe_arrived(b"2" * 16, via_url=True)
    assert round_.probe_arrived(b"1" * 16, via_url=True)
    assert round_.complete()


def test_helpers_that_refuse_the_certificate_say_why_and_decide_the_url() -> None:
    answers = [(ReachStatus.ACCEPTED, ME, True, False)] * 3
    round_ = _round(answers, "wss://198.51.100.7:8443")
    reasons = [TlsFailure.EXPIRED, TlsFailure.EXPIRED, TlsFailure.HOSTNAME_MISMATCH]
    for helper, reason in zip(round_.helpers, reasons, strict=True):
        round_.url_reported(helper.nonce, UrlOutcome.TLS_UNTRUSTED, reason)
    verdict = round_.verdict(2, 7.0, None)
    assert verdict.dht is Reachability.REACHABLE
    assert verdict.url is Reachability.TLS_UNTRUSTED and verdict.url_tls is TlsFailure.EXPIRED
    assert (verdict.url_untrusted, verdict.url_missed, verdict.url_confirmed) == (3, 0, 0)
    # A probe that arrived outweighs its helper's word: arrival is what counts.
    round_.probe_arrived(round_.helpers[0].nonce, via_url=True)
    verdict = round_.verdict(2, 7.0, None)
    assert (verdict.url_untrusted, verdict.url_confirmed) == (2, 1)
    assert verdict.url is Reachability.TLS_UNTRUSTED
    # A tie between reasons always gives the same one (the lower code).
    tied = _round(answers[:2], "wss://198.51.100.7:8443")
    for helper, reason in zip(
        tied.helpers, (TlsFailure.NO_TLS, TlsFailure.SELF_SIGNED), strict=True
    ):
        tied.url_reported(helper.nonce, UrlOutcome.TLS_UNTRUSTED, reason)
    assert tied.verdict(2, 7.0, None).url_tls is TlsFailure.SELF_SIGNED


def test_a_helper_that_says_its_probe_failed_ends_the_wait_for_it() -> None:
    round_ = ReachRound(
        [HelperState(b"a" * 20, ("203.0.113.1", 4000), b"1" * 16)],
        "wss://198.51.100.7:8443",
        0.0,
        7.0,
    )
    round_.answered(b"1" * 16, ReachStatus.ACCEPTED, ME)
    assert round_.probe_arrived(b"1" * 16, via_url=False)
    round_.url_reported(b"1" * 16, UrlOutcome.REACHED, TlsFailure.NONE)
    assert not round_.complete(), "its word that the probe went out is not the probe"
    round_.url_reported(b"1" * 16, UrlOutcome.UNREACHABLE, TlsFailure.EXPIRED)
    assert round_.complete() and round_.helpers[0].tls is TlsFailure.NONE
    verdict = round_.verdict(2, 1.0, None)
    assert verdict.url is Reachability.UNKNOWN and verdict.url_missed == 1
    round_.url_reported(b"1" * 16, UrlOutcome.TLS_UNTRUSTED, TlsFailure.SELF_SIGNED)
    verdict = round_.verdict(2, 1.0, None)
    assert verdict.url is Reachability.TLS_UNTRUSTED
    assert (
        verdict.url_tls is TlsFailure.SELF_SIGNED
        and verdict.url_tls.text == "self-signed certificate"
    )


def test_a_reason_from_a_newer_helper_reads_as_untrusted() -> None:
    assert TlsFailure.read(200) is TlsFailure.UNTRUSTED
    assert TlsFailure.read(2) is TlsFailure.EXPIRED
    assert all(len(reason.text) <= 40 for reason in TlsFailure)


def _verdict(dht: Reachability, helpers: int = 3) -> ReachVerdict:
    return ReachVerdict(dht, Reachability.UNKNOWN, 100.0, "", None, helpers=helpers)


def test_when_to_check_again_and_what_to_be_meanwhile() -> None:
    config = ReachConfig()
    assert next_check_at(_verdict(Reachability.REACHABLE), config) == 100.0 + 1800.0
    assert next_check_at(_verdict(Reachability.UNREACHABLE), config) == 100.0 + 300.0
    assert next_check_at(_verdict(Reachability.UNKNOWN), config) == 100.0 + 60.0
    assert client_after(_verdict(Reachability.UNREACHABLE), client=False)
    assert not client_after(_verdict(Reachability.REACHABLE), client=True)
    assert client_after(_verdict(Reachability.UNKNOWN), client=True)
    assert not client_after(_verdict(Reachability.UNKNOWN), client=False)
    # Nobody to ask: the first node of a network serves, or nobody could ever join.
    assert not client_after(_verdict(Reachability.UNKNOWN, helpers=0), client=True)


def test_the_url_is_asked_again_as_soon_as_it_needs_to_be() -> None:
    """The DHT port and the URL each say when; the sooner wins. A URL a helper promised
    to dial that decided nothing (one helper, its probe missed: a proxy not up yet) is
    asked again after a minute; one nobody would dial sets no time."""
    config = ReachConfig()
    reachable = _verdict(Reachability.REACHABLE)
    url = "wss://198.51.100.7"

    def with_url(found: Reachability, **counts: int | bool) -> ReachVerdict:
        return dataclasses.replace(reachable, url=found, checked_url=url, **counts)  # type: ignore[arg-type]

    assert next_check_at(with_url(Reachability.UNKNOWN, url_missed=1), config) == 160.0
    assert next_check_at(with_url(Reachability.UNREACHABLE, url_missed=2), config) == 400.0
    assert next_check_at(with_url(Reachability.REACHABLE, url_confirmed=3), config) == 1900.0
    assert next_check_at(with_url(Reachability.TLS_UNTRUSTED, url_untrusted=1), config) == 400.0
    for nobody_dialled in (
        with_url(Reachability.UNKNOWN, url_refused=3),
        with_url(Reachability.UNKNOWN, url_missed=3, url_elsewhere=True),
        dataclasses.replace(reachable, url_missed=1),  # no URL asked for
    ):
        assert next_check_at(nobody_dialled, config) == 1900.0


def test_signatures_bind_the_helper_and_the_answer() -> None:
    """The request is signed for one helper, the answer for one requester and nonce."""
    from dht.wire import reach_reply_payload, reach_request_payload, reach_result_payload

    me, helper = Identity.from_seed(b"a" * 32), Identity.from_seed(b"b" * 32)
    asked = reach_request_payload(NONCE, helper.node_id, "ws://:8000")
    assert asked != reach_request_payload(NONCE, me.node_id, "ws://:8000")
    assert asked != reach_request_payload(NONCE, helper.node_id, "ws://:8001")
    told = reach_result_payload(NONCE, me.node_id, 2, 4)
    assert told != reach_result_payload(NONCE, me.node_id, 2, 2)
    assert told != reach_result_payload(NONCE, helper.node_id, 2, 4)
    assert told != reach_result_payload(NONCE, me.node_id, 0, 4)
    said = reach_reply_payload(NONCE, me.node_id, 0, "198.51.100.7", 4000)
    assert said != reach_reply_payload(NONCE, me.node_id, 3, "198.51.100.7", 4000)
    assert said != reach_reply_payload(NONCE, me.node_id, 0, "198.51.100.7", 4001)
