"""docs/deploy/pagemesh-certbot-hook.sh as certbot runs it: `sh` (dash on Debian), no bash.

A fake lineage (what certbot keeps in /etc/letsencrypt/live/NAME) and a `systemctl`
stand-in first on PATH that logs what it is asked; the hook must leave the pair where
the node reads it, owned by the node's user, the key mode 0600 (the node's own rule,
`check_key_mode`), and reload the node and the proxy that run, nothing that does not.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from relay.tls import check_key_mode
from tests.deploy.conftest import DOCS

HOOK = DOCS / "pagemesh-certbot-hook.sh"
SH = shutil.which("sh") or "/bin/sh"

SYSTEMCTL = """#!/bin/sh
echo "$*" >> "$SYSTEMCTL_LOG"
if [ "$1" = is-active ]; then
    for unit in $ACTIVE_UNITS; do
        [ "$unit" = "$3" ] && exit 0
    done
    exit 3
fi
exit 0
"""


class Hook:
    def __init__(self, tmp_path: Path) -> None:
        self.lineage = tmp_path / "live" / "node.example.net"
        self.lineage.mkdir(parents=True)
        (self.lineage / "fullchain.pem").write_text("CERTIFICATE CHAIN\n")
        (self.lineage / "privkey.pem").write_text("PRIVATE KEY\n")
        (self.lineage / "privkey.pem").chmod(0o600)
        self.tls = tmp_path / "etc" / "tls"
        self.tls.parent.mkdir()
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        systemctl = bin_dir / "systemctl"
        systemctl.write_text(SYSTEMCTL)
        systemctl.chmod(0o755)
        self.log = tmp_path / "systemctl.log"
        self.env = {
            "PATH": f"{bin_dir}:/usr/bin:/bin:/usr/sbin:/sbin",
            "SYSTEMCTL_LOG": str(self.log),
            "RENEWED_LINEAGE": str(self.lineage),
            "PAGEMESH_TLS_DIR": str(self.tls),
            "PAGEMESH_USER": pwd.getpwuid(os.getuid()).pw_name,
        }

    def run(
        self, active: str = "pagemesh-node nginx", **env: str
    ) -> subprocess.CompletedProcess[str]:
        environment = {**self.env, "ACTIVE_UNITS": active, **env}
        environment = {k: v for k, v in environment.items() if v is not None}
        return subprocess.run(
            [SH, str(HOOK)], env=environment, capture_output=True, text=True, timeout=30
        )

    @property
    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def hook(tmp_path: Path) -> Hook:
    return Hook(tmp_path)


def test_the_hook_copies_the_pair_for_the_node_and_reloads_what_runs(hook: Hook) -> None:
    done = hook.run()
    assert done.returncode == 0, done.stderr
    cert, key = hook.tls / "fullchain.pem", hook.tls / "privkey.pem"
    assert cert.read_text() == "CERTIFICATE CHAIN\n" and key.read_text() == "PRIVATE KEY\n"
    assert stat.S_IMODE(cert.stat().st_mode) == 0o644
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    check_key_mode(key, "node")  # what the node itself demands of the key
    assert stat.S_IMODE(hook.tls.stat().st_mode) == 0o700  # made by the hook
    assert {cert.stat().st_uid, key.stat().st_uid, hook.tls.stat().st_uid} == {os.getuid()}
    assert sorted(os.listdir(hook.tls)) == ["fullchain.pem", "privkey.pem"]  # no temporaries
    assert "reload pagemesh-node" in hook.calls and "reload nginx" in hook.calls


def test_a_renewal_replaces_the_files_and_a_stopped_node_is_left_alone(hook: Hook) -> None:
    assert hook.run().returncode == 0
    (hook.lineage / "privkey.pem").write_text("RENEWED KEY\n")
    hook.log.unlink()
    done = hook.run(active="")  # first issuance: neither the node nor nginx runs yet
    assert done.returncode == 0, done.stderr
    assert (hook.tls / "privkey.pem").read_text() == "RENEWED KEY\n"
    assert not [call for call in hook.calls if call.startswith("reload")]


def test_no_proxy_to_reload_when_told_so(hook: Hook) -> None:
    assert hook.run(PAGEMESH_PROXY="").returncode == 0
    assert "reload pagemesh-node" in hook.calls
    assert not any("nginx" in call for call in hook.calls)


def test_without_a_lineage_it_says_what_it_is(hook: Hook) -> None:
    environment = {k: v for k, v in hook.env.items() if k != "RENEWED_LINEAGE"}
    done = subprocess.run(
        [SH, str(HOOK)], env=environment, capture_output=True, text=True, timeout=30
    )
    assert done.returncode != 0 and "certbot sets RENEWED_LINEAGE" in done.stderr
    assert not hook.tls.exists()


@pytest.mark.skipif(os.getuid() != 0, reason="giving files to another user needs root")
def test_the_copies_belong_to_the_nodes_user(hook: Hook) -> None:
    nobody = pwd.getpwnam("nobody")
    assert hook.run(PAGEMESH_USER="nobody").returncode == 0
    for name in ("fullchain.pem", "privkey.pem"):
        assert (hook.tls / name).stat().st_uid == nobody.pw_uid
    assert hook.tls.stat().st_uid == nobody.pw_uid


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_the_hook_is_posix_sh_as_shellcheck_reads_it() -> None:
    done = subprocess.run(
        ["shellcheck", "--shell=sh", str(HOOK)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout
