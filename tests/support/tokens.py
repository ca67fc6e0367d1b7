"""Test keys, and a signer that can produce any token, well-formed or not."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from authz.keys.crypto import public_jwk

ISSUER = "https://idp.test/realms/corp"
AUDIENCE = "api"
NOW = 1_800_000_000.0


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value).encode() if not isinstance(value, bytes) else value)


@dataclass
class Signer:
    """Signs arbitrary header/payload pairs with one private key."""

    key: Any
    pem: bytes
    jwk: dict[str, str]

    @property
    def kid(self) -> str:
        return self.jwk["kid"]

    @property
    def alg(self) -> str:
        return self.jwk["alg"]

    def sign(self, signing_input: bytes) -> bytes:
        if isinstance(self.key, rsa.RSAPrivateKey):
            return self.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        r, s = decode_dss_signature(self.key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def raw(self, header: Any, payload: Any) -> str:
        signing_input = f"{b64json(header)}.{b64json(payload)}"
        return f"{signing_input}.{b64(self.sign(signing_input.encode()))}"

    def claims(self, **overrides: Any) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "alice",
            "iat": int(NOW),
            "exp": int(NOW) + 600,
        }
        for name, value in overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def token(self, header: dict[str, Any] | None = None, **claims: Any) -> str:
        head = {"alg": self.alg, "typ": "JWT", "kid": self.kid, **(header or {})}
        return self.raw({k: v for k, v in head.items() if v is not None}, self.claims(**claims))


def make_signer(key: Any) -> Signer:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Signer(key, pem, public_jwk(pem))


def rsa_signer() -> Signer:
    return make_signer(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_signer() -> Signer:
    return make_signer(ec.generate_private_key(ec.SECP256R1()))


def wall_clock_claims() -> dict[str, int]:
    now = int(time.time())
    return {"iat": now, "exp": now + 600}


def minted(signer: Signer, **claims: Any) -> str:
    """A token for dev/stack.py's provider (its issuer and audience, valid now)."""
    from dev.stack import DEV_AUDIENCE, DEV_ISSUER

    return signer.token(**{"iss": DEV_ISSUER, "aud": DEV_AUDIENCE, **wall_clock_claims(), **claims})
