"""The client certificate as each proxy passes it: XFCC, nginx, Traefik, Envoy's gRPC
source.certificate; anything ambiguous reads as none."""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from authz.adapters.certificates import forwarded_certificate_sha256, peer_certificate
from authz.config import ConfigError
from tests import support
from tests.support.pki import make_pki


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, bytes, bytes]:
    """(PEM, DER, SHA-256 of the DER)."""
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    pem = Path(pki.client_cert).read_text()
    der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)
    return pem, der, hashlib.sha256(der).digest()


def test_xfcc(certificate: tuple[str, bytes, bytes]) -> None:
    pem, _, digest = certificate
    other = hashlib.sha256(b"another").hexdigest()

    def read(value: str) -> bytes:
        return forwarded_certificate_sha256("xfcc", {"x-forwarded-client-cert": value})

    by = "By=spiffe://cluster.local/ns/default/sa/app"
    assert read(f'{by};Hash={digest.hex()};Subject="CN=envoy"') == digest
    assert read(f'Hash={digest.hex()};Cert="{quote(pem)}"') == digest
    assert read(f'Cert="{quote(pem)}";Subject="CN=a,O=b"') == digest  # "," inside quotes
    assert read(f'Hash={other};Cert="{quote(pem)}"') == b""  # they disagree
    assert read(f"Hash={digest.hex()},Hash={other}") == b""  # two elements: two hops
    assert read(f"Hash={digest.hex()};Hash={digest.hex()}") == b""  # a field twice
    assert read("Hash=zz") == b"" and read("Subject=x") == b"" and read("") == b""
    # An open quote from the client must not swallow the element the proxy appended
    # (a proxy that appends instead of sanitizing): several elements, refused.
    assert read(f'Hash={digest.hex()};Subject="x,Hash={other}') == b""
    assert read(f'Hash={digest.hex()};Subject="a\\"b"') == digest  # an escaped quote
    # Envoy repeats By=, URI= and DNS= for several names: not ambiguous.
    assert read(f"By=spiffe://a;By=spiffe://b;Hash={digest.hex()};URI=x;URI=y") == digest


def test_nginx(certificate: tuple[str, bytes, bytes]) -> None:
    pem, _, digest = certificate
    assert forwarded_certificate_sha256("nginx", {"x-ssl-client-cert": quote(pem)}) == digest
    assert forwarded_certificate_sha256("nginx", {"x-ssl-client-cert": "junk"}) == b""


def test_no_source_no_certificate(certificate: tuple[str, bytes, bytes]) -> None:
    pem, _, digest = certificate
    headers = {
        "x-forwarded-client-cert": f"Hash={digest.hex()}",
        "x-ssl-client-cert": quote(pem),
    }
    assert forwarded_certificate_sha256("none", headers) == b""


def test_envoys_grpc_source_certificate(certificate: tuple[str, bytes, bytes]) -> None:
    pem, der, _ = certificate
    assert peer_certificate(quote(pem)) == der
    broken = quote("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----")
    assert peer_certificate(broken) == b"" and peer_certificate("not a pem") == b""


@pytest.mark.parametrize(
    ("style", "source"),
    [("nginx", "xfcc"), ("traefik", "nginx"), ("envoy", "nginx"), ("traefik", "traefik")],
)
def test_a_certificate_header_is_trusted_only_from_its_own_proxy(style: str, source: str) -> None:
    with pytest.raises(ConfigError, match="certificate_source"):  # traefik: no such source
        support.config(
            listen=support.LISTEN_ANYWHERE,
            http_authz={
                "listen": "127.0.0.1:0",
                "original_request": style,
                "certificate_source": source,
            },
        )
