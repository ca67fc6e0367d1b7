from __future__ import annotations

import pytest

from authz.core.errors import AmbiguousToken
from authz.core.model import RequestAttributes
from authz.core.tokens import (
    HeaderSource,
    StripPlan,
    TokenSources,
    name_key,
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
        "abc",
    ),
    (
        "scheme is case-insensitive",
        req(authorization="bearer abc"),
        "abc",
    ),
    ("basic auth is not a bearer token", req(authorization="Basic abc"), None),
    ("empty bearer", req(authorization="Bearer   "), None),
    ("second header", req(x_token="xyz"), "xyz"),
    (
        "header wins over param",
        req("/?access_token=p", authorization="Bearer h"),
        "h",
    ),
    ("query param", req("/a?x=1&access_token=p"), "p"),
    (
        "percent-encoded param",
        req("/a?access_token=a%2Eb"),
        "a.b",
    ),
    ("blank param", req("/a?access_token="), None),
    ("cookie", req(cookie="a=1; session=c; b=2"), "c"),
    ("quoted cookie", req(cookie='session="c"'), "c"),
    (
        "first cookie wins",
        req(cookie="session=c1; session=c2"),
        "c1",
    ),
    ("nothing", req(), None),
]


@pytest.mark.parametrize(("name", "request_", "expected"), CASES, ids=[c[0] for c in CASES])
def test_find(name: str, request_: RequestAttributes, expected: str | None) -> None:
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
    assert StripPlan((), (), frozenset({"session"})).cookie_header(header) == expected
    both = StripPlan((), (), frozenset({"token", "session"}))
    assert both.cookie_header("a=1; token=x; session=y") == "a=1"


@pytest.mark.parametrize(
    ("request_", "plan"),
    [
        (req(authorization="Bearer a"), StripPlan(("authorization",), (), frozenset())),
        (req(authorization="bearer\ta"), StripPlan(("authorization",), (), frozenset())),
        (req(authorization="Basic a"), StripPlan((), (), frozenset())),
        (
            req(
                "/?access_token=a&access%5Ftoken=b&x=1&access_token=c",
                x_token="t",
                cookie="session=s; other=o",
            ),
            StripPlan(("x-token",), ("access_token", "access%5Ftoken"), frozenset({"session"})),
        ),
        (req("/?access_token"), StripPlan((), ("access_token",), frozenset())),
        # every spelling an upstream parser may read as the token's name
        (
            req("/?ACCESS_TOKEN=1&access_token[]=2&access_token%5B%5D=3&access.token=4&a=5"),
            StripPlan(
                (),
                ("ACCESS_TOKEN", "access_token[]", "access_token%5B%5D", "access.token"),
                frozenset(),
            ),
        ),
        (
            req(cookie="SESSION=1; sess%69on=2; other=3; Session=4"),
            StripPlan((), (), frozenset({"session"})),
        ),
        # a copy after ";" inside another parameter cannot be cut out by any proxy
        (req("/?x=1;access_token=t"), StripPlan((), (), frozenset(), params_unremovable=True)),
        (req("/?x=1;y=2"), StripPlan((), (), frozenset())),
        # Express's qs and Rack read [a] as a; PHP reads an unmatched [ as _ and stops at NUL
        (
            req("/?[access_token]=1&%5Baccess_token%5D=2&access[token=3&access_token%00x=4"),
            StripPlan(
                (),
                ("[access_token]", "%5Baccess_token%5D", "access[token", "access_token%00x"),
                frozenset(),
            ),
        ),
        # repeated header lines arrive joined with ","
        (req(authorization="Basic eA==,Bearer T"), StripPlan(("authorization",), (), frozenset())),
        # Envoy joins repeated Cookie lines with "," over HTTP/1.1; SimpleCookie splits on spaces
        (req(cookie="theme=dark,session=T"), StripPlan((), (), frozenset({"session"}))),
        (req(cookie="theme=dark session=T"), StripPlan((), (), frozenset({"session"}))),
    ],
)
def test_strip_plan_finds_every_copy(request_: RequestAttributes, plan: StripPlan) -> None:
    assert SOURCES.strip_plan(request_) == plan


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        ("SESSION=1; sess%69on=2; other=3; Session=4", "other=3"),
        ("theme=dark,session=T", "theme=dark"),  # two Cookie lines joined by Envoy
        ("session=T,theme=dark; a=1", "theme=dark; a=1"),
        ("theme=dark session=T; a=1", "a=1"),  # the piece that hides a copy goes whole
        ('a="x y"; session=T', 'a="x y"'),
    ],
)
def test_the_cookie_header_loses_every_copy_of_the_token_cookie(header: str, kept: str) -> None:
    assert SOURCES.strip_plan(req(cookie=header)).cookie_header(header) == kept


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("access_token", "access_token"),
        ("ACCESS_TOKEN", "access_token"),
        ("access%5Ftoken", "access_token"),
        ("access_token[]", "access_token"),
        ("access_token[0]", "access_token"),
        ("access.token", "access_token"),
        ("access+token", "access_token"),
        ("access-token", "access-token"),
        ("[access_token]", "access_token"),
        ("%5Baccess_token%5D", "access_token"),
        ("[access_token][x]", "access_token"),
        ("access[token", "access_token"),
        ("access_token%00.x", "access_token"),
    ],
)
def test_name_key(name: str, key: str) -> None:
    assert name_key(name) == key


@pytest.mark.parametrize(
    "request_",
    [
        req("/?access_token=a&access_token=b"),
        req("/?access_token=a&ACCESS_TOKEN=b"),
        req("/?ACCESS_TOKEN=a"),
        req("/?access_token[]=a"),
    ],
)
def test_a_parameter_sent_twice_or_spelt_otherwise_is_not_read(request_: RequestAttributes):
    assert SOURCES.find(request_) is None


@pytest.mark.parametrize(
    "request_",
    [
        req("/?access_token=a&access_token=b"),
        req("/?access_token=a&ACCESS_TOKEN=b"),
        req("/?access_token[]=a"),
        req(cookie="session=a; session=b"),
        req(cookie="session=a; SESSION=a"),
        req(cookie="Session=a"),
        req("/?access_token=a&x=1;access_token=b"),  # Rack 2 reads the second
        req(cookie="session=a; x=1, session=b"),  # SimpleCookie reads the second
        req(cookie="session=a x=1 session=b"),
        req(authorization="Basic eA==,Bearer T"),
    ],
)
def test_a_forwarded_token_location_must_hold_one_copy(request_: RequestAttributes) -> None:
    with pytest.raises(AmbiguousToken):
        SOURCES.find(request_, strict=True)


def test_percent_encoded_parameter_names_are_decoded() -> None:
    assert SOURCES.find(req("/?access%5Ftoken=z")) == "z"
