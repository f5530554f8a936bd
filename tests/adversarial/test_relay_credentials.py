"""An attacker's view of the relay's credential rule (docs/relay.md, "Credentials").

The relay checks a credential's expiry only when an Allocate creates an
allocation; requests on an allocation need its own username and key. What a
holder of an expired credential (stolen, or its own) may do: keep the
allocation it already holds alive, within the quotas, at most
`max_past_expiry` past the expiry. What it may never do: create an
allocation, act on someone else's allocation, or outgrow the quotas.
The relay core on virtual time; no sockets.
"""

from __future__ import annotations

import pytest

from relay import wire
from relay.core import RelayConfig
from relay.credentials import mint_credentials
from tests.relay.turn import CLIENT, PEER, SECRET, Harness, TurnClient, error_code

ATTACKER = ("203.0.113.66", 6666)
HOUR = 3600.0


@pytest.fixture
def h() -> Harness:
    return Harness(RelayConfig(nonce_lifetime=86400.0, max_permissions=4, max_channels=2))


def victim_past_expiry(h: Harness) -> TurnClient:
    """The victim allocated at CLIENT with credentials that have since expired."""
    victim = h.client("victim", ttl=60)
    h.allocated(victim, lifetime=3600)
    h.advance(120)
    return victim


def stolen(victim: TurnClient) -> TurnClient:
    """The victim's username and password in the attacker's hands."""
    return TurnClient(victim.username, victim.password, seed=66)


def test_a_stolen_expired_credential_creates_nothing(h: Harness) -> None:
    thief = stolen(victim_past_expiry(h))
    h.login(thief, ATTACKER)
    for request in (
        thief.allocate(),
        thief.refresh(),
        thief.create_permission(PEER),
        thief.channel_bind(0x4000, PEER),
    ):
        assert error_code(h.ask(thief, request, ATTACKER)) == 401
    assert h.core.counters["refuse.expired_credentials"] == 4
    assert h.core.allocation_count == 1  # the victim's, untouched
    assert h.core.allocation_for(ATTACKER) is None


def test_another_users_allocation_is_not_theirs_to_refresh(h: Harness) -> None:
    victim = victim_past_expiry(h)
    # Even from the victim's own 5-tuple (a spoofed source): another valid
    # username gets 441, the victim's username without its password 401.
    mallory = h.client("mallory")
    mallory.nonce = victim.nonce
    assert error_code(h.ask(mallory, mallory.refresh(3600))) == 441
    assert error_code(h.ask(mallory, mallory.create_permission(PEER))) == 441
    forger = TurnClient(victim.username, "not-the-password")
    forger.nonce = victim.nonce
    assert error_code(h.ask(forger, forger.refresh(0))) == 401
    assert h.core.allocation_count == 1


def test_a_holder_keeps_its_allocation_within_the_quotas_and_the_cap(h: Harness) -> None:
    holder = victim_past_expiry(h)
    for i in range(4):
        peer = (f"93.184.216.{40 + i}", 5000)
        assert h.ask(holder, holder.create_permission(peer)).cls == wire.SUCCESS
    assert error_code(h.ask(holder, holder.create_permission(("93.184.216.99", 1)))) == 508
    assert h.ask(holder, holder.channel_bind(0x4000, ("93.184.216.40", 5000))).cls == wire.SUCCESS
    assert h.ask(holder, holder.channel_bind(0x4001, ("93.184.216.41", 5000))).cls == wire.SUCCESS
    assert error_code(h.ask(holder, holder.channel_bind(0x4002, PEER))) == 508
    # Refreshed every 50 minutes it lives, but not past max_past_expiry (a day).
    expiry = int(holder.username.partition(":")[0])
    ends = 0.0
    while h.core.allocation_count:
        response = h.ask(holder, holder.refresh(3600))
        assert response.cls == wire.SUCCESS
        raw = response.get(wire.LIFETIME)
        assert raw is not None
        ends = h.now + wire.decode_u32(raw)
        h.advance(3000)
    assert ends == expiry + 86400
    assert h.core.counters["allocations.expired"] == 1


def test_expired_allocations_still_count_against_the_users_quota(h: Harness) -> None:
    limit = h.core.config.max_allocations_per_user
    for i in range(limit):
        client = h.client("alice", ttl=60)
        h.allocated(client, ("198.51.100.50", 41000 + i), lifetime=3600)
    h.advance(120)  # every one of them past its credentials' expiry
    fresh = TurnClient(*mint_credentials(SECRET, "alice", HOUR, h.now))
    h.login(fresh, ATTACKER)
    assert error_code(h.ask(fresh, fresh.allocate(), ATTACKER)) == 486
    assert h.core.allocation_for(CLIENT) is None
