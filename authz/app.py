"""Composition root: builds every part from the config and owns start and stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping

import aiohttp

from authz.authorizer import Authorizer, build_providers
from authz.config import Config
from authz.crypto import assert_cryptography_backend
from authz.grpc_server import GrpcServer
from authz.http_server import HttpServer
from authz.jwks import (
    AiohttpFetcher,
    Fetcher,
    KeySet,
    KeySource,
    RefreshListener,
    build_key_source,
)
from authz.metrics import Metrics
from authz.model import Decision
from authz.policy import Policy
from authz.verify import Clock

log = logging.getLogger(__name__)


def build_key_sources(
    config: Config, listener: RefreshListener, fetcher: Fetcher | None
) -> dict[str, KeySource]:
    return {
        name: build_key_source(name, provider, listener, fetcher)
        for name, provider in config.providers.items()
    }


class App:
    """One running authz: key sources, the authorizer, the gRPC and HTTP listeners."""

    def __init__(
        self, config: Config, *, clock: Clock = time.time, fetcher: Fetcher | None = None
    ) -> None:
        assert_cryptography_backend()
        self.config = config
        self.metrics = Metrics()
        self._clock = clock
        self._fetcher = fetcher
        self._stack = contextlib.AsyncExitStack()
        self._draining = False
        self.sources: Mapping[str, KeySource] = {}
        self.grpc: GrpcServer | None = None
        self.http: HttpServer | None = None

    @property
    def ready(self) -> bool:
        return not self._draining and all(s.keys is not None for s in self.sources.values())

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise

    async def _start(self) -> None:
        fetcher = self._fetcher
        if fetcher is None and any(p.jwks.remote for p in self.config.providers.values()):
            session = aiohttp.ClientSession()
            self._stack.push_async_callback(session.close)
            fetcher = AiohttpFetcher(session)
        self.sources = build_key_sources(self.config, self._on_keys, fetcher)
        providers = build_providers(
            self.config,
            {name: source.current for name, source in self.sources.items()},
            self._clock,
        )
        authorizer = Authorizer(Policy.compile(self.config), providers, self._observe)
        self.grpc = GrpcServer(authorizer, self.config.listen.grpc)
        self.http = HttpServer(self.config.listen.http, self.metrics, lambda: self.ready)

        for source in self.sources.values():
            self._stack.push_async_callback(source.stop)
        await asyncio.gather(*(s.start() for s in self.sources.values()))
        await self.grpc.start()
        self._stack.push_async_callback(self.grpc.stop, self.config.shutdown_grace)
        await self.http.start()
        self._stack.push_async_callback(self.http.stop)
        await self._update_health()
        log.info("authz serving: grpc on port %d, http on port %d", self.grpc.port, self.http.port)

    async def stop(self) -> None:
        """Drain: report NOT_SERVING, let in-flight checks finish, then close in reverse order."""
        self._draining = True
        if self.grpc is not None:
            await self.grpc.set_serving(overall=False, authorization=False)
        await self._stack.aclose()

    async def __aenter__(self) -> App:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    def _observe(self, decision: Decision, seconds: float) -> None:
        self.metrics.observe_check(
            "allow" if decision.allowed else "deny",
            decision.reason,
            decision.provider or "none",
            seconds,
        )

    async def _on_keys(self, provider: str, result: str, keys: KeySet | None) -> None:
        self.metrics.observe_jwks(provider, result, keys.size if keys else None)
        await self._update_health()

    async def _update_health(self) -> None:
        if self.grpc is not None and not self._draining:
            await self.grpc.set_serving(overall=True, authorization=self.ready)
