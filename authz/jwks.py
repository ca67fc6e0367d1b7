"""Key sets: parse and validate once, swap whole sets, refresh remote ones in the background.

A key set is immutable. A refresh builds a new one and swaps it in; a failed or
invalid refresh keeps the last good set. Nothing here runs on the request path
except ``KeySet.find``, a dictionary lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from authz.config import Jwks, Provider
from authz.crypto import KTY_FOR_ALG, VerifyKey, construct_key
from authz.errors import AlgorithmNotAllowed, JwksError, KeyRejected, UnknownKey

log = logging.getLogger(__name__)

Fetcher = Callable[[str], Awaitable[bytes]]
# Awaited after every load attempt: (provider, result, key set now in use).
RefreshListener = Callable[[str, str, "KeySet | None"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class KeySet:
    """The usable keys of one JWKS, each bound to the algorithms it may verify."""

    by_kid: Mapping[str, Mapping[str, VerifyKey]]
    by_alg: Mapping[str, tuple[VerifyKey, ...]]
    size: int

    def find(self, kid: str | None, algorithm: str) -> VerifyKey:
        if kid is None:
            # Without a kid the key must be unambiguous: exactly one usable for this algorithm.
            candidates = self.by_alg.get(algorithm, ())
            if len(candidates) != 1:
                raise UnknownKey("token has no kid and the key is ambiguous or missing")
            return candidates[0]
        keys = self.by_kid.get(kid)
        if keys is None:
            raise UnknownKey("kid not in key set")
        key = keys.get(algorithm)
        if key is None:
            raise AlgorithmNotAllowed("the key for this kid does not verify this algorithm")
        return key


def parse_jwks(document: Any, algorithms: tuple[str, ...]) -> KeySet:
    """Validate a JWKS document and build its key set; JwksError if no key is usable."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError('a JWKS must be a JSON object with a "keys" list')
    by_kid: dict[str, dict[str, VerifyKey]] = {}
    by_alg: dict[str, list[VerifyKey]] = {}
    size = 0
    for index, jwk in enumerate(document["keys"]):
        usable = _usable_algorithms(index, jwk, algorithms)
        built: dict[str, VerifyKey] = {}
        for alg in usable:
            try:
                built[alg] = construct_key(jwk, alg)
            except KeyRejected as exc:
                log.warning("JWKS key %d skipped: %s", index, exc)
                break
        else:
            if not built:
                continue
            kid = jwk.get("kid")
            if isinstance(kid, str):
                if kid in by_kid:
                    log.warning("JWKS key %d skipped: duplicate kid", index)
                    continue
                by_kid[kid] = built
            size += 1
            for alg, key in built.items():
                by_alg.setdefault(alg, []).append(key)
    if size == 0:
        raise JwksError("the JWKS holds no usable signing key")
    return KeySet(by_kid, {alg: tuple(keys) for alg, keys in by_alg.items()}, size)


def _usable_algorithms(index: int, jwk: Any, algorithms: tuple[str, ...]) -> tuple[str, ...]:
    if not isinstance(jwk, dict):
        log.warning("JWKS key %d skipped: not an object", index)
        return ()
    if jwk.get("use", "sig") != "sig":
        return ()
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        return ()
    kty = jwk.get("kty")
    pinned = jwk.get("alg")
    if pinned is not None:
        # A key's own alg pins it: tokens may use it with that algorithm only.
        return (pinned,) if pinned in algorithms and KTY_FOR_ALG.get(pinned) == kty else ()
    return tuple(alg for alg in algorithms if KTY_FOR_ALG[alg] == kty)


def parse_jwks_bytes(data: bytes, algorithms: tuple[str, ...]) -> KeySet:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise JwksError("the JWKS is not valid JSON") from exc
    return parse_jwks(document, algorithms)


class KeySource:
    """Owns the current key set of one provider; subclasses decide where keys come from."""

    def __init__(self, provider: str, algorithms: tuple[str, ...], listener: RefreshListener):
        self.provider = provider
        self.algorithms = algorithms
        self._listener = listener
        self.keys: KeySet | None = None

    def current(self) -> KeySet | None:
        return self.keys

    async def _swap(self, keys: KeySet) -> None:
        self.keys = keys
        await self._listener(self.provider, "success", keys)

    async def _failed(self, exc: Exception) -> None:
        log.warning("JWKS for provider %s not updated: %s", self.provider, exc)
        await self._listener(self.provider, "failure", self.keys)

    async def start(self) -> None:
        """Load the first key set. Failures are reported, not raised: the service still runs."""

    async def stop(self) -> None:
        """Release background work."""


