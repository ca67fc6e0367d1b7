"""HTTP fetching of JWKS and OIDC discovery documents, with every limit enforced here.

Explicit connect and total timeouts, a body cap enforced while reading (so it also
caps decompressed bodies), redirects followed only within the same origin, and every
aiohttp failure translated to a JwksError subclass in this one place.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urljoin, urlsplit

import aiohttp

from authz.core.errors import JwksError, JwksHttpError, JwksNetworkError, JwksTimeout

MAX_REDIRECTS = 3
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class FetchResult:
    body: bytes | None  # None: 304 Not Modified
    etag: str | None
    max_age_s: float | None


class Fetcher(Protocol):
    async def __call__(self, uri: str, *, etag: str | None = None) -> FetchResult: ...


def cache_max_age(header: str | None) -> float | None:
    """The max-age of a Cache-Control header; None when absent or when caching is refused."""
    if not header:
        return None
    lowered = header.lower()
    if "no-store" in lowered or "no-cache" in lowered:
        return None
    match = _MAX_AGE.search(header)
    return float(match.group(1)) if match else None


def check_fetch_uri(value: str, *, allow_insecure: bool) -> str:
    """ValueError unless ``value`` is an http(s) URL authz may fetch keys from: https, or
    plain http to a loopback host (or anywhere with ``allow_insecure``)."""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"must be an http(s):// URL, got {value!r}")
    host = parts.hostname
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"  # a name that merely starts with 127. is not loopback
    if parts.scheme == "http" and not (loopback or allow_insecure):
        raise ValueError("must use https (http is allowed for loopback or with allow_insecure)")
    return value


def _origin(uri: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(uri)
    return parts.scheme, parts.hostname, parts.port


class AiohttpFetcher:
    """GETs documents for one provider through a shared aiohttp session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        timeout_s: float,
        connect_timeout_s: float,
        max_bytes: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s)
        self._max_bytes = max_bytes
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True

    async def __call__(self, uri: str, *, etag: str | None = None) -> FetchResult:
        headers = {"accept": "application/json"}
        if etag:
            headers["if-none-match"] = etag
        try:
            return await self._get(uri, headers)
        except TimeoutError as exc:
            raise JwksTimeout(f"fetching {uri} timed out") from exc
        except aiohttp.ClientError as exc:
            raise JwksNetworkError(f"fetching {uri} failed: {type(exc).__name__}") from exc
        except ValueError as exc:  # an unparseable URL, e.g. in a Location header
            raise JwksHttpError(f"fetching {uri}: bad URL ({type(exc).__name__})") from exc

    async def _get(self, uri: str, headers: dict[str, str]) -> FetchResult:
        target = uri
        for _ in range(MAX_REDIRECTS + 1):
            async with self._session.get(
                target,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
                ssl=self._ssl,
            ) as response:
                if response.status in (301, 302, 303, 307, 308):
                    location = response.headers.get("location", "")
                    following = urljoin(target, location)
                    if not location or _origin(following) != _origin(uri):
                        raise JwksHttpError(f"fetching {uri}: redirect to another origin refused")
                    target = following
                    continue
                if response.status == 304:
                    return FetchResult(None, response.headers.get("etag"), self._max_age(response))
                if response.status != 200:
                    raise JwksHttpError(f"fetching {uri} returned HTTP {response.status}")
                body = await read_capped(response, self._max_bytes)
                if body is None:
                    raise JwksHttpError(
                        f"the document at {uri} is larger than {self._max_bytes} bytes"
                    )
                return FetchResult(body, response.headers.get("etag"), self._max_age(response))
        raise JwksHttpError(f"fetching {uri}: too many redirects")

    @staticmethod
    def _max_age(response: aiohttp.ClientResponse) -> float | None:
        return cache_max_age(response.headers.get("cache-control"))


async def read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> bytes | None:
    """The body, read no further than ``max_bytes`` (so the cap holds for decompressed
    bodies too); None when it is longer."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def ssl_context_for(ca_file: str | None) -> ssl.SSLContext | None:
    if ca_file is None:
        return None
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise JwksError(f"cannot load CA bundle {ca_file}: {exc}") from exc
