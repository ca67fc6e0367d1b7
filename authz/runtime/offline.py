"""Events and HTTP clients for a build that must not fetch or report anything:
check-config's, and the stand-in build of ``authz eval --claims`` and ``authz test``."""

from __future__ import annotations

import ssl

import aiohttp

from authz.config import RemoteJwks
from authz.keys.fetch import Fetcher, FetchResult
from authz.keys.jwks import KeySet


class Offline:
    """Events and HTTP clients for a build that must not fetch or report anything."""

    async def key_set(self, provider: str, result: str, keys: KeySet | None) -> None:
        return None

    def unknown_kid(self, provider: str, result: str) -> None:
        return None

    def introspection(self, provider: str, result: str, seconds: float) -> None:
        return None

    def introspection_cache(self, provider: str, result: str) -> None:
        return None

    def tenant_source(self, provider: str, event: str, tenants: int) -> None:
        return None

    def __call__(self, settings: RemoteJwks, trust: ssl.SSLContext | None) -> Fetcher:
        return self._never_fetch

    def session(self, limit: int) -> aiohttp.ClientSession:
        raise AssertionError("check-config never sends a request")

    async def _never_fetch(self, uri: str, *, etag: str | None = None) -> FetchResult:
        raise AssertionError("check-config never fetches")  # sources are built, not started
