"""Judging requests offline with the real authorizer, for ``authz eval`` and ``authz test``.

Two ways to get an authorizer for a config, both from the one build step:
- ``StandInJudge``: each JWT provider's keys replaced by a throwaway key, each
  introspection endpoint by the claims a case supplies; tokens are minted with the
  config's issuer and audience filled in. Policy is judged without any real key.
- ``LiveJudge``: the configured keys (inline, file, one fetch of a remote JWKS or
  discovery; or a JWKS file given instead) and the real introspection endpoint.

Holder-of-key checks (a DPoP proof, a TLS client certificate) need a live connection:
neither judge makes them, and ``skipped_offline`` says which were left out.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authz.config import Config, ConfigError, Provider
from authz.core.authorizer import Authorizer
from authz.core.conditions import EvalContext
from authz.core.errors import CheckError, JwksError
from authz.core.explain import ConditionResult, RuleStep, condition_results, rule_steps
from authz.core.identify import Trace
from authz.core.introspect import Introspector
from authz.core.jws import parse_token
from authz.core.model import Decision, RequestAttributes
from authz.core.paths import check_path
from authz.core.tenants import PLACEHOLDER
from authz.core.verify import Clock
from authz.keys.jwks import parse_jwks_bytes
from authz.keys.sources import KeySource, StaticKeySource
from authz.keys.stand_in import StandInKey, stand_in_key
from authz.runtime.build import (
    Fetchers,
    build,
    build_authorizer,
    introspection_settings,
    validate,
)
from authz.runtime.offline import Offline

# Denials a verifier reaches only after the signature verified, and those about the
# signature itself (authz/core/verify.py).
_AFTER_SIGNATURE = frozenset({"token_expired", "token_not_yet_valid", "missing_exp"})
_SIGNATURE_REFUSED = frozenset({"invalid_signature", "unknown_kid", "algorithm_not_allowed"})
STAND_IN_LIFETIME_S = 300  # exp of a minted token, unless the claims give one
KEY_WAIT_S = 10.0  # how long a live judge waits for a remote key set


@dataclass(frozen=True, slots=True)
class Request:
    """One request to judge, as an operator writes it."""

    method: str = "GET"
    path: str = "/"
    host: str = "localhost"
    headers: Mapping[str, str] = field(default_factory=dict)
    context: Mapping[str, str] = field(default_factory=dict)  # Envoy's context_extensions

    def attributes(self) -> RequestAttributes:
        headers = {name.lower(): value for name, value in self.headers.items()}
        host = headers.get("host", self.host)
        return RequestAttributes(
            method=self.method.upper(),
            host=host,
            path=self.path,
            headers=headers,
            context=dict(self.context),
            header_count=len(headers),
        )


@dataclass(frozen=True, slots=True)
class TokenCheck:
    check: str  # iss, aud, exp, nbf
    value: Any  # what the token says: shown because the operator supplied the token
    shown: str  # the value for a reader: JSON, or a time relative to now
    result: str  # pass, fail


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A decision and why: the authorizer's verdict, and the explanation beside it."""

    decision: Decision
    rules: list[RuleStep]
    signature: str  # how the token's signature was judged
    token_checks: list[TokenCheck]
    conditions: list[ConditionResult] | None  # None: the rule's conditions were not reached
    skipped_offline: list[str]
    path_refused: str | None = None


