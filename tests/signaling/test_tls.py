"""The node's own TLS (signaling/tls.py): who may read the key, what a reload keeps.

Handshakes run in memory (two `ssl.SSLObject`s over memory BIOs, a round
limit against a runaway loop): no sockets, no clock.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from signaling.config import load_node_config
from signaling.tls import ServerTls, TlsError
from tests.signaling.certs import Issued, TestCA, serial_of

MAX_ROUNDS = 20


def handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, name: str | None = "localhost"
) -> int:
    """Run a TLS handshake in memory; the serial of the certificate the client saw."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    tls_client = client.wrap_bio(c_in, c_out, server_hostname=name)
    tls_server = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(MAX_ROUNDS):
        for side, obj in (("client", tls_client), ("server", tls_server)):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return serial_of(tls_client.getpeercert(binary_form=True))
    raise AssertionError("handshake did not finish")


@pytest.fixture
def ca() -> TestCA:
    return TestCA()


@pytest.fixture
def files(tmp_path: Path, ca: TestCA) -> tuple[Path, Path]:
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    ca.issue(serial=1001).write(cert, key)
    return cert, key


def test_serves_the_certificate_in_the_files(ca: TestCA, files: tuple[Path, Path]) -> None:
    tls = ServerTls(*files)
    assert handshake(tls.context, ca.client_context()) == 1001


def test_a_reload_serves_the_new_certificate_to_new_handshakes(
    ca: TestCA, files: tuple[Path, Path]
) -> None:
    tls = ServerTls(*files)
    ca.issue(serial=2002, days=60).write(*files)
    assert tls.reload()
    assert handshake(tls.context, ca.client_context()) == 2002
    no_name = ca.client_context()  # a client that sends no server name (SNI) gets it too
    no_name.check_hostname = False
    assert handshake(tls.context, no_name, name=None) == 2002
    assert (tls.reloads, tls.failed_reloads) == (1, 0)


def test_a_mismatched_pair_on_reload_keeps_the_old_one(
    ca: TestCA, files: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    tls = ServerTls(*files)
    cert, key = files
    # A new certificate beside the old key (a renewal copied half-way).
    Issued(ca.issue(serial=3003).cert_pem, key.read_bytes(), 3003).write(cert, key)
    with caplog.at_level(logging.ERROR):
        assert not tls.reload()
    assert "TLS reload failed, keeping the previous certificate" in caplog.text
    assert handshake(tls.context, ca.client_context()) == 1001
    assert tls.failed_reloads == 1


def test_garbage_or_missing_files_on_reload_keep_the_old_one(
    ca: TestCA, files: tuple[Path, Path]
) -> None:
    tls = ServerTls(*files)
    cert = files[0]
    cert.write_text("not a certificate")
    assert not tls.reload()
    cert.unlink()
    assert not tls.reload()
    assert handshake(tls.context, ca.client_context()) == 1001


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_a_key_others_may_read_is_refused(files: tuple[Path, Path], mode: int) -> None:
    cert, key = files
    key.chmod(mode)
    with pytest.raises(TlsError, match=f"mode {mode:04o}.*chmod 600"):
        ServerTls(cert, key)


def test_a_key_others_may_read_is_refused_on_reload(ca: TestCA, files: tuple[Path, Path]) -> None:
    tls = ServerTls(*files)
    ca.issue(serial=2002).write(*files)
    files[1].chmod(0o644)
    assert not tls.reload()
    assert handshake(tls.context, ca.client_context()) == 1001
    files[1].chmod(0o400)  # read-only for the owner is fine
    assert tls.reload()
    assert handshake(tls.context, ca.client_context()) == 2002


def test_an_encrypted_key_is_refused_without_a_prompt(ca: TestCA, files: tuple[Path, Path]) -> None:
    cert, key = files
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(TlsError, match="encrypted"):
        ServerTls(cert, key)


def test_config_takes_cert_and_key_together(tmp_path: Path) -> None:
    config, _ = load_node_config(None, {"tls_cert": "/c.pem", "tls_key": "/k.pem"})
    assert (config.tls_cert, config.tls_key) == ("/c.pem", "/k.pem")
    with pytest.raises(ValueError, match=r"tls_cert and node\.tls_key go together"):
        load_node_config(None, {"tls_cert": "/c.pem"})
    with pytest.raises(ValueError, match="trusted_proxies"):
        load_node_config(None, {"trusted_proxies": ["10.0.0.0/33"]})
