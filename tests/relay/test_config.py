"""The `[relay]` table: the credential rule's cap is an option like the others."""

from __future__ import annotations

import pytest

from relay.config import ConfigError, config_from_mapping


def test_max_past_expiry_defaults_to_a_day_and_is_configurable() -> None:
    assert config_from_mapping({})[0].max_past_expiry == 86400.0
    assert config_from_mapping({"max_past_expiry": 0})[0].max_past_expiry == 0.0
    assert config_from_mapping({"max_past_expiry": 7200.5})[0].max_past_expiry == 7200.5


@pytest.mark.parametrize("value", [-1, "1 day", True])
def test_max_past_expiry_must_be_a_non_negative_number(value: object) -> None:
    with pytest.raises(ConfigError):
        config_from_mapping({"max_past_expiry": value})
