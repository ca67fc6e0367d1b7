"""Parse a CEL expression (the cel-spec grammar) and re-emit it with every ``a == b``,
``a != b`` and ``a in b`` turned into a call of ``_authz_eq``, ``_authz_ne`` or
``_authz_in`` (cel_strict.py). The ``cel`` library has no AST and no operator overloading,
hence a parser of our own; cel_strict.py checks its output against the library's.

A comparison with the literal ``null`` keeps the native operator: ``jwt.x != null`` is a
presence test, and its answer for any non-null value is the one intended.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

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
STRICT = {"==": ("_authz_eq", "_==_"), "!=": ("_authz_ne", "_!=_"), "in": ("_authz_in", "@in")}


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
        if op not in STRICT:
            return f"{left} {op} {right}"
        function, native = STRICT[op]
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


@dataclass(frozen=True, slots=True)
class Translation:
    """A rewritten expression, and what the rewrite learned about it."""

    text: str
    replaced: frozenset[str]  # the library's names of the operators rewritten (_==_, @in)
    introduced: frozenset[str]  # the strict functions the text calls
    bound: frozenset[str]  # names comprehension macros bind (the x of all(x, p))
    request_uses: tuple[str | None, ...]  # see _Rewriter.request_uses


def translate(source: str) -> Translation:
    """``source`` with ``==``, ``!=`` and ``in`` rewritten; ValueError on a syntax error."""
    rewriter = _Rewriter(source)
    try:
        text = rewriter.run()
    except RecursionError:
        raise ValueError("CEL expression nested too deeply") from None
    return Translation(
        text,
        frozenset(native for _, native in STRICT.values()) - rewriter.native,
        frozenset(rewriter.introduced),
        frozenset(rewriter.bound),
        tuple(rewriter.request_uses),
    )


def rewrite(source: str) -> str:
    """``source`` with ``==``, ``!=`` and ``in`` replaced by the strict functions.

    Raises ValueError on a syntax error.
    """
    return translate(source).text
