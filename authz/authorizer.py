"""extract -> verify -> policy -> decision. Every expected failure becomes a deny Decision."""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from authz.config import Config
from authz.errors import (
    CheckError,
    ClaimMismatch,
    InternalError,
    InvalidIssuer,
    MissingToken,
    NoMatchingRule,
    Outcome,
)
from authz.model import Decision, Identity, RequestAttributes
from authz.policy import CompiledRule, HeaderFromClaim, Policy
from authz.tokens import FoundToken, TokenSources, cookie_header_without
from authz.verify import Clock, KeyLookup, ParsedToken, Verifier, parse_token

log = logging.getLogger(__name__)

Observer = Callable[[Decision, float], None]
_REALM_UNSAFE = re.compile(r"[^A-Za-z0-9.:\[\]_-]")


@dataclass(frozen=True, slots=True)
class ProviderRuntime:
    """Everything the authorizer needs to know about one provider."""

    name: str
    verifier: Verifier
    sources: TokenSources
    headers: tuple[HeaderFromClaim, ...]
    payload_header: str | None
    forward: bool


def build_providers(
    config: Config, keys: Mapping[str, KeyLookup], clock: Clock
) -> dict[str, ProviderRuntime]:
    delimiter = config.nested_claim_delimiter
    return {
        name: ProviderRuntime(
            name=name,
            verifier=Verifier.for_provider(name, provider, keys[name], clock),
            sources=TokenSources.from_provider(provider),
            headers=tuple(HeaderFromClaim.compile(m, delimiter) for m in provider.claim_to_headers),
            payload_header=provider.forward_payload_header,
            forward=provider.forward,
        )
        for name, provider in config.providers.items()
    }


def _realm(host: str) -> str:
    return _REALM_UNSAFE.sub("", host)[:255] or "authz"


def deny(
    error: CheckError, request: RequestAttributes, rule: str | None, provider: str | None
) -> Decision:
    """The deny Decision for ``error``: status, WWW-Authenticate and a small JSON body."""
    realm = _realm(request.host)
    challenge: str | None
    if isinstance(error, MissingToken):
        code, challenge = "unauthorized", f'Bearer realm="{realm}"'
    elif error.outcome is Outcome.UNAUTHENTICATED:
        code = "invalid_token"
        challenge = (
            f'Bearer realm="{realm}", error="invalid_token", '
            f'error_description="{error.description}"'
        )
    elif isinstance(error, ClaimMismatch) and error.scope:
        code = "insufficient_scope"
        challenge = (
            f'Bearer realm="{realm}", error="insufficient_scope", '
            f'error_description="{error.description}"'
        )
    elif error.outcome is Outcome.FORBIDDEN:
        code, challenge = "access_denied", None
    else:
        code, challenge = "temporarily_unavailable", None
    headers = [("content-type", "application/json"), ("cache-control", "no-store")]
    if challenge:
        headers.append(("www-authenticate", challenge))
    body = json.dumps({"error": code, "error_description": error.description})
    return Decision(
        allowed=False,
        status=error.outcome.value,
        reason=error.reason,
        rule=rule,
        provider=provider,
        response_headers=tuple(headers),
        body=body,
    )


