"""Find the bearer token in a request: headers, query parameters, cookies. No I/O."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import Enum

from authz.config import Provider
from authz.model import RequestAttributes, query_pairs


class Location(Enum):
    HEADER = "header"
    PARAM = "param"
    COOKIE = "cookie"


@dataclass(frozen=True, slots=True)
class FoundToken:
    token: str
    location: Location
    name: str  # header, parameter or cookie name


@dataclass(frozen=True, slots=True)
class StripPlan:
    """Every copy of a token in a request, for ``forward: false`` to remove them all."""

    headers: tuple[str, ...]
    params: tuple[str, ...]  # raw names as they appear in the query, percent-encoding kept
    cookies: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HeaderSource:
    name: str
    prefix: str


@dataclass(frozen=True, slots=True)
class TokenSources:
    """Where one provider looks for its token, in order: headers, params, cookies."""

    headers: tuple[HeaderSource, ...]
    params: tuple[str, ...]
    cookies: tuple[str, ...]

    @classmethod
    def from_provider(cls, provider: Provider) -> TokenSources:
        return cls(
            headers=tuple(HeaderSource(h.name, h.value_prefix) for h in provider.from_headers),
            params=tuple(provider.from_params),
            cookies=tuple(provider.from_cookies),
        )

    def find(self, request: RequestAttributes) -> FoundToken | None:
        for source in self.headers:
            value = request.headers.get(source.name)
            if value is None:
                continue
            # The auth scheme is case-insensitive (RFC 7235), so the prefix is compared that way.
            if not self._bears_token(source, value):
                continue
            token = value[len(source.prefix) :].strip()
            if token:
                return FoundToken(token, Location.HEADER, source.name)
        if self.params and request.query:
            params = request.query_params
            for name in self.params:
                token = params.get(name, "").strip()
                if token:
                    return FoundToken(token, Location.PARAM, name)
        if self.cookies and "cookie" in request.headers:
            cookies = parse_cookies(request.headers["cookie"])
            for name in self.cookies:
                token = cookies.get(name, "").strip()
                if token:
                    return FoundToken(token, Location.COOKIE, name)
        return None

    def _bears_token(self, source: HeaderSource, value: str) -> bool:
        return not source.prefix or value[: len(source.prefix)].lower() == source.prefix.lower()

    def strip_plan(self, request: RequestAttributes) -> StripPlan:
        headers = tuple(
            s.name
            for s in self.headers
            if s.name in request.headers and self._bears_token(s, request.headers[s.name])
        )
        params = (
            tuple(
                dict.fromkeys(
                    raw for raw, name, _ in query_pairs(request.query) if name in self.params
                )
            )
            if self.params
            else ()
        )
        cookies: tuple[str, ...] = ()
        if self.cookies and "cookie" in request.headers:
            present = parse_cookies(request.headers["cookie"])
            cookies = tuple(name for name in self.cookies if name in present)
        return StripPlan(headers, params, cookies)


def parse_cookies(header: str) -> dict[str, str]:
    """Cookie header to a dict; the first cookie of a name wins (RFC 6265 ordering).

    Envoy joins several cookie headers with "; ", so one split handles both forms.
    """
    cookies: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.partition("=")
        name = name.strip()
        if sep and name:
            cookies.setdefault(name, value.strip().strip('"'))
    return cookies


def cookie_header_without(header: str, names: Collection[str]) -> str:
    """The Cookie header with every cookie called one of ``names`` removed."""
    return "; ".join(
        part.strip()
        for part in header.split(";")
        if part.strip() and part.strip().partition("=")[0].strip() not in names
    )
