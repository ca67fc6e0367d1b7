"""Judging requests offline with the real authorizer, for ``authz eval`` and ``authz test``.

Two ways to get an authorizer for a config, both from the one build step:
- ``StandInJudge``: each JWT provider's keys replaced by a throwaway key, each
  introspection endpoint by the claims a case supplies; tokens are minted with the
  config's issuer and audience filled in. Policy is judged without any real key.
- ``LiveJudge``: the configured keys (inline, file, one fetch of a remote JWKS or
  discovery; or a JWKS file given instead) and the real introspection endpoint.

The authorizer's decision is the verdict; the explanation (explain.py and the token
reports here) comes from what its Trace recorded. What a token and its request say of a
key binding (the Authorization scheme, ``cnf``, a provider that requires one) is judged
as serve judges it; the DPoP proof and the TLS client certificate belong to a live
request: neither judge checks them, and ``skipped`` says which were left out.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from authz.config import Config, ConfigError, Provider
from authz.core.authorizer import Authorizer
from authz.core.conditions import EvalContext
from authz.core.dpop import claimed_key, proof_wanted
from authz.core.errors import CheckError, InvalidAudience, JwksError
from authz.core.explain import ConditionResult, RuleStep, condition_results, rule_steps
from authz.core.identify import ProviderRuntime, Trace
from authz.core.introspect import Introspector
from authz.core.jws import COMPACT_JWS, parse_token
from authz.core.model import Decision, RequestAttributes
from authz.core.overrides import method_overrides
from authz.core.paths import check_path
from authz.core.tenants import PLACEHOLDER
from authz.core.verify import Clock, check_audience
from authz.keys.jwks import KeySet, parse_jwks_bytes
from authz.keys.sources import KeySource, StaticKeySource
from authz.keys.stand_in import StandInKey, stand_in_key
from authz.keys.tenants import TenantKeySources
from authz.runtime.build import (
    Fetchers,
    build,
    build_authorizer,
    introspection_settings,
    validate,
)
from authz.runtime.offline import Offline

STAND_IN_LIFETIME_S = 300  # exp of a minted token, unless the claims give one
KEY_WAIT_S = 10.0  # how long a live judge waits for a key set's first load


@dataclass(frozen=True, slots=True)
class Request:
    """One request to judge, as an operator writes it (header names in any case)."""

    method: str = "GET"
    path: str = "/"
    host: str = "localhost"
    headers: Mapping[str, str] = field(default_factory=dict)
    context: Mapping[str, str] = field(default_factory=dict)  # Envoy's context_extensions

    def __post_init__(self) -> None:
        lowered = {name.lower(): value for name, value in self.headers.items()}
        object.__setattr__(self, "headers", lowered)

    def attributes(self) -> RequestAttributes:
        return RequestAttributes(
            method=self.method.upper(),
            host=self.headers.get("host", self.host),
            path=self.path,
            headers=dict(self.headers),
            context=dict(self.context),
            header_count=len(self.headers),
        )

    def with_header(self, name: str, value: str) -> Request:
        return Request(
            self.method, self.path, self.host, {**self.headers, name: value}, self.context
        )


@dataclass(frozen=True, slots=True)
class TokenCheck:
    check: str  # iss, aud, exp, nbf
    value: Any  # what the token says: shown because the operator supplied the token
    shown: str  # the value for a reader: JSON, or a time relative to now
    result: str  # pass, fail


@dataclass(frozen=True, slots=True)
class Signature:
    # verified, stand_in (minted for the claims given), refused, not_checked,
    # introspected (active at the endpoint), stand_in_answer (claims as the answer)
    result: str
    reason: str | None = None  # why refused or not checked: a reason code
    jwks_file: Path | None = None  # verified with this file's keys (--jwks), not the provider's


@dataclass(frozen=True, slots=True)
class TokenReport:
    provider: str
    signature: Signature
    checks: list[TokenCheck]


@dataclass(frozen=True, slots=True)
class Skipped:
    check: str  # dpop_proof, certificate_binding
    provider: str
    mode: str  # required, or when_bound for a token bound to a key

    def __str__(self) -> str:
        if self.check == "dpop_proof":
            return f"DPoP proof of possession (providers.{self.provider}.dpop.mode: {self.mode})"
        return (
            "TLS client certificate binding "
            f"(providers.{self.provider}.certificate_bound: {self.mode})"
        )


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A decision and why: the authorizer's verdict, and the explanation beside it."""

    decision: Decision
    refused: str | None  # a reason when the request was refused before any rule
    judged_method: str | None  # the method the rules judged, when an override named it
    rules: list[RuleStep]
    tokens: list[TokenReport]
    conditions: list[ConditionResult] | None  # None: the rule's conditions were not reached
    skipped: list[Skipped]