class Judge:
    """An authorizer built from a config, and how to explain its decisions."""

    def __init__(self, config: Config, authorizer: Authorizer, clock: Clock) -> None:
        self.config = config
        self.authorizer = authorizer
        self._clock = clock
        self.signature = "verified with the provider's keys"
        self.introspection = "none: an opaque token, active by the introspection endpoint"

    async def evaluate(self, request: Request) -> Evaluation:
        attributes = request.attributes()
        trace = Trace()
        decision = await self.authorizer.check(attributes, trace)
        policy = self.authorizer.policy
        try:
            path = check_path(
                attributes.path, semicolons_literal=self.config.paths.semicolons == "literal"
            )
        except CheckError as exc:
            return Evaluation(decision, [], "not reached", [], None, [], exc.reason)
        steps = rule_steps(policy, attributes, path)
        rule = trace.rule
        conditions = None
        token_checks: list[TokenCheck] = []
        if trace.identities and rule is not None:
            matched = policy.match(attributes, path)
            context = EvalContext(
                claims={p.name: identity.claims for p, identity in trace.identities},
                primary=trace.identities[0][0].name,
                request=attributes,
                path=path,
                params=matched[1] if matched else {},
                tenants={p.name: i.tenant for p, i in trace.identities if i.tenant is not None},
            )
            conditions = condition_results(rule.conditions, context)
        providers = list(rule.providers) if rule is not None and not rule.public else []
        claims = self._token_claims(attributes, providers)
        if claims is None and trace.identities:  # an opaque token: what introspection said
            claims = dict(trace.identities[0][1].claims)
        if claims is not None:
            provider = self.config.providers[trace.provider or providers[0]]
            token_checks = token_checks_of(claims, provider, self._clock())
        signature = self._signature(decision, trace, claims is not None)
        skipped = skipped_offline(self.config, providers, claims)
        return Evaluation(decision, steps, signature, token_checks, conditions, skipped)

    def providers_for(self, request: Request) -> list[str]:
        """The providers whose tokens a request to judge needs: those of the rule it
        matches (each of them for requires.all, else the first), or none."""
        attributes = request.attributes()
        try:
            path = check_path(
                attributes.path, semicolons_literal=self.config.paths.semicolons == "literal"
            )
        except CheckError:
            return []
        matched = self.authorizer.policy.match(attributes, path)
        if matched is None or matched[0].public:
            return []
        rule = matched[0]
        return list(rule.providers) if rule.every else list(rule.providers[:1])

    def _signature(self, decision: Decision, trace: Trace, token: bool) -> str:
        name = trace.provider
        if name is not None and self.config.providers[name].introspection is not None:
            return self.introspection if trace.identities else f"not active ({decision.reason})"
        if trace.identities or decision.reason in _AFTER_SIGNATURE:
            return self.signature
        if decision.reason in _SIGNATURE_REFUSED:
            return f"refused ({decision.reason})"
        return f"not judged ({decision.reason})" if token else "no token"

    def _token_claims(
        self, request: RequestAttributes, providers: list[str]
    ) -> dict[str, Any] | None:
        """The claims of the token the rule's providers find, read without trusting them
        (to show the operator what they sent); None when none is found or it is opaque."""
        for name in providers:
            runtime = self.authorizer.providers[name]
            try:
                found = runtime.sources.find(request)
                if found is None:
                    continue
                return dict(parse_token(found, runtime.max_token_bytes).claims)
            except CheckError:
                return None
        return None


def token_checks_of(claims: Mapping[str, Any], provider: Provider, now: float) -> list[TokenCheck]:
    checks = []
    iss = claims.get("iss")
    if provider.tenants is not None:
        prefix, _, suffix = provider.issuer.partition(PLACEHOLDER)
        ok = isinstance(iss, str) and iss.startswith(prefix) and iss.endswith(suffix)
    else:
        ok = iss == provider.issuer
    checks.append(TokenCheck("iss", iss, json.dumps(iss), "pass" if ok else "fail"))
    aud = claims.get("aud")
    if provider.audiences:
        given = aud if isinstance(aud, list) else [aud]
        ok = any(a in provider.audiences for a in given)
        checks.append(TokenCheck("aud", aud, json.dumps(aud), "pass" if ok else "fail"))
    skew = provider.clock_skew
    for name, in_future_ok in (("exp", True), ("nbf", False)):
        value = claims.get(name)
        if not isinstance(value, int | float) or isinstance(value, bool):
            if name == "exp":
                ok = not provider.require_expiration
                checks.append(TokenCheck("exp", value, "none", "pass" if ok else "fail"))
            continue
        ok = now < value + skew if in_future_ok else value - skew <= now
        shown = relative(round(value - int(now)))
        checks.append(TokenCheck(name, value, shown, "pass" if ok else "fail"))
    return checks


