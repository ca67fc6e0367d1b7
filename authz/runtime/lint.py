"""Warnings about a config that is valid but surely not what was meant: rules that can never
apply because an earlier rule matches every request they would, and multi-tenant
providers open to any tenant that no rule narrows."""

from __future__ import annotations

import re

from authz.config import AnyTenant, ClaimCondition, Config, Match
from authz.core.policy import literal_prefix


def shadowed_rules(config: Config) -> list[str]:
    """Warnings for rules an earlier rule always matches first, so they can never apply."""
    warnings = []
    for later_index, later in enumerate(config.rules):
        for earlier_index, earlier in enumerate(config.rules[:later_index]):
            if _covers(earlier.match, later.match, config.paths.ignore_case):
                warnings.append(
                    f"rules.{later_index} ({config.rule_name(later_index)}) can never match: "
                    f"rules.{earlier_index} ({config.rule_name(earlier_index)}) matches "
                    "every request it would"
                )
                break
    return warnings


def _covers(a: Match, b: Match, ignore_case: bool) -> bool:
    """True when every request ``b`` matches is certainly matched by ``a`` (conservative)."""
    if a.methods and (not b.methods or not set(b.methods) <= set(a.methods)):
        return False
    if a.hosts and (not b.hosts or not set(b.hosts) <= set(a.hosts)):
        return False
    if a.headers and a.headers != b.headers:
        return False
    if any(b.context.get(k) != v for k, v in a.context.items()):
        return False
    if _case(a, ignore_case) != _case(b, ignore_case):
        return False
    if a.regex is not None or a.template is not None:
        return False  # what a pattern matches is not analysed
    if a.path is not None:
        return b.path == a.path
    literal = _guaranteed_prefix(b)
    if a.prefix is not None:
        return literal.startswith(a.prefix)
    if a.path_separated_prefix is not None:
        base = a.path_separated_prefix
        if b.path is not None or b.path_separated_prefix is not None:
            return literal == base or literal.startswith(base + "/")
        return literal.startswith(base + "/")
    return True


def _case(match: Match, default: bool) -> bool:
    return default if match.ignore_case is None else match.ignore_case


def _guaranteed_prefix(match: Match) -> str:
    """Text every path the match accepts starts with."""
    if match.path is not None:
        return match.path
    if match.prefix is not None:
        return match.prefix
    if match.path_separated_prefix is not None:
        return match.path_separated_prefix
    if match.template is not None:
        return match.template.split("{", 1)[0]
    if match.regex is not None:
        return literal_prefix(match.regex)
    return ""


def open_tenants(config: Config) -> list[str]:
    """Warnings for providers with ``tenants: {any: true}`` that a rule requires without
    pinning the tenant: any organisation able to get a token for the audience (a
    multi-tenant app registration) would be let in there."""
    warnings = []
    for name, provider in config.providers.items():
        if not isinstance(provider.tenants, AnyTenant):
            continue
        for index, rule in enumerate(config.rules):
            if rule.requires is None or name not in rule.requires.providers:
                continue
            first = rule.requires.providers[0]
            if not any(_pins_tenant(c, name, first) for c in rule.claims):
                warnings.append(
                    f"providers.{name}: tenants: {{any: true}} accepts every tenant that can "
                    f"get a token for its audiences, and rules.{index} "
                    f"({config.rule_name(index)}) does not pin the tenant (issuer_param: "
                    "tenant with equals or one_of, or tenant == / in in CEL); list the "
                    "tenant IDs instead"
                )
    return warnings


# CEL comparing the variable tenant itself (not jwt.tenant, not tenant_id).
_CEL_TENANT = re.compile(r"(?<![\w.])tenant\s*(?:==|\bin\b)")


def _pins_tenant(condition: ClaimCondition, provider: str, first: str) -> bool:
    """Whether ``condition`` (one of a rule's claims, all of which must hold) can only
    hold for chosen tenants of ``provider``; ``first``: whose token a condition without
    ``provider`` reads."""
    block = condition.block
    if block == "all":
        return any(_pins_tenant(c, provider, first) for c in condition.all or [])
    if block == "any":
        return all(_pins_tenant(c, provider, first) for c in condition.any or [])
    if block == "expr":
        # CEL's tenant is the first provider's; "||" could let another branch through.
        expr = condition.expr or ""
        return first == provider and "||" not in expr and bool(_CEL_TENANT.search(expr))
    if block == "not":
        return False
    return (
        condition.issuer_param is not None
        and (condition.provider or first) == provider
        and condition.operator in ("equals", "one_of")
    )


def dpop_without_origin(config: Config) -> list[str]:
    """Warnings for DPoP providers served over HTTP by a proxy that does not tell the
    scheme (Envoy's http_service, nginx) with no external_origin: their bound tokens
    cannot be checked there (503 dpop_origin_unknown). Traefik and Caddy send
    X-Forwarded-Proto, ingress-nginx a whole URL."""
    if config.http_authz is None or config.http_authz.original_request in (
        "traefik",
        "ingress-nginx",
    ):
        return []
    return [
        f"providers.{name}.dpop: http_authz ({config.http_authz.original_request}) does not "
        "say the scheme clients used: set dpop.external_origin, or DPoP-bound tokens "
        "get 503 there"
        for name, provider in config.providers.items()
        if provider.introspection is None
        and provider.dpop.mode != "off"
        and provider.dpop.external_origin is None
    ]
