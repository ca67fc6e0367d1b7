"""Compiled rules: which rule a request matches, what it requires, which headers to add.

Rules are built once by the build step from plain arguments; nothing here compiles a
pattern per request. First matching rule wins. Paths are matched as check_path (paths.py)
accepts them: exactly as sent, without the query string.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote

from authz.core.claims import MISSING, get_claim
from authz.core.conditions import Node
from authz.core.model import Claims, RequestAttributes
from authz.core.paths import upper_hex

_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_TEMPLATE_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

Mode = Literal["enforce", "dry_run"]
PathMatcher = Callable[[str], "dict[str, str] | None"]  # captured params, or None: no match


def _fold(text: str, ignore_case: bool) -> str:
    return text.lower() if ignore_case else text


def compile_path(kind: str | None, value: str, ignore_case: bool) -> PathMatcher:
    """A matcher for one path kind (None: every path).

    Paths reach the matcher as check_path leaves them, escapes with upper-case hex digits;
    a rule's literal text is brought into the same form.
    """
    ic = ignore_case
    if kind is None:
        return lambda path: {}
    if kind == "path":
        exact = _fold(upper_hex(value), ic)
        return lambda path: {} if _fold(path, ic) == exact else None
    if kind == "prefix":
        prefix = _fold(upper_hex(value), ic)
        return lambda path: {} if _fold(path, ic).startswith(prefix) else None
    if kind == "path_separated_prefix":
        base = _fold(upper_hex(value), ic)

        def separated(path: str) -> dict[str, str] | None:
            folded = _fold(path, ic)
            ok = folded == base or folded.startswith(base + "/")
            return {} if ok else None

        return separated
    if kind == "template":
        # Our own pattern: escaped literals and one-segment groups, safe for the stdlib engine,
        # which is several times cheaper to call than RE2 for short paths.
        template = re.compile(_template_regex(upper_hex(value)), re.IGNORECASE if ic else 0)
        return lambda path: None if (m := template.fullmatch(path)) is None else _params(m)
    if kind == "regex":
        import re2  # loaded only for configs with regular expressions

        options = re2.Options()
        options.case_sensitive = not ic
        compiled = re2.compile(value, options)
        # Calling RE2 costs microseconds; most paths are ruled out by its literal prefix.
        literal = _fold(literal_prefix(value), ic)

        def regex(path: str) -> dict[str, str] | None:
            if literal and not _fold(path, ic).startswith(literal):
                return None
            found = compiled.fullmatch(path)
            return None if found is None else _params(found)

        return regex
    raise ValueError(f"unknown path kind {kind!r}")


def _params(found: Any) -> dict[str, str]:
    """Captured path parameters, percent-decoded as frameworks hand them to handlers (the
    path passed check_path, so no escape decodes to a separator or control character)."""
    return {
        name: unquote(value) if "%" in value else value
        for name, value in found.groupdict().items()
        if value is not None
    }


_REGEX_SPECIAL = frozenset("\\.^$*+?{}[]|()")


def literal_prefix(pattern: str) -> str:
    """The plain characters a pattern must start with; '' when unsure."""
    prefix: list[str] = []
    for index, char in enumerate(pattern):
        if char in _REGEX_SPECIAL:
            # A quantifier applies to the character before it, which is then not required.
            if char in "*?{" and prefix and index == len(prefix):
                prefix.pop()
            break
        prefix.append(char)
    if "|" in pattern:
        return ""  # an alternation at the top level may start differently
    return "".join(prefix)


def _template_regex(template: str) -> str:
    """/users/{id}/orders -> a pattern where {id} is exactly one path segment.

    One trailing slash is allowed either way (/users/bob/ is /users/{id}), as most web
    frameworks route it, so a near miss never falls through to a looser rule.
    """
    parts = _TEMPLATE_PARAM.split(template.rstrip("/") or "/")
    pattern = ""
    for index, part in enumerate(parts):
        pattern += re.escape(part) if index % 2 == 0 else f"(?P<{part}>[^/]+)"
    return pattern if pattern == "/" else pattern + "/?"


HeaderTest = Callable[[Mapping[str, str]], bool]


def header_test(
    name: str, *, present: bool | None, equals: str | None, regex: str | None
) -> HeaderTest:
    """One header match: ``present`` (true/false), ``equals`` a value, or ``regex`` (RE2)."""
    if present is not None:
        return lambda headers: (name in headers) == present
    if equals is not None:
        wanted = equals
        return lambda headers: headers.get(name) == wanted
    import re2  # loaded only for configs with regular expressions

    compiled = re2.compile(regex or "")
    return lambda headers: name in headers and compiled.fullmatch(headers[name]) is not None


def host_test(hosts: Sequence[str]) -> Callable[[str], bool] | None:
    """Exact names or ``*.suffix`` wildcards (lower-case, without port); None: any host."""
    if not hosts:
        return None
    exact = frozenset(h for h in hosts if not h.startswith("*."))
    suffixes = tuple(h[1:] for h in hosts if h.startswith("*."))  # ".example.com"
    return lambda host: host in exact or (host.endswith(suffixes) and host not in suffixes)


@dataclass(frozen=True, slots=True)
class HeaderFromClaim:
    header: str
    path: tuple[str, ...]  # empty: the identity's tenant (issuer_param: tenant)

    def render(self, claims: Claims, max_bytes: int, tenant: str | None = None) -> str | None:
        value = render_header_value(get_claim(claims, self.path) if self.path else tenant)
        if value is None or len(value.encode()) > max_bytes:
            return None  # an oversized header is dropped, never truncated into a new meaning
        return value


@dataclass(frozen=True, slots=True)
class CompiledRule:
    name: str
    match_path: PathMatcher
    methods: frozenset[str]
    host_ok: Callable[[str], bool] | None
    header_tests: tuple[Callable[[Mapping[str, str]], bool], ...]
    context: tuple[tuple[str, str], ...]
    public: bool
    providers: tuple[str, ...]  # a token from any of these (or each, with ``every``)
    optional: bool  # allow_missing: no token passes, a token sent must be valid
    every: bool  # requires.all: a token from each provider
    conditions: Node
    mode: Mode  # "enforce" or "dry_run"
    claim_headers: tuple[HeaderFromClaim, ...]  # added to the providers' claim_to_headers
    static_headers: tuple[tuple[str, str], ...]

    def matches(self, request: RequestAttributes, path: str) -> dict[str, str] | None:
        """The path template's parameters when the rule matches, else None."""
        if self.methods and request.method.upper() not in self.methods:
            return None
        if self.host_ok is not None and not self.host_ok(request.hostname):
            return None
        for key, value in self.context:
            if request.context.get(key) != value:
                return None
        for test in self.header_tests:
            if not test(request.headers):
                return None
        return self.match_path(path)

    def why_not(self, request: RequestAttributes, path: str) -> str | None:
        """Which part of the match a request fails first (method, host, context, header,
        path), None when the rule matches: for explaining a decision, not for checks."""
        if self.methods and request.method.upper() not in self.methods:
            return "method"
        if self.host_ok is not None and not self.host_ok(request.hostname):
            return "host"
        if any(request.context.get(key) != value for key, value in self.context):
            return "context"
        if not all(test(request.headers) for test in self.header_tests):
            return "header"
        return "path" if self.match_path(path) is None else None


@dataclass(frozen=True, slots=True)
class Policy:
    rules: tuple[CompiledRule, ...]

    def match(
        self, request: RequestAttributes, path: str
    ) -> tuple[CompiledRule, dict[str, str]] | None:
        for rule in self.rules:
            params = rule.matches(request, path)
            if params is not None:
                return rule, params
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
