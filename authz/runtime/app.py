"""One running authz: start (build, load keys, listen), drain and stop, in reverse order.

The build is build.py, hot reload is reload.py, metrics and the decision log are
observe.py: the App only owns the lifecycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from authz.adapters.grpc_server import GrpcServer
from authz.adapters.http_authz import HttpAuthzServer
from authz.adapters.listener import ConnectionBounds
from authz.adapters.ops_server import OpsServer
from authz.config import Config, Overrides, split_address
from authz.core.authorizer import CurrentAuthorizer
from authz.core.verify import Clock
from authz.keys.crypto import assert_cryptography_backend
from authz.keys.sources import KeySource
from authz.runtime.build import (
    Fetchers,
    Listeners,
    ReplayStores,
    build,
    build_listeners,
    build_tracing,
    replay_entries,
)
from authz.runtime.metrics import Metrics
from authz.runtime.observe import Telemetry
from authz.runtime.reload import Reloader, Running
from authz.runtime.tls_files import CHECK_INTERVAL_S, TlsFiles
from authz.support.tasks import OwnedTasks

if TYPE_CHECKING:
    from authz.runtime.otel import OtelTracing

log = logging.getLogger(__name__)

GAUGE_REFRESH_S = 5.0


def descriptor_limit() -> int:
    """This process's soft limit on open files."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_descriptor_limit() -> None:
    """Raise the soft limit on open files to the hard one: every connection is one, and
    the common soft default (1024) is far below what a busy replica holds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft >= hard:
        log.info("open files: limit %s", "unlimited" if soft == resource.RLIM_INFINITY else soft)
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("open files: cannot raise the limit from %d to %d: %s", soft, hard, exc)
        return
    log.info("open files: limit raised from %d to %d", soft, hard)


class App:
    """Key sources, the authorizer, the gRPC and HTTP listeners, and their order."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
        config_path: str | Path | None = None,
        watch_interval_s: float = 2.0,
        reload_keys_wait_s: float = 10.0,
        config_text: str | None = None,
        overrides: Overrides | None = None,
    ) -> None:
        """``watch_interval_s``: how often the config file is checked for changes;
        ``reload_keys_wait_s``: how long a reload waits for a new provider's first keys;
        ``config_text``: what ``config`` was loaded from, when it came from the file;
        ``overrides``: settings given outside the file, applied to every reload too."""
        self._config_text = config_text
        self._overrides = overrides or Overrides()
        assert_cryptography_backend()
        self.metrics = Metrics()
        self._clock = clock
        self._monotonic = monotonic
        self._config_path = Path(config_path) if config_path is not None else None
        self._watch_interval_s = watch_interval_s
        self._reload_keys_wait_s = reload_keys_wait_s
        self._stack = contextlib.AsyncExitStack()
        self._draining = False
        self._fetchers = Fetchers()
        # DPoP proofs seen, kept across reloads (a reload must not reopen the window).
        self._replay = ReplayStores(replay_entries(config))
        self._tasks = OwnedTasks()
        self.observer = Telemetry(self.metrics, config.decision_log, self._update_health)
        self.running = Running(config, None, {})
        # Restart-only settings: a reload changes the running config, not these.
        self._shutdown_grace = config.shutdown_grace
        self._shutdown_drain = config.shutdown_drain
        self.reloader: Reloader | None = None
        # Traces (tracing:), made at start and stopped last; a reload keeps them.
        self.tracing: OtelTracing | None = None
        self.grpc: GrpcServer | None = None
        self.http_authz: HttpAuthzServer | None = None
        self.http: OpsServer | None = None

    @property
    def config(self) -> Config:
        return self.running.config

    @property
    def sources(self) -> Mapping[str, KeySource]:
        return self.running.sources

    @property
    def ready(self) -> bool:
        return not self._draining and all(s.usable for s in self.sources.values())

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise

    async def _start(self) -> None:
        config = self.config
        self._stack.push_async_callback(self._fetchers.close)
        self._stack.push_async_callback(self._replay.close)
        self.tracing = build_tracing(config)
        if self.tracing is not None:
            # Pushed early, so it runs late: the last checks' spans are exported on stop.
            self._stack.push_async_callback(self.tracing.stop)
        built = build(
            config,
            events=self.observer,
            fetcher_for=self._fetchers,
            observe=self.observer,
            clock=self._clock,
            monotonic=self._monotonic,
            replay=self._replay,
            tracer=self.tracing,
        )
        for warning in built.warnings:
            log.warning("%s", warning)
        authorizer = CurrentAuthorizer(built.authorizer)
        self.running = Running(config, authorizer, dict(built.sources), built.introspectors)
        plan = build_listeners(config, descriptor_limit())
        bounds = plan.connections
        if bounds.fitted:
            log.warning("%s", bounds.fitted)
        http_bounds = ConnectionBounds(
            bounds.header_timeout_s, bounds.idle_timeout_s, bounds.max_http
        )
        self.grpc = GrpcServer(
            authorizer,
            plan.grpc_address,
            receive_bytes=plan.grpc_receive_bytes,
            handshake_timeout_s=bounds.header_timeout_s,
            max_connections=bounds.max_grpc,
            max_connection_age_s=bounds.grpc_max_age_s,
            tls=plan.grpc_tls,
            reuse_port=plan.reuse_port,
            trace_context=self.tracing is not None,
        )
        self.http = OpsServer(
            plan.ops_host,
            plan.ops_port,
            metrics=self._metrics_page,
            metrics_content_type=self.metrics.content_type,
            ready=lambda: self.ready,
            connections=http_bounds,
            ssl_context=plan.ops_tls,
            reuse_port=plan.reuse_port,
        )
        self._stack.push_async_callback(self._stop_sources)
        self._stack.push_async_callback(self._tasks.stop)
        self._tasks.spawn(self._refresh_gauges(), "gauges")
        if plan.ops_tls_files is not None:
            self._tasks.spawn(self._follow_tls(plan.ops_tls_files), "ops-tls-renewal")
        for source in self.sources.values():
            source.hold_checks_for(config.startup_wait)
            await source.start()
        # HTTP first, so that it closes last: /readyz answers 503 while the checks drain.
        await self.http.start()
        self._stack.push_async_callback(self.http.stop)
        if plan.http_authz is not None:
            self.http_authz = HttpAuthzServer(
                authorizer,
                plan.http_authz.host,
                plan.http_authz.port,
                style=plan.http_authz.style,
                path_prefix=plan.http_authz.path_prefix,
                certificate_source=plan.http_authz.certificate_source,
                max_headers=plan.max_headers,
                max_header_bytes=plan.max_header_bytes,
                connections=http_bounds,
                close_timeout_s=self._shutdown_grace - self._shutdown_drain,
                reuse_port=plan.reuse_port,
                observe=self.observer,
                monotonic=self._monotonic,
            )
        # Both check listeners close together, sharing what the drain left of the grace.
        self._stack.push_async_callback(self._close_check_listeners)
        if self.http_authz is not None:
            await self.http_authz.start()
        await self.grpc.start()
        self.reloader = Reloader(
            self.running,
            path=self._config_path,
            observer=self.observer,
            fetcher_for=self._fetchers,
            clock=self._clock,
            monotonic=self._monotonic,
            swapped=self._update_health,
            keys_wait_s=self._reload_keys_wait_s,
            loaded_text=self._config_text,
            replay=self._replay,
            tracer=self.tracing,
            overrides=self._overrides,
        )
        if self._config_path is not None:
            self.reloader.watch(self._watch_interval_s)
        self._stack.push_async_callback(self.reloader.stop)
        await self._update_health()
        log.info("authz serving: %s", self._listening(plan))

    def _listening(self, plan: Listeners) -> str:
        """Every listener: what it serves, where, and whether it speaks TLS."""
        assert self.grpc is not None and self.http is not None
        grpc_host = split_address(plan.grpc_address)[0]
        grpc_mutual = plan.grpc_tls is not None and plan.grpc_tls.mutual
        listeners = [
            f"grpc on {_address(grpc_host, self.grpc.port)} "
            f"({_security(plan.grpc_tls is not None, grpc_mutual)})"
        ]
        if self.http_authz is not None and plan.http_authz is not None:
            where = _address(plan.http_authz.host, self.http_authz.port)
            listeners.append(f"http authorization on {where} (plaintext)")
        ops = plan.ops_tls
        ops_mutual = ops is not None and ops.verify_mode == ssl.CERT_REQUIRED
        where = _address(plan.ops_host, self.http.port)
        listeners.append(
            f"health and metrics on {where} ({_security(ops is not None, ops_mutual)})"
        )
        return ", ".join(listeners)

    def request_reload(self) -> None:
        """Reload soon (SIGHUP); nothing happens before start or while draining."""
        if self.reloader is not None and not self._draining:
            self.reloader.request()

    async def reload(self) -> bool:
        """Reload now; whether the new config is in use."""
        if self.reloader is None or self._draining:
            return False
        return await self.reloader.reload()

    def _cache_gauges(self) -> None:
        self.metrics.refresh_process()
        authorizer = self.running.authorizer
        cache = authorizer.current.token_cache if authorizer is not None else None
        if cache is None:
            self.metrics.observe_token_cache_size(0, 0)
        else:
            self.metrics.observe_token_cache_size(len(cache), cache.bytes)

    def _metrics_page(self) -> bytes:
        self._cache_gauges()
        return self.metrics.render()

    async def _follow_tls(self, files: TlsFiles) -> None:
        """Look at the HTTP listener's TLS files: a renewal becomes the context its next
        handshakes use (gRPC asks its files at each handshake itself)."""
        while True:
            await asyncio.sleep(CHECK_INTERVAL_S)
            files.refreshed()

    async def _refresh_gauges(self) -> None:
        """Gauges that follow state rather than events: set now and then, so that with
        workers a scrape answered by one sees the others' values too."""
        while True:
            self._cache_gauges()
            await asyncio.sleep(GAUGE_REFRESH_S)

    async def _stop_sources(self) -> None:
        for source in self.sources.values():
            await source.stop()

    async def stop(self) -> None:
        """Drain, then close in reverse order. Health turns NOT_SERVING at once, and every
        check keeps being answered for ``shutdown_drain`` seconds, long enough for a
        health-checking proxy to move new checks elsewhere; then the check listeners close
        (gRPC sends GOAWAY) and what is in flight gets the rest of ``shutdown_grace``.

        grpcio's server, once told to stop, cancels the calls it has received but not yet
        handed to a handler: closing at once would fail checks already sent."""
        if self._draining:
            return
        self._draining = True
        if self.reloader is not None:
            await self.reloader.stop()  # no reload may start while draining
        if self.grpc is not None:
            await self.grpc.set_serving(overall=False, authorization=False)
            drain = self._shutdown_drain
            if drain > 0:
                log.info("draining: answering checks for %gs while health says NOT_SERVING", drain)
                await asyncio.sleep(drain)
        await self._stack.aclose()

    async def _close_check_listeners(self) -> None:
        closing = []
        if self.grpc is not None:
            closing.append(self.grpc.stop(self._shutdown_grace - self._shutdown_drain))
        if self.http_authz is not None:
            closing.append(self.http_authz.stop())
        await asyncio.gather(*closing)

    async def __aenter__(self) -> App:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def _update_health(self) -> None:
        if self.grpc is not None and not self._draining:
            await self.grpc.set_serving(overall=True, authorization=self.ready)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _security(tls: bool, mutual: bool) -> str:
    return "mutual tls" if mutual else "tls" if tls else "plaintext"
