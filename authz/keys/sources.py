"""Where a provider's key set comes from: inline, a file it watches, or a remote JWKS.

Each source owns its current KeySet and swaps whole sets in; a failed or invalid load
never replaces the last good set. Remote sources refresh in a background task, honour
Cache-Control max-age within bounds, revalidate with ETag, retry failures with
exponential backoff and jitter, and refetch once, single-flight and rate-limited, when
a token names a kid the current set does not have.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from authz.config import FileJwks, Provider, RemoteJwks, check_fetch_uri
from authz.core.errors import JwksError, JwksReadError
from authz.keys.fetch import Fetcher
from authz.keys.jwks import KeySet, hmac_key_set, parse_json, parse_jwks, parse_jwks_bytes

log = logging.getLogger(__name__)

Monotonic = Callable[[], float]
MIN_RETRY_S = 1.0


class KeyEvents(Protocol):
    """What a source reports; the app turns it into metrics and health."""

    async def key_set(self, provider: str, result: str, keys: KeySet | None) -> None: ...

    def unknown_kid(self, provider: str, result: str) -> None: ...


class KeySource:
    """Owns the current key set of one provider."""

    def __init__(self, provider: str, algorithms: tuple[str, ...], events: KeyEvents) -> None:
        self.provider = provider
        self.algorithms = algorithms
        self._events = events
        self.keys: KeySet | None = None
        self._loaded = asyncio.Event()
        self._wait_until = 0.0  # monotonic time until which checks wait for the first set

    def current(self) -> KeySet | None:
        return self.keys

    async def wait_loaded(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the first key set; whether there is one."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._loaded.wait()
        return self.keys is not None

    def hold_checks_until(self, monotonic_deadline: float) -> None:
        """Until then, a check that finds no key set waits for the first one (startup_wait)."""
        self._wait_until = monotonic_deadline

    async def first_keys(self) -> KeySet | None:
        """The key set, waiting for the first one while inside the startup window."""
        remaining = self._wait_until - time.monotonic()
        if self.keys is None and remaining > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._loaded.wait()
        return self.keys

    async def refetch_for_unknown_kid(self) -> bool:
        """Try to learn a key the current set lacks; True when a new set was swapped in."""
        return False

    async def start(self) -> None:
        """Begin loading. Failures are reported, never raised: the service runs without keys."""

    async def stop(self) -> None:
        """Cancel and await background work."""

    async def _swap(self, keys: KeySet) -> None:
        self.keys = keys
        self._loaded.set()
        await self._events.key_set(self.provider, "ok", keys)

    async def _failed(self, exc: JwksError) -> None:
        log.warning("JWKS for provider %s not updated (%s): %s", self.provider, exc.result, exc)
        await self._events.key_set(self.provider, exc.result, self.keys)


class _Background:
    """One owned background task."""

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None

    def spawn(self, coro: Any, name: str) -> None:
        self.task = asyncio.create_task(coro, name=name)

    async def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None


class StaticKeySource(KeySource):
    """An inline JWKS or a shared secret: parsed when built, so a broken one is a config error."""

    def __init__(
        self, provider: str, algorithms: tuple[str, ...], events: KeyEvents, keys: KeySet
    ) -> None:
        super().__init__(provider, algorithms, events)
        self._parsed = keys

    async def start(self) -> None:
        await self._swap(self._parsed)


class FileKeySource(KeySource):
    """A JWKS file, reloaded when it changes (Kubernetes swaps mounted files atomically)."""

    def __init__(
        self, provider: str, algorithms: tuple[str, ...], events: KeyEvents, settings: FileJwks
    ) -> None:
        super().__init__(provider, algorithms, events)
        self.path = settings.path
        self.reload_interval = settings.reload_interval
        self._seen: tuple[int, int, int] | None = None
        self._poller = _Background()

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)  # follows symlinks, so a ..data swap shows as a new inode
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    async def load(self) -> None:
        self._seen = self._signature()
        try:
            data = await asyncio.to_thread(Path(self.path).read_bytes)
        except OSError as exc:
            await self._failed(JwksReadError(f"cannot read {self.path}: {exc.strerror}"))
            return
        try:
            keys = parse_jwks_bytes(data, self.algorithms)
        except JwksError as exc:
            await self._failed(exc)
            return
        await self._swap(keys)

    async def start(self) -> None:
        await self.load()
        self._poller.spawn(self._watch(), f"jwks-file-{self.provider}")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.reload_interval)
            try:
                if self._signature() != self._seen:
                    await self.load()
            except Exception:  # a bug must not end reloading for good
                log.exception("JWKS file reload for provider %s crashed", self.provider)

    async def stop(self) -> None:
        await self._poller.cancel()


class RemoteKeySource(KeySource):
    def __init__(
        self,
        provider: str,
        algorithms: tuple[str, ...],
        events: KeyEvents,
        settings: RemoteJwks,
        *,
        issuer: str,
        fetcher: Fetcher,
        monotonic: Monotonic = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = lambda: random.uniform(0.5, 1.0),
    ) -> None:
        super().__init__(provider, algorithms, events)
        self._sleep = sleep
        self._jitter = jitter
        self.settings = settings
        self.issuer = issuer
        self._fetch = fetcher
        self._monotonic = monotonic
        self._jwks_uri = settings.uri
        self._etag: str | None = None
        self._last_body: bytes | None = None
        self._next_delay_s = settings.refresh_interval
        self._lock = asyncio.Lock()  # one fetch at a time, so an old answer never wins
        self._refresher = _Background()
        self._kid_refetch: asyncio.Task[bool] | None = None
        self._last_kid_refetch = -float("inf")

    @property
    def next_refresh_s(self) -> float:
        """Seconds until the next scheduled refresh after a successful one."""
        return self._next_delay_s

    async def start(self) -> None:
        self._refresher.spawn(self._run(), f"jwks-refresh-{self.provider}")

    async def stop(self) -> None:
        await self._refresher.cancel()
        if self._kid_refetch is not None:
            self._kid_refetch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._kid_refetch

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
                delay = min(retry_s, self.settings.refresh_interval) * self._jitter()
                retry_s = min(retry_s * 2, self.settings.refresh_interval)
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
        if self.settings.discovery is not None and (rediscover or self._jwks_uri is None):
            await self._discover()
        assert self._jwks_uri is not None  # set by config (uri) or by discovery
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
        if max_age_s is None:
            return self.settings.refresh_interval
        return min(
            max(max_age_s, self.settings.min_refresh_interval), self.settings.max_refresh_interval
        )

    async def _discover(self) -> None:
        assert self.settings.discovery is not None
        url = self.settings.discovery.rstrip("/") + "/.well-known/openid-configuration"
        try:
            result = await self._fetch(url)
            if result.body is None:
                raise JwksError("discovery answered 304 to an unconditional request")
            document = parse_json(result.body, "discovery document")
            if not isinstance(document, dict):
                raise JwksError("the discovery document is not a JSON object")
            if document.get("issuer") != self.issuer:
                raise JwksError("the discovery document names another issuer")
            jwks_uri = document.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise JwksError("the discovery document has no jwks_uri")
            try:
                check_fetch_uri(jwks_uri, allow_insecure=self.settings.allow_insecure)
            except ValueError as exc:
                raise JwksError(f"discovery jwks_uri refused: {exc}") from exc
        except JwksError:
            if self._jwks_uri is None:
                raise
            # Keep using the last discovered jwks_uri; the failure is still logged.
            log.warning(
                "OIDC discovery for provider %s failed; keeping the last jwks_uri", self.provider
            )
            return
        if jwks_uri != self._jwks_uri:
            self._etag = None  # a validator from one URL means nothing to another
        self._jwks_uri = jwks_uri

    async def refetch_for_unknown_kid(self) -> bool:
        if self._kid_refetch is None:
            now = self._monotonic()
            if now - self._last_kid_refetch < self.settings.min_refresh_interval:
                self._events.unknown_kid(self.provider, "rate_limited")
                return False
            self._last_kid_refetch = now
            task = asyncio.create_task(
                self.refresh(rediscover=False), name=f"jwks-kid-{self.provider}"
            )
            task.add_done_callback(self._kid_refetch_done)
            self._kid_refetch = task
        try:
            async with asyncio.timeout(self.settings.unknown_kid_wait):
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


def build_key_source(
    name: str,
    provider: Provider,
    events: KeyEvents,
    fetcher_for: Callable[[RemoteJwks], Fetcher],
    monotonic: Monotonic = time.monotonic,
) -> KeySource:
    algorithms = tuple(provider.algorithms)
    if provider.shared_secret is not None:
        secret = provider.shared_secret
        keys = hmac_key_set(secret.read(), algorithms, secret.kid)
        return StaticKeySource(name, algorithms, events, keys)
    jwks = provider.jwks
    assert jwks is not None  # config validation: exactly one of jwks and shared_secret
    inline = jwks.inline_document()
    if inline is not None:
        return StaticKeySource(name, algorithms, events, parse_jwks(inline, algorithms))
    if jwks.file is not None:
        return FileKeySource(name, algorithms, events, jwks.file)
    remote = jwks.remote_settings(provider.issuer)
    assert remote is not None  # config validation guarantees exactly one kind
    return RemoteKeySource(
        name,
        algorithms,
        events,
        remote,
        issuer=provider.issuer,
        fetcher=fetcher_for(remote),
        monotonic=monotonic,
    )
