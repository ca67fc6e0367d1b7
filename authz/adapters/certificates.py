"""The client certificate as each proxy passes it on, read into the SHA-256 of its DER
(what RFC 8705's x5t#S256 hashes). Each form is trusted only from the proxy that sets it,
and only when the operator says so (http_authz.certificate_source); anything ambiguous
or malformed reads as no certificate, so a certificate-bound token is refused.

- Envoy over gRPC: ``attributes.source.certificate``, the URL-encoded PEM of the leaf
  (``include_peer_certificate: true``).
- Envoy over HTTP: ``x-forwarded-client-cert`` (XFCC), one element (the listener sets it
  with ``forward_client_cert_details: SANITIZE_SET``): ``Hash=`` the hex SHA-256 of the
  DER, ``Cert=`` the URL-encoded PEM (with ``set_current_client_cert_details: {cert:
  true}``); when both are there they must agree.
- nginx: ``X-SSL-Client-Cert`` from ``$ssl_client_escaped_cert`` (URL-encoded PEM).

Traefik is not a source: its passTLSClientCert middleware sets its header only when the
client showed a certificate and leaves a client's own copy otherwise (unless the
entrypoint's forwarded-header handling removes it), so the header cannot be trusted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from typing import Literal
from urllib.parse import unquote

Source = Literal["none", "xfcc", "nginx"]
_PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.S)
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def certificate_sha256(der: bytes) -> bytes:
    return hashlib.sha256(der).digest() if der else b""


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return b""


def peer_certificate(encoded: str) -> bytes:
    """The DER of a URL-encoded PEM certificate (Envoy's gRPC source.certificate, nginx's
    $ssl_client_escaped_cert); b"" when there is none or it does not decode."""
    if not encoded:
        return b""
    found = _PEM_CERTIFICATE.search(unquote(encoded))
    return _b64(found.group(1)) if found else b""


def _split_unquoted(text: str, separator: str) -> list[str] | None:
    """``text`` split on ``separator`` outside double quotes (``\\"`` escapes a quote in
    them); None when a quote is left open, which could hide a separator."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quoted or escaped:
        return None
    parts.append("".join(current))
    return parts


def xfcc_sha256(value: str) -> bytes:
    """The certificate digest of an XFCC header holding exactly one element; b"" for
    anything else (several hops, an open quote, a second Hash or Cert)."""
    elements = _split_unquoted(value, ",")
    if elements is None or len(elements) != 1:
        return b""  # several hops: not the SANITIZE_SET a listener must use
    pairs = _split_unquoted(elements[0], ";")
    if pairs is None:
        return b""
    fields: dict[str, str] = {}
    for pair in pairs:
        key, equals, item = pair.strip().partition("=")
        key = key.lower()
        if not equals:
            continue
        if key in fields and key in ("hash", "cert"):
            return b""  # ambiguous (By=, URI=, DNS= repeat legitimately)
        fields.setdefault(key, item.strip().strip('"'))
    hashed = fields.get("hash", "")
    digest = bytes.fromhex(hashed) if _HEX_SHA256.fullmatch(hashed) else b""
    if "cert" in fields:
        from_cert = certificate_sha256(peer_certificate(fields["cert"]))
        if not from_cert or (digest and digest != from_cert):
            return b""
        return from_cert
    return digest


HEADERS = {"xfcc": "x-forwarded-client-cert", "nginx": "x-ssl-client-cert"}


def forwarded_certificate_sha256(source: Source, headers: Mapping[str, str]) -> bytes:
    """The digest of the certificate ``source``'s proxy passed in ``headers``; b"": none."""
    if source == "none":
        return b""
    value = headers.get(HEADERS[source], "")
    if not value:
        return b""
    if source == "xfcc":
        return xfcc_sha256(value)
    return certificate_sha256(peer_certificate(value))
