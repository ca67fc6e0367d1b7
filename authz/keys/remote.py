"""A JWKS fetched over HTTP(S), directly or through OIDC discovery, refreshed in the
background: Cache-Control max-age within bounds, ETag revalidation, exponential backoff
with jitter on failure, and one single-flight, rate-limited refetch when a token names a
kid the current set lacks.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from authz.core.errors import JwksError
from authz.keys.discovery import Discovery
from authz.keys.fetch import Fetcher
from authz.keys.jwks import parse_jwks_bytes
from authz.keys.sources import KeyEvents, KeySource, Monotonic
from authz.support.tasks import OwnedTasks

log = logging.getLogger(__name__)

MIN_RETRY_S = 1.0


@dataclass(frozen=True, slots=True)
class RemoteSettings:
    """Exactly one of ``uri`` and ``discovery`` (an issuer URL)."""

    uri: str | None
    discovery: str | None
    refresh_interval_s: float  # without Cache-Control max-age
    min_refresh_interval_s: float  # bounds for max-age; also the unknown-kid rate limit
    max_refresh_interval_s: float
    unknown_kid_wait_s: float  # how long a check waits for an unknown-kid refetch
    max_keys: int
    allow_insecure: bool  # for a discovered jwks_uri


class RemoteKeySource(KeySource):
    def __init__(
        self,
        provider: str,
        algorithms: tuple[str, ...],
        events: KeyEvents,
        settings: RemoteSettings,
        *,
        issuer: str,
        fetcher: Fetcher,
        monotonic: Monotonic = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = lambda: random.uniform(0.5, 1.0),
    ) -> None:
        super().__init__(provider, algorithms, events, monotonic)
        self._sleep = sleep
        self._jitter = jitter
        self.settings = settings
        self._fetch = fetcher
        self._discovery = (
            Discovery(
                settings.discovery,
                issuer,
                allow_insecure=settings.allow_insecure,
                provider=provider,
            )
            if settings.discovery is not None
            else None
        )
        self._jwks_uri = settings.uri
        self._etag: str | None = None
        self._last_body: bytes | None = None
        self._next_delay_s = settings.refresh_interval_s
        self._lock = asyncio.Lock()  # one fetch at a time, so an old answer never wins
        self._tasks = OwnedTasks()
        self._kid_refetch: asyncio.Task[bool] | None = None
        self._last_kid_refetch = -float("inf")

    async def start(self) -> None:
        self._tasks.spawn(self._run(), f"jwks-refresh-{self.provider}")

    async def stop(self) -> None:
        await self._tasks.stop()

    async def _run(self) -> None:
        retry_s = MIN_RETRY_S
        while True:
            try:
                ok = await self.refresh()
            except Exception:  # a bug must not end refreshing for good
                log.exception("JWKS refresh for provider %s crashed", self.provider)
                ok = False
            if ok:
                retry_s = MIN_RETRY_S
                delay = self._next_delay_s
            else:
                delay = min(retry_s, self.settings.refresh_interval_s) * self._jitter()
                retry_s = min(retry_s * 2, self.settings.refresh_interval_s)
            await self._sleep(delay)

    async def refresh(self, *, rediscover: bool = True) -> bool:
        """One fetch (after discovery when configured). True when the set is current."""
        async with self._lock:
            try:
                return await self._refresh(rediscover)
            except JwksError as exc:
                await self._failed(exc)
                return False

    async def _refresh(self, rediscover: bool) -> bool:
        if self._discovery is not None and (rediscover or self._jwks_uri is None):
            jwks_uri = await self._discovery.discover(self._fetch)
            if jwks_uri != self._jwks_uri:
                self._etag = None  # a validator from one URL means nothing to another
            self._jwks_uri = jwks_uri
        assert self._jwks_uri is not None  # set by the config (uri) or by discovery
        result = await self._fetch(self._jwks_uri, etag=self._etag if self.keys else None)
        self._next_delay_s = self._clamp(result.max_age_s)
        if result.body is None:
            if self.keys is None:
                raise JwksError("304 Not Modified without a key set to keep")
            await self._events.key_set(self.provider, "not_modified", self.keys)
            return True
        if self.keys is not None and result.body == self._last_body:
            keys = self.keys  # unchanged JWKS: keep the set, and the tokens cached under it
        else:
            keys = parse_jwks_bytes(result.body, self.algorithms, self.settings.max_keys)
        self._etag = result.etag
        self._last_body = result.body
        await self._swap(keys)
        return True

    def _clamp(self, max_age_s: float | None) -> float:
        settings = self.settings
        if max_age_s is None:
            return settings.refresh_interval_s
        return min(max(max_age_s, settings.min_refresh_interval_s), settings.max_refresh_interval_s)

    async def refetch_for_unknown_kid(self) -> bool:
        if self._kid_refetch is None:
            now = self._monotonic()
            if now - self._last_kid_refetch < self.settings.min_refresh_interval_s:
                self._events.unknown_kid(self.provider, "rate_limited")
                return False
            self._last_kid_refetch = now
            task = self._tasks.spawn(
                self.refresh(rediscover=False), name=f"jwks-kid-{self.provider}"
            )
            task.add_done_callback(self._kid_refetch_done)
            self._kid_refetch = task
        try:
            async with asyncio.timeout(self.settings.unknown_kid_wait_s):
                return await asyncio.shield(self._kid_refetch)
        except TimeoutError:
            self._events.unknown_kid(self.provider, "wait_timeout")
            return False
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this check itself is being cancelled
            return False  # the shared refetch was cancelled (its source retired by a reload)

    def _kid_refetch_done(self, task: asyncio.Task[bool]) -> None:
        self._kid_refetch = None
        if not task.cancelled():
            ok = task.exception() is None and task.result()
            self._events.unknown_kid(self.provider, "ok" if ok else "failed")
