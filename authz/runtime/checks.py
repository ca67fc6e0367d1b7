"""The checks of a config that need the other layers' knowledge, run by the build step
before anything is built, so check-config and serve refuse exactly the same files.

The schema (authz/config) checks shapes and values on its own; here: algorithms against
the keys layer's table, URLs against its fetch policy, rule paths against what the core
accepts as a request path, and CEL expressions compiled as the core runs them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from typing import Concatenate, ParamSpec, TypeVar

from authz.config import ClaimCondition, Config, ConfigError, Provider, Rule
from authz.config.providers import TENANT_PLACEHOLDER, check_issuer_template
from authz.config.rules import PATH_KINDS, TEMPLATE_PARAM
from authz.core.paths import check_rule_path
from authz.keys.algorithms import check_algorithms
from authz.keys.fetch import check_fetch_uri

P = ParamSpec("P")
R = TypeVar("R")
CEL_VARIABLES = frozenset({"jwt", "claims", "request", "tenant"})
_LOWER_HEX_ESCAPE = re.compile(r"%(?:[0-9A-Fa-f][a-f]|[a-f][0-9A-Fa-f])")


class LocatedError(ConfigError):
    """A ConfigError whose message says where in the file each key it names was written."""


def errors_located(
    step: Callable[Concatenate[Config, P], R],
) -> Callable[Concatenate[Config, P], R]:
    """``step(config, ...)``, whose ConfigErrors name FILE:LINE:COL of the keys they are
    about when the config came from a file."""

    @functools.wraps(step)
    def located(config: Config, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return step(config, *args, **kwargs)
        except LocatedError:
            raise  # a step within a step
        except ConfigError as exc:
            if config.source is None:
                raise
            raise LocatedError(config.source.locate_message(str(exc))) from exc

    return located


def check(config: Config) -> None:
    """ConfigError naming every key that is wrong; nothing when the config can be built."""
    problems = [*_provider_problems(config), *_rule_problems(config), *_tracing_problems(config)]
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def _tracing_problems(config: Config) -> Iterator[str]:
    """The OTLP exporter must load: xds-protos ships an old copy of the opentelemetry.proto
    modules, and when pip installs it after opentelemetry-proto the exporter's imports
    fail. Found here, check-config and serve say how to repair it before anything runs."""
    if config.tracing is None:
        return
    try:
        import opentelemetry.exporter.otlp.proto.grpc.trace_exporter  # noqa: F401
    except ImportError as exc:
        yield (
            f"tracing: the OTLP exporter does not load ({exc}); when xds-protos was installed "
            "after opentelemetry-proto its older opentelemetry.proto modules hide the "
            "exporter's: pip install --force-reinstall --no-deps opentelemetry-proto"
        )


def _provider_problems(config: Config) -> Iterator[str]:
    for name, provider in config.providers.items():
        where = f"providers.{name}"
        try:
            check_algorithms(provider.algorithms, shared_secret=provider.shared_secret is not None)
        except ValueError as exc:
            yield f"{where}.algorithms: {exc}"
        yield from _url_problems(where, provider)
        if provider.dpop.mode != "off":
            try:
                check_algorithms(provider.dpop.algorithms, shared_secret=False)
            except ValueError as exc:
                yield f"{where}.dpop.algorithms: {exc}"


def _url_problems(where: str, provider: Provider) -> Iterator[str]:
    yield from _introspection_problems(where, provider)
    jwks = provider.jwks
    if jwks is None:
        return
    if jwks.discovery:
        try:
            check_fetch_uri(provider.issuer, allow_insecure=False)
        except ValueError as exc:
            yield f"{where}.jwks.discovery: true needs an https issuer: {exc}"
    remote = jwks.remote
    if remote is not None:
        for key in ("uri", "discovery"):
            value = getattr(remote, key)
            if value is None:
                continue
            if (
                key == "discovery"
                and provider.tenants is not None
                and (TENANT_PLACEHOLDER not in value)
            ):
                # Discovery checks the document's issuer: one document cannot name every
                # tenant's issuer. A uri without {tenant} is one key set for all tenants.
                yield (
                    f"{where}.jwks.remote.discovery: a multi-tenant provider discovers per "
                    "tenant: put {tenant} in it (or use jwks.remote.uri for shared keys)"
                )
                continue
            if TENANT_PLACEHOLDER in value:
                if provider.tenants is None:
                    yield (
                        f"{where}.jwks.remote.{key}: {{tenant}} needs tenants and an "
                        "issuer with {tenant}"
                    )
                    continue
                try:
                    check_issuer_template(value)
                except ValueError as exc:
                    yield f"{where}.jwks.remote.{key}: {str(exc).removeprefix('issuer: ')}"
                    continue
            try:
                check_fetch_uri(value, allow_insecure=remote.allow_insecure)
            except ValueError as exc:
                yield f"{where}.jwks.remote.{key}: {exc}"


def _introspection_problems(where: str, provider: Provider) -> Iterator[str]:
    introspection = provider.introspection
    if introspection is None:
        return
    where = f"{where}.introspection"
    insecure = introspection.allow_insecure
    if introspection.endpoint is not None:
        try:
            check_fetch_uri(introspection.endpoint, allow_insecure=insecure)
        except ValueError as exc:
            yield f"{where}.endpoint: {exc}"
    if introspection.discovery:
        try:
            check_fetch_uri(provider.issuer, allow_insecure=insecure)
        except ValueError as exc:
            yield f"{where}.discovery: true needs an https issuer: {exc}"


def _rule_problems(config: Config) -> Iterator[str]:
    literal = config.paths.semicolons == "literal"
    for index, rule in enumerate(config.rules):
        where = f"rules.{index} ({config.rule_name(index)})"
        providers = rule.requires.providers if rule.requires else ()
        tenanted = {n for n in providers if config.providers[n].tenants is not None}
        if not tenanted and (
            any(m.issuer_param for m in rule.claim_to_headers)
            or any(_uses_issuer_param(c) for c in rule.claims)
        ):
            yield f"{where}: issuer_param needs a provider with tenants among the rule's"
        introspecting = [n for n in providers if config.providers[n].introspection is not None]
        if len(introspecting) > 1:
            # An opaque token names no issuer: it would be sent to each endpoint in turn,
            # handing one IdP's bearer token to another.
            yield (
                f"{where}.requires: at most one introspection provider per rule "
                f"({', '.join(introspecting)}): an opaque token does not say whose it is"
            )
        yield from _path_problems(where, rule, literal)
        for position, condition in enumerate(rule.claims):
            yield from _cel_problems(
                f"{where}.claims.{position}", condition, http=config.http_authz is not None
            )


def _path_problems(where: str, rule: Rule, semicolons_literal: bool) -> Iterator[str]:
    match = rule.match
    if match.regex is not None and _LOWER_HEX_ESCAPE.search(match.regex):
        # Request paths reach rules with upper-case hex digits (authz/core/paths.py).
        yield (
            f"{where}.match.regex: write percent-escapes with upper-case hex digits (%3A, "
            "not %3a): paths are matched that way"
        )
    for kind in PATH_KINDS:
        if kind == "regex":
            continue
        value = getattr(match, kind)
        if value is None:
            continue
        text = TEMPLATE_PARAM.sub("x", value) if kind == "template" else value
        try:
            check_rule_path(text, semicolons_literal=semicolons_literal)
        except ValueError as exc:
            yield f"{where}.match.{kind}: {exc}"


def _cel_problems(where: str, condition: ClaimCondition, *, http: bool) -> Iterator[str]:
    if condition.expr is not None:
        try:
            from authz.core.cel_strict import compile_strict  # CEL loads only when used

            program = compile_strict(condition.expr)
        except ValueError as exc:
            yield f"{where}.expr: invalid CEL expression: {str(exc).splitlines()[0]}"
            return
        unknown = sorted(set(program.free_variables()) - CEL_VARIABLES)
        if unknown:
            # A misspelt variable would make the expression fail on every request.
            yield f"{where}.expr: unknown CEL variable(s) {unknown}: use jwt, claims, request"
        if http and any(use in (None, "context") for use in program.request_uses):
            # The HTTP endpoint never receives context_extensions; reading request whole
            # (request["context"]) could reach them too, so only request.FIELD is allowed.
            yield (
                f"{where}.expr: reads Envoy's context_extensions (or request as a whole), "
                "which http_authz never receives; use request.method, .host, .path, "
                ".headers or .params"
            )
    children = [*(condition.all or ()), *(condition.any or ())]
    if condition.not_ is not None:
        children.append(condition.not_)
    block = condition.block or ""
    for position, child in enumerate(children):
        suffix = f".{block}.{position}" if block != "not" else ".not"
        yield from _cel_problems(where + suffix, child, http=http)


def _uses_issuer_param(condition: ClaimCondition) -> bool:
    children = [*(condition.all or []), *(condition.any or [])]
    if condition.not_ is not None:
        children.append(condition.not_)
    return condition.issuer_param is not None or any(_uses_issuer_param(c) for c in children)
