"""Certificate-bound access tokens (RFC 8705 section 3): a token whose ``cnf`` holds
``x5t#S256``, the base64url SHA-256 of a client certificate's DER, is accepted only from
the client that showed that certificate in the TLS handshake (the proxy passes it on).

``mode``: ``when_bound`` checks bound tokens; ``required`` also refuses unbound ones;
``off`` takes a bound token as a bearer one.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, Literal

from authz.core.errors import CertificateBindingMismatch
from authz.core.jws import b64url

Mode = Literal["required", "when_bound", "off"]


def certificate_thumbprint(der: bytes) -> str:
    return thumbprint_of_digest(hashlib.sha256(der).digest())


def thumbprint_of_digest(digest: bytes) -> str:
    """x5t#S256 is the unpadded base64url of the digest (XFCC's Hash= is its hex)."""
    return b64url(digest)


def certificate_binding(mode: Mode, claims: Mapping[str, Any]) -> str | None:
    """The checks the token alone answers: the thumbprint (cnf x5t#S256) the client's
    certificate must have, None when ``mode`` asks for none; CertificateBindingMismatch
    for an unbound token under ``required`` or a thumbprint that is not a string."""
    if mode == "off":
        return None
    cnf = claims.get("cnf")
    bound = cnf.get("x5t#S256") if isinstance(cnf, dict) else None
    if bound is None:
        if mode == "required":
            raise CertificateBindingMismatch("the token is not bound to a certificate")
        return None
    if not isinstance(bound, str):
        raise CertificateBindingMismatch("cnf x5t#S256 is not a string")
    return bound


def check_certificate_binding(mode: Mode, claims: Mapping[str, Any], digest: bytes) -> None:
    """CertificateBindingMismatch unless ``digest`` (SHA-256 of the client certificate's
    DER; empty: none was shown) is the certificate ``claims`` bind the token to, as
    ``mode`` asks."""
    bound = certificate_binding(mode, claims)
    if bound is None:
        return
    if not digest:
        raise CertificateBindingMismatch("no client certificate for a certificate-bound token")
    if not hmac.compare_digest(thumbprint_of_digest(digest).encode(), bound.encode()):
        raise CertificateBindingMismatch("the client certificate is not the token's")
