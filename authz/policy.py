"""Compiled rules: which rule a request matches, whether its claims hold, which headers to inject.

Rules are compiled once from the config; nothing here compiles a regex or parses
config per request. First matching rule wins.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from authz.config import ClaimCondition, ClaimToHeader, Config, Rule
from authz.errors import ClaimMismatch
from authz.model import Claims, RequestAttributes

MISSING: Any = object()
SCOPE_CLAIMS = frozenset({"scope", "scp"})
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def get_claim(claims: Claims, path: Sequence[str]) -> Any:
    """Walk ``path`` into nested objects; MISSING when any step is absent.

    A space-delimited ``scope``/``scp`` string is returned as a list of scopes.
    """
    value: Any = claims
    for step in path:
        if not isinstance(value, dict) or step not in value:
            return MISSING
        value = value[step]
    if path and path[-1] in SCOPE_CLAIMS and isinstance(value, str):
        return value.split()
    return value


def _same(a: Any, b: Any) -> bool:
    # In Python True == 1; in a policy a boolean claim must only equal a boolean.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _has(values: list[Any], wanted: Any) -> bool:
    return any(_same(v, wanted) for v in values)


def _test_for(condition: ClaimCondition) -> Callable[[Any], bool]:
    op = condition.operator
    arg = getattr(condition, op)
    if op == "exists":
        return lambda v: (v is not MISSING and v is not None) == arg
    if op == "equals":
        return lambda v: v is not MISSING and _same(v, arg)
    if op == "one_of":
        return lambda v: v is not MISSING and not isinstance(v, list | dict) and _has(arg, v)
    if op == "contains":
        return lambda v: v is not MISSING and _has(_as_list(v), arg)
    if op == "contains_any":
        return lambda v: v is not MISSING and any(_has(_as_list(v), a) for a in arg)
    if op == "contains_all":
        return lambda v: v is not MISSING and all(_has(_as_list(v), a) for a in arg)
    if op == "matches":
        pattern = re.compile(arg)
        return lambda v: (
            v is not MISSING
            and any(
                isinstance(item, str) and pattern.fullmatch(item) is not None
                for item in _as_list(v)
            )
        )
    raise AssertionError(f"unhandled operator {op}")


@dataclass(frozen=True, slots=True)
class Condition:
    claim: str  # the configured path, for logs; never the claim's value
    path: tuple[str, ...]
    operator: str
    test: Callable[[Any], bool]

    @property
    def on_scope(self) -> bool:
        return self.path[-1] in SCOPE_CLAIMS

    @classmethod
    def compile(cls, condition: ClaimCondition, delimiter: str) -> Condition:
        return cls(
            claim=condition.claim,
            path=tuple(condition.claim.split(delimiter)),
            operator=condition.operator,
            test=_test_for(condition),
        )

    def holds(self, claims: Claims) -> bool:
        return self.test(get_claim(claims, self.path))


@dataclass(frozen=True, slots=True)
class CompiledRule:
    name: str
    prefix: str | None
    exact_path: str | None
    methods: frozenset[str]
    public: bool
    providers: tuple[str, ...]  # a token from any of these; empty for public rules
    optional: bool  # allow_missing: no token passes, a token sent must be valid
    conditions: tuple[Condition, ...]

    @classmethod
    def compile(cls, name: str, rule: Rule, delimiter: str) -> CompiledRule:
        return cls(
            name=name,
            prefix=rule.match.prefix,
            exact_path=rule.match.path,
            methods=frozenset(rule.match.methods),
            public=rule.public,
            providers=rule.requires.providers if rule.requires else (),
            optional=rule.requires.optional if rule.requires else False,
            conditions=tuple(Condition.compile(c, delimiter) for c in rule.claims),
        )

    def matches(self, request: RequestAttributes) -> bool:
        if self.methods and request.method.upper() not in self.methods:
            return False
        path = request.path_only
        if self.exact_path is not None:
            return path == self.exact_path
        return self.prefix is None or path.startswith(self.prefix)

    def check_claims(self, claims: Claims) -> None:
        for index, condition in enumerate(self.conditions):
            if not condition.holds(claims):
                raise ClaimMismatch(
                    f"rule {self.name}: condition {index} ({condition.operator} on "
                    f"{condition.claim}) failed",
                    scope=condition.on_scope,
                )


@dataclass(frozen=True, slots=True)
class Policy:
    rules: tuple[CompiledRule, ...]

    @classmethod
    def compile(cls, config: Config) -> Policy:
        delimiter = config.nested_claim_delimiter
        return cls(
            tuple(
                CompiledRule.compile(config.rule_name(i), rule, delimiter)
                for i, rule in enumerate(config.rules)
            )
        )

    def match(self, request: RequestAttributes) -> CompiledRule | None:
        for rule in self.rules:
            if rule.matches(request):
                return rule
        return None


def render_header_value(value: Any) -> str | None:
    """A claim as a header value: lists comma-joined, objects as JSON, None when absent."""
    if value is MISSING or value is None:
        return None
    if isinstance(value, list):
        text = ",".join(_scalar(item) for item in value)
    else:
        text = _scalar(value)
    return _CONTROL_CHARS.sub("", text)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True, slots=True)
class HeaderFromClaim:
    header: str
    path: tuple[str, ...]

    @classmethod
    def compile(cls, mapping: ClaimToHeader, delimiter: str) -> HeaderFromClaim:
        return cls(mapping.header, tuple(mapping.claim.split(delimiter)))

    def render(self, claims: Claims) -> str | None:
        return render_header_value(get_claim(claims, self.path))
