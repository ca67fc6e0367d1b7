"""Composition root: builds every part from the config and owns start and stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

import aiohttp

from authz.adapters.grpc_server import GrpcServer
from authz.adapters.http_authz import HttpAuthzServer
from authz.adapters.ops_server import HttpServer
from authz.config import Config, Provider, RemoteJwks, load_config
from authz.core.authorizer import Authorizer, CurrentAuthorizer, build_providers
from authz.core.errors import AuthzError, JwksError
from authz.core.model import Decision, RequestAttributes
from authz.core.policy import shadowed_rules
from authz.core.token_cache import TokenCache
from authz.core.verify import Clock
from authz.keys.crypto import assert_cryptography_backend
from authz.keys.fetch import AiohttpFetcher, Fetcher, ssl_context_for
from authz.keys.jwks import KeySet
from authz.keys.sources import KeySource, build_key_source
from authz.runtime.decision_log import DecisionLog
from authz.runtime.metrics import Metrics

log = logging.getLogger(__name__)


RELOAD_KEYS_WAIT_S = 10.0


def _same_keys(old: Provider, new: Provider) -> bool:
    """Whether two provider configs describe the same keys (so the source can stay)."""
    fields = ("issuer", "jwks", "shared_secret", "algorithms")
    return all(getattr(old, f) == getattr(new, f) for f in fields)


class App:
    """One running authz: key sources, the authorizer, the gRPC and HTTP listeners."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
        config_path: str | Path | None = None,
        watch_interval_s: float = 2.0,
    ) -> None:
        self.config_path = Path(config_path) if config_path is not None else None
        self._watch_interval_s = watch_interval_s
        self._reload_lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None
        self._reloads: set[asyncio.Task[bool]] = set()
        assert_cryptography_backend()
        self.config = config
        self.metrics = Metrics()
        self._clock = clock
        self._monotonic = monotonic
        self._stack = contextlib.AsyncExitStack()
        self._draining = False
        self._session: aiohttp.ClientSession | None = None
        self.sources: Mapping[str, KeySource] = {}
        self.grpc: GrpcServer | None = None
        self.authorizer: CurrentAuthorizer | None = None
        self._decisions = DecisionLog(config.decision_log)
        self.http_authz: HttpAuthzServer | None = None
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

    def _fetcher_for(self, settings: RemoteJwks) -> Fetcher:
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._stack.push_async_callback(self._session.close)
        return AiohttpFetcher(
            self._session,
            timeout_s=settings.timeout,
            connect_timeout_s=settings.connect_timeout,
            max_bytes=settings.max_bytes,
            ssl_context=ssl_context_for(str(settings.ca_file) if settings.ca_file else None),
        )

    def _authorizer_for(self, config: Config, sources: Mapping[str, KeySource]) -> Authorizer:
        # A fresh token cache per config: a provider's settings may have changed.
        settings = config.token_cache
        self.token_cache = TokenCache(settings.max_entries, settings.max_bytes)
        providers = build_providers(config, sources, self._clock, self.token_cache)
        for warning in shadowed_rules(config):
            log.warning("%s", warning)
        return Authorizer.from_config(config, providers, self._observe)

    async def _start(self) -> None:
        self.sources = {
            name: build_key_source(name, provider, self, self._fetcher_for, self._monotonic)
            for name, provider in self.config.providers.items()
        }
        self.authorizer = authorizer = CurrentAuthorizer(
            self._authorizer_for(self.config, self.sources)
        )
        listen = self.config.listen
        self.grpc = GrpcServer(
            authorizer,
            listen.grpc,
            max_request_bytes=self.config.limits.max_request_bytes,
            tls=listen.grpc_tls.pem() if listen.grpc_tls else None,
            reuse_port=self.config.workers > 1,
        )
        self.http = HttpServer(
            listen.http,
            self.metrics,
            lambda: self.ready,
            ssl_context=listen.http_tls.ssl_context() if listen.http_tls else None,
            reuse_port=self.config.workers > 1,
        )

        hold_until = time.monotonic() + self.config.startup_wait
        self._stack.push_async_callback(self._stop_sources)
        for source in self.sources.values():
            source.hold_checks_until(hold_until)
            await source.start()
        # HTTP first, so that it closes last: /readyz answers 503 while gRPC drains.
        await self.http.start()
        self._stack.push_async_callback(self.http.stop)
        if self.config.http_authz is not None:
            http_authz = self.config.http_authz
            self.http_authz = HttpAuthzServer(
                authorizer,
                http_authz.listen,
                http_authz.original_request,
                http_authz.path_prefix,
                max_headers=self.config.limits.max_headers,
                max_header_bytes=self.config.limits.max_header_bytes,
            )
            await self.http_authz.start(reuse_port=self.config.workers > 1)
            self._stack.push_async_callback(self.http_authz.stop)
        await self.grpc.start()
        self._stack.push_async_callback(self.grpc.stop, self.config.shutdown_grace)
        if self.config_path is not None:
            # The file as it is now, before the first loop turn: a change from here on counts.
            signature = self._file_signature()
            self._watcher = asyncio.create_task(self._watch_config(signature), name="config-watch")
            self._stack.push_async_callback(self._stop_reloading)
        await self._update_health()
        log.info("authz serving: grpc on port %d, http on port %d", self.grpc.port, self.http.port)

    # --- hot reload -------------------------------------------------------------------

    def request_reload(self) -> None:
        """Reload soon (SIGHUP); the task is owned here and awaited at stop."""
        task = asyncio.create_task(self.reload(), name="config-reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    def _file_signature(self) -> tuple[int, int, int] | None:
        assert self.config_path is not None
        try:
            st = os.stat(self.config_path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    async def _stop_sources(self) -> None:
        for source in self.sources.values():
            await source.stop()

    async def _watch_config(self, seen: tuple[int, int, int] | None) -> None:
        while True:
            await asyncio.sleep(self._watch_interval_s)
            signature = self._file_signature()
            if signature != seen and signature is not None:
                seen = signature
                await self.reload()  # never raises

    async def _stop_reloading(self) -> None:
        tasks = [t for t in (self._watcher, *self._reloads) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def reload(self) -> bool:
        """Load, validate and build the config file's new version, then swap it in whole.

        A file that does not load or build leaves the running config in place.
        """
        if self.config_path is None or self.authorizer is None or self._draining:
            return False
        async with self._reload_lock:
            try:
                config = load_config(self.config_path)
                authorizer, sources = await self._build_for(config)
            except (AuthzError, OSError) as exc:
                log.error("config reload failed, keeping the running config: %s", exc)
                self.metrics.observe_reload("failed")
                return False
            except Exception as exc:  # a bug must not end reloading, or the process
                log.error(
                    "config reload failed with %s, keeping the running config", type(exc).__name__
                )
                self.metrics.observe_reload("failed")
                return False
            for name in ("listen", "http_authz", "workers", "shutdown_grace", "log_level"):
                if getattr(config, name) != getattr(self.config, name):
                    log.warning("config reload: %s changes need a restart to apply", name)
            if config.limits.max_request_bytes != self.config.limits.max_request_bytes:
                log.warning("config reload: limits.max_request_bytes needs a restart to apply")
            retired = [s for n, s in self.sources.items() if sources.get(n) is not s]
            self._decisions = DecisionLog(config.decision_log)
            self.authorizer.current = authorizer
            self.sources, self.config = sources, config
            for source in retired:
                await source.stop()
            self.metrics.observe_reload("ok")
            await self._update_health()
            log.info("config reloaded from %s", self.config_path)
            return True

    async def _build_for(self, config: Config) -> tuple[Authorizer, dict[str, KeySource]]:
        """Key sources and an authorizer for ``config``.

        A provider whose keys are configured as before keeps its source, and its keys. A
        new source must load its first key set before the reload goes ahead, so a reload
        never leaves a provider without keys.
        """
        sources: dict[str, KeySource] = {}
        started: list[KeySource] = []
        try:
            for name, provider in config.providers.items():
                old = self.config.providers.get(name)
                if old is not None and name in self.sources and _same_keys(old, provider):
                    sources[name] = self.sources[name]
                    continue
                source = build_key_source(name, provider, self, self._fetcher_for, self._monotonic)
                started.append(source)
                await source.start()
                if not await source.wait_loaded(RELOAD_KEYS_WAIT_S):
                    raise JwksError(f"provider {name}: no key set within {RELOAD_KEYS_WAIT_S}s")
                sources[name] = source
            return self._authorizer_for(config, sources), sources
        except BaseException:
            for source in started:
                await source.stop()
            raise

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

    def _observe(self, request: RequestAttributes, decision: Decision, seconds: float) -> None:
        if self.config.decision_log.enabled:
            self._decisions.record(request, decision, seconds)
        self.metrics.observe_check(
            "allow" if decision.allowed else "deny",
            decision.reason,
            decision.provider or "none",
            decision.rule or "none",
            seconds,
        )
        if decision.dry_run is not None:
            self.metrics.observe_dry_run(decision.rule or "none", *decision.dry_run)
        if decision.reason == "allowed":
            self.metrics.token_cache.labels("hit" if decision.cached_identity else "miss").inc()

    # KeyEvents: what key sources report.
    async def key_set(self, provider: str, result: str, keys: KeySet | None) -> None:
        self.metrics.observe_jwks(provider, result, keys.size if keys else None)
        await self._update_health()

    def unknown_kid(self, provider: str, result: str) -> None:
        self.metrics.observe_unknown_kid(provider, result)

    async def _update_health(self) -> None:
        if self.grpc is not None and not self._draining:
            await self.grpc.set_serving(overall=True, authorization=self.ready)
