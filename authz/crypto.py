"""The only module that calls python-jose; everything it raises is translated here.

Keys are constructed once per key set (``construct_key``) and then only ``verify``
runs per request. ``sign_token`` and the key helpers serve the developer CLI.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import jose.backends
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwk, jwt
from jose.backends.cryptography_backend import CryptographyECKey, CryptographyRSAKey
from jose.exceptions import JOSEError

from authz.errors import BackendError, KeyRejected

MIN_RSA_BITS = 2048
CURVE_FOR_ALG = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
KTY_FOR_ALG = {
    "RS256": "RSA",
    "RS384": "RSA",
    "RS512": "RSA",
    "ES256": "EC",
    "ES384": "EC",
    "ES512": "EC",
}
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def assert_cryptography_backend() -> None:
    """Refuse to run on python-jose's pure-Python fallbacks (slow, and less vetted)."""
    if (
        jose.backends.RSAKey is not CryptographyRSAKey
        or jose.backends.ECKey is not CryptographyECKey
    ):
        raise BackendError(
            "python-jose is not using the cryptography backend; install python-jose[cryptography]"
        )


class VerifyKey:
    """A public key bound to one algorithm, parsed once."""

    __slots__ = ("_key", "algorithm", "kid")

    def __init__(self, key: Any, algorithm: str, kid: str | None) -> None:
        self._key = key
        self.algorithm = algorithm
        self.kid = kid

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        try:
            return bool(self._key.verify(signing_input, signature))
        except Exception:  # python-jose lets bare errors escape on crafted input
            return False


def construct_key(data: Mapping[str, Any], algorithm: str) -> VerifyKey:
    """Build a verification key for ``algorithm`` from a public JWK, or raise KeyRejected."""
    kty = data.get("kty")
    if KTY_FOR_ALG.get(algorithm) != kty:
        raise KeyRejected(f"key type {kty!r} cannot verify {algorithm}")
    if PRIVATE_MEMBERS & data.keys():
        raise KeyRejected("key carries private members")
    if kty == "EC" and data.get("crv") != CURVE_FOR_ALG[algorithm]:
        raise KeyRejected(f"curve {data.get('crv')!r} does not match {algorithm}")
    try:
        key = jwk.construct(dict(data), algorithm)
    except (JOSEError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise KeyRejected(f"unparseable {kty} key: {type(exc).__name__}") from exc
    if kty == "RSA" and key.prepared_key.key_size < MIN_RSA_BITS:
        raise KeyRejected(f"RSA key shorter than {MIN_RSA_BITS} bits")
    kid = data.get("kid")
    return VerifyKey(key, algorithm, kid if isinstance(kid, str) else None)


# --- developer helpers (the `authz keygen` and `authz token` commands) ------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_b64(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def generate_rsa_private_key_pem(bits: int = 2048) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_jwk(private_pem: bytes) -> dict[str, str]:
    """The public JWK of a PEM private key (RSA or EC), with an RFC 7638 thumbprint kid."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    members: dict[str, str]
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.public_key().public_numbers()
        members = {"e": _int_b64(numbers.e), "kty": "RSA", "n": _int_b64(numbers.n)}
        alg = "RS256"
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        curve = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[key.curve.name]
        size = (key.curve.key_size + 7) // 8
        point = key.public_key().public_numbers()
        members = {
            "crv": curve,
            "kty": "EC",
            "x": _b64(point.x.to_bytes(size, "big")),
            "y": _b64(point.y.to_bytes(size, "big")),
        }
        alg = {v: k for k, v in CURVE_FOR_ALG.items()}[curve]
    else:
        raise KeyRejected("only RSA and EC private keys are supported")
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    kid = _b64(hashlib.sha256(canonical).digest())
    return {**members, "kid": kid, "alg": alg, "use": "sig"}


def sign_token(claims: Mapping[str, Any], private_pem: bytes, *, algorithm: str, kid: str) -> str:
    try:
        token: str = jwt.encode(
            dict(claims), private_pem.decode(), algorithm=algorithm, headers={"kid": kid}
        )
    except JOSEError as exc:
        raise KeyRejected(f"cannot sign: {exc}") from exc
    return token
