"""Type-strict equality and membership for CEL expressions over untrusted claims.

CEL's ``==``, ``!=`` and ``in`` compare values of different types without complaint:
``jwt.status != "banned"`` is simply true when ``status`` is ``["banned"]``, ``1`` or
``null``, so a claim of an unexpected type opens a negative rule. The ``cel`` library has
no AST and no operator overloading, so :func:`rewrite` parses the expression itself (the
cel-spec grammar) and re-emits it with every ``a == b``, ``a != b`` and ``a in b`` turned
into a call of ``_authz_eq``, ``_authz_ne`` or ``_authz_in``. Those functions (in
:data:`FUNCTIONS`) raise ``TypeError`` on a type mismatch, which makes the evaluation fail.

A comparison with the literal ``null`` keeps the native operator: ``jwt.x != null`` is a
presence test, and its answer for any non-null value is the one intended.

Kinds are JSON's: null, bool, number (int and float alike; a bool is not a number),
string, bytes, list and map. Other values (timestamps, durations) match only their own
Python type. CEL type values reach Python as strings (``type(x)`` is ``"int"``), so
``type(x) == "int"`` is true here where native CEL says false.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import cel

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

# --- tokenizer ------------------------------------------------------------------------

_ESC = r"""\\(?:[abfnrtv"'\\?`]|[xX][0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-3][0-7]{2})"""
_RAW = r"""[rR](?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"[^"\n\r]*"|'[^'\n\r]*')"""
_COOKED = (
    rf'"""(?:{_ESC}|[^\\])*?"""|' + rf"'''(?:{_ESC}|[^\\])*?'''|"
    rf'"(?:{_ESC}|[^\\"\n\r])*"|' + rf"'(?:{_ESC}|[^\\'\n\r])*'"
)
_TOKEN = re.compile(
    rf"""(?P<skip>[ \t\r\n\f]+|//[^\n]*)
    |(?P<STRING>[bB]?(?:{_RAW}|{_COOKED}))
    |(?P<FLOAT>\d*\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+)
    |(?P<UINT>(?:0x[0-9a-fA-F]+|\d+)[uU])
    |(?P<INT>0x[0-9a-fA-F]+|\d+)
    |(?P<IDENT>[_a-zA-Z][_a-zA-Z0-9]*)
    |(?P<ESCIDENT>`[a-zA-Z0-9_./ -]+`)
    |(?P<OP>==|!=|<=|>=|&&|\|\||[-+*/%<>!?:.,()\[\]{{}}])""",
    re.VERBOSE | re.ASCII,
)
_KEYWORDS = {"true": "LITERAL", "false": "LITERAL", "null": "LITERAL", "in": "OP"}
# Reserved for host languages: not a variable nor a global function, but a field name.
_RESERVED = {"as", "break", "const", "continue", "else", "for", "function", "if", "import"}
_RESERVED |= {"let", "loop", "package", "namespace", "return", "var", "void", "while"}


class _Token(NamedTuple):
    kind: str  # STRING FLOAT UINT INT IDENT ESCIDENT OP LITERAL EOF
    text: str
    pos: int


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None:
            raise ValueError(f"CEL syntax error at offset {pos}: unexpected character")
        kind = match.lastgroup or ""
        if kind != "skip":
            text = match.group()
            tokens.append(_Token(_KEYWORDS.get(text, kind) if kind == "IDENT" else kind, text, pos))
        pos = match.end()
    tokens.append(_Token("EOF", "", len(source)))
    return tokens


# --- parser and emitter ---------------------------------------------------------------

# Precedence climbing over the binary operators; every one is left-associative.
_BINARY = {"||": 1, "&&": 2, "+": 4, "-": 4, "*": 5, "/": 5, "%": 5}
_BINARY.update(dict.fromkeys(["<", "<=", ">", ">=", "==", "!=", "in"], 3))
_MACROS = frozenset({"all", "exists", "exists_one", "existsOne", "map", "filter"})
_STRICT = {"==": ("_authz_eq", "_==_"), "!=": ("_authz_ne", "_!=_"), "in": ("_authz_in", "@in")}


class _Rewriter:
    """Parses and re-emits at once: each method returns the text of what it parsed.

    Parentheses from the source are kept, and a rewrite only ever turns an operator into a
    call, which binds tighter than any operator: the output needs no new parentheses.
    """

    def __init__(self, source: str) -> None:
        self.tokens = _tokenize(source)
        self.at = 0
        self.introduced: set[str] = set()  # _authz_* functions emitted
        self.native: set[str] = set()  # operator names the rewritten program still uses
        self.bound: set[str] = set()  # names that comprehension macros bind (the x of all(x, p))
        # Each use of the variable ``request``: the field read (request.path), or None when it
        # is used whole (request["path"], passed to a function).
        self.request_uses: list[str | None] = []

    @property
    def tok(self) -> _Token:
        return self.tokens[self.at]

    def peek(self, ahead: int = 1) -> _Token:
        return self.tokens[min(self.at + ahead, len(self.tokens) - 1)]

    def error(self) -> ValueError:
        found = self.tok.text or "end of input"
        return ValueError(f"CEL syntax error at offset {self.tok.pos}: unexpected {found!r}")

    def accept(self, text: str) -> bool:
        if self.tok.text == text:  # punctuation never equals another kind of token's text
            self.at += 1
            return True
        return False

    def expect(self, text: str) -> None:
        if not self.accept(text):
            raise self.error()

    def name(self, *kinds: str) -> str:
        if self.tok.kind not in kinds:
            raise self.error()
        self.at += 1
        return self.tokens[self.at - 1].text

    def run(self) -> str:
        text = self.expr()
        if self.tok.kind != "EOF":
            raise self.error()
        return text

    def expr(self) -> str:
        condition = self.binary(1)
        if not self.accept("?"):
            return condition
        then = self.binary(1)  # the grammar allows no bare ternary between ? and :
        self.expect(":")
        return f"{condition} ? {then} : {self.expr()}"

    def binary(self, weakest: int) -> str:
        left = self.unary()
        while self.tok.kind == "OP" and _BINARY.get(self.tok.text, 0) >= weakest:
            op = self.tok.text
            self.at += 1
            right = self.binary(_BINARY[op] + 1)
            left = self.combine(op, left, right)
        return left

    def combine(self, op: str, left: str, right: str) -> str:
        if op not in _STRICT:
            return f"{left} {op} {right}"
        function, native = _STRICT[op]
        if op != "in" and "null" in (left.strip("()"), right.strip("()")):
            self.native.add(native)  # a presence test: keep it
            return f"{left} {op} {right}"
        self.introduced.add(function)
        return f"{function}({left}, {right})"

    def unary(self) -> str:
        ops = ""
        if self.tok.text == "!":
            while self.accept("!"):
                ops += "!"
        else:
            while self.accept("-"):
                ops += "-"
        return ops + self.member()

    def member(self) -> str:
        text = self.primary()
        if text == "request":
            field = (
                self.peek().text if self.tok.text == "." and self.peek().kind == "IDENT" else None
            )
            self.request_uses.append(field)
        while True:
            if self.accept("."):
                optional = "?" if self.accept("?") else ""
                field = self.name("IDENT", "ESCIDENT")
                if optional or field.startswith("`") or not self.accept("("):
                    text = f"{text}.{optional}{field}"
                    continue
                args = self.arguments()
                if field in ("exists_one", "existsOne") and len(args) == 2:
                    self.native.add("_==_")  # the library expands this macro with ==
                if field in _MACROS and len(args) >= 2 and args[0].isidentifier():
                    self.bound.add(args[0])
                text = f"{text}.{field}({', '.join(args)})"
            elif self.accept("["):
                optional = "?" if self.accept("?") else ""
                index = self.expr()
                self.expect("]")
                text = f"{text}[{optional}{index}]"
            else:
                return text

    def arguments(self) -> list[str]:
        args: list[str] = []
        if not self.accept(")"):
            args.append(self.expr())
            while self.accept(","):
                args.append(self.expr())
            self.expect(")")
        return args

    def entries(self, close: str, key: Callable[[], str] | None) -> str:
        """Comma-separated, optionally ?-marked, entries up to ``close``; a trailing comma is
        allowed. Without ``key``: list elements; with it: ``key: value`` pairs."""
        items: list[str] = []
        while not self.accept(close):
            if items:
                self.expect(",")
                if self.accept(close):
                    break
            elif self.accept(","):  # `[,]` is an empty list with its trailing comma
                self.expect(close)
                break
            item = ("?" if self.accept("?") else "") + (key() if key else self.expr())
            if key:
                self.expect(":")
                item += ": " + self.expr()
            items.append(item)
        return ", ".join(items)

    def primary(self) -> str:
        tok = self.tok
        if tok.text == "-" and self.peek().kind in ("INT", "FLOAT"):  # !-1: a signed literal
            self.at += 2
            return "-" + self.tokens[self.at - 1].text
        if tok.kind in ("INT", "UINT", "FLOAT", "STRING", "LITERAL"):
            self.at += 1
            return tok.text
        if self.accept("("):
            inner = self.expr()
            self.expect(")")
            return f"({inner})"
        if self.accept("["):
            return f"[{self.entries(']', None)}]"
        if self.accept("{"):
            return f"{{{self.entries('}', self.expr)}}}"
        name = ("." if self.accept(".") else "") + self.name("IDENT")
        ahead = 0  # a message construction: a qualified name, then {
        while self.peek(ahead).text == "." and self.peek(ahead + 1).kind == "IDENT":
            ahead += 2
        if self.peek(ahead).text == "{":
            for _ in range(ahead // 2):
                self.expect(".")
                name += "." + self.name("IDENT")
            self.expect("{")
            return f"{name}{{{self.entries('}', lambda: self.name('IDENT', 'ESCIDENT'))}}}"
        if name.lstrip(".") in _RESERVED:
            raise ValueError(f"CEL syntax error at offset {tok.pos}: reserved word {name!r}")
        if self.accept("("):
            return f"{name}({', '.join(self.arguments())})"
        return name


def _translate(source: str) -> tuple[str, _Rewriter]:
    rewriter = _Rewriter(source)
    try:
        return rewriter.run(), rewriter
    except RecursionError:
        raise ValueError("CEL expression nested too deeply") from None


def rewrite(source: str) -> str:
    """``source`` with ``==``, ``!=`` and ``in`` replaced by the strict functions.

    Raises ValueError on a syntax error.
    """
    return _translate(source)[0]


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
        self.request_uses = request_uses  # see _Rewriter.request_uses
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


def compile_strict(source: str) -> StrictProgram:
    """Compile ``source`` with strict comparisons.

    Raises ValueError when ``source`` is not valid CEL, or when the rewritten expression
    does not reference exactly the original's variables and functions (a rewriting bug).
    """
    try:
        original = cel.compile(source)  # the library's own message for invalid CEL
    except RuntimeError as exc:
        raise ValueError(str(exc)) from exc
    rewritten, rewriter = _translate(source)
    try:
        program = cel.compile(rewritten)
    except (ValueError, RuntimeError) as exc:
        raise ValueError("the rewritten CEL expression does not compile") from exc
    replaced = {native for _, native in _STRICT.values()} - rewriter.native
    expected = (set(original.functions()) - replaced) | rewriter.introduced
    variables = original.variables()
    if program.variables() != variables or set(program.functions()) != expected:
        raise ValueError("the rewritten CEL expression differs from the original")
    return StrictProgram(
        source,
        rewritten,
        program,
        variables,
        frozenset(rewriter.bound),
        tuple(rewriter.request_uses),
    )