class Judge:
    """An authorizer built from a config, and how to explain its decisions."""

    stand_in = False

    def __init__(
        self,
        config: Config,
        authorizer: Authorizer,
        sources: Mapping[str, KeySource],
        clock: Clock,
        jwks_files: Mapping[str, Path] | None = None,
    ) -> None:
        self.config = config
        self.authorizer = authorizer
        self._sources = sources
        self._clock = clock
        self._jwks_files = jwks_files or {}  # the providers whose keys a JWKS file replaced

    async def evaluate(self, request: Request) -> Evaluation:
        attributes = request.attributes()
        trace = Trace()
        decision = await self.authorizer.check(attributes, trace)
        # A method override judged twice: the judgement that failed, else the last one.
        explained = trace.first_judgement or trace
        reason = decision.dry_run[1] if decision.dry_run else decision.reason
        judged = explained.judged
        if judged is None:  # refused before any rule: path, host, size, override, token
            return Evaluation(decision, reason, None, [], [], None, [])
        steps = rule_steps(self.authorizer.policy, judged, explained.path)
        rule = explained.rule
        conditions = None
        if explained.conditions_reached and rule is not None:
            context = EvalContext(
                claims={p.name: identity.claims for p, identity in explained.identities},
                primary=explained.identities[0][0].name,
                request=judged,
                path=explained.path,
                params=explained.params or {},
                tenants={p.name: i.tenant for p, i in explained.identities if i.tenant},
            )
            conditions = condition_results(rule.conditions, context)
        tokens = self._tokens(attributes, explained, reason)
        skipped = [self._skipped(*s) for s in dict.fromkeys(explained.skipped_offline)]
        overridden = judged.method if judged.sent_method else None
        return Evaluation(decision, None, overridden, steps, tokens, conditions, skipped)

    def providers_for(self, request: Request, iss: object = None) -> list[str]:
        """The providers whose tokens a request needs, for each method it is judged under
        (an override too): every provider of a requires.all rule; else the first of the
        rule's providers that takes ``iss`` (any, when None)."""
        attributes = request.attributes()
        try:
            path = check_path(
                attributes.path, semicolons_literal=self.config.paths.semicolons == "literal"
            )
        except CheckError:
            return []
        methods = [attributes.method]
        if self.config.method_override == "judge_both":
            methods += method_overrides(attributes)
        names: list[str] = []
        for method in methods:
            matched = self.authorizer.policy.match(replace(attributes, method=method), path)
            if matched is None or matched[0].public:
                continue
            rule = matched[0]
            if rule.every:
                names += rule.providers
                continue
            providers = self.authorizer.providers
            takes = [n for n in rule.providers if iss is None or providers[n].accepts_issuer(iss)]
            names += (takes or list(rule.providers))[:1]
        return list(dict.fromkeys(names))

    def _tokens(self, request: RequestAttributes, trace: Trace, reason: str) -> list[TokenReport]:
        """A report on each token the matched rule's providers were given."""
        rule = trace.rule
        if rule is None or rule.public:
            return []
        verified = {p.name: identity for p, identity in trace.identities}
        names = list(dict.fromkeys(trace.routed)) or list(rule.providers)
        reports = []
        for name in names:
            runtime = self.authorizer.providers[name]
            try:
                found = runtime.sources.find(request)
            except CheckError:
                found = None
            if found is None:
                continue
            identity = verified.get(name)
            claims: Mapping[str, Any] | None = identity.claims if identity else None
            if claims is None and COMPACT_JWS.fullmatch(found):
                try:
                    claims = parse_token(found, runtime.max_token_bytes).claims
                except CheckError:
                    claims = None
            signature = self._signature(runtime, found, identity is not None, reason)
            checks = token_checks(claims, runtime, self.config.providers[name], self._clock())
            reports.append(TokenReport(name, signature, checks))
            if not rule.every:
                break  # a token routed to its first provider is that provider's
        return reports

    def _signature(
        self, runtime: ProviderRuntime, token: str, verified: bool, reason: str
    ) -> Signature:
        if runtime.introspector is not None:
            if verified:
                return Signature("stand_in_answer" if self.stand_in else "introspected")
            return Signature("not_checked", reason)
        if verified:
            return self._verified(runtime.name)
        keys = self._key_set(runtime.name)
        if keys is None or not COMPACT_JWS.fullmatch(token):
            return Signature("not_checked", reason)
        try:
            parsed = parse_token(token, runtime.max_token_bytes)
            alg = parsed.header["alg"]
            assert runtime.verifier is not None
            if alg not in runtime.verifier.algorithms:
                return Signature("refused", "algorithm_not_allowed")
            key = keys.find(parsed.header.get("kid"), alg)
        except CheckError as exc:
            return Signature("refused", exc.reason)
        if not key.verify(parsed.signing_input, parsed.signature):
            return Signature("refused", "invalid_signature")
        return self._verified(runtime.name)

    def _verified(self, name: str) -> Signature:
        if self.stand_in:
            return Signature("stand_in")
        return Signature("verified", jwks_file=self._jwks_files.get(name))

    def _key_set(self, name: str) -> KeySet | None:
        source = self._sources.get(name)
        if source is None or isinstance(source, TenantKeySources):
            return None  # a tenant's keys load on demand: the decision's reason says more
        return source.keys

    def _skipped(self, provider: str, check: str) -> Skipped:
        settings = self.config.providers[provider]
        mode = settings.dpop.mode if check == "dpop_proof" else settings.certificate_bound
        return Skipped(check, provider, mode)


