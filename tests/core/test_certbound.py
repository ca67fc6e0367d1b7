"""Certificate-bound tokens (RFC 8705): cnf x5t#S256 against the client's certificate."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from authz.core.certbound import (
    certificate_binding,
    certificate_thumbprint,
    check_certificate_binding,
)
from authz.core.errors import CertificateBindingMismatch
from tests import support
from tests.support import Signer
from tests.support.pki import make_pki


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes, str]:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    first = x509.load_pem_x509_certificate(pki.client_cert.read_bytes())
    second = x509.load_pem_x509_certificate(pki.second_client_cert.read_bytes())
    der = first.public_bytes(serialization.Encoding.DER)
    return der, second.public_bytes(serialization.Encoding.DER), Path(pki.client_cert).read_text()


def sha(der: bytes) -> bytes:
    return hashlib.sha256(der).digest()


def test_the_thumbprint_is_base64url_sha256_of_the_der(certificates: Any) -> None:
    der, _, _ = certificates
    expected = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    assert certificate_thumbprint(der) == expected and "=" not in expected


@pytest.mark.parametrize(
    ("mode", "claims", "shown", "ok"),
    [
        ("when_bound", "bound", "first", True),
        ("when_bound", "bound", "second", False),
        ("when_bound", "bound", "none", False),
        ("when_bound", "unbound", "none", True),
        ("when_bound", "broken", "first", False),
        ("required", "unbound", "first", False),
        ("required", "bound", "first", True),
        ("off", "bound", "second", True),
    ],
)
def test_the_binding(certificates: Any, mode: Any, claims: str, shown: str, ok: bool) -> None:
    first, second, _ = certificates
    cnf = {
        "bound": {"cnf": {"x5t#S256": certificate_thumbprint(first)}},
        "unbound": {"sub": "a"},
        "broken": {"cnf": {"x5t#S256": 7}},
    }[claims]
    certificate = {"first": sha(first), "second": sha(second), "none": b""}[shown]
    if ok:
        check_certificate_binding(mode, cnf, certificate)
    else:
        with pytest.raises(CertificateBindingMismatch):
            check_certificate_binding(mode, cnf, certificate)


@pytest.mark.parametrize(
    ("mode", "claims", "expected"),
    [
        ("when_bound", {"cnf": {"x5t#S256": "abc"}}, "abc"),
        ("when_bound", {"sub": "a"}, None),
        ("when_bound", {"cnf": "abc"}, None),
        ("when_bound", {"cnf": {"x5t#S256": 7}}, CertificateBindingMismatch),
        ("required", {"cnf": {"x5t#S256": "abc"}}, "abc"),
        ("required", {"sub": "a"}, CertificateBindingMismatch),
        ("off", {"cnf": {"x5t#S256": 7}}, None),
    ],
)
def test_what_the_token_alone_says_of_its_binding(mode: Any, claims: Any, expected: Any) -> None:
    """What offline judging can check without a client certificate: the certificate a
    token needs, or its refusal."""
    if isinstance(expected, type):
        with pytest.raises(expected):
            certificate_binding(mode, claims)
    else:
        assert certificate_binding(mode, claims) == expected


async def test_in_the_authorizer_a_cache_hit_checks_the_certificate_again(
    certificates: Any, jwks: dict[str, Any], rsa_signer: Signer
) -> None:
    first, second, _ = certificates
    checker = support.authorizer(
        support.config(providers={"corp": support.provider(jwks={"inline": jwks})}),
        support.fixed_keys(jwks),
    )
    token = rsa_signer.token(cnf={"x5t#S256": certificate_thumbprint(first)})
    request = support.req(authorization=f"Bearer {token}")
    shown = dataclasses.replace(request, client_certificate_sha256=sha(first))
    assert (await checker.check(shown)).allowed
    stolen = await checker.check(
        dataclasses.replace(request, client_certificate_sha256=sha(second))
    )
    assert (stolen.status, stolen.reason) == (401, "certificate_binding_mismatch")
    assert (await checker.check(request)).reason == "certificate_binding_mismatch"
