"""The HTTP authorization endpoint in each style, against a running App."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request
from yarl import URL

from authz.adapters.original_request import Style, to_attributes
from authz.config import ConfigError, parse_config
from authz.core.errors import InvalidHost
from authz.runtime.app import App
from tests.support import (
    LISTEN_ANYWHERE,
    FakeClock,
    Signer,
    config_data,
    provider,
    wall_clock_claims,
)


def http_config_data(jwks: dict[str, Any], style: str) -> dict[str, Any]:
    corp = provider(
        jwks={"inline": jwks}, claim_to_headers=[{"header": "x-user-id", "claim": "sub"}]
    )
    rules = [
        {"match": {"prefix": "/public"}, "public": True},
        {"match": {"prefix": "/", "methods": ["GET"]}, "requires": {"provider": "corp"}},
    ]
    return config_data(
        listen=LISTEN_ANYWHERE,
        http_authz={"listen": "127.0.0.1:0", "original_request": style, "path_prefix": "/authz"},
        providers={"corp": corp},
        rules=rules,
    )


def config(jwks: dict[str, Any], style: str) -> Any:
    return parse_config(http_config_data(jwks, style))


def ingress_nginx(url: str, host: str = "h", upstream: str | None = None) -> dict[str, str]:
    """The headers naming a request that ingress-nginx sends with the recipe's
    auth-proxy-set-headers: X-Authz-Host ($host, ``host``) and X-Authz-Upstream-Host
    ($best_http_host, ``upstream``, by default ``host``)."""
    return {
        "x_original_url": url,
        "x_original_method": "GET",
        "x_authz_host": host,
        "x_authz_upstream_host": host if upstream is None else upstream,
    }


async def ask(app: App, path: str, method: str = "GET", **headers: str) -> aiohttp.ClientResponse:
    assert app.http_authz is not None
    async with aiohttp.ClientSession() as session:
        response = await session.request(
            method,
            f"http://127.0.0.1:{app.http_authz.port}{path}",
            headers={k.replace("_", "-"): v for k, v in headers.items()},
        )
        await response.read()
        return response


async def test_envoy_style(jwks: dict[str, Any], rsa_signer: Signer) -> None:
    token = rsa_signer.token(**wall_clock_claims())
    async with App(config(jwks, "envoy")) as app:
        allowed = await ask(app, "/authz/items?x=1", authorization=f"Bearer {token}")
        assert allowed.status == 200
        assert allowed.headers["x-user-id"] == "alice"
        removed = allowed.headers["x-envoy-auth-headers-to-remove"].split(",")
        assert "authorization" in removed
        denied = await ask(app, "/authz/items")
        assert denied.status == 401
        assert denied.headers["www-authenticate"].startswith("Bearer realm=")
        assert json.loads(await denied.read())["error"] == "unauthorized"
        wrong_method = await ask(app, "/authz/items", "POST", authorization=f"Bearer {token}")
        assert wrong_method.status == 403  # the original method reaches the rules


@pytest.mark.parametrize(
    ("style", "good", "spoof"),
    [
        (
            "nginx",
            {"x_original_uri": "/items", "x_original_method": "GET"},
            {"x_forwarded_uri": "/public", "x_forwarded_method": "GET"},
        ),
        (
            "ingress-nginx",
            ingress_nginx("https://api.test/items", "api.test"),
            {"x_original_uri": "/public", "x_original_method": "GET"},
        ),
        *(
            (
                style,
                {
                    "x_forwarded_uri": "/items",
                    "x_forwarded_method": "GET",
                    "x_forwarded_host": "api.test",
                },
                {"x_original_uri": "/public", "x_original_method": "GET"},
            )
            for style in ("traefik", "caddy")
        ),
    ],
)
async def test_forwarding_styles_trust_only_their_own_headers(
    jwks: dict[str, Any],
    rsa_signer: Signer,
    style: str,
    good: dict[str, str],
    spoof: dict[str, str],
) -> None:
    token = rsa_signer.token(**wall_clock_claims())
    async with App(config(jwks, style)) as app:
        allowed = await ask(app, "/check", authorization=f"Bearer {token}", **good)
        assert allowed.status == 200 and allowed.headers["x-user-id"] == "alice"
        assert "x-envoy-auth-headers-to-remove" not in allowed.headers
        # The other style's headers claim a public path: they are not trusted here.
        refused = await ask(app, "/check", **spoof)
        assert refused.status == 400
        assert json.loads(await refused.read())["error"] == "invalid_request"
        no_token = await ask(app, "/check", **good)
        assert no_token.status == 401


async def test_repeated_headers_are_joined_not_replaced(jwks: dict[str, Any], rsa_signer: Signer):
    token = rsa_signer.token(**wall_clock_claims())
    async with App(config(jwks, "nginx")) as app, aiohttp.ClientSession() as session:
        assert app.http_authz is not None
        headers = [
            ("x-original-uri", "/items"),
            ("x-original-method", "GET"),
            ("authorization", "Bearer garbage"),
            ("authorization", f"Bearer {token}"),
        ]
        async with session.get(
            f"http://127.0.0.1:{app.http_authz.port}/check", headers=headers
        ) as response:
            assert response.status == 401  # the first copy is not silently dropped


@pytest.mark.parametrize(
    "path",
    [
        "/authz/x%0a",
        "/authz/admin/..%0a/public",
        "/authz/public/%0D",
        "/authz/a%09b",
        "/authz/a%7f",
    ],
)
async def test_every_path_gets_a_decision_and_control_characters_are_invalid_paths(
    jwks: dict[str, Any], path: str
) -> None:
    async with App(config(jwks, "envoy")) as app, aiohttp.ClientSession() as session:
        assert app.http_authz is not None
        url = URL(f"http://127.0.0.1:{app.http_authz.port}{path}", encoded=True)
        async with session.get(url) as response:
            assert response.status == 400
            assert response.headers["content-type"] == "application/json"
            assert json.loads(await response.read())["error"] == "invalid_request"
        page = app.metrics.render().decode()
        assert 'authz_checks_total{decision="deny",provider="none",reason="invalid_path"' in page


async def test_a_public_path_is_allowed_whatever_the_router_would_say(jwks: dict[str, Any]):
    async with App(config(jwks, "envoy")) as app, aiohttp.ClientSession() as session:
        assert app.http_authz is not None
        for path in ("/authz/public/%E2%82%AC", "/authz/public/%20x", "/authz/public"):
            url = URL(f"http://127.0.0.1:{app.http_authz.port}{path}", encoded=True)
            async with session.get(url) as response:
                assert response.status == 200, path


def with_provider(style: str, jwks: dict[str, Any], **settings: Any) -> dict[str, Any]:
    data = http_config_data(jwks, style)
    data["providers"]["corp"].update(settings)
    return data


@pytest.mark.parametrize(
    ("style", "provider", "refused"),
    [
        ("envoy", {"from_params": ["access_token"]}, "cannot remove a query parameter"),
        ("nginx", {"from_params": ["access_token"]}, "cannot remove a query parameter"),
        ("traefik", {"from_cookies": ["session"]}, "cannot remove one cookie"),
        ("caddy", {"from_params": ["access_token"]}, "cannot remove a query parameter"),
        ("nginx", {"from_cookies": ["session"]}, "cannot remove one cookie"),
        ("ingress-nginx", {"from_params": ["access_token"]}, "cannot remove a query parameter"),
        ("ingress-nginx", {"from_cookies": ["session"]}, "cannot remove one cookie"),
        ("envoy", {"from_cookies": ["session"]}, None),  # Envoy rewrites the Cookie header
        ("nginx", {"from_cookies": ["session"], "forward": True}, None),
    ],
)
def test_config_refuses_token_locations_the_proxy_cannot_strip(
    jwks: dict[str, Any], style: str, provider: dict[str, Any], refused: str | None
) -> None:
    settings = with_provider(style, jwks, **provider)
    if refused is None:
        parse_config(settings)
    else:
        with pytest.raises(ConfigError, match=refused):
            parse_config(settings)


@pytest.mark.parametrize(
    ("style", "query_removable", "cookie_rewritable"),
    [
        ("envoy", False, True),
        ("nginx", False, False),
        ("ingress-nginx", False, False),
        ("traefik", False, False),
        ("caddy", False, False),
    ],
)
def test_http_styles_say_what_their_proxy_can_remove(
    style: Style, query_removable: bool, cookie_rewritable: bool
) -> None:
    request = make_mocked_request(
        "GET",
        "/x",
        headers={
            "host": "h",
            "x-original-uri": "/x",
            "x-original-method": "GET",
            "x-forwarded-uri": "/x",
            "x-forwarded-method": "GET",
            "x-forwarded-host": "h",
            "x-original-url": "http://h/x",
            "x-authz-host": "h",
            "x-authz-upstream-host": "h",
        },
    )
    attributes = to_attributes(request, style, "")
    assert (attributes.query_removable, attributes.cookie_rewritable) == (
        query_removable,
        cookie_rewritable,
    )


async def test_method_override_is_refused_over_http(jwks: dict[str, Any]) -> None:
    async with App(config(jwks, "nginx")) as app:
        refused = await ask(
            app,
            "/check",
            x_original_uri="/public/x",
            x_original_method="GET",
            x_http_method_override="DELETE",
        )
        assert refused.status == 400
        assert json.loads(await refused.read())["error"] == "invalid_request"
        page = app.metrics.render().decode()
        assert 'authz_checks_total{decision="deny",provider="none",reason="method_override"' in page


async def raw_exchange(port: int, data: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_header_lines_up_to_authz_limits_reach_authz(jwks: dict[str, Any]) -> None:
    """aiohttp's parser refuses lines over 8190 bytes by default: a 9 KB Cookie on a public
    path got aiohttp's own 400 page, never an authz decision."""
    async with App(config(jwks, "envoy")) as app:
        assert app.http_authz is not None
        port = app.http_authz.port
        cookie = "a=" + "x" * 9000
        request = f"GET /authz/public HTTP/1.1\r\nHost: h\r\nCookie: {cookie}\r\n"
        status, _ = await raw_exchange(port, (request + "Connection: close\r\n\r\n").encode())
        assert status == 200
        big = "a=" + "x" * (96 * 1024 + 100)  # over authz's 96 KiB, under the parser's cap
        request = f"GET /authz/public HTTP/1.1\r\nHost: h\r\nCookie: {big}\r\n"
        status, body = await raw_exchange(port, (request + "Connection: close\r\n\r\n").encode())
        assert status == 431 and json.loads(body)["error"] == "invalid_request"


