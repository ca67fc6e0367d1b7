"""The HTTP side of token introspection (RFC 7662): POST the token to the issuer's
endpoint, authenticated as a client, and read its JSON answer.

Every failure (connection, timeout, a status other than 200, a redirect, a body over the
cap, anything but a JSON object) is IntrospectionUnavailable with a fixed ``result``,
translated here and only here; the core turns it into a 503 that is never cached. The
client secret goes into the request and nowhere else: not into errors, logs or metrics.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import quote_plus

import aiohttp

from authz.core.errors import IntrospectionUnavailable, JwksError
from authz.keys.discovery import Discovery
from authz.keys.fetch import Fetcher, read_capped

log = logging.getLogger(__name__)

REDISCOVER_AFTER_S = 1.0  # after a failed discovery, checks fail at once for this long


class IntrospectionEvents(Protocol):
    """What the client reports: one request's result and how long it took."""

    def introspection(self, provider: str, result: str, seconds: float) -> None: ...


@dataclass(frozen=True, slots=True)
class EndpointSettings:
    endpoint: str | None  # None: discovered from the issuer
    discovery: str | None  # the issuer URL whose discovery document names the endpoint
    client_id: str
    client_secret: str = field(repr=False)
    auth_method: Literal["client_secret_basic", "client_secret_post"]
    timeout_s: float
    connect_timeout_s: float
    max_bytes: int
    allow_insecure: bool  # for a discovered endpoint: http to a host other than loopback


def basic_credentials(client_id: str, client_secret: str) -> str:
    """RFC 6749 2.3.1: each part form-urlencoded, then joined and base64-encoded."""
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


class HttpIntrospectionClient:
    """Asks one provider's introspection endpoint; implements the core's
    IntrospectionClient."""

    def __init__(
        self,
        provider: str,
        issuer: str,
        settings: EndpointSettings,
        *,
        session: Callable[[], aiohttp.ClientSession],
        fetcher: Fetcher,
        events: IntrospectionEvents,
        ssl_context: ssl.SSLContext | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``session``: the shared aiohttp session, asked for at the first request;
        ``fetcher``: reads the discovery document."""
        self.provider = provider
        self._settings = settings
        self._session = session
        self._fetch = fetcher
        self._events = events
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._monotonic = monotonic
        self._timeout = aiohttp.ClientTimeout(
            total=settings.timeout_s, sock_connect=settings.connect_timeout_s
        )
        self._endpoint = settings.endpoint
        self._discovering = asyncio.Lock()
        self._rediscover_at = 0.0
        self._discovery = (
            Discovery(
                settings.discovery,
                issuer,
                allow_insecure=settings.allow_insecure,
                provider=provider,
                member="introspection_endpoint",
            )
            if settings.discovery is not None
            else None
        )
        self._authorization = (
            basic_credentials(settings.client_id, settings.client_secret)
            if settings.auth_method == "client_secret_basic"
            else None
        )

    async def introspect(self, token: str) -> dict[str, Any]:
        started = self._monotonic()
        try:
            answer = await self._introspect(token)
        except IntrospectionUnavailable as exc:
            self._events.introspection(self.provider, exc.result, self._monotonic() - started)
            log.warning(
                "introspection for provider %s failed (%s): %s", self.provider, exc.result, exc
            )
            raise
        result = "active" if answer.get("active") is True else "inactive"
        self._events.introspection(self.provider, result, self._monotonic() - started)
        return answer

    async def _introspect(self, token: str) -> dict[str, Any]:
        endpoint = await self._endpoint_url()
        form = {"token": token, "token_type_hint": "access_token"}
        headers = {"accept": "application/json"}
        if self._authorization is not None:
            headers["authorization"] = self._authorization
        else:
            form["client_id"] = self._settings.client_id
            form["client_secret"] = self._settings.client_secret
        try:
            async with self._session().post(
                endpoint,
                data=form,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
                ssl=self._ssl,
            ) as response:
                if response.status != 200:
                    raise IntrospectionUnavailable(
                        f"{endpoint} answered HTTP {response.status}", result="http_error"
                    )
                body = await read_capped(response, self._settings.max_bytes)
                if body is None:
                    raise IntrospectionUnavailable(
                        f"{endpoint} answered more than {self._settings.max_bytes} bytes",
                        result="http_error",
                    )
        except TimeoutError as exc:
            raise IntrospectionUnavailable(f"{endpoint} timed out", result="timeout") from exc
        except aiohttp.ClientError as exc:
            raise IntrospectionUnavailable(
                f"{endpoint}: {type(exc).__name__}", result="network_error"
            ) from exc
        try:
            answer = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise IntrospectionUnavailable(
                f"{endpoint} answered something other than JSON", result="invalid"
            ) from exc
        if not isinstance(answer, dict):
            raise IntrospectionUnavailable(
                f"{endpoint} answered JSON that is not an object", result="invalid"
            )
        return answer

    async def _endpoint_url(self) -> str:
        if self._endpoint is not None:
            return self._endpoint
        assert self._discovery is not None  # the config names one or the other
        async with self._discovering:  # one discovery at a time, however many checks wait
            if self._endpoint is not None:
                return self._endpoint
            if self._monotonic() < self._rediscover_at:  # it just failed: fail fast
                raise IntrospectionUnavailable(
                    "discovery of the introspection endpoint failed recently",
                    result="discovery_error",
                )
            try:
                self._endpoint = await self._discovery.discover(self._fetch)
            except JwksError as exc:
                self._rediscover_at = self._monotonic() + REDISCOVER_AFTER_S
                raise IntrospectionUnavailable(
                    f"discovery of the introspection endpoint failed: {exc}",
                    result="discovery_error",
                ) from exc
        return self._endpoint
