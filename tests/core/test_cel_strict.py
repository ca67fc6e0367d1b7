"""Strict CEL comparisons: the rewriter's output, the strict functions, and agreement with
the cel library's own parser and evaluator."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import cel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz.core.cel_parse import Translation, translate
from authz.core.cel_strict import FUNCTIONS, compile_strict, rewrite

REWRITES = [
    # precedence and associativity: all relations share one level, left-associative
    ("a == b && c != d || e in f", "_authz_eq(a, b) && _authz_ne(c, d) || _authz_in(e, f)"),
    ("!(a == b)", "!(_authz_eq(a, b))"),
    ("a == b == c", "_authz_eq(_authz_eq(a, b), c)"),
    ("a != b in c", "_authz_in(_authz_ne(a, b), c)"),
    ("a < b == c", "_authz_eq(a < b, c)"),
    ("a == b < c", "_authz_eq(a, b) < c"),
    ("a + b == c * d", "_authz_eq(a + b, c * d)"),
    ("a + 1 in b", "_authz_in(a + 1, b)"),
    ("a || b == c && d", "a || _authz_eq(b, c) && d"),
    ("a - b - c", "a - b - c"),
    ("a - (b - c) * d % e / f", "a - (b - c) * d % e / f"),
    ("a && (b || c)", "a && (b || c)"),
    # ternary: condition and middle are ||-level, the last branch any expression
    ("a == b ? c != d : e in f", "_authz_eq(a, b) ? _authz_ne(c, d) : _authz_in(e, f)"),
    ("a ? b : c ? d == e : f", "a ? b : c ? _authz_eq(d, e) : f"),
    ("a ? b : c == d", "a ? b : _authz_eq(c, d)"),
    ("(a ? b : c) == d", "_authz_eq((a ? b : c), d)"),
    ("a || b ? c : d", "a || b ? c : d"),
    # macros and calls, nested
    ('x.exists(r, r == "a")', 'x.exists(r, _authz_eq(r, "a"))'),
    ("x.all(r, r != 1)", "x.all(r, _authz_ne(r, 1))"),
    ("x.exists_one(r, r in y)", "x.exists_one(r, _authz_in(r, y))"),
    ("x.map(r, r == 1)", "x.map(r, _authz_eq(r, 1))"),
    ("x.map(r, r != 1, r in y)", "x.map(r, _authz_ne(r, 1), _authz_in(r, y))"),
    ("x.filter(r, !(r in y))", "x.filter(r, !(_authz_in(r, y)))"),
    ("x.all(r, r.exists(s, s == r.k))", "x.all(r, r.exists(s, _authz_eq(s, r.k)))"),
    ("has(a.b) && a.b == 1", "has(a.b) && _authz_eq(a.b, 1)"),
    ("size(a.filter(r, r == b)) == 1", "_authz_eq(size(a.filter(r, _authz_eq(r, b))), 1)"),
    ("f(g(a == b), c in d)", "f(g(_authz_eq(a, b)), _authz_in(c, d))"),
    ("a.f(b == c).g()[d != e]", "a.f(_authz_eq(b, c)).g()[_authz_ne(d, e)]"),
    # string literals are kept byte for byte, whatever they contain
    ('"a == b" == "in"', '_authz_eq("a == b", "in")'),
    ("'a\\'b' == \"c\\\"d\"", "_authz_eq('a\\'b', \"c\\\"d\")"),
    ('"\\\\" in a', '_authz_in("\\\\", a)'),
    ('"""x == "y" """ == a', '_authz_eq("""x == "y" """, a)'),
    ("'''it's\n''' != a", "_authz_ne('''it's\n''', a)"),
    ("'''a\\'''b''' == a", "_authz_eq('''a\\'''b''', a)"),
    ("r'\\' == a", "_authz_eq(r'\\', a)"),
    ('r"\\" == "x"', '_authz_eq(r"\\", "x")'),  # a raw string ends at the first quote
    ('R"x\\" in a', '_authz_in(R"x\\", a)'),
    ("r'''a\\''' == a", "_authz_eq(r'''a\\''', a)"),
    ("b'\\xff' == a", "_authz_eq(b'\\xff', a)"),
    ('B"\\"" != a', '_authz_ne(B"\\"", a)'),
    ("br'\\' == a", "_authz_eq(br'\\', a)"),
    ('bR"""a"b""" == a', '_authz_eq(bR"""a"b""", a)'),
    ("BR'''x''' == a", "_authz_eq(BR'''x''', a)"),
    (
        '"\\u00e9\\U0001F600\\101\\x41\\?\\`\\a" == a',
        '_authz_eq("\\u00e9\\U0001F600\\101\\x41\\?\\`\\a", a)',
    ),
    ('"//" == a // a comment: a == b\n&& b', '_authz_eq("//", a) && b'),
    ("a\n==\tb\r", "_authz_eq(a, b)"),
    # null: a presence test keeps the native operator, on either side
    ("a == null", "a == null"),
    ("null == a", "null == a"),
    ("a.b != null", "a.b != null"),
    ("null != a", "null != a"),
    ("a == (null)", "a == (null)"),
    ("(a == b) != null", "(_authz_eq(a, b)) != null"),
    ("a == null && b == c", "a == null && _authz_eq(b, c)"),
    ("a == null == b", "_authz_eq(a == null, b)"),
    ("null in a", "_authz_in(null, a)"),
    # optional syntax
    ("a.?b == c", "_authz_eq(a.?b, c)"),
    ("a[?b] != c", "_authz_ne(a[?b], c)"),
    ("[?a, b] == c", "_authz_eq([?a, b], c)"),
    ('{?"k": a == b}', '{?"k": _authz_eq(a, b)}'),
    ("T{?f: a in b}", "T{?f: _authz_in(a, b)}"),
    # list, map and message literals
    ("[a == b, c,]", "[_authz_eq(a, b), c]"),
    ("{a == b: c in d, 1: 2}", "{_authz_eq(a, b): _authz_in(c, d), 1: 2}"),
    ("[,] == {,}", "_authz_eq([], {})"),
    ("a.b.T{f: x == y, `g-h`: 1} == c", "_authz_eq(a.b.T{f: _authz_eq(x, y), `g-h`: 1}, c)"),
    (".a.T{}.f", ".a.T{}.f"),
    ("T{,}", "T{}"),
    ("as.T{if: 1}", "as.T{if: 1}"),
    # identifiers
    (".a.b == .f(c)", "_authz_eq(.a.b, .f(c))"),
    ("a.as == a.if(b)", "_authz_eq(a.as, a.if(b))"),
    ("a.`b c` == d", "_authz_eq(a.`b c`, d)"),
    # numbers and unary operators
    ("-1 == a", "_authz_eq(-1, a)"),
    ("- 1 == a", "_authz_eq(-1, a)"),
    ("-9223372036854775808 != a", "_authz_ne(-9223372036854775808, a)"),
    ("--1", "--1"),
    ("- -a", "--a"),
    ("-(1)", "-(1)"),
    ("!-1", "!-1"),
    ("a - -1", "a - -1"),
    ("!!a == b", "_authz_eq(!!a, b)"),
    ("-a.b", "-a.b"),
    ("1u == 18446744073709551615U", "_authz_eq(1u, 18446744073709551615U)"),
    ("0x1F == 0x1fu", "_authz_eq(0x1F, 0x1fu)"),
    ("1e3 != 1E-3", "_authz_ne(1e3, 1E-3)"),
    (".5 == -.5", "_authz_eq(.5, -.5)"),
    ("1.5e+3 in a", "_authz_in(1.5e+3, a)"),
    ("1.e3", "1.e3"),  # field e3 of 1: a float needs a digit after the point
]


