"""extract -> verify -> policy -> decision. Every expected failure becomes a deny Decision."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from authz.core.conditions import AllOf, EvalContext, Failure
from authz.core.decisions import DRY_RUN_HEADER, allow, deny, dry_run_answer, internal_error
from authz.core.errors import (
    CheckError,
    CheckRequestTooLarge,
    ClaimMismatch,
    MethodOverride,
    NoMatchingRule,
    Outcome,
    Overloaded,
    RequestTooLarge,
    TokenNotStrippable,
)
from authz.core.identify import ProviderRuntime, Trace, identify
from authz.core.model import Decision, Identity, RequestAttributes
from authz.core.overrides import method_overrides
from authz.core.paths import check_host, check_path
from authz.core.policy import CompiledRule, Policy
from authz.core.token_cache import TokenCache
from authz.core.tokens import StripPlan, TokenSources
from authz.core.tracing import Span, Tracer, caller_trace, check_attributes, check_error

log = logging.getLogger(__name__)
NO_CONDITIONS = AllOf(())  # a rule without claims: no policy step in its trace


@dataclass(frozen=True, slots=True)
class Observation:
    """How a check went, beside its decision: for metrics, never for the answer."""

    seconds: float
    # "hit": every identity came from the token cache; "miss": one was verified in full;
    # None: no token was verified (a denial before that, a public or anonymous allow).
    token_cache: Literal["hit", "miss"] | None = None
    # The check's trace (32 hex digits) when tracing is on and the check has one; for the
    # trace a log line names, see authz.core.tracing.check_trace_id.
    trace_id: str | None = None


Observer = Callable[[RequestAttributes, Decision, Observation], None]


@dataclass(frozen=True, slots=True)
class CheckLimits:
    """Bounds on what one check may cost."""

    max_headers: int  # more request headers (lines as sent): 431
    max_header_bytes: int  # names + values: 431
    max_concurrent_checks: int  # more in flight: 503 at once
    max_request_bytes: int  # a larger request as sent (RequestAttributes.size): 413


@dataclass(frozen=True, slots=True)
class Settings:
    """How the authorizer answers; the build step fills it from the config."""

    global_dry_run: bool
    expose_reasons: bool  # tell clients which rule and condition denied them
    max_header_value_bytes: int  # longer claim headers are dropped
    limits: CheckLimits
    semicolons_literal: bool  # paths.semicolons: literal
    judge_method_overrides: bool  # method_override: judge_both


def identity_headers(policy: Policy, providers: Iterable[ProviderRuntime]) -> tuple[str, ...]:
    """Every header authz may set for the upstream: a client must never get its own copy of
    one past authz, and a proxy asking over HTTP must let only authz set them."""
    names: list[str] = [DRY_RUN_HEADER]
    for p in providers:
        names += [h.header for h in p.headers]
        names += [p.payload_header] if p.payload_header else []
    for rule in policy.rules:
        names += [h.header for h in rule.claim_headers]
        names += [name for name, _ in rule.static_headers]
    return tuple(dict.fromkeys(names))


class Checker(Protocol):
    """What the adapters call: an Authorizer, or the runtime's swappable reference to one."""

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
        settings: Settings,
        observe: Observer | None,
        token_cache: TokenCache | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        """``token_cache``: the cache the providers' verifiers share, for its gauges;
        ``tracer``: one span per check (None: no span, no trace context read)."""
        self.token_cache = token_cache
        self._tracer = tracer
        self._in_flight = 0
        self._policy = policy
        self._providers = providers
        self._settings = settings
        self._observe = observe
        # Every place a token that must not be forwarded can sit, whichever rule matches:
        # public, anonymous and dry-run allows strip them as authenticated ones do.
        self._strip_sources = TokenSources.union(
            p.sources for p in providers.values() if not p.forward
        )
        self._identity_headers = identity_headers(policy, providers.values())
        # A DPoP proof is for authz: the upstream never receives it (unless every DPoP
        # provider forwards its token, for an upstream that checks proofs itself).
        self._proof_header = any(p.dpop is not None and not p.forward for p in providers.values())

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def providers(self) -> Mapping[str, ProviderRuntime]:
        return self._providers

    async def check(self, request: RequestAttributes, trace: Trace | None = None) -> Decision:
        """``trace``: filled with what the check learned (rule, identities), for
        explaining the decision offline; a new one when not given."""
        started = time.perf_counter()
        span = None if self._tracer is None else self._tracer.start_check(caller_trace(request))
        if trace is None:
            trace = Trace(span=span)
        else:
            trace.span = span
        plan: StripPlan | None = None
        self._in_flight += 1
        try:
            if request.size > self._settings.limits.max_request_bytes:
                # Refused even in dry-run mode: the headers may not even have been read.
                raise CheckRequestTooLarge(f"{request.size} bytes")
            # First, and enforced even in dry-run mode: no allow may hand a token on.
            plan = self._strip_plan(request)
            self._within_limits(request)
            decision = await self._judge(request, trace, plan)
        except CheckError as exc:
            rule = trace.rule.name if trace.rule else None
            expose = self._settings.expose_reasons
            decision = deny(exc, request.host, rule, trace.provider, expose=expose)
            # Policy denials are worth an operator's eye; token failures are routine noise.
            # A dry-run rule logs its would-be denial once, below.
            level = logging.INFO if exc.outcome is Outcome.FORBIDDEN else logging.DEBUG
            if self._dry_run(trace.rule):
                level = logging.DEBUG
            log.log(level, "deny %s rule=%s: %s", exc.reason, rule, exc.detail)
        except Exception as exc:  # fail closed on any bug; never log the exception's text
            rule = trace.rule.name if trace.rule else None
            log.error(
                "check failed with %s (rule=%s)\n%s",
                type(exc).__name__,
                rule,
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            decision = replace(internal_error(), rule=rule)
        except asyncio.CancelledError:  # the caller went away: no answer, but the span ends
            if span is not None:
                span.end(error="cancelled")
            raise
        finally:
            self._in_flight -= 1
        if plan is not None and self._dry_run(trace.rule):
            decision = self._dry_run_allow(request, decision, trace, plan)
        trace_id = None
        if span is not None:
            span.end(check_attributes(decision, trace.token_cache), check_error(decision))
            trace_id = span.trace_id
        if self._observe is not None:
            seconds = time.perf_counter() - started
            self._observe(request, decision, Observation(seconds, trace.token_cache, trace_id))
        return decision

    def _strip_plan(self, request: RequestAttributes) -> StripPlan:
        plan = self._strip_sources.strip_plan(request)
        if self._proof_header and "dpop" in request.headers:
            plan = replace(plan, headers=(*plan.headers, "dpop"))
        if plan.params_unremovable:
            raise TokenNotStrippable("a token parameter follows a ';' inside another parameter")
        if plan.params and not request.query_removable:
            raise TokenNotStrippable("a token parameter the proxy cannot remove")
        if plan.cookies and not request.cookie_rewritable:
            raise TokenNotStrippable("a token cookie the proxy cannot remove")
        return plan

    def _within_limits(self, request: RequestAttributes) -> None:
        limits = self._settings.limits
        if self._in_flight > limits.max_concurrent_checks:
            # Checks only pile up while waiting on keys; answer now rather than queue.
            raise Overloaded("max_concurrent_checks reached")
        headers = request.headers
        if max(len(headers), request.header_count) > limits.max_headers:
            raise RequestTooLarge("too many headers")
        if sum(map(len, headers)) + sum(map(len, headers.values())) > limits.max_header_bytes:
            raise RequestTooLarge("headers too large")

    def _dry_run(self, rule: CompiledRule | None) -> bool:
        return rule.mode == "dry_run" if rule is not None else self._settings.global_dry_run

    def _dry_run_allow(
        self, request: RequestAttributes, would: Decision, trace: Trace, plan: StripPlan
    ) -> Decision:
        """Let the request through, carrying the decision that enforcement would have made."""
        answer = would
        if not would.allowed:
            log.info("dry-run deny %s rule=%s", would.reason, would.rule)
            if trace.identities and trace.rule is not None:
                # The token was good; the upstream still learns who is calling.
                answer = self._allow(request, trace.rule, trace.identities, plan, "dry_run")
            else:
                rule = trace.rule.name if trace.rule else None
                answer = self._open(request, rule, {}, "dry_run", plan)
        return dry_run_answer(answer, would)

    async def _judge(self, request: RequestAttributes, trace: Trace, plan: StripPlan) -> Decision:
        """The decision, with method overrides refused or judged under both methods."""
        overrides = method_overrides(request)
        if overrides:
            if not self._settings.judge_method_overrides or len(overrides) > 1:
                raise MethodOverride("the request names another method to act as")
            # One DPoP proof for both; what either left unchecked offline is reported.
            first = Trace(
                proofs=trace.proofs, skipped_offline=trace.skipped_offline, span=trace.span
            )
            try:
                await self._decide(request, first, plan)
            except CheckError:
                trace.rule, trace.routed = first.rule, first.routed
                trace.first_judgement = first
                raise
            request = replace(request, method=overrides[0], sent_method=request.method)
        return await self._decide(request, trace, plan)

    async def _decide(self, request: RequestAttributes, trace: Trace, plan: StripPlan) -> Decision:
        path = check_path(request.path, semicolons_literal=self._settings.semicolons_literal)
        check_host(request.host)
        trace.judged, trace.path = request, path
        matched = self._policy.match(request, path)
        if matched is None:
            raise NoMatchingRule("no rule matches")
        rule, params = matched
        trace.rule, trace.params = rule, params
        if rule.public:
            return self._open(request, rule.name, dict(rule.static_headers), "public", plan)
        candidates = [self._providers[name] for name in rule.providers]
        if not await identify(request, rule, candidates, trace):
            static = dict(rule.static_headers)
            return self._open(request, rule.name, static, "anonymous", plan)
        context = EvalContext(
            claims={p.name: identity.claims for p, identity in trace.identities},
            primary=trace.identities[0][0].name,
            request=request,
            path=path,
            params=params,
            tenants={p.name: i.tenant for p, i in trace.identities if i.tenant is not None},
        )
        trace.conditions_reached = True
        failure = (
            rule.conditions.check(context)
            if trace.span is None or rule.conditions == NO_CONDITIONS
            else self._evaluate_traced(rule, context, trace.span)
        )
        if failure is not None:
            raise ClaimMismatch(
                f"rule {rule.name}: {failure}", scope=failure.scope, condition=str(failure)
            )
        return self._allow(request, rule, trace.identities, plan, "allowed")

    @staticmethod
    def _evaluate_traced(rule: CompiledRule, context: EvalContext, span: Span) -> Failure | None:
        """The rule's conditions, in a span of their own."""
        step = span.child("authz.policy", {"authz.rule": rule.name})
        try:
            failure = rule.conditions.check(context)
        except BaseException:
            step.end(error="failed")
            raise
        step.end({"authz.policy.result": "fail" if failure is not None else "pass"})
        return failure

    def _open(
        self,
        request: RequestAttributes,
        rule: str | None,
        upstream: dict[str, str],
        reason: str,
        plan: StripPlan,
    ) -> Decision:
        """An allow without an identity: public, anonymous, or a dry run without a token."""
        return allow(
            request,
            plan,
            reason=reason,
            rule=rule,
            provider=None,
            upstream=upstream,
            identity_headers=self._identity_headers,
            metadata={},
        )

    def _identity_headers_of(
        self, provider: ProviderRuntime, identity: Identity
    ) -> tuple[tuple[str, str], ...]:
        """The provider's claim headers (and payload header) for ``identity``: rendered once
        per Identity and provider (a token from the token cache comes back as the same
        Identity while it stays hot)."""
        memo = identity.rendered
        if memo and memo[0] is provider:
            rendered: tuple[tuple[str, str], ...] = memo[1]
            return rendered
        cap = self._settings.max_header_value_bytes
        pairs = []
        for mapping in provider.headers:
            value = mapping.render(identity.claims, cap, identity.tenant)
            if value is not None:
                pairs.append((mapping.header, value))
        if provider.payload_header:
            pairs.append((provider.payload_header, identity.raw_payload))
        rendered = tuple(pairs)
        memo[:] = (provider, rendered)
        return rendered

    def _allow(
        self,
        request: RequestAttributes,
        rule: CompiledRule,
        identities: list[tuple[ProviderRuntime, Identity]],
        plan: StripPlan,
        reason: str,
    ) -> Decision:
        cap = self._settings.max_header_value_bytes
        upstream: dict[str, str] = {}
        primary = identities[0][1]
        for provider, identity in identities:
            upstream.update(self._identity_headers_of(provider, identity))
        for mapping in rule.claim_headers:
            value = mapping.render(primary.claims, cap, primary.tenant)
            if value is not None:
                upstream[mapping.header] = value
        upstream.update(rule.static_headers)
        return allow(
            request,
            plan,
            reason=reason,
            rule=rule.name,
            provider=identities[0][0].name,
            upstream=upstream,
            identity_headers=self._identity_headers,
            metadata={provider.name: identity.claims for provider, identity in identities},
        )