class Authorizer:
    """Decides one request. ``check`` never raises."""

    def __init__(
        self,
        policy: Policy,
        providers: Mapping[str, ProviderRuntime],
        observe: Observer | None = None,
    ) -> None:
        self._policy = policy
        self._providers = providers
        self._observe = observe
        # Identity headers any provider can set: a client must never get one past us.
        self._identity_headers = tuple(
            dict.fromkeys(
                name
                for p in providers.values()
                for name in (*(h.header for h in p.headers), *filter(None, [p.payload_header]))
            )
        )

    async def check(self, request: RequestAttributes) -> Decision:
        started = time.perf_counter()
        rule: CompiledRule | None = None
        routed: list[str] = []  # the provider a token was routed to, once known
        try:
            rule = self._policy.match(request)
            decision = await self._decide(request, rule, routed)
        except CheckError as exc:
            decision = deny(exc, request, rule.name if rule else None, _label(rule, routed))
            log.debug("deny %s rule=%s: %s", exc.reason, decision.rule, exc.detail)
        except Exception as exc:  # fail closed on any bug; never log the exception's text
            log.error(
                "check failed with %s (rule=%s)\n%s",
                type(exc).__name__,
                rule.name if rule else None,
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            decision = deny(InternalError(), request, rule.name if rule else None, None)
        if self._observe is not None:
            self._observe(decision, time.perf_counter() - started)
        return decision

    async def _decide(
        self, request: RequestAttributes, rule: CompiledRule | None, routed: list[str]
    ) -> Decision:
        if rule is None:
            raise NoMatchingRule("no rule matches")
        if rule.public:
            return self._without_identity(rule, "public")
        candidates = [self._providers[name] for name in rule.providers]
        found = _find_token(request, candidates)
        if found is None:
            if rule.optional:
                return self._without_identity(rule, "anonymous")
            raise MissingToken("no token in the request")
        token = parse_token(found.token)
        # Route by the (not yet trusted) iss before any key work; the verifier checks it again.
        matching = [p for p in candidates if p.verifier.issuer == token.claims.get("iss")]
        if not matching:
            raise InvalidIssuer("iss matches none of the rule's providers")
        provider, identity = await _verify_with_any(token, matching, routed)
        rule.check_claims(identity.claims)
        return self._allow(request, rule, provider, identity)

    def _without_identity(self, rule: CompiledRule, reason: str) -> Decision:
        return Decision(
            allowed=True,
            status=200,
            reason=reason,
            rule=rule.name,
            remove_headers=self._identity_headers,
        )

    def _allow(
        self,
        request: RequestAttributes,
        rule: CompiledRule,
        provider: ProviderRuntime,
        identity: Identity,
    ) -> Decision:
        upstream: dict[str, str] = {}
        for mapping in provider.headers:
            value = mapping.render(identity.claims)
            if value is not None:
                upstream[mapping.header] = value
        if provider.payload_header:
            upstream[provider.payload_header] = identity.raw_payload
        remove = [h for h in self._identity_headers if h not in upstream]
        remove_params: tuple[str, ...] = ()
        if not provider.forward:
            # Every copy of a token goes, not only the one that was verified.
            plan = provider.sources.strip_plan(request)
            remove.extend(plan.headers)
            remove_params = plan.params
            if plan.cookies:
                rest = cookie_header_without(request.headers.get("cookie", ""), plan.cookies)
                if rest:
                    upstream["cookie"] = rest
                else:
                    remove.append("cookie")
        return Decision(
            allowed=True,
            status=200,
            reason="allowed",
            rule=rule.name,
            provider=provider.name,
            upstream_headers=tuple(upstream.items()),
            remove_headers=tuple(remove),
            remove_query_params=remove_params,
            metadata={provider.name: identity.claims},
        )


def _label(rule: CompiledRule | None, routed: list[str]) -> str | None:
    """The provider a decision is counted under: where the token went, or the only one."""
    if routed:
        return routed[-1]
    if rule is not None and len(rule.providers) == 1:
        return rule.providers[0]
    return None


def _find_token(request: RequestAttributes, candidates: list[ProviderRuntime]) -> FoundToken | None:
    for provider in candidates:
        found = provider.sources.find(request)
        if found is not None:
            return found
    return None


async def _verify_with_any(
    token: ParsedToken, providers: list[ProviderRuntime], routed: list[str]
) -> tuple[ProviderRuntime, Identity]:
    """Verify with the first provider that accepts; providers rarely share an issuer."""
    first_error: CheckError | None = None
    for provider in providers:
        routed.append(provider.name)
        try:
            return provider, await provider.verifier.verify(token)
        except CheckError as exc:
            first_error = first_error or exc
    assert first_error is not None
    raise first_error