@pytest.mark.parametrize(("source", "expected"), REWRITES)
def test_rewrite(source: str, expected: str) -> None:
    assert rewrite(source) == expected
    assert rewrite(expected) == expected  # nothing left to rewrite, and the text is stable


SYNTAX_ERRORS = [
    "",
    "a ==",
    "== a",
    "a = b",
    "a & b",
    "a b",
    "a ? b ? c : d : e",  # only a ||-level expression between ? and :
    "a ? b",
    "(a",
    "a)",
    "[1,,]",
    "[,1]",
    "f(1,)",
    "f(,)",
    "a[]",
    "{a}",
    "{a: }",
    "T{f}",
    "T{1: 2}",
    "(a).T{}",
    "f(a)(b)",
    "as",
    "as(1)",
    "if == 1",
    "in",
    "a.in",
    "a.true",
    "a.?b(c)",
    "a.`b`(c)",
    "`a`",
    ".",
    "a.",
    "a..b",
    "a.5",
    "1 +",
    "-!a",
    "!-a",
    "#",
    "\\",
    '"\\q"',
    '"\\400"',
    "'a\nb'",
    '"abc',
    "'''abc''",
    'rb"x"',
    "0X1F",
    "1u2",
    "1e",
    "1.5u",
    "1__",
    "a == \u0661",  # an Arabic-Indic digit
    "\u00e9",
    'r"\\"" == a',
]


