"""Config models for rules: route matches, requirements, conditions, modes and headers."""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from authz.config.base import Model, checked_regex, claim_header_name, header_name
from authz.config.suggest import closest_choice

HTTP_METHODS = frozenset(
    [
        *("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"),
        *("PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "REPORT"),
        *("SEARCH", "PURGE"),
    ]
)
Mode = Literal["enforce", "dry_run"]


class HeaderMatch(Model):
    """A request header that must be ``present`` (true/false), ``equals`` or match ``regex``."""

    name: str
    present: bool | None = None
    equals: str | None = None
    regex: str | None = None

    _name = field_validator("name")(header_name)
    _regex = field_validator("regex")(lambda v: None if v is None else checked_regex(v))

    @model_validator(mode="after")
    def _one(self) -> HeaderMatch:
        if sum(v is not None for v in (self.present, self.equals, self.regex)) != 1:
            raise ValueError("exactly one of present, equals or regex is required")
        return self


PATH_KINDS = ("prefix", "path", "path_separated_prefix", "regex", "template")


class Match(Model):
    """Which requests a rule covers. Path kinds are exclusive; every given part must match."""

    prefix: str | None = None
    path: str | None = None
    path_separated_prefix: str | None = None  # /api matches /api and /api/x, not /apis
    regex: str | None = None  # RE2, anchored: it must match the whole path
    template: str | None = None  # /users/{id}: {name} captures one path segment
    ignore_case: bool | None = None  # default: paths.ignore_case
    methods: list[str] = Field(default_factory=list)
    hosts: list[str] = Field(default_factory=list)  # exact, or *.example.com
    headers: list[HeaderMatch] = Field(default_factory=list)
    context: dict[str, str] = Field(default_factory=dict)  # Envoy's context_extensions

    @model_validator(mode="after")
    def _path_kinds(self) -> Match:
        given = [k for k in PATH_KINDS if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"use at most one of {', '.join(PATH_KINDS)} (got {given})")
        for kind in ("prefix", "path", "path_separated_prefix", "template"):
            value = getattr(self, kind)
            if value is not None and not value.startswith("/"):
                raise ValueError(f"{kind} must start with '/'")
        if self.path_separated_prefix is not None and self.path_separated_prefix.endswith("/"):
            raise ValueError("path_separated_prefix must not end with '/'")
        if self.template is not None:
            _check_template(self.template)
        return self

    _regex = field_validator("regex")(lambda v: None if v is None else checked_regex(v))

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: list[str]) -> list[str]:
        methods = [m.upper() for m in value]
        unknown = [m for m in methods if m not in HTTP_METHODS]
        if unknown:
            # A misspelt method makes a rule never match, so requests fall through to a later,
            # possibly looser rule.
            known = sorted(HTTP_METHODS)
            each = ", ".join(f"{m!r}{closest_choice(m, known)}" for m in unknown)
            raise ValueError(f"unknown HTTP method(s) {each}; known: {', '.join(known)}")
        return methods

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        hosts = [h.strip().lower() for h in value]
        for host in hosts:
            if not host or "*" in host.removeprefix("*.") or ":" in host.removeprefix("["):
                raise ValueError(f"host {host!r}: use a name or *.suffix, without a port")
        return hosts


TEMPLATE_PARAM = re.compile(r"\{([^{}]*)\}")


def _check_template(template: str) -> None:
    names = TEMPLATE_PARAM.findall(template)
    for name in names:
        if not name.isidentifier():
            raise ValueError(f"template parameter {{{name}}} must be an identifier")
    if len(set(names)) != len(names):
        raise ValueError("template parameter names must be unique")
    if "}{" in template:
        raise ValueError("template parameters must be separated by literal text")
    if TEMPLATE_PARAM.sub("", template).count("{") or TEMPLATE_PARAM.sub("", template).count("}"):
        raise ValueError("unbalanced braces in template")


CLAIM_OPERATORS = (
    "equals",
    "not_equals",
    "one_of",
    "contains",
    "contains_any",
    "contains_all",
    "matches",
    "exists",
    "absent",
    "gt",
    "gte",
    "lt",
    "lte",
    "equals_claim",
)
BLOCKS = ("all", "any", "not", "expr")
REQUEST_ATTRIBUTES = ("method", "host", "path")
REQUEST_MAPS = ("header", "query", "param", "context")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    return "number" if isinstance(value, int | float) else type(value).__name__


