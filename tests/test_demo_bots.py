"""The demo's greeter decides whom to greet on virtual time: once per key in a run,
never again for a person back within `REJOIN_QUIET`, bounded memory."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pagemesh.demo_bots import MAX_GREETED, REJOIN_QUIET, Greetings

ANA, ANA_PHONE, BO = (bytes([n]) * 32 for n in range(3))


def test_a_reload_or_a_rejoin_is_not_greeted_again() -> None:
    greetings = Greetings()
    assert greetings.should_greet(ANA, ANA, now=0.0)
    greetings.left(ANA, now=5.0)
    assert not greetings.should_greet(ANA, ANA, now=6.0)  # a reload: same key
    greetings.left(ANA, now=7.0)
    assert not greetings.should_greet(ANA, ANA, now=7.0 + 10 * REJOIN_QUIET)  # once a run


def test_a_person_back_on_another_device_within_minutes_is_not_greeted() -> None:
    greetings = Greetings()
    assert greetings.should_greet(ANA, ANA, now=0.0)
    assert not greetings.should_greet(ANA_PHONE, ANA, now=30.0)  # while her laptop is here
    greetings.left(ANA, now=60.0)
    assert not greetings.should_greet(bytes([9]) * 32, ANA, now=60.0 + REJOIN_QUIET - 1)
    greetings.left(ANA, now=70.0 + REJOIN_QUIET)
    assert greetings.should_greet(bytes([8]) * 32, ANA, now=71.0 + 2 * REJOIN_QUIET)
    assert greetings.should_greet(BO, BO, now=61.0)


def test_the_bots_themselves_are_never_greeted() -> None:
    greetings = Greetings(never={BO})
    assert not greetings.should_greet(BO, BO, now=0.0)


@given(st.lists(st.tuples(st.integers(0, 3000), st.booleans()), max_size=4000))
def test_memory_stays_bounded_and_a_key_is_greeted_at_most_once(
    steps: list[tuple[int, bool]],
) -> None:
    greetings = Greetings()
    greeted: list[int] = []
    now = 0.0
    for n, leaves in steps:
        key = n.to_bytes(32, "big")
        now += 1.0
        if leaves:
            greetings.left(key, now)
        elif greetings.should_greet(key, key, now):
            greeted.append(n)
        assert greetings.size <= 2 * MAX_GREETED
    recent = greeted[-MAX_GREETED:]
    assert len(set(recent)) == len(recent)  # no key twice among the last MAX_GREETED
