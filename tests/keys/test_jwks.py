from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from authz.core.errors import AlgorithmNotAllowed, JwksError, UnknownKey
from authz.keys.crypto import public_jwk
from authz.keys.jwks import parse_jwks
from tests.support import Signer

ALGS = ("RS256", "ES256")


def pem_of(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_parse_builds_keys_per_algorithm(rsa_signer: Signer, ec_signer: Signer) -> None:
    keys = parse_jwks({"keys": [rsa_signer.jwk, ec_signer.jwk]}, ALGS, max_keys=100)
    assert keys.size == 2
    assert keys.find(rsa_signer.kid, "RS256").algorithm == "RS256"
    assert keys.find(ec_signer.kid, "ES256").kid == ec_signer.kid
    with pytest.raises(AlgorithmNotAllowed):
        keys.find(rsa_signer.kid, "ES256")
    with pytest.raises(UnknownKey):
        keys.find("nope", "RS256")


def test_rsa_key_without_alg_serves_every_allowed_rsa_algorithm(rsa_signer: Signer) -> None:
    jwk = {k: v for k, v in rsa_signer.jwk.items() if k != "alg"}
    keys = parse_jwks({"keys": [jwk]}, ("RS256", "RS384", "ES256"), max_keys=100)
    assert set(keys.by_kid[rsa_signer.kid]) == {"RS256", "RS384"}


def _skipped(rsa_signer: Signer, ec_signer: Signer) -> list[tuple[str, Any]]:
    small = public_jwk(pem_of(rsa.generate_private_key(public_exponent=65537, key_size=1024)))
    p384 = public_jwk(pem_of(ec.generate_private_key(ec.SECP384R1())))
    return [
        ("encryption key", {**rsa_signer.jwk, "use": "enc"}),
        ("key_ops without verify", {**rsa_signer.jwk, "key_ops": ["encrypt"]}),
        ("private member", {**rsa_signer.jwk, "d": "AAAA"}),
        ("symmetric", {"kty": "oct", "k": "c2VjcmV0", "kid": "h"}),
        ("rsa 1024", small),
        ("curve mismatch", {**p384, "alg": "ES256"}),
        ("p384 without ES384 allowed", {k: v for k, v in p384.items() if k != "alg"}),
        ("alg not allowed", {**rsa_signer.jwk, "alg": "RS512"}),
        ("garbage modulus", {**rsa_signer.jwk, "n": "!!"}),
        ("not an object", "key"),
        ("unknown kty", {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}),
        ("alg a list", {**rsa_signer.jwk, "alg": ["RS256"]}),
        ("alg an object", {**rsa_signer.jwk, "alg": {"RS256": True}}),
        ("alg a number", {**rsa_signer.jwk, "alg": 256}),
        ("alg unknown", {**rsa_signer.jwk, "alg": "RS1024"}),
    ]


def test_unusable_keys_are_skipped(rsa_signer: Signer, ec_signer: Signer, caplog) -> None:
    for name, bad in _skipped(rsa_signer, ec_signer):
        keys = parse_jwks({"keys": [bad, ec_signer.jwk]}, ALGS, max_keys=100)
        assert keys.size == 1, name
        with pytest.raises(JwksError, match="no usable signing key"):
            parse_jwks({"keys": [bad]}, ALGS, max_keys=100)
    assert "AAAA" not in caplog.text


def test_duplicate_kid_keeps_the_first(rsa_signer: Signer, other_rsa_signer: Signer) -> None:
    twin = {**other_rsa_signer.jwk, "kid": rsa_signer.kid}
    keys = parse_jwks({"keys": [rsa_signer.jwk, twin]}, ALGS, max_keys=100)
    assert keys.size == 1


@pytest.mark.parametrize("document", [[], {}, {"keys": {}}, {"keys": []}, "x", None])
def test_invalid_documents(document: Any) -> None:
    with pytest.raises(JwksError):
        parse_jwks(document, ALGS, max_keys=100)


def test_too_many_keys(rsa_signer: Signer) -> None:
    with pytest.raises(JwksError, match="more than 2 keys"):
        parse_jwks({"keys": [rsa_signer.jwk] * 3}, ALGS, max_keys=2)
