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
    MissingToken,
    NoMatchingRule,
    Outcome,
)
from authz.jwks import KeySet
from authz.model import Decision, Identity, RequestAttributes
from authz.policy import CompiledRule, HeaderFromClaim, Policy
from authz.tokens import FoundToken, Location, TokenSources, cookie_header_without
from authz.verify import Clock, Verifier

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
    config: Config, keys: Mapping[str, Callable[[], KeySet | None]], clock: Clock
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
        try:
            rule = self._policy.match(request)
            decision = self._decide(request, rule)
        except CheckError as exc:
            provider = rule.provider if rule else None
            decision = deny(exc, request, rule.name if rule else None, provider)
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

    def _decide(self, request: RequestAttributes, rule: CompiledRule | None) -> Decision:
        if rule is None:
            raise NoMatchingRule("no rule matches")
        if rule.public or rule.provider is None:
            return Decision(
                allowed=True,
                status=200,
                reason="public",
                rule=rule.name,
                remove_headers=self._identity_headers,
            )
        provider = self._providers[rule.provider]
        found = provider.sources.find(request)
        if found is None:
            raise MissingToken("no token in the request")
        identity = provider.verifier.verify(found.token)
        rule.check_claims(identity.claims)
        return self._allow(request, rule, provider, found, identity)

    def _allow(
        self,
        request: RequestAttributes,
        rule: CompiledRule,
        provider: ProviderRuntime,
        found: FoundToken,
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
            if found.location is Location.HEADER:
                remove.append(found.name)
            elif found.location is Location.PARAM:
                remove_params = (found.name,)
            else:
                rest = cookie_header_without(request.headers.get("cookie", ""), found.name)
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
