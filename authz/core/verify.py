"""Verify a parsed token (authz/core/jws.py) for one provider: signature, then registered claims.

The signature is checked with the key the token's ``kid`` names, never with a key carried
by the token itself (``jwk``, ``jku``, ``x5u``, ``x5c`` are ignored). Keys come from a
``KeyLookup``: the keys layer implements it, the core only declares what it needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

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
from authz.core.jws import ParsedToken, media_type
from authz.core.model import Identity
from authz.core.tenants import IssuerTemplate, TenantKeys
from authz.core.token_cache import TokenCache, cache_key
from authz.core.tracing import Attributes, AttributeValue, Span, traced

Clock = Callable[[], float]


class VerificationKey(Protocol):
    def verify(self, signing_input: bytes, signature: bytes) -> bool: ...


class KeyTable(Protocol):
    """One key set: the keys layer's KeySet."""

    def find(self, kid: str | None, algorithm: str) -> VerificationKey: ...

    def lacks(self, kid: str) -> bool:
        """Whether a token naming ``kid`` names a key this set does not have."""
        ...


class KeyLookup(Protocol):
    """A provider's keys as the verifier sees them: the keys layer's KeySource."""

    @property
    def keys(self) -> KeyTable | None: ...

    async def first_keys(self) -> KeyTable | None: ...

    async def refetch_for_unknown_kid(self) -> bool: ...


# NumericDate bounds: before 1970 is not a real timestamp, and neither is anything after
# the last second of year 9999 (the end of RFC 3339 dates), the "never expires" some IdPs
# mint. A provider's max_lifetime refuses such long-lived tokens where they are unwanted.
MAX_NUMERIC_DATE = 253_402_300_799
# Registered claims RFC 7519 (sub, jti) and RFC 9068 (client_id) define as strings.
STRING_CLAIMS = ("sub", "jti", "client_id")


def _loaded(keys: KeyTable | None) -> Attributes:
    return {"authz.jwks.loaded": keys is not None}


def _refreshed(changed: bool) -> Attributes:
    return {"authz.jwks.refreshed": changed}


