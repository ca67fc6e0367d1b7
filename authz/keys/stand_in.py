"""Stand-in keys for judging policy offline (``authz eval --claims``, ``authz test``): a
throwaway key pair made for one run, its key set standing in for a provider's real keys,
and tokens signed with it. Never used by ``serve``: a stand-in key lives only in memory
and only for the command that made it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from authz.keys.algorithms import ALGORITHMS
from authz.keys.jwks import INLINE_MAX_KEYS, KeySet, hmac_key_set, parse_jwks

_HASHES: dict[str, hashes.HashAlgorithm] = {
    "256": hashes.SHA256(),
    "384": hashes.SHA384(),
    "512": hashes.SHA512(),
}
_CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
}
# Cheapest to make first: an RSA key takes tens of milliseconds, the others microseconds.
_PREFERENCE = ("ES256", "ES384", "ES512", "EdDSA", "HS256", "HS384", "HS512")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_b64(value: int, size: int | None = None) -> str:
    return _b64(value.to_bytes(size or (value.bit_length() + 7) // 8, "big"))


@dataclass(frozen=True, slots=True)
class StandInKey:
    """One throwaway signing key for one provider, and the key set that verifies it."""

    algorithm: str
    kid: str
    keys: KeySet
    _private: Any  # a cryptography private key, or the HMAC secret's bytes

    def sign(self, claims: Mapping[str, Any], typ: str | None = None) -> str:
        header: dict[str, str] = {"alg": self.algorithm, "kid": self.kid}
        if typ:
            header["typ"] = typ
        signing_input = (
            _b64(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64(json.dumps(dict(claims), separators=(",", ":")).encode())
        )
        return signing_input + "." + _b64(self._signature(signing_input.encode()))

    def _signature(self, data: bytes) -> bytes:
        name = self.algorithm
        key = self._private
        if name.startswith("HS"):
            return hmac.new(key, data, getattr(hashlib, f"sha{name[2:]}")).digest()
        if name == "EdDSA":
            signature: bytes = key.sign(data)
            return signature
        digest = _HASHES[name[2:]]
        if name.startswith("RS"):
            return bytes(key.sign(data, padding.PKCS1v15(), digest))
        if name.startswith("PS"):
            pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            return bytes(key.sign(data, pss, digest))
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(digest)))
        size = (ALGORITHMS[name].signature_bytes or 0) // 2
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def stand_in_key(algorithms: tuple[str, ...]) -> StandInKey:
    """A new key for one of ``algorithms`` (a provider's), the cheapest to make first."""
    name = next((a for a in _PREFERENCE if a in algorithms), algorithms[0])
    algorithm = ALGORITHMS[name]
    kid = "stand-in-" + secrets.token_hex(8)
    if algorithm.kty == "oct":
        # Text, not random bytes: a secret that starts like a PEM key or a JWK is refused.
        secret = secrets.token_urlsafe(algorithm.hmac_secret_bytes or 64).encode()
        return StandInKey(name, kid, hmac_key_set(secret, (name,), kid), secret)
    private: Any
    jwk: dict[str, str]
    if algorithm.kty == "RSA":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = private.public_key().public_numbers()
        jwk = {"kty": "RSA", "n": _int_b64(numbers.n), "e": _int_b64(numbers.e)}
    elif algorithm.kty == "EC":
        assert algorithm.curve is not None
        private = ec.generate_private_key(_CURVES[algorithm.curve])
        point = private.public_key().public_numbers()
        size = (private.curve.key_size + 7) // 8
        jwk = {
            "kty": "EC",
            "crv": algorithm.curve,
            "x": _int_b64(point.x, size),
            "y": _int_b64(point.y, size),
        }
    else:
        private = ed25519.Ed25519PrivateKey.generate()
        raw = private.public_key().public_bytes_raw()
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": _b64(raw)}
    document = {"keys": [{**jwk, "kid": kid, "alg": name, "use": "sig"}]}
    return StandInKey(name, kid, parse_jwks(document, (name,), INLINE_MAX_KEYS), private)
