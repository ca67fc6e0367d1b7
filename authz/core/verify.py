"""Verify a compact JWS token: strict parsing, signature, then registered claims.

Parsing is strict and happens before any crypto: three unpadded base64url segments,
JSON objects without duplicate keys, an allowed ``alg``, no unknown ``crit``.
The signature is checked with the key the token's ``kid`` names, never with a key
carried by the token itself (``jwk``, ``jku``, ``x5u``, ``x5c`` are ignored).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from authz.config import Provider
from authz.core.errors import (
    AlgorithmNotAllowed,
    CheckError,
    InvalidAudience,
    InvalidClaims,
    InvalidIssuer,
    InvalidSignature,
    MalformedToken,
    MissingExpiration,
    NoKeys,
    TokenExpired,
    TokenNotYetValid,
    UnknownKey,
)
from authz.core.model import Identity
from authz.core.token_cache import TokenCache, token_digest
from authz.keys.jwks import KeySet

Clock = Callable[[], float]


class KeyLookup(Protocol):
    """A provider's keys as the verifier sees them (a KeySource)."""

    def current(self) -> KeySet | None: ...

    async def first_keys(self) -> KeySet | None: ...

    async def refetch_for_unknown_kid(self) -> bool: ...


MAX_TOKEN_BYTES = 8192
MAX_JSON_DEPTH = 32
COMPACT_JWS = re.compile(r"^([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$")
# NumericDate bounds: before 1970 or after year ~5000 is not a real timestamp.
MAX_NUMERIC_DATE = 10**11


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
        raise ValueError("duplicate key")
    return obj


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's json accepts NaN and Infinity


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
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
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


def _numeric_date(claims: dict[str, Any], name: str) -> float | None:
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidClaims(f"{name} is not a number")
    # Compare before any float conversion: int(10**400) would overflow it.
    if not (0 <= value < MAX_NUMERIC_DATE) or not math.isfinite(value):
        raise InvalidClaims(f"{name} is out of range")
    return float(value)


def _media_type(typ: Any) -> str | None:
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


def parse_token(token: str, max_bytes: int = MAX_TOKEN_BYTES) -> ParsedToken:
    """Strict structural parsing, before any crypto; MalformedToken when anything is off."""
    if len(token) > max_bytes:
        raise MalformedToken("token too large")
    parts = COMPACT_JWS.match(token)
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


@dataclass(frozen=True, slots=True)
class Verifier:
    """Verifies tokens for one provider against whatever key set it currently has."""

    provider: str
    issuer: str
    audiences: frozenset[str]
    algorithms: frozenset[str]
    clock_skew: float
    require_expiration: bool
    keys: KeyLookup
    clock: Clock = time.time
    max_lifetime: float | None = None
    typ: str | None = None
    require_kid: bool = False
    max_token_bytes: int = MAX_TOKEN_BYTES
    cache: TokenCache | None = None

    @classmethod
    def for_provider(
        cls,
        name: str,
        provider: Provider,
        keys: KeyLookup,
        clock: Clock,
        cache: TokenCache | None = None,
    ) -> Verifier:
        return cls(
            provider=name,
            issuer=provider.issuer,
            audiences=frozenset(provider.audiences),
            algorithms=frozenset(provider.algorithms),
            clock_skew=provider.clock_skew,
            require_expiration=provider.require_expiration,
            keys=keys,
            clock=clock,
            max_lifetime=provider.max_lifetime,
            typ=_media_type(provider.typ) if provider.typ else None,
            require_kid=provider.require_kid,
            max_token_bytes=provider.max_token_bytes,
            cache=cache,
        )

    def cached(self, raw: str) -> Identity | None:
        """A token this provider verified before, if its keys are still current.

        The time checks run again (they may raise TokenExpired or TokenNotYetValid).
        """
        if self.cache is None:
            return None
        digest = token_digest(raw)
        entry = self.cache.get(self.provider, digest)
        if entry is None:
            return None
        if entry.keys is not self.keys.current():
            self.cache.drop(self.provider, digest)  # its key may have left the key set
            return None
        try:
            self._check_time(entry.exp, entry.nbf)
        except CheckError:
            # Expired (or not yet valid): drop it; the full path gives the answer.
            self.cache.drop(self.provider, digest)
            return None
        return entry.identity

    async def verify(self, token: ParsedToken) -> Identity:
        if token.size > self.max_token_bytes:
            raise MalformedToken("token too large")
        alg = token.alg
        if alg not in self.algorithms:
            raise AlgorithmNotAllowed("alg not in the allowlist")
        if self.typ is not None and _media_type(token.header.get("typ")) != self.typ:
            raise InvalidClaims("typ does not match the provider's")
        kid = token.kid
        if kid is None and self.require_kid:
            raise UnknownKey("the token has no kid")
        keys = self.keys.current() or await self.keys.first_keys()
        if keys is None:
            raise NoKeys(f"provider {self.provider} has no key set")
        if (
            kid is not None
            and kid not in keys.by_kid
            and not keys.ignore_kid
            and (await self.keys.refetch_for_unknown_kid())
        ):
            keys = self.keys.current() or keys
        key = keys.find(kid, alg)
        if not key.verify(token.signing_input, token.signature):
            raise InvalidSignature("signature does not verify")
        exp, nbf = self._check_registered(token.claims)
        identity = Identity(self.provider, token.claims, token.payload_b64)
        if self.cache is not None:
            self.cache.put(self.provider, token_digest(token.raw), identity, keys, exp, nbf)
        return identity

    def _check_time(self, exp: float | None, nbf: float | None) -> None:
        now = self.clock()
        if exp is not None and now >= exp + self.clock_skew:
            raise TokenExpired("exp is in the past")
        if nbf is not None and now + self.clock_skew < nbf:
            raise TokenNotYetValid("nbf is in the future")

    def _check_registered(self, claims: dict[str, Any]) -> tuple[float | None, float | None]:
        now = self.clock()
        exp = _numeric_date(claims, "exp")
        nbf = _numeric_date(claims, "nbf")
        _numeric_date(claims, "iat")
        if exp is None and self.require_expiration:
            raise MissingExpiration("exp is required")
        self._check_time(exp, nbf)
        if self.max_lifetime is not None and exp is not None:
            iat = _numeric_date(claims, "iat")
            # An iat in the future must not stretch the lifetime: count from now at most.
            if exp - min(iat if iat is not None else now, now) > self.max_lifetime:
                raise InvalidClaims("the token lives longer than max_lifetime")

        if claims.get("iss") != self.issuer:
            raise InvalidIssuer("iss does not match the provider")
        # audiences is never empty: the config requires at least one.
        aud = claims.get("aud")
        if isinstance(aud, str):
            aud = [aud]
        if not isinstance(aud, list) or not all(isinstance(a, str) for a in aud):
            raise InvalidAudience("aud is missing or not a string or list of strings")
        if self.audiences.isdisjoint(aud):
            raise InvalidAudience("aud does not contain an accepted audience")
        return exp, nbf