class StaticKeySource(KeySource):
    """An inline JWKS: parsed when the source is built, so a broken one is a config error."""

    def __init__(
        self,
        provider: str,
        algorithms: tuple[str, ...],
        listener: RefreshListener,
        document: dict[str, Any],
    ):
        super().__init__(provider, algorithms, listener)
        self._keys = parse_jwks(document, algorithms)

    async def start(self) -> None:
        await self._swap(self._keys)


class FileKeySource(KeySource):
    def __init__(
        self, provider: str, algorithms: tuple[str, ...], listener: RefreshListener, path: Path
    ):
        super().__init__(provider, algorithms, listener)
        self.path = path

    async def start(self) -> None:
        try:
            data = await asyncio.to_thread(self.path.read_bytes)
            await self._swap(parse_jwks_bytes(data, self.algorithms))
        except OSError as exc:
            await self._failed(JwksError(f"cannot read {self.path}: {exc.strerror}"))
        except JwksError as exc:
            await self._failed(exc)


class RemoteKeySource(KeySource):
    """Fetches at start and every ``refresh_interval``; retries failures with backoff."""

    MIN_RETRY_S = 1.0

    def __init__(
        self,
        provider: str,
        algorithms: tuple[str, ...],
        listener: RefreshListener,
        uri: str,
        *,
        refresh_interval: float,
        timeout: float,
        fetcher: Fetcher,
    ):
        super().__init__(provider, algorithms, listener)
        self.uri = uri
        self.refresh_interval = refresh_interval
        self.timeout = timeout
        self._fetch = fetcher
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                data = await self._fetch(self.uri)
            await self._swap(parse_jwks_bytes(data, self.algorithms))
            return True
        except TimeoutError:
            await self._failed(JwksError(f"fetching {self.uri} timed out"))
        except JwksError as exc:
            await self._failed(exc)
        return False

    async def start(self) -> None:
        ok = await self.refresh()
        self._task = asyncio.create_task(self._run(ok), name=f"jwks-refresh-{self.provider}")

    async def _run(self, last_ok: bool) -> None:
        retry = self.MIN_RETRY_S
        while True:
            if last_ok:
                retry = self.MIN_RETRY_S
                delay = self.refresh_interval
            else:
                delay = min(retry, self.refresh_interval) * random.uniform(0.8, 1.2)
                retry = min(retry * 2, self.refresh_interval)
            await asyncio.sleep(delay)
            last_ok = await self.refresh()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class AiohttpFetcher:
    """GETs a JWKS with a shared aiohttp session; every failure becomes a JwksError."""

    MAX_BYTES = 1 << 20

    def __init__(self, session: aiohttp.ClientSession):
        self._session = session

    async def __call__(self, uri: str) -> bytes:
        try:
            async with self._session.get(
                uri,
                headers={"accept": "application/json"},
                allow_redirects=False,
            ) as response:
                if response.status != 200:
                    raise JwksError(f"fetching {uri} returned HTTP {response.status}")
                body = await response.content.read(self.MAX_BYTES + 1)
        except (aiohttp.ClientError, ValueError) as exc:
            raise JwksError(f"fetching {uri} failed: {type(exc).__name__}") from exc
        if len(body) > self.MAX_BYTES:
            raise JwksError(f"the JWKS at {uri} is larger than {self.MAX_BYTES} bytes")
        return body


def build_key_source(
    name: str, provider: Provider, listener: RefreshListener, fetcher: Fetcher | None
) -> KeySource:
    algorithms = tuple(provider.algorithms)
    jwks: Jwks = provider.jwks
    inline = jwks.inline_document()
    if inline is not None:
        return StaticKeySource(name, algorithms, listener, inline)
    if jwks.file is not None:
        return FileKeySource(name, algorithms, listener, jwks.file)
    assert jwks.remote is not None  # guaranteed by config validation
    if fetcher is None:
        raise JwksError(f"provider {name} has a remote JWKS but no fetcher was given")
    remote = jwks.remote
    return RemoteKeySource(
        name,
        algorithms,
        listener,
        remote.uri,
        refresh_interval=remote.refresh_interval,
        timeout=remote.timeout,
        fetcher=fetcher,
    )
