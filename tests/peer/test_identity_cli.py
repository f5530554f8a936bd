"""`pagemesh identity show|export|import` as a person runs them: real processes."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

from nacl.signing import SigningKey

from peer.identity_file import export_identity, import_identity
from peer.store import SCHEMA_VERSION, PeerStore

PAGEMESH = [sys.executable, "-m", "pagemesh", "identity"]


def identity(
    *args: str, passphrase: str | None = "correct horse battery"
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PAGEMESH_PASSPHRASE"}
    if passphrase is not None:
        env["PAGEMESH_PASSPHRASE"] = passphrase
    return subprocess.run(
        [*PAGEMESH, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def made_identity(data_dir: Path, name: str | None = "Ana") -> str:
    store = PeerStore(data_dir)
    try:
        if name:
            store.name = name
        return bytes(store.key.verify_key).hex()
    finally:
        store.close()


def test_export_then_import_elsewhere_gives_the_same_key_and_name(tmp_path: Path) -> None:
    public = made_identity(tmp_path / "a")
    file = tmp_path / "ana.pagemesh-identity"
    out = identity("export", str(file), "--data-dir", str(tmp_path / "a"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == public
    assert stat.S_IMODE(file.stat().st_mode) == 0o600

    got = identity("import", str(file), "--data-dir", str(tmp_path / "b"))
    assert got.returncode == 0, got.stderr
    assert public in got.stderr  # shown before the passphrase
    assert got.stdout.strip() == public
    key = tmp_path / "b" / "peer.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert bytes(SigningKey(key.read_bytes()).verify_key).hex() == public
    shown = identity("show", "--data-dir", str(tmp_path / "b"), passphrase=None)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [public, "name: Ana"]
    # The file itself opens in the library with the same passphrase.
    seed, name = import_identity(file.read_bytes(), "correct horse battery")
    assert bytes(SigningKey(seed).verify_key).hex() == public and name == "Ana"


def test_export_needs_a_key_and_creates_none(tmp_path: Path) -> None:
    out = identity("export", str(tmp_path / "x"), "--data-dir", str(tmp_path / "a"))
    assert out.returncode == 1 and "no identity" in out.stderr
    assert not (tmp_path / "a" / "peer.key").exists() and not (tmp_path / "x").exists()


def test_export_does_not_overwrite_without_force(tmp_path: Path) -> None:
    public = made_identity(tmp_path / "a")
    file = tmp_path / "x"
    file.write_text("other")
    out = identity("export", str(file), "--data-dir", str(tmp_path / "a"))
    assert out.returncode == 1 and "--force" in out.stderr
    assert file.read_text() == "other"
    forced = identity("export", str(file), "--data-dir", str(tmp_path / "a"), "--force")
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.strip() == public and stat.S_IMODE(file.stat().st_mode) == 0o600


def test_wrong_passphrase_fails_and_changes_nothing(tmp_path: Path) -> None:
    seed = os.urandom(32)
    file = tmp_path / "f"
    file.write_bytes(export_identity(seed, "right words", "Bo"))
    out = identity("import", str(file), "--data-dir", str(tmp_path / "b"), passphrase="wrong")
    assert out.returncode == 1, out.stderr
    assert "wrong-passphrase" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "b" / "peer.key").exists()


def test_import_replaces_another_key_only_with_force(tmp_path: Path) -> None:
    old = made_identity(tmp_path / "b", name=None)
    seed = os.urandom(32)
    new = bytes(SigningKey(seed).verify_key).hex()
    file = tmp_path / "f"
    file.write_bytes(export_identity(seed, "correct horse battery", None))
    refused = identity("import", str(file), "--data-dir", str(tmp_path / "b"))
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert bytes(SigningKey((tmp_path / "b" / "peer.key").read_bytes()).verify_key).hex() == old
    forced = identity("import", str(file), "--data-dir", str(tmp_path / "b"), "--force")
    assert forced.returncode == 0, forced.stderr
    key = tmp_path / "b" / "peer.key"
    assert bytes(SigningKey(key.read_bytes()).verify_key).hex() == new
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert [p.name for p in (tmp_path / "b").iterdir() if p.name.endswith(".tmp")] == []


def test_not_an_identity_file_and_no_passphrase_are_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_text("{}")
    out = identity("import", str(junk), "--data-dir", str(tmp_path / "b"))
    assert out.returncode == 1 and "not-identity-file" in out.stderr
    made_identity(tmp_path / "a")
    asked = identity(
        "export", str(tmp_path / "x"), "--data-dir", str(tmp_path / "a"), passphrase=None
    )
    assert asked.returncode == 1 and "PAGEMESH_PASSPHRASE" in asked.stderr
    empty = identity(
        "export", str(tmp_path / "x"), "--data-dir", str(tmp_path / "a"), passphrase=""
    )
    assert empty.returncode == 1 and "Traceback" not in empty.stderr


def test_a_store_from_a_newer_pagemesh_is_a_clear_error(tmp_path: Path) -> None:
    made_identity(tmp_path)
    with contextlib.closing(sqlite3.connect(tmp_path / "peer.sqlite3")) as db, db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    shown = identity("show", "--data-dir", str(tmp_path), passphrase=None)
    assert shown.returncode == 1
    assert "written by a newer pagemesh" in shown.stderr and "upgrade pagemesh" in shown.stderr
    assert "Traceback" not in shown.stderr
