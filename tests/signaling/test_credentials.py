"""Ephemeral TURN credentials: what the node mints, the relay checks."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.credentials import (
    CredentialError,
    check_username,
    load_secret,
    mint_credentials,
    password_for,
)


def test_mint_and_check() -> None:
    username, password = mint_credentials(b"s3cret", "ab" * 32, ttl=600, now=1000.0)
    assert username == "1600:" + "ab" * 32
    assert password == password_for(b"s3cret", username)
    assert password != password_for(b"other", username)
    assert check_username(username, 1599.0) == "ab" * 32
    with pytest.raises(CredentialError, match="expired"):
        check_username(username, 1600.0)


@pytest.mark.parametrize("username", ["", "peer", "x:peer", "12:", "-5:p", "1e9:p"])
def test_malformed_usernames(username: str) -> None:
    with pytest.raises(CredentialError):
        check_username(username, 0.0)


def test_secret_from_file_or_env(
    tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "secret"
    path.write_text("  from-file\n")
    assert load_secret(str(path)) == b"from-file"
    monkeypatch.setenv("PAGEMESH_RELAY_SECRET", "from-env")
    assert load_secret(None) == b"from-env"
    monkeypatch.delenv("PAGEMESH_RELAY_SECRET")
    assert load_secret(None) is None
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        load_secret(str(tmp_path / "empty"))


@given(st.text(max_size=600))
def test_check_username_only_raises_credential_error(username: str) -> None:
    with contextlib.suppress(CredentialError):
        check_username(username, 0.0)