async def test_the_parser_log_never_quotes_the_request(
    jwks: dict[str, Any], rsa_signer: Signer, caplog: pytest.LogCaptureFixture
) -> None:
    token = rsa_signer.token(**wall_clock_claims())
    async with App(config(jwks, "envoy")) as app:
        assert app.http_authz is not None
        huge = f"session={token}" + "x" * (200 * 1024)
        request = f"GET /authz/public HTTP/1.1\r\nHost: h\r\nCookie: {huge}\r\n\r\n"
        status, _ = await raw_exchange(app.http_authz.port, request.encode())
        assert status == 400  # refused by aiohttp's parser, beyond every authz limit
    assert "refused by the parser" in caplog.text
    assert token[:40] not in caplog.text and "session=" not in caplog.text


async def test_bytes_that_are_not_utf8_are_a_decision_not_a_503(
    jwks: dict[str, Any], rsa_signer: Signer
) -> None:
    token = rsa_signer.token(**wall_clock_claims())
    async with App(config(jwks, "envoy")) as app:
        assert app.http_authz is not None
        port = app.http_authz.port
        head = b"GET /authz/items HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
        status, body = await raw_exchange(port, head + b"Authorization: Bearer \xff.a.b\r\n\r\n")
        assert (status, json.loads(body)["error"]) == (401, "invalid_token")
    settings = with_provider("envoy", jwks, from_cookies=["session"])
    async with App(parse_config(settings)) as app:
        assert app.http_authz is not None
        head = b"GET /authz/public HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
        cookie = b"Cookie: theme=\xe9; session=" + token.encode() + b"\r\n\r\n"
        status, body = await raw_exchange(app.http_authz.port, head + cookie)
        # the Cookie header cannot be written back without the token: refused, not a 503
        assert (status, json.loads(body)["error"]) == (400, "invalid_request")


