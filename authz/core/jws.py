"""Parse a compact JWS strictly, before any cryptography: nothing in it is trusted yet.

Three unpadded base64url segments in their one canonical spelling, JSON objects in strict
UTF-8 without duplicate keys, NaN or deep nesting, an ``alg``, no ``crit``, no ``b64:
false``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from authz.core.errors import MalformedToken

MAX_JSON_DEPTH = 32
# Matched whole (fullmatch): "$" would also accept a trailing newline.
COMPACT_JWS = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")


def b64url(data: bytes) -> str:
    """Unpadded base64url (JWS segments, JWK thumbprints, x5t#S256, ath)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str) -> bytes:
    """Strict base64url: no padding, and only the one canonical spelling of each value.

    The last character of a segment has spare bits; accepting any value for them would
    make several different strings the same valid token.
    """
    if len(segment) % 4 == 1:
        raise MalformedToken("base64url segment has an impossible length")
    try:
        decoded = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise MalformedToken("bad base64url") from exc
    if len(segment) % 4 and base64.urlsafe_b64encode(decoded).rstrip(b"=") != segment.encode():
        raise MalformedToken("non-canonical base64url")
    return decoded


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("a name is given twice in one object")  # readers disagree on which wins
    return obj


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's json accepts NaN and Infinity


def strict_json(text: str) -> Any:
    """``text`` as JSON that every reader reads alike: ValueError for a name given twice
    in one object, or NaN / Infinity (RecursionError when nested too deeply)."""
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def _too_deep(text: str) -> bool:
    """Nesting depth from the text itself, before any object is built."""
    depth = 0
    for char in _JSON_STRING.sub("", text):
        if char in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif char in "]}":
            depth -= 1
    return False


def json_object(segment: str, what: str) -> dict[str, Any]:
    try:
        text = b64url_decode(segment).decode("utf-8")  # strictly UTF-8: no BOM-less guessing
    except UnicodeDecodeError as exc:
        raise MalformedToken(f"{what} is not UTF-8") from exc
    # Only a document with many brackets can be deep; most tokens skip the scan.
    if text.count("{") + text.count("[") > MAX_JSON_DEPTH and _too_deep(text):
        raise MalformedToken(f"{what} is nested too deeply")
    try:
        value = strict_json(text)
    except (ValueError, RecursionError) as exc:
        raise MalformedToken(f"{what} is not valid JSON") from exc
    if not isinstance(value, dict):
        raise MalformedToken(f"{what} is not a JSON object")
    if "\\u" in text:
        try:  # a lone surrogate (\ud800) is not text: it cannot be re-encoded as UTF-8
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise MalformedToken(f"{what} holds a lone surrogate") from exc
    return value


def media_type(typ: Any) -> str | None:
    """typ compared as RFC 7515 says: case-insensitive, "application/" optional."""
    if not isinstance(typ, str):
        return None
    lowered = typ.lower()
    return lowered.removeprefix("application/") if "/" in lowered else lowered


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A token split and decoded, but not verified: nothing in it is trusted yet."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes
    payload_b64: str
    raw: str  # the compact token, for the cache key

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def alg(self) -> str:
        alg = self.header["alg"]
        assert isinstance(alg, str)  # checked by parse_token
        return alg

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None


def parse_token(token: str, max_bytes: int) -> ParsedToken:
    """Strict structural parsing, before any crypto; MalformedToken when anything is off."""
    if len(token) > max_bytes:
        raise MalformedToken("token too large")
    parts = COMPACT_JWS.fullmatch(token)
    if parts is None:
        raise MalformedToken("not a compact JWS")
    header_b64, payload_b64, signature_b64 = parts.groups()
    header = json_object(header_b64, "header")
    if not isinstance(header.get("alg"), str):
        raise MalformedToken("alg missing")
    if "crit" in header:
        raise MalformedToken("crit extensions are not supported")
    if header.get("b64", True) is not True:
        raise MalformedToken("unencoded payloads are not supported")
    if "kid" in header and not isinstance(header["kid"], str):
        raise MalformedToken("kid is not a string")
    return ParsedToken(
        header=header,
        claims=json_object(payload_b64, "payload"),
        signing_input=f"{header_b64}.{payload_b64}".encode("ascii"),
        signature=b64url_decode(signature_b64),
        payload_b64=payload_b64,
        raw=token,
    )