def numeric_date(claims: dict[str, Any], name: str) -> float | None:
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidClaims(f"{name} is not a number")
    # Compare before any float conversion: int(10**400) would overflow it.
    if not (0 <= value <= MAX_NUMERIC_DATE) or not math.isfinite(value):
        raise InvalidClaims(f"{name} is out of range")
    return float(value)


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
    clock: Clock
    max_lifetime: float | None
    typ: str | None  # as media_type() reads it
    require_kid: bool
    max_token_bytes: int
    cache: TokenCache | None
    # A multi-tenant provider: ``issuer`` is a template, and each tenant may have keys of
    # its own (tenant_keys; None: ``keys`` serve every tenant).
    tenants: IssuerTemplate | None = None
    tenant_keys: TenantKeys | None = None

    def accepts_issuer(self, iss: object) -> bool:
        """Whether a token naming ``iss`` is for this provider (routing, before trust)."""
        if self.tenants is not None:
            return self.tenants.tenant_of(iss) is not None
        return iss == self.issuer

    def cached(self, raw: str) -> Identity | None:
        """A token this provider verified before, if its keys are still current.

        The time checks run again (they may raise TokenExpired or TokenNotYetValid).
        """
        if self.cache is None:
            return None
        key = cache_key(self.provider, raw)
        entry = self.cache.get(key)
        if entry is None:
            return None
        lookup: KeyLookup | None = self.keys
        if entry.tenant is not None and self.tenant_keys is not None:
            lookup = self.tenant_keys.current(entry.tenant)
        if lookup is None or entry.keys is not lookup.keys:
            self.cache.drop(key)  # its key may have left the key set
            return None
        try:
            self._check_time(entry.exp, entry.nbf)
        except CheckError:
            # Expired (or not yet valid): drop it; the full path gives the answer.
            self.cache.drop(key)
            return None
        return self.cache.identity(key, entry, self.provider)

    async def verify(self, token: ParsedToken, span: Span | None = None) -> Identity:
        """The identity ``token`` vouches for; ``span``: the check's, for the key fetches
        a check waits for."""
        if token.size > self.max_token_bytes:
            raise MalformedToken("token too large")
        alg = token.alg
        if alg not in self.algorithms:
            raise AlgorithmNotAllowed("alg not in the allowlist")
        if self.typ is not None and media_type(token.header.get("typ")) != self.typ:
            raise InvalidClaims("typ does not match the provider's")
        kid = token.kid
        if kid is None and self.require_kid:
            raise UnknownKey("the token has no kid")
        issuer, tenant, lookup = self._issuer_of(token.claims.get("iss"))
        keys = lookup.keys
        if keys is None:
            waited = {**self._span_attributes, "authz.jwks.trigger": "no_keys_yet"}
            keys = await traced(span, "authz.jwks_fetch", waited, lookup.first_keys(), _loaded)
        if keys is None:
            raise NoKeys(f"provider {self.provider} has no key set")
        if kid is not None and keys.lacks(kid):
            unknown = {**self._span_attributes, "authz.jwks.trigger": "unknown_kid"}
            refetch = lookup.refetch_for_unknown_kid()
            if await traced(span, "authz.jwks_fetch", unknown, refetch, _refreshed):
                keys = lookup.keys or keys
        key = keys.find(kid, alg)
        if not key.verify(token.signing_input, token.signature):
            raise InvalidSignature("signature does not verify")
        exp, nbf = self._check_registered(token.claims, issuer)
        identity = Identity(self.provider, token.claims, token.payload_b64, tenant)
        if self.cache is not None:
            key_of = cache_key(self.provider, token.raw)
            self.cache.put(key_of, identity, keys, exp, nbf, tenant)
        return identity

    @property
    def _span_attributes(self) -> dict[str, AttributeValue]:
        return {"authz.provider": self.provider}

    def _issuer_of(self, iss: object) -> tuple[str, str | None, KeyLookup]:
        """The issuer a token must name, its tenant, and the keys to verify it with. For a
        multi-tenant provider, a tenant outside the template or the allowlist is refused
        here, before any key is fetched for it."""
        if self.tenants is None:
            return self.issuer, None, self.keys
        tenant = self.tenants.tenant_of(iss)
        if tenant is None:
            raise InvalidIssuer("iss does not have the provider's issuer shape")
        if not self.tenants.allows(tenant):
            raise InvalidIssuer("the tenant is not one the provider accepts")
        lookup = self.keys if self.tenant_keys is None else self.tenant_keys.keys_for(tenant)
        return self.tenants.issuer(tenant), tenant, lookup

    def _check_time(self, exp: float | None, nbf: float | None) -> None:
        now = self.clock()
        if exp is not None and now >= exp + self.clock_skew:
            raise TokenExpired("exp is in the past")
        if nbf is not None and now + self.clock_skew < nbf:
            raise TokenNotYetValid("nbf is in the future")

    def _check_registered(
        self, claims: dict[str, Any], issuer: str
    ) -> tuple[float | None, float | None]:
        now = self.clock()
        exp = numeric_date(claims, "exp")
        nbf = numeric_date(claims, "nbf")
        numeric_date(claims, "iat")
        if exp is None and self.require_expiration:
            raise MissingExpiration("exp is required")
        self._check_time(exp, nbf)
        if self.max_lifetime is not None and exp is not None:
            iat = numeric_date(claims, "iat")
            # An iat in the future must not stretch the lifetime: count from now at most.
            if exp - min(iat if iat is not None else now, now) > self.max_lifetime:
                raise InvalidClaims("the token lives longer than max_lifetime")

        check_string_claims(claims)
        if claims.get("iss") != issuer:
            raise InvalidIssuer("iss does not match the provider")
        check_audience(claims, self.audiences)
        return exp, nbf


def check_audience(claims: dict[str, Any], audiences: frozenset[str]) -> None:
    """InvalidAudience unless ``aud`` (a string or a list of strings) names one of
    ``audiences`` (never empty: the config requires at least one)."""
    aud = claims.get("aud")
    if isinstance(aud, str):
        aud = [aud]
    if not isinstance(aud, list) or not all(isinstance(a, str) for a in aud):
        raise InvalidAudience("aud is missing or not a string or list of strings")
    if audiences.isdisjoint(aud):
        raise InvalidAudience("aud does not contain an accepted audience")


def check_string_claims(claims: dict[str, Any]) -> None:
    for name in STRING_CLAIMS:
        if name in claims and not isinstance(claims[name], str):
            raise InvalidClaims(f"{name} is not a string")