class ClaimCondition(Model):
    """A leaf (a subject and one operator) or a block (all / any / not / expr).

    Subjects: ``claim`` (a path split on the delimiter), ``claim_path`` (the path as a
    list, for names that contain the delimiter), or ``request`` (method, host, path,
    header.NAME, query.NAME, param.NAME, context.NAME).
    """

    claim: str | None = Field(default=None, min_length=1)
    claim_path: list[str] | None = Field(default=None, min_length=1)
    request: str | None = None
    issuer_param: Literal["tenant"] | None = None  # a multi-tenant provider's tenant
    provider: str | None = None  # with requires.all: whose token's claims (default: the first)

    equals: Any = None
    not_equals: Any = None
    one_of: list[Any] | None = None
    contains: Any = None
    contains_any: list[Any] | None = Field(default=None, min_length=1)
    contains_all: list[Any] | None = Field(default=None, min_length=1)
    matches: str | None = None
    exists: bool | None = None
    absent: bool | None = None
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None
    equals_claim: str | None = None

    all: list[ClaimCondition] | None = Field(default=None, min_length=1)
    any: list[ClaimCondition] | None = Field(default=None, min_length=1)
    not_: ClaimCondition | None = Field(default=None, alias="not")
    expr: str | None = None

    _regex = field_validator("matches")(lambda v: None if v is None else checked_regex(v))

    @field_validator("gt", "gte", "lt", "lte", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError("must be a number")
        return value

    @field_validator("one_of", "contains_any", "contains_all")
    @classmethod
    def _one_type(cls, value: list[Any] | None) -> list[Any] | None:
        # A claim is judged only against values of its own JSON type (core/operators.py): a
        # list mixing types would leave some claims no value to be compared with.
        if value is not None and len({_json_type(item) for item in value}) > 1:
            raise ValueError("all values must be of one JSON type (strings, numbers, ...)")
        return value

    @field_validator("expr")
    @classmethod
    def _cel(cls, value: str | None) -> str | None:
        # Syntax only; variables and strict comparisons are the build step's (checks.py).
        if value is not None:
            import cel  # a large library (~13 MB resident): loaded only for configs using CEL

            try:
                cel.compile(value)
            except (ValueError, RuntimeError) as exc:
                raise ValueError(f"invalid CEL expression: {str(exc).splitlines()[0]}") from exc
        return value

    @field_validator("request")
    @classmethod
    def _request(cls, value: str | None) -> str | None:
        if value is None or value in REQUEST_ATTRIBUTES:
            return value
        kind, dot, name = value.partition(".")
        if kind in REQUEST_MAPS and dot and name:
            return f"{kind}.{name.lower()}" if kind == "header" else value
        raise ValueError(
            f"unknown request attribute {value!r}: use method, host, path, "
            "header.NAME, query.NAME, param.NAME or context.NAME"
        )

    @model_validator(mode="after")
    def _shape(self) -> ClaimCondition:
        fields = self.model_fields_set
        blocks = [b for b in BLOCKS if (b if b != "not" else "not_") in fields]
        subjects = [s for s in ("claim", "claim_path", "request", "issuer_param") if s in fields]
        operators = [op for op in CLAIM_OPERATORS if op in fields]
        if blocks:
            if len(blocks) > 1 or subjects or operators or self.provider is not None:
                raise ValueError(
                    "a block is exactly one of all, any, not, expr, and nothing else "
                    "(put provider on the conditions inside it)"
                )
            return self
        if len(subjects) != 1:
            raise ValueError(
                "a condition needs exactly one of claim, claim_path, request or issuer_param"
            )
        if len(operators) != 1:
            raise ValueError(
                f"exactly one operator is required, one of: {', '.join(CLAIM_OPERATORS)}"
            )
        return self

    @property
    def operator(self) -> str:
        return next(op for op in CLAIM_OPERATORS if op in self.model_fields_set)

    @property
    def block(self) -> str | None:
        for block in BLOCKS:
            if (block if block != "not" else "not_") in self.model_fields_set:
                return block
        return None


class Requires(Model):
    """Exactly one of: ``provider``; ``any`` (a token from one of these); ``all`` (a token
    from each); ``allow_missing`` (no token passes, a token sent must be valid)."""

    provider: str | None = None
    any: list[str] | None = Field(default=None, min_length=1)
    all: list[str] | None = Field(default=None, min_length=1)
    allow_missing: str | list[str] | None = None

    @field_validator("allow_missing")
    @classmethod
    def _not_empty(cls, value: str | list[str] | None) -> str | list[str] | None:
        if value is not None and len(value) == 0:
            raise ValueError("name at least one provider")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Requires:
        kinds = ("provider", "any", "all", "allow_missing")
        if sum(getattr(self, k) is not None for k in kinds) != 1:
            raise ValueError("exactly one of provider, any, all or allow_missing is required")
        return self

    @property
    def providers(self) -> tuple[str, ...]:
        if self.provider is not None:
            return (self.provider,)
        chosen = self.any or self.all or self.allow_missing or ()
        return (chosen,) if isinstance(chosen, str) else tuple(chosen)

    @property
    def optional(self) -> bool:
        return self.allow_missing is not None

    @property
    def every(self) -> bool:
        return self.all is not None


class ClaimToHeader(Model):
    """A header for the upstream from a claim, or from the issuer's ``tenant``."""

    header: str
    claim: str | None = Field(default=None, min_length=1)
    issuer_param: Literal["tenant"] | None = None

    _name = field_validator("header")(claim_header_name)

    @model_validator(mode="after")
    def _one_source(self) -> ClaimToHeader:
        if (self.claim is None) == (self.issuer_param is None):
            raise ValueError("exactly one of claim or issuer_param is required")
        return self


class Rule(Model):
    name: str | None = None
    match: Match = Field(default_factory=Match)
    public: bool = False
    requires: Requires | None = None
    claims: list[ClaimCondition] = Field(default_factory=list)
    mode: Mode | None = None  # default: the top-level mode
    claim_to_headers: list[ClaimToHeader] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)  # static headers for the upstream

    @model_validator(mode="after")
    def _public_or_requires(self) -> Rule:
        if self.public and self.requires is not None:
            raise ValueError("a rule is either public: true or has requires, not both")
        if not self.public and self.requires is None:
            raise ValueError(
                "a rule needs requires (provider, any, all or allow_missing) or public: true"
            )
        if self.public and (self.claims or self.claim_to_headers):
            raise ValueError("a public rule cannot have claims or claim_to_headers")
        if self.requires is not None and self.requires.optional and self.claims:
            # A request without a token would pass without its claims being checked.
            raise ValueError("an allow_missing rule cannot have claims")
        return self

    @field_validator("headers")
    @classmethod
    def _static_headers(cls, value: dict[str, str]) -> dict[str, str]:
        checked = {}
        for name, text in value.items():
            if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
                raise ValueError(f"header {name!r}: control characters are not allowed")
            checked[header_name(name)] = text
        return checked
