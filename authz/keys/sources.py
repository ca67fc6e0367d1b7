"""Where a provider's key set comes from: inline, a file it watches, or a remote JWKS
(remote.py). Each source owns its current KeySet and swaps whole sets in; a failed or
invalid load never replaces the last good set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from authz.core.errors import JwksError, JwksReadError
from authz.keys.jwks import KeySet, parse_jwks_bytes
from authz.support.files import file_signature, read_regular_file, watch_file
from authz.support.tasks import OwnedTasks

log = logging.getLogger(__name__)

Monotonic = Callable[[], float]
MAX_JWKS_FILE_BYTES = 1 << 20  # as a remote JWKS's default max_bytes


class KeyEvents(Protocol):
    """What a source reports; the runtime turns it into metrics and health."""

    async def key_set(self, provider: str, result: str, keys: KeySet | None) -> None: ...

    def unknown_kid(self, provider: str, result: str) -> None: ...


class KeySource:
    """Owns the current key set of one provider."""

    def __init__(
        self,
        provider: str,
        algorithms: tuple[str, ...],
        events: KeyEvents,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self.provider = provider
        self.algorithms = algorithms
        self._events = events
        self._monotonic = monotonic
        self.keys: KeySet | None = None
        self._loaded = asyncio.Event()
        self._wait_until = 0.0  # monotonic time until which checks wait for the first set

    @property
    def usable(self) -> bool:
        """Whether checks can be answered (readiness): a key set is loaded."""
        return self.keys is not None

    async def wait_loaded(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the first key set; whether there is one."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._loaded.wait()
        return self.keys is not None

    def hold_checks_for(self, seconds: float) -> None:
        """For that long, a check that finds no key set waits for the first one
        (startup_wait)."""
        self._wait_until = self._monotonic() + seconds

    async def first_keys(self) -> KeySet | None:
        """The key set, waiting for the first one while inside the startup window."""
        remaining = self._wait_until - self._monotonic()
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


class StaticKeySource(KeySource):
    """An inline JWKS or a shared secret: parsed when built, so a broken one is a config error."""

    def __init__(
        self,
        provider: str,
        algorithms: tuple[str, ...],
        events: KeyEvents,
        keys: KeySet,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        super().__init__(provider, algorithms, events, monotonic)
        self._parsed = keys

    async def start(self) -> None:
        await self._swap(self._parsed)


class FileKeySource(KeySource):
    """A JWKS file, reloaded when it changes (Kubernetes swaps mounted files atomically)."""

    def __init__(
        self,
        provider: str,
        algorithms: tuple[str, ...],
        events: KeyEvents,
        path: Path,
        *,
        reload_interval_s: float,
        max_keys: int,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        super().__init__(provider, algorithms, events, monotonic)
        self.path = path
        self.reload_interval_s = reload_interval_s
        self.max_keys = max_keys
        self._tasks = OwnedTasks()

    async def load(self) -> None:
        try:
            data = await asyncio.to_thread(read_regular_file, self.path, MAX_JWKS_FILE_BYTES)
        except OSError as exc:
            await self._failed(JwksReadError(f"cannot read {self.path}: {exc.strerror}"))
            return
        try:
            keys = parse_jwks_bytes(data, self.algorithms, self.max_keys)
        except JwksError as exc:
            await self._failed(exc)
            return
        await self._swap(keys)

    async def start(self) -> None:
        seen = file_signature(self.path)  # before reading: a change from here on counts
        await self.load()
        watch = watch_file(
            self.path,
            self.reload_interval_s,
            self.load,
            seen,
            what=f"the JWKS file of provider {self.provider}",
            missing_is_change=True,  # a vanished file is reported (read_error)
        )
        self._tasks.spawn(watch, f"jwks-file-{self.provider}")

    async def stop(self) -> None:
        await self._tasks.stop()