def relative(seconds: float) -> str:
    """ "in 4m 59s" or "3h 2m ago"."""
    amount = int(abs(seconds))
    days, rest = divmod(amount, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    parts += [f"{hours}h"] if hours or days else []
    parts += [f"{minutes}m", f"{secs}s"] if not days else [f"{minutes}m"]
    text = " ".join(parts)
    return f"in {text}" if seconds >= 0 else f"{text} ago"


def skipped_offline(
    config: Config, providers: list[str], claims: Mapping[str, Any] | None
) -> list[str]:
    """The holder-of-key checks the rule's providers would make on a live connection: for
    a token bound to a key (its cnf), or for every token when the provider requires it."""
    cnf = (claims or {}).get("cnf")
    cnf = cnf if isinstance(cnf, dict) else {}
    skipped = []
    for name in providers:
        provider = config.providers[name]
        dpop = provider.dpop.mode
        if provider.introspection is None and (
            dpop == "required" or (dpop == "when_bound" and "jkt" in cnf)
        ):
            skipped.append(
                f"DPoP proof of possession (providers.{name}.dpop.mode: {provider.dpop.mode})"
            )
        certificate = provider.certificate_bound
        if certificate == "required" or (certificate == "when_bound" and "x5t#S256" in cnf):
            skipped.append(
                f"TLS client certificate binding "
                f"(providers.{name}.certificate_bound: {provider.certificate_bound})"
            )
    return skipped


class _Answers:
    """Stands in for an introspection endpoint: the answers for the tokens minted."""

    def __init__(self) -> None:
        self.answers: dict[str, dict[str, Any]] = {}

    async def introspect(self, token: str) -> dict[str, Any]:
        return self.answers.get(token, {"active": False})


class StandInJudge(Judge):
    """The config's policy with throwaway keys: tokens are minted from claims."""

    def __init__(self, config: Config, clock: Clock = time.time) -> None:
        validate(config)
        self.keys: dict[str, StandInKey] = {}
        self._answers = _Answers()
        sources: dict[str, KeySource] = {}
        introspectors: dict[str, Introspector] = {}
        for name, provider in config.providers.items():
            if provider.introspection is not None:
                introspectors[name] = Introspector(
                    name, self._answers, introspection_settings(provider), clock
                )
                continue
            algorithms = tuple(provider.algorithms)
            key = stand_in_key(algorithms)
            self.keys[name] = key
            sources[name] = StaticKeySource(name, algorithms, Offline(), key.keys)
        authorizer = build_authorizer(
            config, sources, clock, None, introspectors, holder_checks=False
        )
        super().__init__(config, authorizer, clock)
        self.signature = "not checked: signed by a stand-in key for the claims given"
        self.introspection = "none: the claims given stand in for the introspection answer"
        self._sources = sources

    async def start(self) -> None:
        for source in self._sources.values():
            await source.start()

    def token(self, provider_name: str, claims: Mapping[str, Any]) -> str:
        """A token for ``provider_name`` carrying ``claims``, with iss, aud, iat and exp
        filled from the config where the claims leave them out."""
        provider = self.config.providers[provider_name]
        now = int(self._clock())
        full = dict(claims)
        if "iss" not in full:
            full["iss"] = _issuer(provider_name, provider)
        if "aud" not in full and provider.audiences:
            full["aud"] = provider.audiences[0]
        full.setdefault("iat", now)
        lifetime = STAND_IN_LIFETIME_S
        if provider.max_lifetime is not None:
            lifetime = min(lifetime, int(provider.max_lifetime))
        full.setdefault("exp", now + lifetime)
        if provider.introspection is not None:
            token = "stand-in-" + secrets.token_urlsafe(16)
            self._answers.answers[token] = {"active": True, **full}
            return token
        return self.keys[provider_name].sign(full, typ=provider.typ)


def _issuer(name: str, provider: Provider) -> str:
    if PLACEHOLDER not in provider.issuer:
        return provider.issuer
    if isinstance(provider.tenants, list) and provider.tenants:
        return provider.issuer.replace(PLACEHOLDER, provider.tenants[0])
    raise ConfigError(
        f"provider {name} is multi-tenant and open to any tenant: give the claims an iss"
    )


def with_token(request: Request, provider: Provider, token: str) -> Request:
    """``request`` carrying ``token`` where ``provider`` reads it first."""
    headers = dict(request.headers)
    if provider.from_headers:
        source = provider.from_headers[0]
        headers[source.name] = source.value_prefix + token
        return Request(request.method, request.path, request.host, headers, request.context)
    if provider.from_params:
        separator = "&" if "?" in request.path else "?"
        path = f"{request.path}{separator}{provider.from_params[0]}={token}"
        return Request(request.method, path, request.host, headers, request.context)
    cookie = f"{provider.from_cookies[0]}={token}"
    existing = headers.get("cookie")
    headers["cookie"] = f"{existing}; {cookie}" if existing else cookie
    return Request(request.method, request.path, request.host, headers, request.context)


class LiveJudge(Judge):
    """The config's own keys, or those of a JWKS file given instead; owns what it
    starts (key sources, HTTP sessions): ``stop`` when done."""

    def __init__(self, config: Config, jwks_file: Path | None, clock: Clock = time.time):
        self._fetchers = Fetchers()
        offline = Offline()
        built = build(config, events=offline, fetcher_for=self._fetchers, observe=None)
        sources = dict(built.sources)
        if jwks_file is not None:
            data = jwks_file.read_bytes()
            for name in sources:
                algorithms = tuple(config.providers[name].algorithms)
                try:
                    keys = parse_jwks_bytes(data, algorithms, max_keys=100)
                except JwksError as exc:
                    raise ConfigError(f"{jwks_file}: no key for provider {name}: {exc}") from exc
                sources[name] = StaticKeySource(name, algorithms, offline, keys)
        authorizer = build_authorizer(
            config,
            sources,
            clock,
            None,
            built.introspectors,
            holder_checks=False,
        )
        super().__init__(config, authorizer, clock)
        self._sources = sources

    async def start(self, providers: list[str]) -> None:
        """Load the key sets of ``providers`` (one fetch each for remote ones)."""
        for name in providers:
            source = self._sources.get(name)
            if source is not None:
                await source.start()
                await source.wait_loaded(KEY_WAIT_S)

    async def stop(self) -> None:
        for source in self._sources.values():
            await source.stop()
        await self._fetchers.close()


async def evaluate_once(
    config: Config,
    request: Request,
    *,
    claims: Mapping[str, Any] | None = None,
    provider: str | None = None,
    jwks_file: Path | None = None,
) -> Evaluation:
    """``authz eval``: with ``claims``, a token minted for them stands in for the
    request's (stand-in keys, no signature judged); without, the request's own token is
    judged with the configured keys (or ``jwks_file``'s)."""
    if provider is not None and provider not in config.providers:
        raise ConfigError(f"no provider {provider!r}; the config has {sorted(config.providers)}")
    if claims is not None:
        judge = StandInJudge(config)
        await judge.start()
        for name in [provider] if provider else judge.providers_for(request):
            request = with_token(request, config.providers[name], judge.token(name, claims))
        return await judge.evaluate(request)
    live = LiveJudge(config, jwks_file)
    try:
        await live.start([provider] if provider else live.providers_for(request))
        return await live.evaluate(request)
    finally:
        await live.stop()
