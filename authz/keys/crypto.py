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
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from jose import jwk, jwt
from jose.backends.base import Key
from jose.backends.cryptography_backend import CryptographyECKey, CryptographyRSAKey
from jose.exceptions import JOSEError, JWKError

from authz.core.errors import BackendError, KeyRejected
from authz.keys.algorithms import ALGORITHMS, ASYMMETRIC, HMAC

MIN_RSA_BITS = 2048
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class _PssKey(CryptographyRSAKey):  # type: ignore[misc]
    """RSASSA-PSS (PS256/384/512, RFC 7518 3.5): MGF1 with the same hash, salt = hash size."""

    def __init__(self, key: Any, algorithm: str) -> None:
        super().__init__(key, "RS" + algorithm[2:])
        self._algorithm = algorithm

    def verify(self, msg: bytes, sig: bytes) -> bool:
        digest = self.hash_alg()
        pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        try:
            self.prepared_key.verify(sig, msg, pss, digest)
        except InvalidSignature:
            return False
        return True


# Ed25519 curve constants (RFC 8032 5.1), for the small-order check below.
_P = 2**255 - 19
_D = (-121665 * pow(121666, _P - 2, _P)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _ed25519_point(encoded: bytes) -> tuple[int, int] | None:
    """Decode a point (RFC 8032 5.1.3); None when the encoding is not a canonical point."""
    number = int.from_bytes(encoded, "little")
    sign, y = number >> 255, number & ((1 << 255) - 1)
    if y >= _P:
        return None
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x = (u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P)) % _P
    if (v * x * x - u) % _P != 0:
        x = (x * _SQRT_M1) % _P
        if (v * x * x - u) % _P != 0:
            return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = _P - x
    return x, y


def _edwards_add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = a, b
    t = _D * x1 * x2 * y1 * y2 % _P
    x3 = (x1 * y2 + y1 * x2) * pow(1 + t, _P - 2, _P) % _P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, _P - 2, _P) % _P
    return x3, y3


def ed25519_key_is_safe(encoded: bytes) -> bool:
    """A canonical point whose order is not small: [8]A must not be the identity.

    A small-order public key (the identity point, for one) accepts forged signatures for
    any message, and ``cryptography`` does not refuse one.
    """
    point = _ed25519_point(encoded)
    if point is None:
        return False
    for _ in range(3):
        point = _edwards_add(point, point)
    return point != (0, 1)


class _Ed25519Key(Key):  # type: ignore[misc]
    """EdDSA with Ed25519 (RFC 8037): an OKP JWK, verified by ``cryptography``."""

    def __init__(self, key: Any, algorithm: str) -> None:
        if algorithm != "EdDSA" or not isinstance(key, dict):
            raise JWKError("EdDSA needs an OKP JWK")
        if key.get("kty") != "OKP" or key.get("crv") != "Ed25519":
            raise JWKError("only OKP keys on Ed25519 are supported")
        x = key.get("x")
        if not isinstance(x, str) or len(x) != 43:
            raise JWKError("an Ed25519 x is 43 base64url characters")
        try:
            raw = base64.urlsafe_b64decode(x + "=")
        except ValueError as exc:
            raise JWKError("bad Ed25519 public key") from exc
        if _b64(raw) != x or not ed25519_key_is_safe(raw):
            raise JWKError("non-canonical or small-order Ed25519 public key")
        self.prepared_key = Ed25519PublicKey.from_public_bytes(raw)
        self._algorithm = algorithm

    def verify(self, msg: bytes, sig: bytes) -> bool:
        try:
            self.prepared_key.verify(sig, msg)
        except InvalidSignature:
            return False
        return True


def register_algorithms() -> None:
    """Teach python-jose PS256/384/512 and EdDSA through its own extension point."""
    for alg in ("PS256", "PS384", "PS512"):
        jwk.register_key(alg, _PssKey)
    jwk.register_key("EdDSA", _Ed25519Key)


register_algorithms()  # idempotent; python-jose keeps its algorithm table per process


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
    """A key bound to one algorithm, parsed once, with the exact signature length it makes."""

    __slots__ = ("_key", "algorithm", "kid", "signature_bytes")

    def __init__(self, key: Any, algorithm: str, kid: str | None, signature_bytes: int) -> None:
        self._key = key
        self.algorithm = algorithm
        self.kid = kid
        self.signature_bytes = signature_bytes

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        # A signature of the wrong length (DER-encoded ECDSA, a truncated or zero-padded RSA
        # signature) is refused before any maths.
        if len(signature) != self.signature_bytes:
            return False
        try:
            return bool(self._key.verify(signing_input, signature))
        except Exception:  # python-jose lets bare errors escape on crafted input
            return False


def construct_key(data: Mapping[str, Any], algorithm: str) -> VerifyKey:
    """Build a verification key for ``algorithm`` from a public JWK, or raise KeyRejected.

    Only asymmetric keys: a JWKS never supplies an HMAC secret.
    """
    kty = data.get("kty")
    if algorithm not in ASYMMETRIC or ALGORITHMS[algorithm].kty != kty:
        raise KeyRejected(f"key type {kty!r} cannot verify {algorithm}")
    if PRIVATE_MEMBERS & data.keys():
        raise KeyRejected("key carries private members")
    if kty in ("EC", "OKP") and data.get("crv") != ALGORITHMS[algorithm].curve:
        raise KeyRejected(f"curve {data.get('crv')!r} does not match {algorithm}")
    try:
        key = jwk.construct(dict(data), algorithm)
    except (JOSEError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise KeyRejected(f"unparseable {kty} key: {type(exc).__name__}") from exc
    if kty == "RSA":
        public = key.prepared_key.public_numbers()
        if key.prepared_key.key_size < MIN_RSA_BITS:
            raise KeyRejected(f"RSA key shorter than {MIN_RSA_BITS} bits")
        if public.e < 3 or public.e % 2 == 0:
            raise KeyRejected("RSA public exponent must be odd and at least 3")
        signature_bytes = (key.prepared_key.key_size + 7) // 8
    else:
        size = ALGORITHMS[algorithm].signature_bytes  # EC: raw R||S, never DER; Ed25519: 64
        assert size is not None
        signature_bytes = size
    kid = data.get("kid")
    return VerifyKey(key, algorithm, kid if isinstance(kid, str) else None, signature_bytes)


def construct_hmac_key(secret: bytes, algorithm: str, kid: str | None) -> VerifyKey:
    """An HMAC key from a secret the operator configured explicitly (never from a JWKS)."""
    if algorithm not in HMAC:
        raise KeyRejected(f"{algorithm} is not an HMAC algorithm")
    needed = ALGORITHMS[algorithm].hmac_secret_bytes or 0
    if secret.lstrip().startswith((b"-----BEGIN", b"ssh-", b"{")):
        # A public key used as an HMAC secret is the algorithm-confusion attack, configured.
        raise KeyRejected("the shared secret looks like a key or a JWK, not a random secret")
    if len(secret) < needed:
        raise KeyRejected(f"{algorithm} needs a secret of at least {needed} bytes")
    try:
        key = jwk.construct({"kty": "oct", "k": _b64(secret)}, algorithm)
    except JOSEError as exc:
        raise KeyRejected(f"unusable HMAC secret: {type(exc).__name__}") from exc
    return VerifyKey(key, algorithm, kid, ALGORITHMS[algorithm].signature_bytes or needed)


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
        alg = next(a.name for a in ALGORITHMS.values() if a.kty == "EC" and a.curve == curve)
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
