"""extract -> verify -> policy -> decision. Every expected failure becomes a deny Decision."""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol
from urllib.parse import unquote_plus

from authz.config import Config, Limits
from authz.core.conditions import EvalContext
from authz.core.errors import (
    CheckError,
    ClaimMismatch,
    InternalError,
    InvalidIssuer,
    MethodOverride,
    MissingToken,
    NoMatchingRule,
    Outcome,
    Overloaded,
    RequestTooLarge,
    TokenNotStrippable,
)
from authz.core.model import Decision, Identity, RequestAttributes
from authz.core.paths import check_host, check_path
from authz.core.policy import CompiledRule, HeaderFromClaim, Policy
from authz.core.token_cache import TokenCache
from authz.core.tokens import FoundToken, StripPlan, TokenSources, name_key
from authz.core.verify import Clock, KeyLookup, ParsedToken, Verifier, parse_token

log = logging.getLogger(__name__)

Observer = Callable[[RequestAttributes, Decision, float], None]
DRY_RUN_HEADER = "x-authz-dry-run"
# Headers and the parameter through which clients ask frameworks to act as another method.
METHOD_OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")
METHOD_OVERRIDE_PARAM = "_method"
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
    config: Config,
    keys: Mapping[str, KeyLookup],
    clock: Clock,
    cache: TokenCache | None = None,
) -> dict[str, ProviderRuntime]:
    delimiter = config.nested_claim_delimiter
    return {
        name: ProviderRuntime(
            name=name,
            verifier=Verifier.for_provider(name, provider, keys[name], clock, cache),
            sources=TokenSources.from_provider(provider),
            headers=tuple(
                HeaderFromClaim(m.header, tuple(m.claim.split(delimiter)))
                for m in provider.claim_to_headers
            ),
            payload_header=provider.forward_payload_header,
            forward=provider.forward,
        )
        for name, provider in config.providers.items()
    }


def _realm(host: str) -> str:
    return _REALM_UNSAFE.sub("", host)[:255] or "authz"


