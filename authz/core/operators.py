"""The operators of claim conditions, judged in JSON types.

An integer and a float are both numbers; a boolean is not one. A claim of another type than
the configured value is no judgement on it ("1" says nothing about 1, nor ["x"] about "x").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from authz.core.claims import MISSING, get_claim
from authz.core.model import Claims


class ClaimsContext(Protocol):
    """What ``equals_claim`` reads besides the subject: every token's claims."""

    @property
    def claims(self) -> Mapping[str, Claims]: ...

    @property
    def primary(self) -> str: ...


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

Test = Callable[[Any, ClaimsContext], Verdict]


def operator_test(op: str, arg: Any, provider: str | None) -> Test:
    """The test of one operator with its configured value. For ``equals_claim`` the value is
    the other claim's path, read from ``provider``'s claims (default: the primary)."""
    if op == "equals_claim":
        return _equals_claim(tuple(arg), provider)
    if op == "equals" and arg is None:
        return lambda value, _: value is None  # equals: null asks for an explicit null
    if op == "matches":
        import re2  # loaded only for configs with regular expressions

        arg = re2.compile(arg)
    elif op in ("gt", "gte", "lt", "lte"):
        arg = float(arg)
    test = OPERATORS[op]
    return lambda value, _: test(value, arg)


def _equals_claim(other: tuple[str, ...], provider: str | None) -> Test:
    def against_claim(value: Any, ctx: ClaimsContext) -> Verdict:
        target = get_claim(ctx.claims.get(provider or ctx.primary, {}), other)
        if not _present(value) or not _present(target):
            return None
        if isinstance(value, str) and isinstance(target, int) and not isinstance(target, bool):
            return value == str(target)  # a path parameter is text; an id claim may not be
        return _equal(value, target)

    return against_claim