@pytest.mark.parametrize("source", SYNTAX_ERRORS)
def test_syntax_error(source: str) -> None:
    with pytest.raises(ValueError, match="CEL syntax error"):
        rewrite(source)


def test_deep_nesting_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        rewrite("(" * 5000 + "a" + ")" * 5000)


# --- the strict functions -------------------------------------------------------------

EQ_TABLE: list[tuple[Any, Any, bool | None]] = [  # None: a TypeError
    (1, 1.0, True),
    (1, 2, False),
    ("a", "a", True),
    ("a", "b", False),
    (True, True, True),
    (None, None, True),
    (b"a", b"a", True),
    (True, 1, None),
    (1, True, None),
    ("1", 1, None),
    (b"a", "a", None),
    (None, "a", None),
    ([1], [1.0], True),
    ([1], [1, 2], False),
    ([1, 2], [3], False),
    ([1], ["a"], None),
    ([1, "a"], [2, 1], None),  # a mismatch after a difference still counts
    ([], [], True),
    ({"a": 1}, {"a": 1.0}, True),
    ({"a": 1}, {"b": 1}, False),
    ({"a": 1}, {"a": "1"}, None),
    ({1: "a"}, {True: "a"}, False),  # a bool key is not the int key 1
    ([{"a": [1]}], [{"a": [True]}], None),
    (float("nan"), float("nan"), False),
    ([float("nan")], [float("nan")], False),
    (datetime.timedelta(1), datetime.timedelta(days=1), True),
    (datetime.timedelta(1), 86400, None),
]


@pytest.mark.parametrize(("a", "b", "expected"), EQ_TABLE)
def test_eq_and_ne(a: Any, b: Any, expected: bool | None) -> None:
    for name, result in (("_authz_eq", expected), ("_authz_ne", not expected)):
        if expected is None:
            with pytest.raises(TypeError, match=r"^comparison between different types$"):
                FUNCTIONS[name](a, b)
        else:
            assert FUNCTIONS[name](a, b) is result


IN_TABLE: list[tuple[Any, Any, bool | None]] = [
    ("a", ["a", "b"], True),
    ("c", ["a", "b"], False),
    ("a", [], False),
    (1, [1.0, 2], True),
    ("a", ["a", 1], None),
    (True, [1], None),
    ([1], [[1], [2]], True),
    ([1], [[1], ["a"]], None),
    ("k", {"k": 1}, True),
    ("j", {"k": 1}, False),
    (1, {"k": 1}, None),
    ("a", "abc", None),
    ("a", None, None),
]


@pytest.mark.parametrize(("value", "container", "expected"), IN_TABLE)
def test_in(value: Any, container: Any, expected: bool | None) -> None:
    if expected is None:
        with pytest.raises(TypeError):
            FUNCTIONS["_authz_in"](value, container)
    else:
        assert FUNCTIONS["_authz_in"](value, container) is expected