def token_checks(
    claims: Mapping[str, Any] | None, runtime: ProviderRuntime, provider: Provider, now: float
) -> list[TokenCheck]:
    """iss, aud, exp and nbf as the provider judges them, for reading: the verdict is the
    authorizer's."""
    if claims is None:
        return []
    checks = []
    iss = claims.get("iss")
    if runtime.verifier is not None and runtime.verifier.tenants is not None:
        tenants = runtime.verifier.tenants
        tenant = tenants.tenant_of(iss)
        ok = tenant is not None and tenants.allows(tenant)
    elif runtime.introspector is not None:
        ok = "iss" not in claims or iss == provider.issuer  # an answer may leave it out
    else:
        ok = iss == provider.issuer
    checks.append(TokenCheck("iss", iss, _json(iss), "pass" if ok else "fail"))
    aud = claims.get("aud")
    try:
        check_audience(dict(claims), frozenset(provider.audiences))
        ok = True
    except InvalidAudience:
        ok = False
    checks.append(TokenCheck("aud", aud, _json(aud), "pass" if ok else "fail"))
    skew = provider.clock_skew
    for name in ("exp", "nbf"):
        value = claims.get(name)
        if value is None and name == "exp":
            ok = not provider.require_expiration
            checks.append(TokenCheck("exp", None, "none", "pass" if ok else "fail"))
            continue
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            checks.append(TokenCheck(name, value, "not a NumericDate", "fail"))
            continue
        ok = now < value + skew if name == "exp" else value - skew <= now
        shown = relative(round(value - int(now)))
        checks.append(TokenCheck(name, value, shown, "pass" if ok else "fail"))
    return checks


