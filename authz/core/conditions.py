"""Claim and request conditions: a tree built once (by the build step) and evaluated per check.

A failed evaluation returns a Failure naming where in the config the condition sits
and what it tested (operator and claim path), never the value it saw.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import re2

from authz.core.cel_strict import StrictProgram, compile_strict
from authz.core.model import Claims, RequestAttributes

MISSING: Any = object()
SCOPE_CLAIMS = frozenset({"scope", "scp"})


def get_claim(claims: Claims, path: Sequence[str]) -> Any:
    """Walk ``path`` into nested objects; MISSING when any step is absent.

    A space-delimited ``scope``/``scp`` string is returned as a list of scopes, split on
    the space (0x20) alone, as RFC 6749 3.3 delimits them: never on tabs, NBSP or other
    characters ``str.split()`` would also take.
    """
    value: Any = claims
    for step in path:
        if not isinstance(value, dict) or step not in value:
            return MISSING
        value = value[step]
    if path and path[-1] in SCOPE_CLAIMS and isinstance(value, str):
        return [scope for scope in value.split(" ") if scope]
    return value


@dataclass(frozen=True, slots=True)
class Failure:
    where: str  # position in the config, e.g. "claims[1].any"
    what: str  # operator and subject, e.g. "contains on realm_access.roles"
    scope: bool  # the condition was about scope/scp: RFC 6750 insufficient_scope
    indeterminate: bool = False  # missing, null or ill-typed input, not a plain "no"

    def __str__(self) -> str:
        return f"{self.where} ({self.what})"


@dataclass(slots=True)
class EvalContext:
    """What conditions can see for one check."""

    claims: Mapping[str, Claims]  # verified claims by provider
    primary: str  # the provider whose claims a condition sees by default
    request: RequestAttributes
    path: str  # as check_path accepted it: the request path, without the query
    params: Mapping[str, str] = field(default_factory=dict)  # from a path template

    def cel_activation(self, variables: frozenset[str], *, headers: bool) -> dict[str, Any]:
        """Only the variables an expression uses: converting them to CEL is most of its cost."""
        activation: dict[str, Any] = {}
        if "jwt" in variables:
            activation["jwt"] = self.claims.get(self.primary, {})
        if "claims" in variables:
            activation["claims"] = self.claims
        if "request" in variables:
            activation["request"] = {
                "method": self.request.method,
                "host": self.request.hostname,
                "path": self.path,
                "headers": self.request.headers if headers else {},
                "params": self.params,
                "context": self.request.context,
            }
        return activation


class Node(Protocol):
    def check(self, ctx: EvalContext) -> Failure | None: ...


# An operator answers True, False, or None: "indeterminate" (the subject is missing, null,
# or of another JSON type than the value it is compared with, or holds an element of another
# type). Indeterminate fails the condition, and a `not:` around it fails too: a policy
# never passes because a claim is absent or of an unexpected type.
Verdict = bool | None


_KINDS: dict[type, str] = {
    type(None): "null",
    bool: "bool",
    int: "number",
    float: "number",
    str: "string",
    list: "list",
    dict: "object",
}
_SCALARS = frozenset({"null", "bool", "number", "string"})


def _kind(value: Any) -> str:
    """The JSON type of a value: an integer and a float are both numbers, a boolean is not."""
    kind = _KINDS.get(type(value))
    if kind is not None:
        return kind
    for python_type in (bool, int, float, str, list, dict):  # subclasses, never from JSON
        if isinstance(value, python_type):
            return _KINDS[python_type]
    return type(value).__name__


def _equal(a: Any, b: Any) -> Verdict:
    """JSON equality, or None when ``a`` and ``b`` (or two elements compared inside them)
    are of different types: "1" is no judgement on 1, nor ["x"] on "x"."""
    kind = _kind(a)
    if kind != _kind(b):
        return None
    if kind in _SCALARS:
        return bool(a == b)
    if kind == "list":
        verdicts = [_equal(x, y) for x, y in zip(a, b, strict=False)]
        if None in verdicts:
            return None
        return len(a) == len(b) and all(verdicts)
    if kind == "object":
        verdicts = [_equal(a[k], b[k]) for k in a.keys() & b.keys()]
        if None in verdicts:
            return None
        return a.keys() == b.keys() and all(verdicts)
    return bool(a == b)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _holds(items: list[Any], wanted: Any) -> Verdict:
    """Whether ``items`` hold ``wanted``; None when any item is of another type than it."""
    kind = _kind(wanted)
    for item in items:
        if _kind(item) != kind:
            return None
    if kind in _SCALARS:
        return wanted in items  # same JSON type throughout: Python's == is JSON's here
    return any(_equal(item, wanted) for item in items)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)  # an integer too large for a float raises OverflowError
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _present(v: Any) -> bool:
    return v is not MISSING and v is not None


def _not_equals(v: Any, arg: Any) -> Verdict:
    verdict = _equal(v, arg) if _present(v) else None
    return None if verdict is None else not verdict


def _one_of(v: Any, arg: Any) -> Verdict:
    # The config holds one_of values of one type (rules_config), so v must be of that type.
    if not _present(v):
        return None
    return _holds(arg, v)


def _contains_each(v: Any, wanted: list[Any], need_all: bool) -> Verdict:
    verdicts = [_holds(_as_list(v), w) for w in wanted]
    if None in verdicts:
        return None
    return all(verdicts) if need_all else any(verdicts)


def _matches(v: Any, pattern: Any) -> Verdict:
    items = _as_list(v) if _present(v) else []
    if not items or any(not isinstance(item, str) for item in items):
        return None
    return any(pattern.fullmatch(item) is not None for item in items)


def _numeric(op: Callable[[float, float], bool]) -> Callable[[Any, float], Verdict]:
    def test(v: Any, bound: float) -> Verdict:
        number = _number(v)
        return None if number is None else op(number, bound)

    return test


OPERATORS: dict[str, Callable[[Any, Any], Verdict]] = {
    "exists": lambda v, arg: _present(v) == arg,
    "absent": lambda v, arg: (not _present(v)) == arg,
    "equals": lambda v, arg: _equal(v, arg) if _present(v) else None,
    "not_equals": _not_equals,
    "one_of": _one_of,
    "contains": lambda v, arg: _holds(_as_list(v), arg) if _present(v) else None,
    "contains_any": lambda v, arg: _contains_each(v, arg, False) if _present(v) else None,
    "contains_all": lambda v, arg: _contains_each(v, arg, True) if _present(v) else None,
    "matches": _matches,
    "gt": _numeric(lambda a, b: a > b),
    "gte": _numeric(lambda a, b: a >= b),
    "lt": _numeric(lambda a, b: a < b),
    "lte": _numeric(lambda a, b: a <= b),
}

Test = Callable[[Any, "EvalContext"], Verdict]


def operator_test(op: str, arg: Any, provider: str | None) -> Test:
    """The test of one operator with its configured value. For ``equals_claim`` the value is
    the other claim's path, read from ``provider``'s claims (default: the primary)."""
    if op == "equals_claim":
        return _equals_claim(tuple(arg), provider)
    if op == "equals" and arg is None:
        return lambda value, _: value is None  # equals: null asks for an explicit null
    if op == "matches":
        arg = re2.compile(arg)
    elif op in ("gt", "gte", "lt", "lte"):
        arg = float(arg)
    test = OPERATORS[op]
    return lambda value, _: test(value, arg)


def _equals_claim(other: tuple[str, ...], provider: str | None) -> Test:
    def against_claim(value: Any, ctx: EvalContext) -> Verdict:
        target = get_claim(ctx.claims.get(provider or ctx.primary, {}), other)
        if not _present(value) or not _present(target):
            return None
        if isinstance(value, str) and isinstance(target, int) and not isinstance(target, bool):
            return value == str(target)  # a path parameter is text; an id claim may not be
        return _equal(value, target)

    return against_claim


Getter = Callable[[EvalContext], Any]


def claim_subject(path: tuple[str, ...], provider: str | None) -> Getter:
    """Read the claim at ``path`` of ``provider``'s token (default: the primary one)."""

    def claim(ctx: EvalContext) -> Any:
        return get_claim(ctx.claims.get(provider or ctx.primary, {}), path)

    return claim