def test_functions_are_read_only() -> None:
    assert set(FUNCTIONS) == {"_authz_eq", "_authz_ne", "_authz_in"}
    with pytest.raises(TypeError):
        FUNCTIONS["_authz_eq"] = lambda a, b: True  # type: ignore[index]


# --- programs -------------------------------------------------------------------------

NEGATIVE_RULES = [
    'jwt.status != "banned"',
    '!(jwt.status == "banned")',
    '!(jwt.status in ["banned"])',
]


@pytest.mark.parametrize("status", [["banned"], None, {"v": "banned"}, 1, True, 1.5])
@pytest.mark.parametrize("source", NEGATIVE_RULES)
def test_a_claim_of_another_type_fails_a_negative_rule(source: str, status: Any) -> None:
    assert cel.compile(source).execute({"jwt": {"status": status}}) is True  # the hole
    with pytest.raises(RuntimeError, match=r"different types|another type"):
        compile_strict(source).execute({"jwt": {"status": status}})


@pytest.mark.parametrize(("status", "expected"), [("banned", False), ("active", True)])
@pytest.mark.parametrize("source", NEGATIVE_RULES)
def test_a_string_claim_gets_the_natural_answer(source: str, status: str, expected: bool) -> None:
    assert compile_strict(source).execute({"jwt": {"status": status}}) is expected


@pytest.mark.parametrize("status", [["banned"], None, {"v": "banned"}, 1, True, 1.5, "x"])
@pytest.mark.parametrize("source", ["jwt.status != null", "jwt.status == null"])
def test_null_comparisons_keep_native_behaviour(source: str, status: Any) -> None:
    activation = {"jwt": {"status": status}}
    assert compile_strict(source).execute(activation) == cel.compile(source).execute(activation)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 == 1.0", True),
        ("1u == 1", True),
        ("[1, 2] == [1.0, 2.0]", True),
        ('"k" in {"k": 1}', True),
        ('"a" in ["b", "a"]', True),
        ('x.exists(r, r == "b")', True),
        ('x.all(r, r != "c")', True),
        ('x.exists_one(r, r in ["a", "c"])', True),
        ('x.filter(r, r != "a")', ["b"]),
        ('x.map(r, r == "a")', [True, False]),
        ('jwt.status != "banned" || true', True),  # CEL's || absorbs an error
        ("type(1) == int", True),
        ("jwt.t == timestamp('2024-01-01T00:00:00Z')", True),
    ],
)
def test_values(source: str, expected: Any) -> None:
    activation = {
        "x": ["a", "b"],
        "jwt": {"status": 1, "t": datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)},
    }
    assert compile_strict(source).execute(activation) == expected


@pytest.mark.parametrize(
    "source",
    [
        "true == 1",
        '"a" in ["a", 1]',
        '1 in {"k": 1}',
        '[1] == ["a"]',
        '{"a": 1} != {"a": "1"}',
        '"a" in "abc"',
    ],
)
def test_errors(source: str) -> None:
    with pytest.raises(RuntimeError):
        compile_strict(source).execute({})


def test_program_reports_the_original_variables() -> None:
    program = compile_strict('x.exists(r, r == jwt.a) && "b" in request.headers')
    assert program.variables() == ["jwt", "r", "request", "x"]
    assert program.source == 'x.exists(r, r == jwt.a) && "b" in request.headers'
    assert (
        program.rewritten == 'x.exists(r, _authz_eq(r, jwt.a)) && _authz_in("b", request.headers)'
    )


def test_invalid_cel_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        compile_strict("a ==")
    with pytest.raises(ValueError):
        compile_strict("has(a)")  # the library's macro check, not the grammar's


