"""A throwaway CA with server and client certificates, for TLS tests."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_client_cert: Path  # signed by a CA authz does not trust
    other_client_key: Path
    second_client_cert: Path  # another client of the same CA (trusted, but not the first)
    second_client_key: Path
    ca_key: Path  # to sign a renewed server certificate (renew_server)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_bytes(key: Any) -> bytes:
    pem: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem


def _write_key(key: Any, path: Path) -> Path:
    path.write_bytes(_key_bytes(key))
    return path


def _cert(
    subject: str, key: Any, issuer: str, issuer_key: Any, *, ca: bool, usage: Any = None
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)

    def pem(cert: x509.Certificate, name: str) -> Path:
        path = folder / name
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("authz test CA", ca_key, "authz test CA", ca_key, ca=True)
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    server_key = ec.generate_private_key(ec.SECP256R1())
    client_key = ec.generate_private_key(ec.SECP256R1())
    other_key = ec.generate_private_key(ec.SECP256R1())
    server = _cert(
        "authz",
        server_key,
        "authz test CA",
        ca_key,
        ca=False,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
    )
    client = _cert(
        "envoy",
        client_key,
        "authz test CA",
        ca_key,
        ca=False,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    other = _cert(
        "mallory", other_key, "rogue CA", rogue_key, ca=False, usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    second_key = ec.generate_private_key(ec.SECP256R1())
    second = _cert(
        "second client",
        second_key,
        "authz test CA",
        ca_key,
        ca=False,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    return Pki(
        ca=pem(ca, "ca.pem"),
        server_cert=pem(server, "server.pem"),
        server_key=_write_key(server_key, folder / "server-key.pem"),
        client_cert=pem(client, "client.pem"),
        client_key=_write_key(client_key, folder / "client-key.pem"),
        other_client_cert=pem(other, "other.pem"),
        other_client_key=_write_key(other_key, folder / "other-key.pem"),
        second_client_cert=pem(second, "second.pem"),
        second_client_key=_write_key(second_key, folder / "second-key.pem"),
        ca_key=_write_key(ca_key, folder / "ca-key.pem"),
    )


def renew_server(pki: Pki, *, matching_key: bool = True, rsa_key: bool = False) -> int:
    """A new server certificate and key from the same CA, written over the old files as
    cert-manager and the kubelet would (each file swapped whole); its serial number.
    ``matching_key`` False: the certificate is written with a key that is not its own;
    ``rsa_key``: an RSA key (another key type than the first certificate's)."""
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    key: Any = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if rsa_key
        else ec.generate_private_key(ec.SECP256R1())
    )
    cert = _cert(
        "authz", key, "authz test CA", ca_key, ca=False, usage=ExtendedKeyUsageOID.SERVER_AUTH
    )
    for path, data in (
        (
            pki.server_key,
            _key_bytes(key if matching_key else ec.generate_private_key(ec.SECP256R1())),
        ),
        (pki.server_cert, cert.public_bytes(serialization.Encoding.PEM)),
    ):
        staged = path.with_suffix(".new")
        staged.write_bytes(data)
        staged.replace(path)
    serial: int = cert.serial_number
    return serial
