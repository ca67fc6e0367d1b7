"""The one table of signing algorithms authz knows: key type, curve, sizes.

The config names algorithms; the build step checks those names against this table, and
key construction (crypto.py) and JWKS parsing (jwks.py) read it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Algorithm:
    name: str
    kty: str  # the JWK key type that verifies it: RSA, EC, OKP, oct
    curve: str | None = None  # EC and OKP: the one curve it uses
    # EC: raw R||S; EdDSA: 64; HMAC: the hash size; RSA: None (the key's modulus decides)
    signature_bytes: int | None = None
    hmac_secret_bytes: int | None = None  # RFC 7518 3.2: an HMAC key at least the hash size


_TABLE = (
    *(Algorithm(name, "RSA") for name in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")),
    Algorithm("ES256", "EC", "P-256", 64),
    Algorithm("ES384", "EC", "P-384", 96),
    Algorithm("ES512", "EC", "P-521", 132),
    Algorithm("EdDSA", "OKP", "Ed25519", 64),
    Algorithm("HS256", "oct", signature_bytes=32, hmac_secret_bytes=32),
    Algorithm("HS384", "oct", signature_bytes=48, hmac_secret_bytes=48),
    Algorithm("HS512", "oct", signature_bytes=64, hmac_secret_bytes=64),
)
ALGORITHMS: dict[str, Algorithm] = {alg.name: alg for alg in _TABLE}
ASYMMETRIC = frozenset(name for name, alg in ALGORITHMS.items() if alg.kty != "oct")
HMAC = frozenset(name for name, alg in ALGORITHMS.items() if alg.kty == "oct")


def check_algorithms(names: list[str], *, shared_secret: bool) -> None:
    """ValueError unless ``names`` fit a provider: known, never none, HMAC exactly when the
    keys are a shared secret (HMAC verified with a key from a JWKS is algorithm confusion)."""
    for name in names:
        if name.lower() == "none":
            raise ValueError("'none' is never accepted")
        if name not in ALGORITHMS:
            raise ValueError(f"unsupported algorithm {name!r}; supported: {', '.join(ALGORITHMS)}")
    hmac = [name for name in names if name in HMAC]
    if shared_secret and len(hmac) != len(names):
        raise ValueError("a shared_secret provider accepts only HS256, HS384 or HS512")
    if not shared_secret and hmac:
        raise ValueError(f"{hmac} need a shared_secret, not a jwks")