@pytest.mark.parametrize(
    ("source", "wrong"),
    [
        ("a == b", "_authz_eq(a, c)"),  # another variable
        ("a == b", "a == b"),  # left unrewritten
        ("a == b && c", "_authz_eq(a, b) || c"),  # another operator
        ("a in b", "_authz_eq(a, b)"),  # another strict function
    ],
)
def test_a_rewrite_that_changes_the_expression_is_refused(source: str, wrong: str) -> None:
    def mistaken(text: str) -> Translation:
        return dataclasses.replace(translate(text), text=wrong)

    with pytest.raises(ValueError, match="differs from the original"):
        compile_strict(source, translate=mistaken)


CORPUS = [
    'jwt.status != "banned" && "admin" in jwt.roles',
    "jwt.email_verified == true",
    'jwt.email.endsWith("@example.com") && jwt.email != ""',
    'jwt.realm_access.roles.exists(r, r == "admin" || r == "ops")',
    'jwt.roles.all(r, r != "guest")',
    'jwt.roles.exists_one(r, r == "owner")',
    'jwt.roles.exists_one(r, r.startsWith("o"))',
    'jwt.roles.filter(r, r in ["a", "b"]).size() == 2',
    'jwt.roles.map(r, r + "!").exists(r, r == "a!")',
    'jwt.roles.map(r, r != "a", r + "?")',
    'size(jwt.groups) > 0 ? jwt.groups[0] == "eng" : false',
    "has(jwt.tenant) && jwt.tenant == request.params.tenant",
    "has(jwt.a.b.c)",
    'request.method in ["GET", "HEAD"]',
    'request.headers["x-env"] != "prod"',
    'request.path.startsWith("/admin") == false',
    'request.host == "api.example.com" || request.host.endsWith(".example.com")',
    "jwt.exp - jwt.iat <= 3600",
    "int(jwt.level) >= 3 && jwt.level != 7",
    "jwt.score * 2.0 / 3.0 > 1.5",
    "jwt.n % 2 == 0",
    "-jwt.n == -1",
    "!(jwt.a == 1) && !!jwt.b",
    "jwt.a == null || jwt.a != null",
    "null == jwt.a",
    "jwt.a == (null)",
    "(jwt.a == jwt.b) == (jwt.c != jwt.d)",
    "jwt.a == jwt.b == jwt.c",
    "1 < 2 == true",
    "jwt.a ? jwt.b : jwt.c ? jwt.d : jwt.e == 1",
    '{"a": 1, "b": jwt.x == 1}["b"]',
    "[1, 2, 3].exists(x, x == jwt.n) || [jwt.n] == [1]",
    '"k" in {"k": jwt.v}',
    "b'abc' == jwt.raw",
    "r'\\d+' == jwt.pattern",
    '"""multi\nline""" != jwt.text',
    "'''it's''' == jwt.quote",
    '"\\"quoted\\"" == jwt.q',
    "jwt.big == 18446744073709551615u",
    "jwt.hex == 0xFF",
    "jwt.neg == -9223372036854775808",
    "jwt.f == 1e-3 || jwt.f == .5",
    'string(jwt.n) == "1"',
    "type(jwt.n) == int && type(jwt.s) != string",
    'timestamp(jwt.t) < timestamp("2030-01-01T00:00:00Z")',
    'duration("1h") == duration("60m")',
    "dyn(jwt.n) == 1",
    "jwt.as == jwt.if",
    ".jwt.a == 1",
    "a.b.T{f: jwt.x == 1}",
    "jwt.a == 1 // trailing comment",
    "[,] == []",
    'jwt.roles.exists(r, r.matches("^a.*") && !(r in ["ab"]))',
    'size(jwt.roles.filter(r, r == "a").map(r, r in jwt.roles)) == 1',
]


@pytest.mark.parametrize("source", CORPUS)
def test_corpus_compiles(source: str) -> None:
    cel.compile(source)  # the library takes the original
    cel.compile(rewrite(source))
    compile_strict(source)  # and the rewritten one references the same names


# --- property tests -------------------------------------------------------------------

# Binding strengths, as in the CEL grammar: ternary, ||, &&, relations, +, unary, member.
TERNARY, OR, AND, RELATION, SUM, UNARY, MEMBER = 1, 2, 3, 4, 5, 7, 8
Expr = tuple[str, int]  # text, binding strength