NAMED_BY = {
    "nginx": ("X-Original-URI, X-Original-Method and Host", {"x_original_method": "GET"}),
    "ingress-nginx": (
        "X-Original-URL, X-Original-Method, X-Authz-Host and X-Authz-Upstream-Host",
        {"x_original_method": "GET"},
    ),
    "traefik": (
        "X-Forwarded-Uri, X-Forwarded-Method and X-Forwarded-Host",
        {"x_forwarded_uri": "/items"},
    ),
}
NAMED_BY["caddy"] = NAMED_BY["traefik"]


@pytest.mark.parametrize("style", sorted(NAMED_BY))
async def test_a_check_naming_no_request_is_refused_counted_and_logged(
    jwks: dict[str, Any], style: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A proxy that leaves out a header its style needs (or is configured as another
    proxy) gets a 400 that says which headers, in the metrics and the decision log, and
    one warning a minute rather than one a request."""
    needed, partial = NAMED_BY[style]
    settings = http_config_data(jwks, style)
    settings["decision_log"] = {"enabled": True}
    clock = FakeClock(1000.0)
    caplog.set_level(logging.INFO)
    async with App(parse_config(settings), monotonic=clock) as app:
        refused = await ask(app, "/check", x_request_id="r-1", **partial)
        assert refused.status == 400
        body = json.loads(await refused.read())
        assert body == {
            "error": "invalid_request",
            "error_description": f"the proxy did not send {needed} naming the request to check",
        }
        for _ in range(3):
            assert (await ask(app, "/check", x_forwarded_host="h")).status == 400
        clock.advance(61)
        assert (await ask(app, "/check")).status == 400
        page = app.metrics.render().decode()
        assert (
            'authz_checks_total{decision="deny",provider="none",'
            'reason="missing_original_request",rule="none"} 5.0'
        ) in page
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    refusals = [w for w in warnings if "missing_original_request" in w]
    assert len(refusals) == 2, warnings
    assert f"original_request: {style}" in refusals[0]
    assert "3 more since the last warning" in refusals[1]
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "authz.decisions"]
    first = lines[0]
    assert (first["request_id"], first["reason"], first["status"]) == (
        "r-1",
        "missing_original_request",
        400,
    )
    assert len(lines) == 5


@pytest.mark.parametrize(
    ("style", "headers"),
    [
        ("nginx", [("x-original-uri", "/items"), ("x-original-uri", "/public")]),
        ("traefik", [("x-forwarded-method", "GET"), ("x-forwarded-method", "POST")]),
        ("traefik", [("x-forwarded-host", "api.test"), ("x-forwarded-host", "admin.test")]),
        ("ingress-nginx", [("x-original-url", "http://h/items"), ("x-original-url", "http://h/")]),
        ("ingress-nginx", [("x-authz-host", "h"), ("x-authz-host", "h")]),
    ],
)
async def test_a_header_naming_the_request_twice_is_refused(
    jwks: dict[str, Any], style: str, headers: list[tuple[str, str]]
) -> None:
    complete = {
        "nginx": [("x-original-uri", "/items"), ("x-original-method", "GET")],
        "traefik": [
            ("x-forwarded-uri", "/items"),
            ("x-forwarded-method", "GET"),
            ("x-forwarded-host", "api.test"),
        ],
        "ingress-nginx": [
            (name.replace("_", "-"), value)
            for name, value in ingress_nginx("http://h/items").items()
        ],
    }[style]
    twice = {name for name, _ in headers}
    complete = [(name, value) for name, value in complete if name not in twice]
    async with App(config(jwks, style)) as app, aiohttp.ClientSession() as session:
        assert app.http_authz is not None
        url = f"http://127.0.0.1:{app.http_authz.port}/check"
        async with session.get(url, headers=[*complete, *headers]) as response:
            assert response.status == 400
        page = app.metrics.render().decode()
        assert 'reason="missing_original_request"' in page


def test_the_envoy_style_always_names_the_request() -> None:
    request = make_mocked_request("PUT", "/authz/x?y=1", headers={"Host": "h"})
    attributes = to_attributes(request, "envoy", "/authz")
    assert (attributes.method, attributes.host, attributes.path) == ("PUT", "h", "/x?y=1")
    # Never aiohttp's stand-in for a missing Host: authz's own address or machine name.
    for headers in ({}, {"Host": ""}):
        with pytest.raises(InvalidHost):
            to_attributes(make_mocked_request("GET", "/x", headers=headers), "envoy", "")


TRAEFIK_NAMES = {
    "x_forwarded_uri": "/public/x",
    "x_forwarded_method": "GET",
    "x_forwarded_host": "h",
}


@pytest.mark.parametrize(
    ("style", "names"),
    [
        ("nginx", {"x_original_uri": "/public/x", "x_original_method": "GET"}),
        ("caddy", TRAEFIK_NAMES),
        ("ingress-nginx", ingress_nginx("http://h/public/x")),
    ],
)
async def test_proxies_that_copy_headers_get_every_identity_header(
    jwks: dict[str, Any], style: str, names: dict[str, str]
) -> None:
    """Caddy 2.5.1 to 2.8.4 send their placeholder text on for a copy_headers header
    the answer lacks: each one is answered, empty when unset. nginx sends no header for
    an empty value, as for an absent one: the upstream sees none either way."""
    async with App(config(jwks, style)) as app:
        public = await ask(app, "/check", x_user_id="mallory", **names)
        assert public.status == 200
        assert public.headers["x-user-id"] == ""
        assert public.headers["x-authz-dry-run"] == ""
        assert "authorization" not in public.headers  # the token is not an identity header


async def test_traefik_is_answered_every_identity_header_as_caddy_is(
    jwks: dict[str, Any], rsa_signer: Signer
) -> None:
    """The traefik style answers an unset identity header empty too: a Caddy configured
    with it (as its recipe once said) would otherwise send its placeholder text on."""
    token = rsa_signer.token(**wall_clock_claims())
    async with App(config(jwks, "traefik")) as app:
        public = await ask(app, "/check", x_user_id="mallory", **TRAEFIK_NAMES)
        assert public.status == 200
        assert (public.headers["x-user-id"], public.headers["x-authz-dry-run"]) == ("", "")
        names = {**TRAEFIK_NAMES, "x_forwarded_uri": "/items"}
        allowed = await ask(app, "/check", authorization=f"Bearer {token}", **names)
        assert allowed.status == 200 and allowed.headers["x-user-id"] == "alice"
        assert allowed.headers["x-authz-dry-run"] == ""


async def test_envoy_removes_identity_headers_rather_than_emptying_them(
    jwks: dict[str, Any],
) -> None:
    """Envoy sends an empty header on to the upstream: there, they are removed instead."""
    async with App(config(jwks, "envoy")) as app:
        public = await ask(app, "/authz/public/x", x_user_id="mallory")
        assert public.status == 200
        assert "x-user-id" not in public.headers
        removed = public.headers["x-envoy-auth-headers-to-remove"].split(",")
        assert {"x-user-id", "x-authz-dry-run"} <= set(removed)


@pytest.mark.parametrize(
    ("url", "read"),
    [
        ("https://Shop.Example:8443/a/b?x=1", ("https", "Shop.Example:8443", "/a/b?x=1")),
        ("HTTP://h/", ("http", "h", "/")),
        ("http://[::1]:8080/x", ("http", "[::1]:8080", "/x")),
        # Judged by the core as sent: the dot-segment and the missing path are refused
        # there as paths.
        ("http://h/public/../admin", ("http", "h", "/public/../admin")),
        ("http://h?x=1", ("http", "h", "?x=1")),
    ],
)
def test_ingress_nginx_reads_the_whole_original_url(url: str, read: tuple[str, str, str]) -> None:
    # nginx's $host: lower-cased, without the port
    host = {"Shop.Example:8443": "shop.example", "[::1]:8080": "[::1]"}.get(read[1], read[1])
    request = make_mocked_request(
        "GET",
        "/check",
        headers={
            "host": "authz.authz.svc",
            "x-original-url": url,
            "x-original-method": "get",
            "x-authz-host": host,
            "x-authz-upstream-host": read[1],
        },
    )
    attributes = to_attributes(request, "ingress-nginx", "")
    assert (attributes.scheme, attributes.host, attributes.path) == read
    assert attributes.method == "GET"
    assert not {"x-original-url", "x-authz-host", "x-authz-upstream-host"} & set(attributes.headers)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("/items", "missing_original_request"),  # a path is not the URL
        ("ftp://h/items", "missing_original_request"),
        ("h/items", "missing_original_request"),
        ("http:/h/items", "missing_original_request"),
        ("http:///items", "invalid_host"),  # no Host from the client
        ("http://h@h/items", "invalid_host"),
        ("http://h,h/items", "invalid_host"),
        ("http://h/public/..;/items", "invalid_path"),
        ("http://h/%2e%2e/items", "invalid_path"),
        ("http://h?x=1", "invalid_path"),
        ("http://h/items#x", "invalid_path"),
    ],
)
async def test_ingress_nginx_refuses_what_it_cannot_read_one_way(
    jwks: dict[str, Any], url: str, reason: str
) -> None:
    async with App(config(jwks, "ingress-nginx")) as app:
        refused = await ask(app, "/check", **ingress_nginx(url, "h"))
        assert refused.status == 400
        page = app.metrics.render().decode()
        assert f'reason="{reason}"' in page


async def test_ingress_nginx_host_rules_judge_the_urls_host(
    jwks: dict[str, Any], rsa_signer: Signer
) -> None:
    """ingress-nginx sends Host: the auth service's own name; the client's host is the
    URL's (the same $http_host the upstream gets as Host)."""
    settings = http_config_data(jwks, "ingress-nginx")
    settings["rules"].insert(
        0,
        {
            "match": {"hosts": ["admin.test"]},
            "public": False,
            "requires": {"provider": "corp"},
            "claims": [{"claim": "sub", "equals": "root"}],
        },
    )
    token = rsa_signer.token(**wall_clock_claims())
    async with App(parse_config(settings)) as app:
        admin = await ask(
            app,
            "/check",
            host="api.test",
            authorization=f"Bearer {token}",
            **ingress_nginx("http://admin.test/items", "admin.test"),
        )
        assert admin.status == 403
        api = await ask(
            app,
            "/check",
            host="admin.test",
            authorization=f"Bearer {token}",
            **ingress_nginx("http://api.test/items", "api.test"),
        )
        assert api.status == 200


# Each style's complete check naming a request, less its host, which the test adds.
HOSTLESS = {
    "nginx": "X-Original-URI: /items\r\nX-Original-Method: GET\r\n",
    "traefik": "X-Forwarded-Uri: /items\r\nX-Forwarded-Method: GET\r\n",
    "ingress-nginx": "X-Original-Method: GET\r\nX-Authz-Host: h\r\nX-Authz-Upstream-Host: h\r\n",
}
HOSTLESS["caddy"] = HOSTLESS["traefik"]
HOST_LINES = {
    # (the header the style reads the host from, lines without one, lines with it empty)
    "nginx": ("Host", "", "Host: \r\n"),
    "traefik": ("X-Forwarded-Host", "Host: authz.internal\r\n", "X-Forwarded-Host: \r\n"),
    # nginx's $scheme://$http_host$request_uri when the client sent no Host
    "ingress-nginx": (
        "X-Original-URL",
        "Host: authz.internal\r\nX-Original-URL: http:///items\r\n",
        "Host: authz.internal\r\nX-Original-URL: https:///items\r\n",
    ),
}
HOST_LINES["caddy"] = HOST_LINES["traefik"]


@pytest.mark.parametrize("empty", [False, True], ids=["absent", "empty"])
@pytest.mark.parametrize("style", sorted(HOSTLESS))
async def test_a_check_naming_no_host_is_refused_not_guessed(
    jwks: dict[str, Any], rsa_signer: Signer, style: str, empty: bool
) -> None:
    """No host, or an empty one (an HTTP/1.0 client sent none: Caddy forwards an empty
    X-Forwarded-Host, Traefik none): no host rule could judge the request, and the check
    request's own Host (authz's address; aiohttp's machine name without one) is not the
    client's. Refused with a valid token, never judged as "" or as authz's own name; an
    invalid_host, as the client's doing, not a proxy to warn about."""
    token = rsa_signer.token(**wall_clock_claims())
    named, absent, blank = HOST_LINES[style]
    async with App(config(jwks, style)) as app:
        assert app.http_authz is not None
        request = (
            "GET /check HTTP/1.0\r\n"
            + HOSTLESS[style]
            + (blank if empty else absent)
            + f"Authorization: Bearer {token}\r\n\r\n"
        )
        status, body = await raw_exchange(app.http_authz.port, request.encode())
        assert status == 400, body
        assert json.loads(body)["error"] == "invalid_request"
        page = app.metrics.render().decode()
        assert 'reason="invalid_host"' in page
        assert 'reason="missing_original_request"' not in page
        assert named  # the header that was empty: said in the log detail, not to clients


@pytest.mark.parametrize(
    ("url", "host", "upstream", "judged"),
    [
        # the same host, as nginx's $host keeps it: lower-cased, without port or final dot
        ("http://Shop.Example:8443/items", "shop.example", "Shop.Example:8443", "allow"),
        # a final dot: one site to nginx, maybe another to other routers: refused
        ("http://shop.example./items", "shop.example", "shop.example.", "invalid_host"),
        ("http://[::1]:80/items", "[::1]", "[::1]:80", "allow"),
        # an absolute-form request line: nginx routes by its host, not the Host header's
        ("http://shop.example/items", "admin.example", "shop.example", "invalid_host"),
        # use-forwarded-headers: the upstream gets the client's X-Forwarded-Host as Host
        ("http://shop.example/items", "shop.example", "admin.example", "invalid_host"),
        ("http://shop.example/items", "shop.example", "shop.example.evil", "invalid_host"),
        ("http://shop.example/items", "shop.example", "admin.example:1:2", "invalid_host"),
        ("http://shop.example/items", "shop.example", "shop.example,x", "invalid_host"),
        ("http://shop.example/items", "shop.example", "", "missing_original_request"),
        ("http://shop.example/items", "", "shop.example", "missing_original_request"),
    ],
)
async def test_ingress_nginx_refuses_hosts_that_nginx_reads_apart(
    jwks: dict[str, Any], rsa_signer: Signer, url: str, host: str, upstream: str, judged: str
) -> None:
    """X-Original-URL holds the client's Host header; nginx routes by $host (X-Authz-Host)
    and sends the upstream $best_http_host (X-Authz-Upstream-Host). A request whose
    hosts differ is refused, whatever the token: no host rule can judge it one way."""
    token = rsa_signer.token(**wall_clock_claims())
    async with App(config(jwks, "ingress-nginx")) as app:
        reply = await ask(
            app, "/check", authorization=f"Bearer {token}", **ingress_nginx(url, host, upstream)
        )
        page = app.metrics.render().decode()
    if judged == "allow":
        assert reply.status == 200
    else:
        assert reply.status == 400
        assert f'reason="{judged}"' in page
