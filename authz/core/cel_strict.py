"""Type-strict equality and membership for CEL expressions over untrusted claims.

CEL's ``==``, ``!=`` and ``in`` compare values of different types without complaint:
``jwt.status != "banned"`` is simply true when ``status`` is ``["banned"]``, ``1`` or
``null``, so a claim of an unexpected type opens a negative rule. cel_parse.py rewrites
every ``a == b``, ``a != b`` and ``a in b`` into a call of ``_authz_eq``, ``_authz_ne`` or
``_authz_in``; those functions (:data:`FUNCTIONS`) raise ``TypeError`` on a type mismatch,
which makes the evaluation fail. A comparison with the literal ``null`` stays native.

Kinds are JSON's: null, bool, number (int and float alike; a bool is not a number),
string, bytes, list and map. Other values (timestamps, durations) match only their own
Python type. CEL type values reach Python as strings (``type(x)`` is ``"int"``), so
``type(x) == "int"`` is true here where native CEL says false.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import cel

from authz.core.cel_parse import Translation, rewrite, translate

__all__ = ["FUNCTIONS", "StrictProgram", "compile_strict", "rewrite"]


def _kind(value: object) -> type:
    kind = type(value)
    return float if kind is int else kind  # int and float are both JSON numbers


def _authz_eq(a: Any, b: Any) -> bool:
    kind = _kind(a)
    if kind is not _kind(b):
        raise TypeError("comparison between different types")
    # Containers are compared in full, so a mismatch deep inside is an error, not "false".
    if kind is list:
        same = [_authz_eq(x, y) for x, y in zip(a, b, strict=False)]
        return all(same) and len(a) == len(b)
    if kind is dict:
        left, right = _keyed(a), _keyed(b)
        same = [_authz_eq(value, right[key]) for key, value in left.items() if key in right]
        return all(same) and left.keys() == right.keys()
    return bool(a == b)


def _keyed(mapping: dict[Any, Any]) -> dict[tuple[type, Any], Any]:
    # In Python True == 1, so a bare key lookup would match a bool key with an int key.
    return {(_kind(key), key): value for key, value in mapping.items()}


def _authz_ne(a: Any, b: Any) -> bool:
    return not _authz_eq(a, b)


def _authz_in(value: Any, container: Any) -> bool:
    if type(container) is list:
        # Every item, not up to the first match: an item of another type is an error.
        return any([_authz_eq(value, item) for item in container])
    if type(container) is dict:
        if type(value) is not str:
            raise TypeError("membership test in a map needs a string")
        return value in container
    raise TypeError("membership test needs a list or a map")


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "_authz_eq": _authz_eq,
    "_authz_ne": _authz_ne,
    "_authz_in": _authz_in,
}
FUNCTIONS: Mapping[str, Callable[..., Any]] = MappingProxyType(_FUNCTIONS)

# --- programs -------------------------------------------------------------------------


class StrictProgram:
    """A compiled CEL expression whose ``==``, ``!=`` and ``in`` fail on a type mismatch."""

    __slots__ = ("_bound", "_program", "_variables", "request_uses", "rewritten", "source")

    def __init__(
        self,
        source: str,
        rewritten: str,
        program: cel.Program,
        variables: list[str],
        bound: frozenset[str] = frozenset(),
        request_uses: tuple[str | None, ...] = (),
    ) -> None:
        self.source = source
        self.request_uses = request_uses  # see cel_parse._Rewriter.request_uses
        self.rewritten = rewritten
        self._program = program
        self._variables = variables
        self._bound = bound

    def variables(self) -> list[str]:
        """The variables of the original expression (with names bound by macros)."""
        return list(self._variables)

    def free_variables(self) -> list[str]:
        """The variables the caller must supply: those no comprehension macro binds."""
        return [name for name in self._variables if name not in self._bound]

    def execute(self, activation: dict[str, Any]) -> Any:
        """Evaluate; a type mismatch raises RuntimeError, unless CEL's ``&&``, ``||`` or
        ``?:`` does not need the failing part. The library also logs each failed function
        call (a WARNING on the ``cel`` logger)."""
        # A Context per call costs no more than a dict and shares no state between calls.
        return self._program.execute(cel.Context(activation, _FUNCTIONS))


def compile_strict(
    source: str, *, translate: Callable[[str], Translation] = translate
) -> StrictProgram:
    """Compile ``source`` with strict comparisons.

    Raises ValueError when ``source`` is not valid CEL, or when the rewritten expression
    does not reference exactly the original's variables and functions (a rewriting bug;
    ``translate`` is the rewriter, replaceable to prove that this check holds).
    """
    try:
        original = cel.compile(source)  # the library's own message for invalid CEL
    except RuntimeError as exc:
        raise ValueError(str(exc)) from exc
    translation = translate(source)
    try:
        program = cel.compile(translation.text)
    except (ValueError, RuntimeError) as exc:
        raise ValueError("the rewritten CEL expression does not compile") from exc
    expected = (set(original.functions()) - translation.replaced) | translation.introduced
    variables = original.variables()
    if program.variables() != variables or set(program.functions()) != expected:
        raise ValueError("the rewritten CEL expression differs from the original")
    return StrictProgram(
        source,
        translation.text,
        program,
        variables,
        translation.bound,
        translation.request_uses,
    )