def _wrap(expr: Expr, strength: int) -> str:
    return expr[0] if expr[1] >= strength else f"({expr[0]})"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


ATOMS: dict[str, list[str]] = {
    "bool": ["true", "false", "jwt.flag"],
    "number": ["0", "1", "-2", "2.5", "1u", "jwt.n", "jwt.x"],
    "string": ["jwt.s", "'a'", 'r"b"', '"""a"""'],
    "strings": ["jwt.l", "[]"],
    "numbers": ["jwt.ln"],
}
ELEMENT = {"strings": "string", "numbers": "number"}
ACTIVATION = {"jwt": {"flag": True, "n": 2, "x": 1.0, "s": "a", "l": ["a", "b"], "ln": [1, 2.5]}}


@st.composite
def typed(draw: st.DrawFn, kind: str, depth: int = 3) -> Expr:
    """A random expression of one kind in which every comparison is between one kind."""
    expr = draw(_typed(kind, depth))
    return (f"({expr[0]})", MEMBER) if draw(st.integers(0, 9)) == 0 else expr


@st.composite
def _typed(draw: st.DrawFn, kind: str, depth: int) -> Expr:
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        if kind == "string" and draw(st.booleans()):
            return _quote(draw(st.text(alphabet="ab \"'\\=!", max_size=4))), MEMBER
        return draw(st.sampled_from(ATOMS[kind])), MEMBER
    sub = depth - 1
    form = draw(st.integers(0, 5))
    if form == 0:  # ternary
        cond, then, other = draw(typed("bool", sub)), draw(typed(kind, sub)), draw(typed(kind, sub))
        return f"{_wrap(cond, OR)} ? {_wrap(then, OR)} : {other[0]}", TERNARY
    if kind in ELEMENT:
        items = draw(st.lists(typed(ELEMENT[kind], sub), max_size=3))
        if form == 1:
            return f"[{', '.join(item[0] for item in items)}]", MEMBER
        item = draw(typed(ELEMENT[kind], sub))
        return f"{_wrap(draw(typed(kind, sub)), MEMBER)}.filter(r, r != {item[0]})", MEMBER
    if kind in ("number", "string"):
        if kind == "number" and form == 1:
            return f"size({draw(typed('strings', sub))[0]})", MEMBER
        left, right = draw(typed(kind, sub)), draw(typed(kind, sub))
        if kind == "number" and form == 2:
            return f"-{_wrap(left, MEMBER)}", UNARY
        return f"{_wrap(left, SUM)} + {_wrap(right, SUM + 1)}", SUM
    if form == 1:
        inner = draw(typed("bool", sub))
        return f"!{_wrap(inner, MEMBER)}", UNARY
    if form == 2:
        op = draw(st.sampled_from(["&&", "||"]))
        strength = AND if op == "&&" else OR
        left, right = draw(typed("bool", sub)), draw(typed("bool", sub))
        return f"{_wrap(left, strength)} {op} {_wrap(right, strength + 1)}", strength
    if form == 3:
        element = draw(st.sampled_from(sorted(ELEMENT)))
        value, container = draw(typed(ELEMENT[element], sub)), draw(typed(element, sub))
        if draw(st.booleans()):
            return f"{_wrap(value, RELATION)} in {_wrap(container, RELATION + 1)}", RELATION
        macro = draw(st.sampled_from(["exists", "all", "exists_one"]))
        return f"{_wrap(container, MEMBER)}.{macro}(r, r == {value[0]})", MEMBER
    compared = draw(st.sampled_from(sorted(ATOMS)))
    ops = ["==", "!="] + (["<", ">="] if compared in ("number", "string") else [])
    op = draw(st.sampled_from(ops))
    left, right = draw(typed(compared, sub)), draw(typed(compared, sub))
    return f"{_wrap(left, RELATION)} {op} {_wrap(right, RELATION + 1)}", RELATION


