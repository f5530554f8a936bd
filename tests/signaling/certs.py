"""A certificate authority of the test's own: server certificates for loopback, made fresh.

Nothing is shipped: each test makes its CA and certificates with `cryptography`
(ECDSA P-256, which is fast), writes them where the node or the proxy reads
them (keys mode 0600), and trusts the CA in its own clients only.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NAMES = ("localhost", "127.0.0.1", "::1")


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _alt_names(names: tuple[str, ...]) -> list[x509.GeneralName]:
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    return alt


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True, slots=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes
    serial: int

    def write(self, cert: Path, key: Path) -> None:
        """Replace both files as a certificate tool does (a new file renamed over the old)."""
        for path, data in ((cert, self.cert_pem), (key, self.key_pem)):
            fresh = path.with_name(path.name + ".new")
            fresh.write_bytes(data)
            os.chmod(fresh, 0o600)
            fresh.replace(path)


class TestCA:
    """A self-signed root that issues server certificates for `NAMES`."""

    __test__ = False  # not a test class, whatever its name says

    def __init__(self, common_name: str = "pagemesh test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self, serial: int, days: int = 30, names: tuple[str, ...] = NAMES, ago: int = 0
    ) -> Issued:
        """A server certificate with its own new key, valid for `days` from `ago` days
        ago (`ago` past `days`: expired)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=ago)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(_alt_names(names)), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            # Python 3.13's default contexts check X.509 strictly (VERIFY_X509_STRICT): a
            # certificate a CA issued names that CA's key, as public CAs' certificates do.
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key), serial)

    def client_context(self) -> ssl.SSLContext:
        """What a client that trusts this CA (and nothing else) checks servers with."""
        return ssl.create_default_context(cadata=self.pem.decode())

    def write_ca(self, path: Path) -> Path:
        path.write_bytes(self.pem)
        return path


def self_signed(names: tuple[str, ...] = NAMES) -> Issued:
    """A server certificate that signs itself (what `openssl req -x509` makes): no client
    trusts it unless told to."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(_name(names[0]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(_alt_names(names)), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key), 0)


def serial_of(der: bytes | None) -> int:
    """The serial number of a peer certificate in DER (from `getpeercert(True)`)."""
    assert der is not None, "no peer certificate"
    return x509.load_der_x509_certificate(der).serial_number
