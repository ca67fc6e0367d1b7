"""Hot reload: on SIGHUP or a change of the config file, load and build the new config
whole, then swap it in at once. A file that does not load or build keeps the running one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authz.config import Config, ConfigError, Overrides, load_config, read_config_text
from authz.core.authorizer import Authorizer, CurrentAuthorizer
from authz.core.errors import AuthzError, JwksError
from authz.core.tracing import Tracer
from authz.core.verify import Clock
from authz.keys.sources import KeySource
from authz.runtime.build import (
    FetcherFor,
    ReplayStores,
    build,
    same_introspection,
    same_keys,
)
from authz.runtime.observe import Telemetry
from authz.support.files import file_signature, watch_file
from authz.support.tasks import OwnedTasks

log = logging.getLogger(__name__)

RESTART_ONLY = (
    "listen",
    "http_authz",
    "tracing",
    "workers",
    "shutdown_grace",
    "shutdown_drain",
    "log_level",
    "log_format",
)
# Limits the listeners were built with: a reload keeps the running values (the gRPC
# receive limit is made from max_request_bytes, so the two must change together).
RESTART_ONLY_LIMITS = (
    "max_request_bytes",
    "http_header_timeout",
    "http_idle_timeout",
    "max_http_connections",
    "max_grpc_connections",
    "grpc_max_connection_age",
)


@dataclass(slots=True)
class Running:
    """What is serving now; a reload replaces them together."""

    config: Config
    authorizer: CurrentAuthorizer | None
    sources: dict[str, KeySource]
    introspectors: Mapping[str, Any] = field(default_factory=dict)  # the answers they hold


class Reloader:
    def __init__(
        self,
        running: Running,
        *,
        path: Path | None,
        observer: Telemetry,
        fetcher_for: FetcherFor,
        clock: Clock,
        monotonic: Clock,
        swapped: Callable[[], Awaitable[None]],
        keys_wait_s: float,
        loaded_text: str | None = None,
        replay: ReplayStores | None = None,
        tracer: Tracer | None = None,
        overrides: Overrides | None = None,
    ) -> None:
        """``keys_wait_s``: how long a new key source may take to load its first key set
        before the reload gives up; ``loaded_text``: the text the running config was
        loaded from (None: unknown), so that a reload of the same text does nothing;
        ``tracer``: the App's, kept by every authorizer a reload builds (a change of
        ``tracing`` needs a restart); ``overrides``: settings given outside the file, which
        win over the new file's."""
        self._tracer = tracer
        self._overrides = overrides or Overrides()
        self._loaded_text = loaded_text
        self._replay = replay
        self._running = running
        self._keys_wait_s = keys_wait_s
        self._path = path
        self._observer = observer
        self._fetcher_for = fetcher_for
        self._clock = clock
        self._monotonic = monotonic
        self._swapped = swapped
        self._lock = asyncio.Lock()
        self._tasks = OwnedTasks()
        self._stopped = False

    def watch(self, interval_s: float) -> None:
        """Reload whenever the config file changes (checked every ``interval_s``)."""
        assert self._path is not None
        seen = file_signature(self._path)  # the file as it is now: a change from here counts
        watcher = watch_file(self._path, interval_s, self.reload, seen, what="the config file")
        self._tasks.spawn(watcher, "config-watch")

    def request(self) -> None:
        """Reload soon (SIGHUP); the task is owned here and awaited at stop."""
        self._tasks.spawn(self.reload(), "config-reload")

    async def stop(self) -> None:
        self._stopped = True
        await self._tasks.stop()

    async def reload(self) -> bool:
        """Load, validate and build the file's new version, then swap it in whole."""
        running = self._running
        if self._path is None or running.authorizer is None or self._stopped:
            return False
        async with self._lock:
            try:
                text = read_config_text(self._path)
                if text == self._loaded_text:
                    # SIGHUP after the watcher reloaded this very text, or the other way
                    # round: the running config is this file already.
                    log.info("config reload: %s is what is running; nothing to do", self._path)
                    return True
                loaded = self._overrides.apply(load_config(self._path, text))
                config = _keep_listener_limits(loaded, running.config)
                built, started, introspectors = await self._build(config)
            except (AuthzError, ConfigError, OSError) as exc:
                log.error("config reload failed, keeping the running config: %s", exc)
                self._observer.observe_reload("failed")
                return False
            except Exception as exc:  # a bug must not end reloading, or the process
                log.error(
                    "config reload failed with %s, keeping the running config", type(exc).__name__
                )
                self._observer.observe_reload("failed")
                return False
            for name in RESTART_ONLY:
                if getattr(config, name) != getattr(running.config, name):
                    log.warning("config reload: %s changes need a restart to apply", name)
            retired = [s for n, s in running.sources.items() if started.get(n) is not s]
            self._observer.use_decision_log(config.decision_log)
            running.authorizer.current = built
            running.sources, running.config = started, config
            running.introspectors = introspectors
            for source in retired:
                await source.stop()
            self._loaded_text = text
            self._observer.observe_reload("ok")
            await self._swapped()
            log.info("config reloaded from %s", self._path)
            return True

    async def _build(
        self, config: Config
    ) -> tuple[Authorizer, dict[str, KeySource], Mapping[str, Any]]:
        """The new authorizer and key sources. A provider whose keys are configured as
        before keeps its source, and its keys; a new source must load its first key set
        before the reload goes ahead, so a reload never leaves a provider without keys."""
        running = self._running
        keep = {
            name: running.sources[name]
            for name, provider in config.providers.items()
            if name in running.sources
            and name in running.config.providers
            and same_keys(running.config.providers[name], provider)
        }
        keep_introspectors = {
            name: running.introspectors[name]
            for name, provider in config.providers.items()
            if name in running.introspectors
            and name in running.config.providers
            and same_introspection(running.config.providers[name], provider)
        }
        built = build(
            config,
            events=self._observer,
            fetcher_for=self._fetcher_for,
            observe=self._observer,
            clock=self._clock,
            monotonic=self._monotonic,
            keep=keep,
            keep_introspectors=keep_introspectors,
            replay=self._replay,
            tracer=self._tracer,
        )
        for warning in built.warnings:
            log.warning("%s", warning)
        fresh = [s for name, s in built.sources.items() if name not in keep]
        try:
            for source in fresh:
                await source.start()
                if not await source.wait_loaded(self._keys_wait_s):
                    raise JwksError(
                        f"provider {source.provider}: no key set within {self._keys_wait_s}s"
                    )
        except BaseException:
            for source in fresh:
                await source.stop()
            raise
        return built.authorizer, dict(built.sources), built.introspectors


def _keep_listener_limits(config: Config, running: Config) -> Config:
    """``config`` with the running values of the limits the listeners were built with,
    each changed one logged as needing a restart."""
    kept = {}
    for name in RESTART_ONLY_LIMITS:
        if getattr(config.limits, name) != getattr(running.limits, name):
            log.warning("config reload: limits.%s changes need a restart to apply", name)
            kept[name] = getattr(running.limits, name)
    if not kept:
        return config
    return config.model_copy(update={"limits": config.limits.model_copy(update=kept)})
