"""Compiled rules: which rule a request matches, what it requires, which headers to add.

Rules are compiled once from the config; nothing here compiles a pattern or reads the
config per request. First matching rule wins. Paths are matched as check_path (paths.py)
accepts them: exactly as sent, without the query string.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import re2

from authz.config import Config
from authz.config.rules import HeaderMatch, Match, Mode, Rule
from authz.core.conditions import MISSING, Node, compile_conditions, get_claim
from authz.core.model import Claims, RequestAttributes
from authz.core.paths import upper_hex

_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_TEMPLATE_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

PathMatcher = Callable[[str], "dict[str, str] | None"]  # captured params, or None: no match


def _fold(text: str, ignore_case: bool) -> str:
    return text.lower() if ignore_case else text


def compile_path(match: Match, ignore_case: bool = False) -> PathMatcher:
    """``ignore_case``: the default when the match does not say (``paths.ignore_case``).

    Paths reach the matcher as check_path leaves them, escapes with upper-case hex digits;
    a rule's literal text is brought into the same form.
    """
    ic = ignore_case if match.ignore_case is None else match.ignore_case
    if match.path is not None:
        exact = _fold(upper_hex(match.path), ic)
        return lambda path: {} if _fold(path, ic) == exact else None
    if match.prefix is not None:
        prefix = _fold(upper_hex(match.prefix), ic)
        return lambda path: {} if _fold(path, ic).startswith(prefix) else None
    if match.path_separated_prefix is not None:
        base = _fold(upper_hex(match.path_separated_prefix), ic)

        def separated(path: str) -> dict[str, str] | None:
            folded = _fold(path, ic)
            ok = folded == base or folded.startswith(base + "/")
            return {} if ok else None

        return separated
    if match.template is not None:
        # Our own pattern: escaped literals and one-segment groups, safe for the stdlib engine,
        # which is several times cheaper to call than RE2 for short paths.
        template = re.compile(
            _template_regex(upper_hex(match.template)), re.IGNORECASE if ic else 0
        )
        return lambda path: None if (m := template.fullmatch(path)) is None else _params(m)
    if match.regex is not None:
        options = re2.Options()
        options.case_sensitive = not ic
        compiled = re2.compile(match.regex, options)
        # Calling RE2 costs microseconds; most paths are ruled out by its literal prefix.
        literal = _fold(_literal_prefix(match.regex), ic)

        def regex(path: str) -> dict[str, str] | None:
            if literal and not _fold(path, ic).startswith(literal):
                return None
            found = compiled.fullmatch(path)
            return None if found is None else _params(found)

        return regex
    return lambda path: {}


def _params(found: Any) -> dict[str, str]:
    """Captured path parameters, percent-decoded as frameworks hand them to handlers (the
    path passed check_path, so no escape decodes to a separator or control character)."""
    return {
        name: unquote(value) if "%" in value else value
        for name, value in found.groupdict().items()
        if value is not None
    }


_REGEX_SPECIAL = frozenset("\\.^$*+?{}[]|()")


def _literal_prefix(pattern: str) -> str:
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


def _header_test(spec: HeaderMatch) -> Callable[[Mapping[str, str]], bool]:
    name = spec.name
    if spec.present is not None:
        present = spec.present
        return lambda headers: (name in headers) == present
    if spec.equals is not None:
        wanted = spec.equals
        return lambda headers: headers.get(name) == wanted
    compiled = re2.compile(spec.regex or "")
    return lambda headers: name in headers and compiled.fullmatch(headers[name]) is not None


def _host_test(hosts: list[str]) -> Callable[[str], bool] | None:
    if not hosts:
        return None
    exact = frozenset(h for h in hosts if not h.startswith("*."))
    suffixes = tuple(h[1:] for h in hosts if h.startswith("*."))  # ".example.com"
    return lambda host: host in exact or (host.endswith(suffixes) and host not in suffixes)


@dataclass(frozen=True, slots=True)
class HeaderFromClaim:
    header: str
    path: tuple[str, ...]

    def render(self, claims: Claims, max_bytes: int) -> str | None:
        value = render_header_value(get_claim(claims, self.path))
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
    mode: Mode
    claim_headers: tuple[HeaderFromClaim, ...]  # added to the providers' claim_to_headers
    static_headers: tuple[tuple[str, str], ...]

    @classmethod
    def compile(cls, name: str, rule: Rule, config: Config) -> CompiledRule:
        delimiter = config.nested_claim_delimiter
        requires = rule.requires
        return cls(
            name=name,
            match_path=compile_path(rule.match, config.paths.ignore_case),
            methods=frozenset(rule.match.methods),
            host_ok=_host_test(rule.match.hosts),
            header_tests=tuple(_header_test(h) for h in rule.match.headers),
            context=tuple(rule.match.context.items()),
            public=rule.public,
            providers=requires.providers if requires else (),
            optional=requires.optional if requires else False,
            every=requires.every if requires else False,
            conditions=compile_conditions(rule.claims, delimiter),
            mode=rule.mode or config.mode,
            claim_headers=tuple(
                HeaderFromClaim(m.header, tuple(m.claim.split(delimiter)))
                for m in rule.claim_to_headers
            ),
            static_headers=tuple(rule.headers.items()),
        )

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


@dataclass(frozen=True, slots=True)
class Policy:
    rules: tuple[CompiledRule, ...]

    @classmethod
    def compile(cls, config: Config) -> Policy:
        return cls(
            tuple(
                CompiledRule.compile(config.rule_name(i), rule, config)
                for i, rule in enumerate(config.rules)
            )
        )

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
        return False  # what a pattern matches is not analysed
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
        return _literal_prefix(match.regex)
    return ""
