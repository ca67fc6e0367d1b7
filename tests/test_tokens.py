from __future__ import annotations

import pytest

from authz.model import RequestAttributes
from authz.tokens import (
    FoundToken,
    HeaderSource,
    Location,
    StripPlan,
    TokenSources,
    cookie_header_without,
    parse_cookies,
)

SOURCES = TokenSources(
    headers=(HeaderSource("authorization", "Bearer "), HeaderSource("x-token", "")),
    params=("access_token",),
    cookies=("session",),
)


def req(path: str = "/", **headers: str) -> RequestAttributes:
    return RequestAttributes("GET", "h", path, {k.replace("_", "-"): v for k, v in headers.items()})


CASES = [
    (
        "bearer header",
        req(authorization="Bearer abc"),
        FoundToken("abc", Location.HEADER, "authorization"),
    ),
    (
        "scheme is case-insensitive",
        req(authorization="bearer abc"),
        FoundToken("abc", Location.HEADER, "authorization"),
    ),
    ("basic auth is not a bearer token", req(authorization="Basic abc"), None),
    ("empty bearer", req(authorization="Bearer   "), None),
    ("second header", req(x_token="xyz"), FoundToken("xyz", Location.HEADER, "x-token")),
    (
        "header wins over param",
        req("/?access_token=p", authorization="Bearer h"),
        FoundToken("h", Location.HEADER, "authorization"),
    ),
    ("query param", req("/a?x=1&access_token=p"), FoundToken("p", Location.PARAM, "access_token")),
    (
        "percent-encoded param",
        req("/a?access_token=a%2Eb"),
        FoundToken("a.b", Location.PARAM, "access_token"),
    ),
    ("blank param", req("/a?access_token="), None),
    ("cookie", req(cookie="a=1; session=c; b=2"), FoundToken("c", Location.COOKIE, "session")),
    ("quoted cookie", req(cookie='session="c"'), FoundToken("c", Location.COOKIE, "session")),
    (
        "first cookie wins",
        req(cookie="session=c1; session=c2"),
        FoundToken("c1", Location.COOKIE, "session"),
    ),
    ("nothing", req(), None),
]


@pytest.mark.parametrize(("name", "request_", "expected"), CASES, ids=[c[0] for c in CASES])
def test_find(name: str, request_: RequestAttributes, expected: FoundToken | None) -> None:
    assert SOURCES.find(request_) == expected


def test_parse_cookies() -> None:
    assert parse_cookies("a=1;b=2; c = 3 ;junk;=x") == {"a": "1", "b": "2", "c": "3"}


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("a=1; session=t; b=2", "a=1; b=2"),
        ("session=t", ""),
        ("session=t;session=u;a=1", "a=1"),
        ("sessionx=1; session=t", "sessionx=1"),
    ],
)
def test_cookie_header_without(header: str, expected: str) -> None:
    assert cookie_header_without(header, ("session",)) == expected
    assert cookie_header_without("a=1; token=x; session=y", ("token", "session")) == "a=1"


@pytest.mark.parametrize(
    ("request_", "plan"),
    [
        (req(authorization="Bearer a"), StripPlan(("authorization",), (), ())),
        (req(authorization="Basic a"), StripPlan((), (), ())),
        (
            req(
                "/?access_token=a&access%5Ftoken=b&x=1&access_token=c",
                x_token="t",
                cookie="session=s; other=o",
            ),
            StripPlan(("x-token",), ("access_token", "access%5Ftoken"), ("session",)),
        ),
        (req("/?access_token"), StripPlan((), ("access_token",), ())),
    ],
)
def test_strip_plan_finds_every_copy(request_: RequestAttributes, plan: StripPlan) -> None:
    assert SOURCES.strip_plan(request_) == plan


def test_percent_encoded_parameter_names_are_decoded() -> None:
    assert SOURCES.find(req("/?access%5Ftoken=z")) == FoundToken(
        "z", Location.PARAM, "access_token"
    )
