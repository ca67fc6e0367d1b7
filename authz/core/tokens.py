"""Find the bearer token in a request, and every copy of it to strip: headers, query, cookies.

Parameter and cookie names are compared as an upstream's parsers might read them
(``name_key``): a copy spelt ``ACCESS_TOKEN``, ``access%5Ftoken``, ``access_token[]``,
``[access_token]`` or ``access.token`` is still a copy of ``access_token``, and is stripped
with it. Separators are read as liberally: a query splits on ``&`` and ``;``, a Cookie
header on ``;`` and ``,`` (Envoy joins repeated Cookie lines with ``,``) and on whitespace
(Python's SimpleCookie), a header on ``,`` (repeated lines, joined). Only the exact name is
ever read as the token. No I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote, unquote_plus

from authz.core.errors import AmbiguousToken
from authz.core.model import RequestAttributes, query_pairs


def name_key(name: str, *, plus_is_space: bool = True) -> str:
    """A parameter or cookie name as the most liberal upstream parser reads it.

    Percent-decoded, cut at a NUL (PHP), stripped and lower-cased; ``[a]`` read as ``a``
    (Express's qs, Rack), a trailing ``[...]`` cut (PHP reads ``a[]`` and ``a[0]`` as ``a``),
    an unmatched ``[``, ``.`` and spaces read as ``_`` (PHP again).
    """
    if name.islower() and name.replace("_", "").isalnum():
        return name  # the common case: nothing to decode, fold or cut
    key = (unquote_plus(name) if plus_is_space else unquote(name)).split("\x00", 1)[0]
    key = key.strip().lower()
    if key.startswith("["):
        inner, closed, _ = key[1:].partition("]")
        key = inner if closed else key[1:]
    bracket = key.find("[")
    if bracket > 0:
        key = key[:bracket] if "]" in key[bracket:] else key.replace("[", "_")
    return key.replace(".", "_").replace(" ", "_")


def query_names(query: str) -> list[tuple[str, bool]]:
    """(raw name, behind a ";") of every parameter a parser splitting on ``&`` and ``;``
    reads. A name behind a ``;`` is inside another parameter for parsers (and proxies)
    that split on ``&`` alone."""
    names: list[tuple[str, bool]] = []
    for part in query.split("&"):
        pieces = part.split(";")
        names.extend((piece.partition("=")[0], index > 0) for index, piece in enumerate(pieces))
    return names


_COOKIE_SEPARATORS = re.compile(r"[;,]")


def cookie_pieces(header: str) -> list[str]:
    """The ``name=value`` pieces of a Cookie header, split on ``;`` and on ``,``."""
    return [piece.strip() for piece in _COOKIE_SEPARATORS.split(header) if piece.strip()]


def _piece_names(piece: str) -> list[str]:
    """The raw cookie names a liberal parser reads in one piece: its own, and those of
    ``name=value`` words after whitespace (SimpleCookie reads ``a=1 b=2`` as two)."""
    words = piece.split()
    return [piece.partition("=")[0].strip()] + [w.partition("=")[0] for w in words[1:] if "=" in w]


@dataclass(frozen=True, slots=True)
class HeaderSource:
    name: str
    prefix: str
    scheme: str = field(init=False, compare=False)  # the prefix stripped and lower-cased

    def __post_init__(self) -> None:
        object.__setattr__(self, "scheme", self.prefix.strip().lower())

    def bears_token(self, value: str) -> bool:
        """Whether a header value carries this source's kind of token anywhere.

        The scheme is compared case-insensitively (RFC 7235) and without the space after it,
        so that ``Bearer\\tT`` and ``bearerT``, which some upstream may still read as a
        bearer token, count as copies to strip; so does a copy after a ``,`` (repeated
        header lines arrive joined: ``Basic x,Bearer T``).
        """
        scheme = self.scheme
        if not scheme:
            return True
        if "," not in value:
            return value.lstrip()[: len(scheme)].lower() == scheme
        return any(item.lstrip()[: len(scheme)].lower() == scheme for item in value.split(","))


@dataclass(frozen=True, slots=True)
class StripPlan:
    """Every copy of a token in a request, for ``forward: false`` to remove them all."""

    headers: tuple[str, ...]
    params: tuple[str, ...]  # raw names as they appear in the query, percent-encoding kept
    cookies: frozenset[str]  # name_key of each cookie to drop
    params_unremovable: bool = False  # a copy after a ";" inside one parameter

    @property
    def empty(self) -> bool:
        return not (self.headers or self.params or self.cookies or self.params_unremovable)

    def cookie_header(self, header: str) -> str:
        """The Cookie header without the pieces that hold a cookie this plan drops."""
        return "; ".join(
            piece
            for piece in cookie_pieces(header)
            if not any(
                name_key(name, plus_is_space=False) in self.cookies for name in _piece_names(piece)
            )
        )


@dataclass(frozen=True, slots=True)
class TokenSources:
    """Where one or more providers look for tokens, in order: headers, params, cookies."""

    headers: tuple[HeaderSource, ...]
    params: tuple[str, ...]
    cookies: tuple[str, ...]
    # name_key of each param and cookie, computed once
    param_keys: frozenset[str] = field(init=False)
    cookie_keys: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "param_keys", frozenset(name_key(p) for p in self.params))
        cookie_keys = frozenset(name_key(c, plus_is_space=False) for c in self.cookies)
        object.__setattr__(self, "cookie_keys", cookie_keys)

    @classmethod
    def union(cls, sources: Iterable[TokenSources]) -> TokenSources:
        every = list(sources)
        return cls(
            headers=tuple(dict.fromkeys(h for s in every for h in s.headers)),
            params=tuple(dict.fromkeys(p for s in every for p in s.params)),
            cookies=tuple(dict.fromkeys(c for s in every for c in s.cookies)),
        )

    def find(self, request: RequestAttributes, *, strict: bool = False) -> str | None:
        """The token, or None. A parameter sent twice is never read (frameworks disagree on
        which copy wins); the first cookie of a name is (RFC 6265 sends the most specific
        first). ``strict`` (a provider that forwards its token): any second copy or other
        spelling of a header, parameter or cookie is AmbiguousToken, since the upstream
        reads it too.
        """
        for source in self.headers:
            value = request.headers.get(source.name)
            if value is None or not source.bears_token(value):
                continue
            if strict and source.prefix and len(value.split(",")) > 1:
                raise AmbiguousToken(f"header {source.name}: more than one value")
            if value[: len(source.prefix)].lower() != source.prefix.lower():
                continue
            token = value[len(source.prefix) :].strip()
            if token:
                return token
        if self.params and request.query:
            self._check_params(request.query, strict)
            pairs = query_pairs(request.query)
            for name in self.params:
                copies = [(d, v) for raw, d, v in pairs if name_key(raw) == name_key(name)]
                # Sent twice (or spelt twice): frameworks disagree on which copy wins.
                token = copies[0][1].strip() if len(copies) == 1 and copies[0][0] == name else ""
                if token:
                    return token
        if self.cookies and "cookie" in request.headers:
            header = request.headers["cookie"]
            if strict:
                self._check_cookies(header)
            for name in self.cookies:
                token = parse_cookies(header).get(name, "").strip()
                if token:
                    return token
        return None

    def _check_params(self, query: str, strict: bool) -> None:
        if not strict:
            return
        for name in self.params:
            spellings = [raw for raw, _ in query_names(query) if name_key(raw) == name_key(name)]
            if len(spellings) > 1 or any(unquote_plus(s) != name for s in spellings):
                raise AmbiguousToken(f"parameter {name}: more than one copy or spelling")

    def _check_cookies(self, header: str) -> None:
        for name in self.cookies:
            wanted = name_key(name, plus_is_space=False)
            spellings = [
                raw
                for piece in cookie_pieces(header)
                for raw in _piece_names(piece)
                if name_key(raw, plus_is_space=False) == wanted
            ]
            if len(spellings) > 1 or any(s != name for s in spellings):
                raise AmbiguousToken(f"cookie {name}: more than one copy or spelling")

    def strip_plan(self, request: RequestAttributes) -> StripPlan:
        headers = tuple(
            s.name
            for s in self.headers
            if s.name in request.headers and s.bears_token(request.headers[s.name])
        )
        params: list[str] = []
        unremovable = False
        query = request.query if self.params else ""
        if query:
            for raw, behind_semicolon in query_names(query):
                if name_key(raw) not in self.param_keys:
                    continue
                # x=1;access_token=T: parsers that also split on ";" read a copy here, and
                # no proxy can remove it without removing x.
                if behind_semicolon:
                    unremovable = True
                else:
                    params.append(raw)
        cookies: frozenset[str] = frozenset()
        if self.cookies and "cookie" in request.headers:
            present = {
                name_key(raw, plus_is_space=False)
                for piece in cookie_pieces(request.headers["cookie"])
                for raw in _piece_names(piece)
            }
            cookies = self.cookie_keys & present
        return StripPlan(headers, tuple(dict.fromkeys(params)), cookies, unremovable)


def parse_cookies(header: str) -> dict[str, str]:
    """Cookie header to a dict; the first cookie of a name wins (RFC 6265 ordering).

    Pieces are split on ";" and on ",": Envoy joins several Cookie lines with "; " over
    HTTP/2 and with "," over HTTP/1.1.
    """
    cookies: dict[str, str] = {}
    for piece in cookie_pieces(header):
        name, sep, value = piece.partition("=")
        name = name.strip()
        if sep and name:
            cookies.setdefault(name, value.strip().strip('"'))
    return cookies