def is_scope(path: tuple[str, ...]) -> bool:
    """A condition on scope/scp: its failure is RFC 6750 insufficient_scope."""
    return bool(path) and path[-1] in SCOPE_CLAIMS


def request_subject(attribute: str) -> Getter:
    """method, host, path, header.NAME, query.NAME, param.NAME or context.NAME."""
    if attribute == "method":
        return lambda ctx: ctx.request.method.upper()
    if attribute == "host":
        return lambda ctx: ctx.request.hostname
    if attribute == "path":
        return lambda ctx: ctx.path
    kind, _, name = attribute.partition(".")
    if kind == "header":
        return lambda ctx: ctx.request.headers.get(name, MISSING)
    if kind == "query":
        return lambda ctx: ctx.request.query_params.get(name, MISSING)
    if kind == "param":
        return lambda ctx: ctx.params.get(name, MISSING)
    return lambda ctx: ctx.request.context.get(name, MISSING)


@dataclass(frozen=True, slots=True)
class Leaf:
    where: str
    what: str
    scope: bool
    read: Getter
    test: Test

    def check(self, ctx: EvalContext) -> Failure | None:
        verdict = self.test(self.read(ctx), ctx)
        if verdict is True:
            return None
        return Failure(self.where, self.what, self.scope, indeterminate=verdict is None)


