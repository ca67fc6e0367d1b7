"""The introspection HTTP client against a real local endpoint: client authentication,
every failure a fixed result, discovery of the endpoint, and the secret kept out of
errors."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote_plus, unquote_plus

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from authz.core.errors import IntrospectionUnavailable
from authz.keys.fetch import AiohttpFetcher
from authz.keys.introspection import EndpointSettings, HttpIntrospectionClient
from dev.stack import free_port

SECRET = "s3cret:with/odd&chars=="


class Endpoint:
    """An introspection endpoint whose answer the test sets; it records what it got."""

    def __init__(self) -> None:
        self.status = 200
        self.body: bytes = b'{"active": true, "aud": "api"}'
        self.delay_s = 0.0
        self.discovery: dict[str, Any] | None = None
        self.seen: list[tuple[dict[str, str], dict[str, str]]] = []
        app = web.Application()
        app.router.add_post("/introspect", self.introspect)
        app.router.add_post("/moved", self.moved)
        app.router.add_get("/.well-known/openid-configuration", self.openid_configuration)
        self.server = TestServer(app, host="127.0.0.1")

    async def introspect(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        self.seen.append((dict(request.headers), form))
        await asyncio.sleep(self.delay_s)
        return web.Response(status=self.status, body=self.body, content_type="application/json")

    async def moved(self, _: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/introspect")

    async def openid_configuration(self, _: web.Request) -> web.Response:
        return web.json_response(self.discovery)

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def introspection(self, provider: str, result: str, seconds: float) -> None:
        assert seconds >= 0
        self.seen.append((provider, result))


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    served = Endpoint()
    await served.server.start_server()
    yield served
    await served.server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def client_for(
    served: Endpoint, session: aiohttp.ClientSession, events: Events, **overrides: Any
) -> HttpIntrospectionClient:
    settings: dict[str, Any] = {
        "endpoint": served.url("/introspect"),
        "discovery": None,
        "client_id": "authz client",
        "client_secret": SECRET,
        "auth_method": "client_secret_basic",
        "timeout_s": 1.0,
        "connect_timeout_s": 1.0,
        "max_bytes": 1024,
        "allow_insecure": False,
        **overrides,
    }
    fetcher = AiohttpFetcher(session, timeout_s=1, connect_timeout_s=1, max_bytes=1 << 16)
    return HttpIntrospectionClient(
        "opaque",
        served.url("/").rstrip("/"),
        EndpointSettings(**settings),
        session=lambda: session,
        fetcher=fetcher,
        events=events,
    )


async def test_client_secret_basic(endpoint: Endpoint, session: aiohttp.ClientSession) -> None:
    events = Events()
    answer = await client_for(endpoint, session, events).introspect("tok")
    assert answer == {"active": True, "aud": "api"}
    headers, form = endpoint.seen[0]
    assert form == {"token": "tok", "token_type_hint": "access_token"}
    scheme, _, encoded = headers["Authorization"].partition(" ")
    client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
    # RFC 6749 2.3.1: each part form-urlencoded before joining
    assert (scheme, unquote_plus(client_id), unquote_plus(secret)) == (
        "Basic",
        "authz client",
        SECRET,
    )
    assert ":" not in secret
    assert events.seen == [("opaque", "active")]


async def test_client_secret_post(endpoint: Endpoint, session: aiohttp.ClientSession) -> None:
    endpoint.body = b'{"active": false}'
    events = Events()
    client = client_for(endpoint, session, events, auth_method="client_secret_post")
    assert await client.introspect("tok") == {"active": False}
    headers, form = endpoint.seen[0]
    assert "Authorization" not in headers
    assert form["client_id"] == "authz client" and form["client_secret"] == SECRET
    assert events.seen == [("opaque", "inactive")]


@pytest.mark.parametrize(
    ("status", "body", "delay_s", "path", "result"),
    [
        (500, b"{}", 0, "/introspect", "http_error"),
        (401, b'{"error": "invalid_client"}', 0, "/introspect", "http_error"),
        (200, b"not json", 0, "/introspect", "invalid"),
        (200, b"[true]", 0, "/introspect", "invalid"),
        (200, b'{"active": true, "pad": "' + b"a" * 2000 + b'"}', 0, "/introspect", "http_error"),
        (200, b"{}", 2, "/introspect", "timeout"),
        (200, b"{}", 0, "/moved", "http_error"),  # redirects are not followed
    ],
)
async def test_every_failure_is_unavailable_with_a_fixed_result(
    endpoint: Endpoint,
    session: aiohttp.ClientSession,
    status: int,
    body: bytes,
    delay_s: float,
    path: str,
    result: str,
) -> None:
    endpoint.status, endpoint.body, endpoint.delay_s = status, body, delay_s
    events = Events()
    client = client_for(endpoint, session, events, endpoint=endpoint.url(path))
    with pytest.raises(IntrospectionUnavailable) as caught:
        await client.introspect("tok")
    assert caught.value.result == result
    assert events.seen == [("opaque", result)]
    assert SECRET not in str(caught.value)


async def test_a_closed_port_is_a_network_error(
    endpoint: Endpoint, session: aiohttp.ClientSession
) -> None:
    events = Events()
    client = client_for(
        endpoint, session, events, endpoint=f"http://127.0.0.1:{free_port()}/introspect"
    )
    with pytest.raises(IntrospectionUnavailable) as caught:
        await client.introspect("tok")
    assert caught.value.result == "network_error"


async def test_the_endpoint_by_discovery(
    endpoint: Endpoint, session: aiohttp.ClientSession
) -> None:
    issuer = endpoint.url("/").rstrip("/")
    events = Events()
    client = client_for(endpoint, session, events, endpoint=None, discovery=issuer)
    endpoint.discovery = {"issuer": "https://someone.else", "introspection_endpoint": "x"}
    with pytest.raises(IntrospectionUnavailable) as caught:
        await client.introspect("tok")
    assert caught.value.result == "discovery_error"
    endpoint.discovery = {"issuer": issuer, "introspection_endpoint": endpoint.url("/introspect")}
    with pytest.raises(IntrospectionUnavailable):
        await client.introspect("tok")  # within a second of the failure: not asked again
    await asyncio.sleep(1.0)
    assert (await client.introspect("tok"))["active"] is True
    assert events.seen == [
        ("opaque", "discovery_error"),
        ("opaque", "discovery_error"),
        ("opaque", "active"),
    ]


async def test_neither_the_secret_nor_the_token_is_logged(
    endpoint: Endpoint, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint.status = 500
    token = "opaque-token-value-1234567890"
    client = client_for(endpoint, session, Events())
    with pytest.raises(IntrospectionUnavailable):
        await client.introspect(token)
    basic = base64.b64encode(f"authz+client:{quote_plus(SECRET)}".encode()).decode()
    assert "introspection for provider opaque failed (http_error)" in caplog.text
    for secret in (SECRET, quote_plus(SECRET), basic, token):
        assert secret not in caplog.text