def _outcome(run: Any) -> tuple[str, Any]:
    try:
        return "value", run()
    except (RuntimeError, TypeError, ValueError, OverflowError) as exc:
        return "error", type(exc).__name__


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(typed("bool"))
def test_strict_agrees_with_cel_on_well_typed_expressions(expr: Expr) -> None:
    source = expr[0]
    plain = _outcome(lambda: cel.compile(source).execute(ACTIVATION))
    strict = _outcome(lambda: compile_strict(source).execute(ACTIVATION))
    assert strict[0] == plain[0], (source, rewrite(source), plain, strict)
    if plain[0] == "value":
        assert strict == plain, (source, rewrite(source))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab1.()[]{}!?:=<>&|+-*\"'\\ \nrbu?,in", max_size=20))
def test_rewrite_raises_only_value_error(source: str) -> None:
    try:
        rewritten = rewrite(source)
    except ValueError:
        return
    assert rewrite(rewritten) == rewritten


LEAVES = ["a", "b.c", ".d", "null", "true", "-1", "1u", "0x1F", ".5", "1e3", "'s'", '"q\\""']
LEAVES += ['"""t"""', "r'\\'", "b'\\xff'", "bR'''x'''", "[]", "{}"]
BINARY = {"||": OR, "&&": AND, "+": SUM, "-": SUM, "*": 6, "%": 6}
BINARY |= dict.fromkeys(["==", "!=", "in", "<", ">="], RELATION)


@st.composite
def untyped(draw: st.DrawFn, depth: int = 3) -> Expr:
    """Any expression of the grammar, well-typed or not, with as few parentheses as it needs."""
    if depth == 0 or draw(st.integers(0, 4)) == 0:
        return draw(st.sampled_from(LEAVES)), MEMBER
    one, two = draw(untyped(depth - 1)), draw(untyped(depth - 1))
    form = draw(st.integers(0, 9))
    if form == 0:
        return f"{_wrap(one, OR)} ? {_wrap(two, OR)} : {draw(untyped(depth - 1))[0]}", TERNARY
    if form == 1:
        return f"{draw(st.sampled_from(['!', '-', '!!']))}{_wrap(one, MEMBER)}", UNARY
    if form == 2:
        return f"{_wrap(one, MEMBER)}{draw(st.sampled_from(['.f', '.as', '.e1']))}", MEMBER
    if form == 3:
        return f"{_wrap(one, MEMBER)}[{two[0]}]", MEMBER
    if form == 4:
        name = draw(st.sampled_from(["f", ".g", "a.size", "a.exists_one", "a.exists", "a.map"]))
        bound = "r, " if name.startswith("a.") and not name.endswith("size") else ""
        return f"{name}({bound}{one[0]})", MEMBER
    if form == 5:
        return f"[{one[0]}, {two[0]},]", MEMBER
    if form == 6:
        return f"{{{one[0]}: {two[0]}}}", MEMBER
    if form == 7:
        return f"x.T{{f: {one[0]}, as: {two[0]}}}", MEMBER
    op = draw(st.sampled_from(sorted(BINARY)))
    return f"{_wrap(one, BINARY[op])} {op} {_wrap(two, BINARY[op] + 1)}", BINARY[op]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(untyped())
def test_rewrite_keeps_what_the_library_parses(expr: Expr) -> None:
    try:
        cel.compile(expr[0])
    except ValueError:
        return  # e.g. an int literal out of range after a minus
    compile_strict(expr[0])  # same variables, same functions but the rewritten ones
    assert rewrite(rewrite(expr[0])) == rewrite(expr[0])


@pytest.mark.parametrize(
    ("source", "free"),
    [
        ('jwt.roles.exists(r, r == "admin")', ["jwt"]),
        ("claims.corp.groups.all(g, g.startsWith(request.path))", ["claims", "request"]),
        ("jwt.a.map(x, x + 1).filter(y, y > 2).size() > 0", ["jwt"]),
        ("r == 1", ["r"]),
    ],
)
def test_free_variables_leave_out_names_macros_bind(source: str, free: list[str]) -> None:
    assert compile_strict(source).free_variables() == free