def _json(value: Any) -> str:
    try:
        return json.dumps(value)[:200]
    except (TypeError, ValueError):
        return type(value).__name__


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


class _Answers:
    """Stands in for an introspection endpoint: the answers for the tokens minted."""

    def __init__(self) -> None:
        self.answers: dict[str, dict[str, Any]] = {}

    async def introspect(self, token: str) -> dict[str, Any]:
        return self.answers.get(token, {"active": False})


class StandInJudge(Judge):
    """The config's policy with throwaway keys: tokens are minted from claims. Reads no
    secret and fetches nothing."""

    stand_in = True

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
        super().__init__(config, authorizer, sources, clock)

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
        if "exp" not in full:
            iat = full["iat"]
            start = iat if isinstance(iat, int) and not isinstance(iat, bool) else now
            full["exp"] = min(start, now) + lifetime
        if provider.introspection is not None:
            token = "stand-in-" + secrets.token_urlsafe(16)
            self._answers.answers[token] = {"active": True, **full}
            return token
        return self.keys[provider_name].sign(full, typ=provider.typ)

    def carrying(
        self,
        request: Request,
        provider: str | None,
        *,
        claims: Mapping[str, Any] | None = None,
        token: str | None = None,
    ) -> tuple[Request, list[str]]:
        """``request`` with a token where each provider reads it first, and those
        providers: ``provider``, else those of the rule the request matches (each of them
        for requires.all; the one taking the claims' iss). The token is ``token`` as
        given, else one minted for ``claims``."""
        iss = claims.get("iss") if claims is not None else None
        names = [provider] if provider else self.providers_for(request, iss)
        for name in names:
            settings = self.config.providers[name]
            given = token if token is not None else self.token(name, claims or {})
            dpop = sent_as_dpop(settings, claims if token is None else None)
            request = with_token(request, settings, given, dpop=dpop)
        return request, names


def _issuer(name: str, provider: Provider) -> str:
    if PLACEHOLDER not in provider.issuer:
        return provider.issuer
    if isinstance(provider.tenants, list) and provider.tenants:
        return provider.issuer.replace(PLACEHOLDER, provider.tenants[0])
    raise ConfigError(
        f"provider {name} is multi-tenant and open to any tenant: give the claims an iss"
    )


def sent_as_dpop(provider: Provider, claims: Mapping[str, Any] | None) -> bool:
    """Whether a client sends a token for ``provider`` carrying ``claims`` (None: not
    known) as ``Authorization: DPoP``: where serve would want a proof of a Bearer token
    (the provider requires DPoP, or the claims bind a key)."""
    if provider.introspection is not None:
        return False
    return proof_wanted(provider.dpop.mode, claimed_key(claims or {}), scheme_dpop=False)


def with_token(request: Request, provider: Provider, token: str, *, dpop: bool = False) -> Request:
    """``request`` carrying ``token`` where ``provider`` reads it first; ``dpop``: with
    the DPoP scheme where the provider reads ``Authorization: Bearer`` (RFC 9449 7.1)."""
    if provider.from_headers:
        source = provider.from_headers[0]
        prefix = source.value_prefix
        if dpop and source.name == "authorization" and prefix.strip().lower() == "bearer":
            prefix = "DPoP "
        return request.with_header(source.name, prefix + token)
    if provider.from_params:
        separator = "&" if "?" in request.path else "?"
        path = f"{request.path}{separator}{provider.from_params[0]}={token}"
        return Request(request.method, path, request.host, request.headers, request.context)
    cookie = f"{provider.from_cookies[0]}={token}"
    existing = request.headers.get("cookie")
    return request.with_header("cookie", f"{existing}; {cookie}" if existing else cookie)


