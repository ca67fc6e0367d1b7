"""Opaque tokens judged by the issuer's introspection endpoint (RFC 7662).

The core holds the rules: what an answer must say to be an identity, how long an answer
is kept, one request in flight per token, a bound on requests in flight. The HTTP client
lives in the keys layer (authz/keys/introspection.py) behind ``IntrospectionClient``.

RFC 7662 makes every member but ``active`` optional, so: ``active`` must be true;
``iss``, when present, must be the provider's issuer; ``aud`` must be present and name
an accepted audience; ``exp`` and ``nbf``, when present, are checked with the skew;
``token_type``, when present, must be one the provider accepts. The members are the
claims rules and headers read, as a JWT's are.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from authz.core.errors import (
    CheckError,
    InvalidClaims,
    InvalidIssuer,
    MalformedToken,
    MissingExpiration,
    Overloaded,
    TokenExpired,
    TokenInactive,
    TokenNotYetValid,
)
from authz.core.jws import b64url
from authz.core.model import Identity
from authz.core.token_cache import decoded_bytes
from authz.core.tracing import Span, traced
from authz.core.verify import Clock, check_audience, check_string_claims, numeric_date

# RFC 6750 b64token: what a bearer token may be made of. Anything else is refused before
# it is sent anywhere.
BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# What a negative entry takes (key, entry, ordered dict slot), measured like ENTRY_BYTES.
NEGATIVE_ENTRY_BYTES = 240


class IntrospectionClient(Protocol):
    """Asks the endpoint about one token: the answer's JSON object, or
    IntrospectionUnavailable (with its ``result``) when there is no usable answer."""

    async def introspect(self, token: str) -> dict[str, Any]: ...


# What the Introspector reports: cache "hit", "negative_hit" or "miss".
CacheEvent = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class IntrospectionSettings:
    issuer: str
    audiences: frozenset[str]
    token_types: frozenset[str]  # lower-cased; an answer's token_type must be one of them
    clock_skew: float
    max_token_bytes: int
    max_ttl_s: float  # an active answer is kept until min(exp, now + max_ttl_s)
    negative_ttl_s: float  # an inactive or refused answer is kept this long
    max_entries: int  # 0 keeps nothing
    max_bytes: int
    max_in_flight: int  # requests to the endpoint at once; beyond it: 503 overloaded
    require_expiration: bool = True  # an answer without exp: missing_exp
    max_lifetime_s: float | None = None


@dataclass(slots=True)
class _Entry:
    expires: float  # wall-clock time after which it is not used
    identity: Identity | None  # None: a negative answer
    # A negative answer's error class and detail (a fixed sentence): never the exception
    # itself, whose traceback holds the token and the whole answer.
    error: tuple[type[CheckError], str] | None
    size: int


def introspection_key(provider: str, token: str) -> bytes:
    digest = hashlib.blake2b(provider.encode(), digest_size=16, person=b"introspection")
    digest.update(b"\0" + token.encode("utf-8", "surrogatepass"))
    return digest.digest()


class Introspector:
    """Judges opaque tokens for one provider through its introspection endpoint."""

    def __init__(
        self,
        provider: str,
        client: IntrospectionClient,
        settings: IntrospectionSettings,
        clock: Clock,
        on_cache: CacheEvent | None = None,
    ) -> None:
        self.provider = provider
        self.issuer = settings.issuer
        self.max_token_bytes = settings.max_token_bytes
        self._client = client
        self._settings = settings
        self._clock = clock
        self._on_cache = on_cache
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self.bytes = 0
        self._in_flight: dict[bytes, asyncio.Task[Identity]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def cached(self, token: str) -> Identity | None:
        """A kept active answer for ``token``, still within its lifetime."""
        entry = self._entry(introspection_key(self.provider, token))
        if entry is None or entry.identity is None:
            return None
        self._report("hit")
        return entry.identity

    async def verify(self, token: str, span: Span | None = None) -> Identity:
        """The identity the endpoint vouches for; the CheckError that denies otherwise.
        ``span``: the check's, for the request to the endpoint (or the wait for one that
        another check sent)."""
        if len(token) > self.max_token_bytes:
            raise MalformedToken("token too large")
        if BEARER_TOKEN.fullmatch(token) is None:
            raise MalformedToken("not a bearer token")
        key = introspection_key(self.provider, token)
        entry = self._entry(key)
        if entry is not None:
            if entry.identity is not None:
                self._report("hit")
                return entry.identity
            self._report("negative_hit")
            assert entry.error is not None
            error, detail = entry.error
            raise error(detail)
        self._report("miss")
        asked = {"authz.provider": self.provider}
        return await traced(span, "authz.introspection", asked, self._ask(key, token))

    async def _ask(self, key: bytes, token: str) -> Identity:
        """The endpoint's verdict; one request per token however many checks wait for
        it. The request is a task of its own, so a check that is cancelled (the client
        went away) does not cancel it for the others."""
        task = self._in_flight.get(key)
        if task is None:
            if len(self._in_flight) >= self._settings.max_in_flight:
                raise Overloaded(f"provider {self.provider}: too many introspections in flight")
            # Shared by every check asking for this token: not in the first one's context.
            task = asyncio.get_running_loop().create_task(
                self._introspect(key, token), context=contextvars.Context()
            )
            self._in_flight[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(task)

    async def _introspect(self, key: bytes, token: str) -> Identity:
        answer = await self._client.introspect(token)
        now = self._clock()
        try:
            identity, expires = self._judge(answer, now)
        except (TokenExpired, TokenNotYetValid):
            raise  # a matter of time, not of the token: not kept
        except CheckError as exc:
            refused = (type(exc), exc.detail)
            self._keep(key, _Entry(now + self._settings.negative_ttl_s, None, refused, 0))
            raise
        self._keep(key, _Entry(expires, identity, None, 0))
        return identity

    def _finished(self, key: bytes, task: asyncio.Task[Identity]) -> None:
        self._in_flight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: every check that waited for it has gone

    def _judge(self, answer: dict[str, Any], now: float) -> tuple[Identity, float]:
        """The identity an answer vouches for, and until when it may be kept."""
        if answer.get("active") is not True:
            raise TokenInactive("the introspection answer is not active")
        skew = self._settings.clock_skew
        if "iss" in answer and answer["iss"] != self.issuer:
            raise InvalidIssuer("the introspection answer names another issuer")
        check_audience(answer, self._settings.audiences)
        check_string_claims(answer)
        token_type = answer.get("token_type")
        if token_type is not None and (
            not isinstance(token_type, str) or token_type.lower() not in self._settings.token_types
        ):
            raise InvalidClaims("token_type is not one the provider accepts")
        if "cnf" in answer:
            # Sender-constrained (RFC 8705, RFC 9449): only the key holder may use it, and
            # authz checks no binding of an introspected token; as a bearer token it would
            # be usable by whoever stole it.
            raise InvalidClaims("the token is bound to a key (cnf)")
        exp = numeric_date(answer, "exp")
        nbf = numeric_date(answer, "nbf")
        iat = numeric_date(answer, "iat")
        if exp is None and self._settings.require_expiration:
            raise MissingExpiration("the introspection answer has no exp")
        lifetime = self._settings.max_lifetime_s
        if lifetime is not None and exp is not None and exp - min(iat or now, now) > lifetime:
            raise InvalidClaims("the token lives longer than max_lifetime")
        if exp is not None and now >= exp + skew:
            raise TokenExpired("exp is in the past")
        if nbf is not None and now + skew < nbf:
            raise TokenNotYetValid("nbf is in the future")
        expires = now + self._settings.max_ttl_s
        if exp is not None:
            expires = min(expires, exp)
        # ASCII escapes: a lone surrogate (JSON allows "\ud800") cannot break encoding.
        payload = json.dumps(answer, separators=(",", ":")).encode()
        raw = b64url(payload)
        return Identity(self.provider, answer, raw), expires

    def _entry(self, key: bytes) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry.expires:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def _keep(self, key: bytes, entry: _Entry) -> None:
        settings = self._settings
        if settings.max_entries <= 0 or entry.expires <= self._clock():
            return
        self._drop(key)
        entry.size = (
            decoded_bytes(entry.identity) if entry.identity is not None else NEGATIVE_ENTRY_BYTES
        )
        self._entries[key] = entry
        self.bytes += entry.size
        while self._entries and (
            len(self._entries) > settings.max_entries or self.bytes > settings.max_bytes
        ):
            oldest = next(iter(self._entries))
            self._drop(oldest)

    def _drop(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry.size

    def _report(self, result: str) -> None:
        if self._on_cache is not None:
            self._on_cache(self.provider, result)