@dataclass(frozen=True, slots=True)
class AllOf:
    children: tuple[Node, ...]

    def check(self, ctx: EvalContext) -> Failure | None:
        first: Failure | None = None
        for child in self.children:
            failure = child.check(ctx)
            if failure is not None and not failure.indeterminate:
                return failure  # a plain "no" decides, even after an indeterminate child
            first = first or failure
        return first


@dataclass(frozen=True, slots=True)
class AnyOf:
    where: str
    children: tuple[Node, ...]

    def check(self, ctx: EvalContext) -> Failure | None:
        failures = []
        for child in self.children:
            failure = child.check(ctx)
            if failure is None:
                return None
            failures.append(failure)
        return Failure(
            self.where,
            "none of the alternatives held",
            all(f.scope for f in failures),
            indeterminate=any(f.indeterminate for f in failures),
        )


@dataclass(frozen=True, slots=True)
class Not:
    where: str
    child: Node

    def check(self, ctx: EvalContext) -> Failure | None:
        failure = self.child.check(ctx)
        if failure is None:
            return Failure(self.where, "the negated condition held", False)
        if failure.indeterminate:
            # not(missing claim) is not a pass: the negation cannot be judged either.
            return Failure(self.where, f"cannot negate: {failure.what}", False, indeterminate=True)
        return None


@dataclass(frozen=True, slots=True)
class Expr:
    where: str
    program: StrictProgram  # compiled once; == != in fail on a type mismatch
    variables: frozenset[str]
    uses_headers: bool

    def check(self, ctx: EvalContext) -> Failure | None:
        try:
            activation = ctx.cel_activation(self.variables, headers=self.uses_headers)
            result = self.program.execute(activation)
        # A CEL runtime error (a missing key; a comparison between different types, which
        # cel_strict makes an error) fails the condition, under `not` too.
        except Exception:
            return Failure(self.where, "CEL expression raised an error", False, indeterminate=True)
        if result is True:
            return None
        if result is False:
            return Failure(self.where, "CEL expression was false", False)
        return Failure(self.where, "CEL expression was not a boolean", False, indeterminate=True)


def expression(where: str, source: str) -> Expr:
    """A CEL condition, compiled once with strict comparisons; ValueError if invalid."""
    program = compile_strict(source)
    # Converting request headers to CEL costs more than the rest: only when mentioned.
    return Expr(where, program, frozenset(program.variables()), "headers" in source)
