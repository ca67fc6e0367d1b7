"""DPoP proofs (RFC 9449) as a client makes them: for the token endpoint (no ath) and for
resource requests (with ath)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from authz.core.dpop import access_token_hash, jwk_thumbprint
from tests.support.tokens import Signer


def public_jwk(signer: Signer) -> dict[str, Any]:
    return {k: v for k, v in signer.jwk.items() if k not in ("kid", "alg", "use")}


def thumbprint(signer: Signer) -> str:
    return jwk_thumbprint(public_jwk(signer))


def make_proof(
    signer: Signer,
    method: str,
    url: str,
    token: str | None = None,
    *,
    header: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    """A proof signed by ``signer`` for ``method`` and ``url`` (and ``token``'s ath)."""
    head = {"typ": "dpop+jwt", "alg": signer.alg, "jwk": public_jwk(signer), **(header or {})}
    body: dict[str, Any] = {
        "jti": str(uuid.uuid4()),
        "htm": method,
        "htu": url,
        "iat": int(time.time()),
        **({"ath": access_token_hash(token)} if token is not None else {}),
        **claims,
    }
    return signer.raw(head, {k: v for k, v in body.items() if v is not None})