def deny(
    error: CheckError,
    request: RequestAttributes,
    rule: str | None,
    provider: str | None,
    *,
    expose: bool = False,
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
    elif error.outcome in (Outcome.BAD_REQUEST, Outcome.HEADERS_TOO_LARGE):
        code, challenge = "invalid_request", None
    else:
        code, challenge = "temporarily_unavailable", None
    headers = [("content-type", "application/json"), ("cache-control", "no-store")]
    if challenge:
        headers.append(("www-authenticate", challenge))
    body: dict[str, str] = {"error": code, "error_description": error.description}
    if expose:
        # Opt-in: the rule and condition are config names, never token or claim values.
        body["reason"] = error.reason
        if rule is not None:
            body["rule"] = rule
        if isinstance(error, ClaimMismatch) and error.condition:
            body["condition"] = error.condition
    return Decision(
        allowed=False,
        status=error.outcome.value,
        reason=error.reason,
        rule=rule,
        provider=provider,
        response_headers=tuple(headers),
        body=json.dumps(body),
    )


@dataclass(slots=True)
class _Trace:
    """What a check learned before it ended, for denials, dry runs and metrics."""

    rule: CompiledRule | None = None
    routed: list[str] = field(default_factory=list)  # providers a token was routed to
    identities: list[tuple[ProviderRuntime, Identity]] = field(default_factory=list)
    verified: int = 0  # identities verified in this check, not taken from the cache

    @property
    def provider(self) -> str | None:
        if self.routed:
            return self.routed[-1]
        if self.rule is not None and len(self.rule.providers) == 1:
            return self.rule.providers[0]
        return None


class Checker(Protocol):
    """What the adapters call: an Authorizer, or the App's swappable reference to one."""

    async def check(self, request: RequestAttributes) -> Decision: ...


class CurrentAuthorizer:
    """The authorizer in use, replaced whole on a config reload.

    A check reads ``current`` once and finishes with that authorizer, so checks in flight
    during a reload are answered by the old config and later ones by the new: none fail.
    """

    def __init__(self, authorizer: Authorizer) -> None:
        self.current = authorizer

    async def check(self, request: RequestAttributes) -> Decision:
        return await self.current.check(request)


class Authorizer:
    """Decides one request. ``check`` never raises."""

    def __init__(
        self,
        policy: Policy,
        providers: Mapping[str, ProviderRuntime],
        observe: Observer | None = None,
        *,
        delimiter: str = ".",
        global_dry_run: bool = False,
        expose_reasons: bool = False,
        max_header_value_bytes: int = 8192,
        limits: Limits | None = None,
        semicolons_literal: bool = False,
        judge_method_overrides: bool = False,
    ) -> None:
        self._limits = limits or Limits()
        self._in_flight = 0
        self._policy = policy
        self._providers = providers
        self._observe = observe
        self._delimiter = delimiter
        self._global_dry_run = global_dry_run
        self._expose = expose_reasons
        self._max_header_bytes = max_header_value_bytes
        self._semicolons_literal = semicolons_literal
        self._judge_overrides = judge_method_overrides
        # Every place a token that must not be forwarded can sit, whichever rule matches:
        # public, anonymous and dry-run allows strip them as authenticated ones do.
        self._strip_sources = TokenSources.union(
            p.sources for p in providers.values() if not p.forward
        )
        # Headers authz may set: a client must never get its own copy of one past us.
        names: list[str] = [DRY_RUN_HEADER]
        for p in providers.values():
            names += [h.header for h in p.headers]
            names += [p.payload_header] if p.payload_header else []
        for rule in policy.rules:
            names += [h.header for h in rule.claim_headers]
            names += [name for name, _ in rule.static_headers]
        self._identity_headers = tuple(dict.fromkeys(names))

    @property
    def identity_headers(self) -> tuple[str, ...]:
        """Every header authz may set for the upstream: what a proxy must let only authz set."""
        return self._identity_headers

    @classmethod
    def from_config(
        cls, config: Config, providers: Mapping[str, ProviderRuntime], observe: Observer | None
    ) -> Authorizer:
        return cls(
            Policy.compile(config),
            providers,
            observe,
            delimiter=config.nested_claim_delimiter,
            global_dry_run=config.mode == "dry_run",
            expose_reasons=config.expose_reasons,
            max_header_value_bytes=config.max_header_value_bytes,
            limits=config.limits,
            semicolons_literal=config.paths.semicolons == "literal",
            judge_method_overrides=config.method_override == "judge_both",
        )

    async def check(self, request: RequestAttributes) -> Decision:
        started = time.perf_counter()
        trace = _Trace()
        plan: StripPlan | None = None
        self._in_flight += 1
        try:
            # First, and enforced even in dry-run mode: no allow may hand a token on.
            plan = self._strip_plan(request)
            self._within_limits(request)
            decision = await self._judge(request, trace, plan)
        except CheckError as exc:
            rule = trace.rule.name if trace.rule else None
            decision = deny(exc, request, rule, trace.provider, expose=self._expose)
            # Policy denials are worth an operator's eye; token failures are routine noise.
            # A dry-run rule logs its would-be denial once, below.
            level = logging.INFO if exc.outcome is Outcome.FORBIDDEN else logging.DEBUG
            if self._dry_run(trace.rule):
                level = logging.DEBUG
            log.log(level, "deny %s rule=%s: %s", exc.reason, rule, exc.detail)
        except Exception as exc:  # fail closed on any bug; never log the exception's text
            log.error(
                "check failed with %s (rule=%s)\n%s",
                type(exc).__name__,
                trace.rule.name if trace.rule else None,
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            decision = deny(InternalError(), request, trace.rule.name if trace.rule else None, None)
        finally:
            self._in_flight -= 1
        if plan is not None and self._dry_run(trace.rule):
            decision = self._dry_run_allow(request, decision, trace, plan)
        if self._observe is not None:
            self._observe(request, decision, time.perf_counter() - started)
        return decision

    def _strip_plan(self, request: RequestAttributes) -> StripPlan:
        plan = self._strip_sources.strip_plan(request)
        if plan.params_unremovable:
            raise TokenNotStrippable("a token parameter follows a ';' inside another parameter")
        if plan.params and not request.query_removable:
            raise TokenNotStrippable("a token parameter the proxy cannot remove")
        if plan.cookies and not request.cookie_rewritable:
            raise TokenNotStrippable("a token cookie the proxy cannot remove")
        return plan

    def _within_limits(self, request: RequestAttributes) -> None:
        limits = self._limits
        if self._in_flight > limits.max_concurrent_checks:
            # Checks only pile up while waiting on keys; answer now rather than queue.
            raise Overloaded("max_concurrent_checks reached")
        headers = request.headers
        if max(len(headers), request.header_count) > limits.max_headers:
            raise RequestTooLarge("too many headers")
        if sum(len(k) + len(v) for k, v in headers.items()) > limits.max_header_bytes:
            raise RequestTooLarge("headers too large")

    def _dry_run(self, rule: CompiledRule | None) -> bool:
        return rule.mode == "dry_run" if rule is not None else self._global_dry_run

    def _dry_run_allow(
        self, request: RequestAttributes, would: Decision, trace: _Trace, plan: StripPlan
    ) -> Decision:
        """Let the request through, carrying the decision that enforcement would have made."""
        verdict = "allow" if would.allowed else "deny"
        answer = would
        if not would.allowed:
            log.info("dry-run deny %s rule=%s", would.reason, would.rule)
            if trace.identities and trace.rule is not None:
                # The token was good; the upstream still learns who is calling.
                answer = replace(
                    self._allow(request, trace.rule, trace.identities, plan), reason="dry_run"
                )
            else:
                answer = self._without_identity(request, trace.rule, "dry_run", plan, static=False)
        return replace(
            answer,
            upstream_headers=(*answer.upstream_headers, (DRY_RUN_HEADER, verdict)),
            remove_headers=tuple(h for h in answer.remove_headers if h != DRY_RUN_HEADER),
            dry_run=(verdict, would.reason),
        )

    async def _judge(self, request: RequestAttributes, trace: _Trace, plan: StripPlan) -> Decision:
        """The decision, with method overrides refused or judged under both methods."""
        overrides = method_overrides(request)
        if overrides:
            if not self._judge_overrides or len(overrides) > 1:
                raise MethodOverride("the request names another method to act as")
            first = _Trace()
            try:
                await self._decide(request, first, plan)
            except CheckError:
                trace.rule, trace.routed = first.rule, first.routed
                raise
            request = replace(request, method=overrides[0])
        return await self._decide(request, trace, plan)

    async def _decide(self, request: RequestAttributes, trace: _Trace, plan: StripPlan) -> Decision:
        path = check_path(request.path, semicolons_literal=self._semicolons_literal)
        check_host(request.host)
        matched = self._policy.match(request, path)
        if matched is None:
            raise NoMatchingRule("no rule matches")
        rule, params = matched
        trace.rule = rule
        if rule.public:
            return self._without_identity(request, rule, "public", plan)
        candidates = self._candidates(rule)
        if rule.every:
            for provider in candidates:
                found = provider.sources.find(request, strict=provider.forward)
                if found is None:
                    raise MissingToken(f"no token for provider {provider.name}")
                if not _from_cache(found.token, [provider], trace):
                    token = parse_token(found.token, provider.verifier.max_token_bytes)
                    await _verify_with_any(token, [provider], trace)
        else:
            found, finders = _find_token(request, candidates)
            if found is None:
                if rule.optional:
                    return self._without_identity(request, rule, "anonymous", plan)
                raise MissingToken("no token in the request")
            if not _from_cache(found.token, finders, trace):
                token = parse_token(found.token, max(p.verifier.max_token_bytes for p in finders))
                # Route by the (not yet trusted) iss before any key work, among the providers
                # that look for a token where this one was found; the verifier checks it again.
                matching = [p for p in finders if p.verifier.issuer == token.claims.get("iss")]
                if not matching:
                    raise InvalidIssuer("iss matches none of the rule's providers")
                await _verify_with_any(token, matching, trace)
        context = EvalContext(
            claims={p.name: identity.claims for p, identity in trace.identities},
            primary=trace.identities[0][0].name,
            request=request,
            path=path,
            params=params,
            delimiter=self._delimiter,
        )
        failure = rule.conditions.check(context)
        if failure is not None:
            raise ClaimMismatch(
                f"rule {rule.name}: {failure}", scope=failure.scope, condition=str(failure)
            )
        return self._allow(request, rule, trace.identities, plan, cached=trace.verified == 0)

    def _candidates(self, rule: CompiledRule) -> list[ProviderRuntime]:
        return [self._providers[name] for name in rule.providers]

    def _without_identity(
        self,
        request: RequestAttributes,
        rule: CompiledRule | None,
        reason: str,
        plan: StripPlan,
        *,
        static: bool = True,
    ) -> Decision:
        upstream = dict(rule.static_headers) if rule and static else {}
        remove = list(self._identity_headers)
        params = _strip(request, plan, upstream, remove)
        return Decision(
            allowed=True,
            status=200,
            reason=reason,
            rule=rule.name if rule else None,
            upstream_headers=tuple(upstream.items()),
            remove_headers=tuple(dict.fromkeys(remove)),
            remove_query_params=params,
        )

    def _allow(
        self,
        request: RequestAttributes,
        rule: CompiledRule,
        identities: list[tuple[ProviderRuntime, Identity]],
        plan: StripPlan,
        *,
        cached: bool = False,
    ) -> Decision:
        cap = self._max_header_bytes
        upstream: dict[str, str] = {}
        primary_claims = identities[0][1].claims
        for provider, identity in identities:
            for mapping in provider.headers:
                value = mapping.render(identity.claims, cap)
                if value is not None:
                    upstream[mapping.header] = value
            if provider.payload_header:
                upstream[provider.payload_header] = identity.raw_payload
        for mapping in rule.claim_headers:
            value = mapping.render(primary_claims, cap)
            if value is not None:
                upstream[mapping.header] = value
        upstream.update(rule.static_headers)
        remove = [h for h in self._identity_headers if h not in upstream]
        params = _strip(request, plan, upstream, remove)
        first = identities[0][0]
        return Decision(
            allowed=True,
            status=200,
            reason="allowed",
            rule=rule.name,
            provider=first.name,
            upstream_headers=tuple(upstream.items()),
            remove_headers=tuple(dict.fromkeys(remove)),
            remove_query_params=params,
            metadata={provider.name: identity.claims for provider, identity in identities},
            cached_identity=cached,
        )


def _strip(
    request: RequestAttributes, plan: StripPlan, upstream: dict[str, str], remove: list[str]
) -> tuple[str, ...]:
    """Apply ``plan`` to an allow: every copy of a token that is not forwarded goes (headers
    into ``remove``, the Cookie header rewritten in ``upstream``); the query parameters to
    remove are returned."""
    remove.extend(plan.headers)
    if plan.cookies:
        cookie = plan.cookie_header(upstream.get("cookie", request.headers.get("cookie", "")))
        if cookie:
            upstream["cookie"] = cookie
        else:
            upstream.pop("cookie", None)
            remove.append("cookie")
    return plan.params


def method_overrides(request: RequestAttributes) -> list[str]:
    """Other methods the request asks the upstream to act as (X-HTTP-Method-Override and its
    kin, or a ``_method`` query parameter in any spelling a framework may read)."""
    named: list[str] = []
    for header in METHOD_OVERRIDE_HEADERS:
        value = request.headers.get(header)
        if value is not None:
            named.extend(value.split(","))
    query = request.query
    # Every spelling of _method holds "method", or an escape that may decode to it.
    if query and ("%" in query or "method" in query.lower()):
        for part in re.split("[&;]", query):  # some parsers also split on ";"
            name, _, value = part.partition("=")
            if name_key(name) == METHOD_OVERRIDE_PARAM:
                named.append(unquote_plus(value))
    method = request.method.upper()
    others = {m.strip().upper() for m in named} - {method, ""}
    return sorted(others)


def _find_token(
    request: RequestAttributes, candidates: list[ProviderRuntime]
) -> tuple[FoundToken | None, list[ProviderRuntime]]:
    """The first token any candidate finds, and the candidates that find that same token."""
    found = [(p, p.sources.find(request, strict=p.forward)) for p in candidates]
    first = next((token for _, token in found if token is not None), None)
    if first is None:
        return None, []
    return first, [p for p, token in found if token is not None and token.token == first.token]


def _from_cache(raw: str, providers: list[ProviderRuntime], trace: _Trace) -> bool:
    """Use a cached verification by one of ``providers``; its time checks run again."""
    for provider in providers:
        identity = provider.verifier.cached(raw)
        if identity is not None:
            trace.routed.append(provider.name)
            trace.identities.append((provider, identity))
            return True
    return False


async def _verify_with_any(
    token: ParsedToken, providers: list[ProviderRuntime], trace: _Trace
) -> None:
    """Verify with the first provider that accepts; providers rarely share an issuer."""
    first_error: CheckError | None = None
    for provider in providers:
        trace.routed.append(provider.name)
        try:
            trace.identities.append((provider, await provider.verifier.verify(token)))
            trace.verified += 1
            return
        except CheckError as exc:
            first_error = first_error or exc
    assert first_error is not None
    raise first_error
