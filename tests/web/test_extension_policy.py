"""The extension's site policy (signaling/web/extension/sitepolicy.js), run in
Chromium: which pages it joins, which it never joins and why, the local-address
rule, the switch per site (bounded), and no input that makes it throw."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.policy import SPECIAL_IPV4, SPECIAL_IPV6, is_special
from signaling.node import SignalingNode
from signaling.rooms import canonical_url
from tests.signaling.conftest import NodeFactory

from .conftest import PageFactory


@pytest.fixture
async def policy(signaling_mesh: NodeFactory, open_page: PageFactory) -> Any:
    node: SignalingNode
    (node,) = await signaling_mesh(1)
    page = await open_page(node, "policy")
    await page.evaluate("import('/web/extension/sitepolicy.js').then(m => { window.policy = m })")
    return page


async def decide(page: Any, url: str, **options: Any) -> dict[str, Any]:
    decision: dict[str, Any] = await page.evaluate(
        "([url, options]) => window.policy.decide(url, options)", [url, options]
    )
    return decision


JOINS = [
    "https://example.org/a-page?utm_source=x&id=7#comments",
    "http://news.example.com:8080/story",
    "http://172.32.0.1/",  # just past 172.16/12
    "http://100.128.0.1/",  # just past 100.64/10
    "http://198.20.0.1/",  # just past 198.18/15
    "http://[2606:4700::1111]/",
    "http://[::ffff:8.8.8.8]/",  # IPv4-mapped: judged by the IPv4 inside
    "http://[64:ff9b::808:808]/",  # NAT64 of 8.8.8.8
    "http://[2002:808:808::1]/",  # 6to4 of 8.8.8.8
    "https://example.org/mailing-list",  # "mail" in a path is no mail site
]
NO_ROOM = [
    "chrome://settings/",
    "file:///etc/passwd",
    "about:blank",
    "",
    "not a url",
    "ftp://x.org/",
]
LISTED = {
    "https://mail.google.com/mail/u/0/#inbox": "mail",
    "https://outlook.office.com/mail/": "mail",
    "https://webmail.example.org/": "mail",
    "https://www.bankofamerica.com/": "banking",
    "https://onlinebanking.example.de/login": "banking",
    "https://example.bank/": "banking",
    "https://www.paypal.com/myaccount": "banking",
    "https://accounts.google.com/signin": "sign-in",
    "https://login.example.com/": "sign-in",
}
LOCAL = [
    "http://localhost:8080/",
    "http://app.localhost/",
    "http://127.0.0.1/",
    "http://127.8.9.10:3000/x",
    "http://10.1.2.3/",
    "http://172.16.0.1/",
    "http://172.31.255.255/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data",
    "http://100.64.0.1/",
    "http://[::1]:8000/",
    "http://[fd00::1]/",
    "http://[fe80::1]/",
    "http://[::ffff:192.168.0.1]/",
    "http://wiki/",
    "http://printer.local/",
    "http://nas.home.arpa/",
    "http://git.internal/",
    "http://intranet.corp/",
    # the rest of the IANA special-purpose registries
    "http://0.0.0.0/",
    "http://0.1.2.3/",
    "http://100.127.255.255/",
    "http://192.0.0.8/",
    "http://192.0.2.1/",
    "http://198.18.0.1/",
    "http://198.19.255.255/",
    "http://198.51.100.7/",
    "http://203.0.113.9/",
    "http://224.0.0.1/",
    "http://240.0.0.1/",
    "http://255.255.255.255/",
    "http://[::]/",
    "http://[::7f00:1]/",  # IPv4-compatible 127.0.0.1 (deprecated ::/96)
    "http://[::ffff:127.0.0.1]/",
    "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
    "http://[64:ff9b:1::808:808]/",  # local-use NAT64: always local
    "http://[2002:a00:1::1]/",  # 6to4 of 10.0.0.1
    "http://[100::1]/",
    "http://[2001:db8::1]/",
    "http://[fc00::1]/",
    "http://[febf::1]/",
    "http://[fec0::1]/",  # deprecated site-local
    "http://[ff02::1]/",
]


async def test_pages_with_rooms_are_joined_by_their_canonical_url(policy: Any) -> None:
    for url in JOINS:
        decision = await decide(policy, url)
        assert decision["reason"] == "on", url
        assert decision["room"] == canonical_url(url), url
        assert decision["site"] == canonical_url(url).split("/")[2]


async def test_pages_without_rooms_and_private_windows(policy: Any) -> None:
    for url in NO_ROOM:
        assert (await decide(policy, url))["reason"] == "no-room", url
    private = await decide(policy, JOINS[0], incognito=True, allowLocal=True)
    assert private["reason"] == "incognito" and private["room"] is None and private["site"] is None


async def test_the_built_in_list_wins_over_every_switch(policy: Any) -> None:
    for url, kind in LISTED.items():
        decision = await decide(policy, url, allowLocal=True)
        assert (decision["reason"], decision["kind"], decision["room"]) == ("listed", kind, None), (
            url
        )
        assert decision["text"].startswith("pagemesh never joins on")
    local_mail = await decide(policy, "http://mail.localhost/", allowLocal=True)
    assert local_mail["reason"] == "listed"


async def test_local_addresses_only_when_the_options_allow_them(policy: Any) -> None:
    for url in LOCAL:
        assert (await decide(policy, url))["reason"] == "local", url
        allowed = await decide(policy, url, allowLocal=True)
        assert allowed["reason"] == "on" and allowed["room"] == canonical_url(url), url
    # An address in another spelling is judged as the browser reads it (127.0.0.1 here).
    spelled = await decide(policy, "http://0x7f000001/")
    assert (spelled["reason"], spelled["site"]) == ("local", "127.0.0.1")


async def test_a_site_switched_off_stays_off_and_the_switches_are_bounded(policy: Any) -> None:
    off = {"example.org": False}
    assert (await decide(policy, "https://example.org/any/page", sites=off))["reason"] == "off"
    assert (await decide(policy, "http://example.org/", sites=off))["reason"] == "off"
    assert (await decide(policy, "https://www.example.org/", sites=off))["reason"] == "on"
    assert (await decide(policy, "https://example.org:8443/", sites=off))["reason"] == "on"
    kept = await policy.evaluate(
        """() => {
            const p = window.policy;
            let sites = {};
            for (let i = 0; i < p.MAX_SITES + 5; i++) {
                sites = p.switchSite(sites, `s${i}.example`, false);
            }
            const bounded = Object.keys(sites);
            sites = p.switchSite(sites, 's5.example', false);  // again: now the most recent
            const again = Object.keys(sites).at(-1);
            sites = p.switchSite(sites, 's6.example', true);  // on is the default: forgotten
            return [bounded.length, bounded[0], bounded.at(-1), again, 's6.example' in sites];
        }"""
    )
    assert kept == [1000, "s5.example", "s1004.example", "s5.example", False]


URLISH = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda scheme, host, rest: f"{scheme}://{host}{rest}",
        st.sampled_from(["http", "https", "HTTP", "ftp", "chrome", "javascript"]),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-:[]%@", max_size=30),
        st.text(max_size=30),
    ),
)


@settings(
    max_examples=1, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(urls=st.lists(URLISH, min_size=200, max_size=200))
async def test_no_url_makes_it_throw(policy: Any, urls: list[str]) -> None:
    reasons = await policy.evaluate(
        """(urls) => urls.map(u => {
            try { return window.policy.decide(u, {allowLocal: u.length % 2 === 0}).reason }
            catch (e) { return 'threw ' + e }
        })""",
        urls,
    )
    assert set(reasons) <= {"on", "no-room", "listed", "local"}, reasons


def _near(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> st.SearchStrategy[str]:
    """An address in `network`, or just before or after it."""
    first, last = int(network.network_address), int(network.broadcast_address)
    top = 2**network.max_prefixlen - 1
    edges = [max(first - 1, 0), first, last, min(last + 1, top)]
    cls = ipaddress.IPv4Address if network.version == 4 else ipaddress.IPv6Address
    return st.one_of(st.sampled_from(edges), st.integers(first, last)).map(lambda n: str(cls(n)))


_V4 = st.one_of(st.sampled_from(SPECIAL_IPV4).flatmap(_near), st.ip_addresses(v=4).map(str))
ADDRESSES = st.one_of(
    _V4,
    st.sampled_from(SPECIAL_IPV6).flatmap(_near),
    st.ip_addresses(v=6).map(str),
    # IPv6 that carries an IPv4: mapped, NAT64 well-known prefix, 6to4, IPv4-compatible
    _V4.map(lambda a: f"::ffff:{a}"),
    _V4.map(lambda a: f"64:ff9b::{a}"),
    _V4.map(
        lambda a: str(
            ipaddress.IPv6Address((0x2002 << 112) | (int(ipaddress.IPv4Address(a)) << 80))
        )
    ),
    _V4.map(lambda a: f"::{a}"),
)


@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(ADDRESSES, min_size=200, max_size=200))
async def test_an_address_is_local_as_the_relay_judges_special_purpose(
    policy: Any, addresses: list[str]
) -> None:
    """The extension's never-join rule for address literals is relay/policy.py's deny-list
    (IANA special-purpose registries, the IPv4 inside mapped, NAT64 and 6to4 judged by
    its own rule): an address in the registries is local, any other is not."""
    urls = [f"http://[{a}]/" if ":" in a else f"http://{a}/" for a in addresses]
    reasons = await policy.evaluate("(urls) => urls.map(u => window.policy.decide(u).reason)", urls)
    for address, reason in zip(addresses, reasons, strict=True):
        expected = "local" if is_special(ipaddress.ip_address(address)) else "on"
        assert reason == expected, address