class _FirstLoads(Offline):
    """Key events that note each provider's first load, ok or failed."""

    def __init__(self) -> None:
        self.results: dict[str, str] = {}
        self._loaded: dict[str, asyncio.Event] = {}

    def loaded(self, provider: str) -> asyncio.Event:
        return self._loaded.setdefault(provider, asyncio.Event())

    async def key_set(self, provider: str, result: str, keys: KeySet | None) -> None:
        self.results.setdefault(provider, result)
        self.loaded(provider).set()


class LiveJudge(Judge):
    """The config's own keys, or those of a JWKS file given instead; everything is built
    as serve builds it (secrets included). ``fetchers`` is the caller's to close."""

    def __init__(
        self,
        config: Config,
        jwks_file: Path | None,
        fetchers: Fetchers,
        clock: Clock = time.time,
    ) -> None:
        self._events = _FirstLoads()
        built = build(config, events=self._events, fetcher_for=fetchers, observe=None)
        sources = dict(built.sources)
        files: dict[str, Path] = {}
        if jwks_file is not None:
            from_file = self._from_file(config, jwks_file)
            sources.update(from_file)
            files = dict.fromkeys(from_file, jwks_file)
        authorizer = build_authorizer(
            config, sources, clock, None, built.introspectors, holder_checks=False
        )
        super().__init__(config, authorizer, sources, clock, files)

    def _from_file(self, config: Config, jwks_file: Path) -> dict[str, KeySource]:
        """Key sources from the file for each provider with a JWKS whose algorithms it
        serves; an error when it serves none of them."""
        try:
            data = jwks_file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {jwks_file}: {exc.strerror}") from exc
        sources: dict[str, KeySource] = {}
        errors = []
        for name, provider in config.providers.items():
            if provider.jwks is None:
                continue  # a shared secret or introspection: not a JWKS to replace
            algorithms = tuple(provider.algorithms)
            try:
                keys = parse_jwks_bytes(data, algorithms, max_keys=100)
            except JwksError as exc:
                errors.append(f"{name}: {exc}")
                continue
            sources[name] = StaticKeySource(name, algorithms, self._events, keys)
        if not sources:
            raise ConfigError(f"{jwks_file} has no key for any provider ({'; '.join(errors)})")
        return sources

    async def start(self) -> None:
        """Load every key set: static ones at once, remote ones by one fetch each (or
        until KEY_WAIT_S). A tenant's keys load when a check first needs them."""
        waits = []
        for name, source in self._sources.items():
            await source.start()
            if not isinstance(source, TenantKeySources):
                waits.append(self._events.loaded(name).wait())
        if waits:
            try:
                async with asyncio.timeout(KEY_WAIT_S):
                    await asyncio.gather(*waits)
            except TimeoutError:
                pass

    def unusable_keys(self) -> str:
        """Why providers have no key set, for an error instead of a 503 verdict."""
        return ", ".join(
            f"{name} ({self._events.results.get(name, f'nothing within {KEY_WAIT_S:g}s')})"
            for name, source in self._sources.items()
            if source.keys is None and not isinstance(source, TenantKeySources)
        )

    async def stop(self) -> None:
        for source in self._sources.values():
            await source.stop()


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
    judged with the configured keys (or ``jwks_file``'s). ConfigError when keys cannot
    be had: that is no verdict on the request."""
    if provider is not None and provider not in config.providers:
        raise ConfigError(f"no provider {provider!r}; the config has {sorted(config.providers)}")
    if claims is not None:
        judge = StandInJudge(config)
        await judge.start()
        request, _ = judge.carrying(request, provider, claims=claims)
        return await judge.evaluate(request)
    fetchers = Fetchers()
    live: LiveJudge | None = None
    try:
        live = LiveJudge(config, jwks_file, fetchers)
        await live.start()
        evaluation = await live.evaluate(request)
        reason = evaluation.decision.dry_run or ("", evaluation.decision.reason)
        if reason[1] == "no_keys":
            raise ConfigError(f"no key set could be loaded for: {live.unusable_keys()}")
        return evaluation
    finally:
        if live is not None:
            await live.stop()
        await fetchers.close()
