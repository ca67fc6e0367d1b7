"""Warnings about a config that is valid but surely not what was meant: rules that can never
apply because an earlier rule matches every request they would, conditions that can never
hold, multi-tenant providers open to any tenant that no rule narrows, providers no rule
uses, JWKS files serve would start without, keys written twice in one mapping.

Each warning starts with the key path it is about; ``findings`` adds where in the file
that key was written."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from authz.config import AnyTenant, ClaimCondition, Config, Match
from authz.core.errors import JwksError
from authz.core.paths import upper_hex
from authz.core.policy import compile_path, literal_prefix
from authz.keys.jwks import parse_jwks_bytes
from authz.keys.sources import MAX_JWKS_FILE_BYTES
from authz.support.files import read_regular_file


@dataclass(frozen=True, slots=True)
class Finding:
    """A warning: ``where`` is FILE:LINE:COL (or the file) when the config came from one."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


def findings(config: Config) -> tuple[Finding, ...]:
    """Every warning about ``config``, in the order of the file when it came from one."""
    messages = [
        *duplicate_keys(config),
        *shadowed_rules(config),
        *never_holding(config),
        *open_tenants(config),
        *unused_providers(config),
        *missing_files(config),
        *dpop_without_origin(config),
    ]
    source = config.source
    if source is None:
        return tuple(Finding("", message) for message in messages)
    found = [(source.position((), message), message) for message in messages]
    found.sort(key=lambda item: (item[0].line, item[0].column) if item[0] else (1 << 30, 0))
    return tuple(Finding(str(where or source.file), message) for where, message in found)


def duplicate_keys(config: Config) -> list[str]:
    """Keys written twice in one mapping: YAML keeps the last silently."""
    if config.source is None:
        return []
    return [
        f"{'.'.join(str(part) for part in loc)}: written twice in one mapping (first at "
        f"line {first.line}); only this one counts"
        for loc, first in config.source.duplicates
    ]


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


# RE2's flag groups, (?i) (?-i) (?s:...) and the like; not (?: or (?P<name>.
_FLAG_GROUP = re.compile(r"\(\?(?:[imsU]+(?:-[imsU]*)?|-[imsU]+)[:)]")


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
        # Which paths a pattern matches is not analysed; an exact path it matches is
        # covered, judged by the matcher serve uses.
        if b.path is None:
            return False
        if a.regex is not None and _case(a, ignore_case) and _FLAG_GROUP.search(a.regex):
            # Flags inside the pattern can turn case back on: which spellings of the
            # path it matches is then not known from one of them.
            return False
        kind, pattern = ("regex", a.regex) if a.regex is not None else ("template", a.template)
        matcher = compile_path(kind, pattern or "", _case(a, ignore_case))
        return matcher(upper_hex(b.path)) is not None
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
        "caddy",
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


def unused_providers(config: Config) -> list[str]:
    """Providers no rule requires: their tokens are accepted nowhere."""
    used = {name for rule in config.rules if rule.requires for name in rule.requires.providers}
    return [
        f"providers.{name}: no rule requires this provider, so its tokens are accepted "
        "nowhere (name it in a rule's requires, or remove it)"
        for name in config.providers
        if name not in used
    ]


def missing_files(config: Config) -> list[str]:
    """JWKS files serve cannot use yet: it starts with the provider not ready, and reads
    the file again when it changes. (Secrets, CA bundles and TLS files it cannot read are
    errors: without them nothing can be built.)"""
    warnings = []
    for name, provider in config.providers.items():
        file = provider.jwks.file if provider.jwks is not None else None
        if file is None:
            continue
        where = f"providers.{name}.jwks.file"
        consequence = (
            "serve would start without this provider's keys (not ready; 503 for its "
            "tokens) until it is fixed"
        )
        try:
            data = read_regular_file(file.path, MAX_JWKS_FILE_BYTES)
        except FileNotFoundError:
            warnings.append(f"{where}: {file.path} does not exist: {consequence}")
            continue
        except OSError as exc:
            warnings.append(f"{where}: cannot read {file.path} ({exc.strerror}): {consequence}")
            continue
        try:
            parse_jwks_bytes(data, tuple(provider.algorithms), file.max_keys)
        except JwksError as exc:
            warnings.append(f"{where}: {file.path}: {exc}: {consequence}")
    return warnings


NUMERIC = ("gt", "gte", "lt", "lte")


def never_holding(config: Config) -> list[str]:
    """Conditions no token or request can satisfy (or only a surprising one), as written."""
    return [
        problem
        for index, rule in enumerate(config.rules)
        for position, condition in enumerate(rule.claims)
        for problem in _never_holds(
            f"rules.{index} ({config.rule_name(index)}).claims.{position}", condition
        )
    ]


def _never_holds(where: str, condition: ClaimCondition) -> Iterator[str]:
    block = condition.block
    if block in ("all", "any"):
        for position, child in enumerate(getattr(condition, block) or []):
            yield from _never_holds(f"{where}.{block}.{position}", child)
        return
    if block == "not":
        assert condition.not_ is not None
        yield from _never_holds(f"{where}.not", condition.not_)
        return
    if block is not None:
        return
    op = condition.operator
    value = getattr(condition, op)
    at = f"{where}.{op}"
    if op == "one_of" and value == []:
        yield f"{at}: an empty list: no value is one of it, so this never holds"
    text = _text_subject(condition)
    if text is not None:
        yield from _text_problems(at, op, value, text)
        return
    if op == "contains" and isinstance(value, list):
        yield (
            f"{at}: contains takes one value; a list is found only in a claim that is a list "
            "of lists. For any of several values use contains_any, for all of them "
            "contains_all"
        )
    elif op == "equals" and isinstance(value, list):
        yield (
            f"{at}: a list here matches only a claim that is exactly this list, in this "
            "order. For one of several values use one_of; for a list claim holding them, "
            "contains_any or contains_all"
        )
    elif op == "not_equals" and isinstance(value, list):
        yield (
            f"{at}: a list here holds only for a claim that is a list; a claim of any "
            "other type fails it. For none of several values put one_of under not"
        )


def _text_subject(condition: ClaimCondition) -> str | None:
    """The name of a subject that is always text (or missing), None for a claim."""
    if condition.request is not None:
        return f"request.{condition.request}"
    if condition.issuer_param is not None:
        return "issuer_param: tenant"
    return None


def _text_problems(at: str, op: str, value: Any, subject: str) -> Iterator[str]:
    if op in NUMERIC:
        yield f"{at}: {subject} is text, never a number, so {op} never holds"
        return
    if op not in ("equals", "not_equals", "one_of", "contains", "contains_any", "contains_all"):
        return
    values = value if isinstance(value, list) and op not in ("equals", "not_equals") else [value]
    if any(not isinstance(v, str) for v in values):
        yield (
            f"{at}: {subject} is text, and a value that is not a string is never compared "
            "with text, so this never holds (quote it: '1', 'true')"
        )
    elif subject == "request.method" and any(v != v.upper() for v in values):
        yield f"{at}: request.method is upper-case (GET, POST): a lower-case value never equals it"
