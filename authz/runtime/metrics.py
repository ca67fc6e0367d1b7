"""Prometheus metrics in a registry owned by the app. Labels are fixed codes and config names."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from authz import __version__

PROCESS_GAUGES = {
    "process_cpu_seconds_total": "CPU seconds the live workers spent (user and system).",
    "process_resident_memory_bytes": "Resident memory of the live workers, in bytes.",
    "process_open_fds": "Open file descriptors of the live workers.",
}
CHECK_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)
INTROSPECTION_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        # No <name>_created series: they double every counter's series for a timestamp
        # nobody graphs (prometheus_client's own switch, process-wide).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self.build_info = Gauge(
            "authz_build_info",
            "Always 1; the labels say which authz and Python run.",
            ("version", "python"),
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        # Process metrics: prometheus_client's collector reads this process only, and a
        # multiprocess page holds only what workers wrote to their files; with workers,
        # each writes its own figures as gauges that add up (see refresh_process).
        self._multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.process: dict[str, Gauge] = {}
        if self._multiprocess:
            for name, text in PROCESS_GAUGES.items():
                self.process[name] = Gauge(
                    name, text, registry=self.registry, multiprocess_mode="livesum"
                )
        else:
            ProcessCollector(registry=self.registry)
        self.checks = Counter(
            "authz_checks",
            "Authorization checks by decision, reason code, provider and rule.",
            ("decision", "reason", "provider", "rule"),
            registry=self.registry,
        )
        self.check_duration = Histogram(
            "authz_check_duration_seconds",
            "Time spent deciding one check.",
            buckets=CHECK_BUCKETS_S,
            registry=self.registry,
        )
        self.jwks_keys = Gauge(
            "authz_jwks_keys",
            "Usable keys in the provider's current key set.",
            ("provider",),
            registry=self.registry,
            multiprocess_mode="livemin",  # the worst live worker shows
        )
        self.jwks_refresh = Counter(
            "authz_jwks_refresh",
            "Key set loads by provider and result "
            "(ok, not_modified, http_error, network_error, timeout, invalid, read_error).",
            ("provider", "result"),
            registry=self.registry,
        )
        self.jwks_last_success = Gauge(
            "authz_jwks_last_success_timestamp_seconds",
            "Unix time of the provider's last successful key set load.",
            ("provider",),
            registry=self.registry,
            multiprocess_mode="livemin",  # the worst live worker shows
        )

        self.unknown_kid_refetch = Counter(
            "authz_jwks_unknown_kid_refetch",
            "Refetches triggered by a token with an unknown kid, by result "
            "(ok, failed, rate_limited, wait_timeout).",
            ("provider", "result"),
            registry=self.registry,
        )

        self._check_children: dict[tuple[str, str, str, str], Any] = {}
        self._introspection_cache_children: dict[tuple[str, str], Any] = {}
        self.token_cache = Counter(
            "authz_token_cache",
            "Allowed token checks by whether the token cache answered (hit) or not (miss).",
            ("result",),
            registry=self.registry,
        )
        self.config_reload = Counter(
            "authz_config_reload",
            "Config reloads by result (ok, failed).",
            ("result",),
            registry=self.registry,
        )
        self.config_last_reload = Gauge(
            "authz_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config reload.",
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        self.worker_restarts = Counter(
            "authz_worker_restarts",
            "Workers started again after exiting unexpectedly (workers > 1), by worker index.",
            ("worker",),
            registry=self.registry,
        )
        self.token_cache_entries = Gauge(
            "authz_token_cache_entries",
            "Tokens in the token cache.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.token_cache_bytes = Gauge(
            "authz_token_cache_bytes",
            "Bytes the token cache's entries take in memory, as the cache measures them "
            "(bounded by token_cache.max_bytes).",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.jwks_tenant_sources = Counter(
            "authz_jwks_tenant_sources",
            "A multi-tenant provider's per-tenant key sources by event (created, evicted, "
            "rate_limited: a new tenant refused because they arrive too fast).",
            ("provider", "event"),
            registry=self.registry,
        )
        self.jwks_tenants = Gauge(
            "authz_jwks_tenants",
            "Tenants of a multi-tenant provider that have a key source now.",
            ("provider",),
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.introspection_requests = Counter(
            "authz_introspection_requests",
            "Requests to a provider's introspection endpoint, by result (active, inactive, "
            "http_error, network_error, timeout, invalid, discovery_error).",
            ("provider", "result"),
            registry=self.registry,
        )
        self.introspection_duration = Histogram(
            "authz_introspection_duration_seconds",
            "How long the provider's introspection endpoint took to answer (or fail).",
            ("provider",),
            buckets=INTROSPECTION_BUCKETS_S,
            registry=self.registry,
        )
        self.introspection_cache = Counter(
            "authz_introspection_cache",
            "Introspected tokens by whether a kept answer judged them: hit (active), "
            "negative_hit (inactive or refused), miss (the endpoint was asked).",
            ("provider", "result"),
            registry=self.registry,
        )
        self.dry_run = Counter(
            "authz_dry_run",
            "Checks of dry-run rules: the decision enforcement would have made, and why.",
            ("rule", "decision", "reason"),
            registry=self.registry,
        )

    def observe_reload(self, result: str) -> None:
        self.config_reload.labels(result).inc()
        if result == "ok":
            self.config_last_reload.set(time.time())

    def observe_check(
        self, decision: str, reason: str, provider: str, rule: str, seconds: float
    ) -> None:
        # labels() validates on every call; the label sets are few (fixed codes, config
        # names), so their children are looked up once.
        key = (decision, reason, provider, rule)
        child = self._check_children.get(key)
        if child is None:
            child = self._check_children[key] = self.checks.labels(*key)
        child.inc()
        self.check_duration.observe(seconds)

    def observe_token_cache(self, result: str) -> None:
        """One allowed check: whether its identities came from the token cache."""
        self.token_cache.labels(result).inc()

    def refresh_process(self) -> None:
        """With workers: this worker's CPU seconds, RSS and open descriptors, summed over
        the live workers on the page."""
        if not self.process:
            return
        stat = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        self.process["process_cpu_seconds_total"].set((int(stat[11]) + int(stat[12])) / ticks)
        self.process["process_resident_memory_bytes"].set(
            int(stat[21]) * os.sysconf("SC_PAGE_SIZE")
        )
        self.process["process_open_fds"].set(len(os.listdir("/proc/self/fd")))

    def observe_token_cache_size(self, entries: int, size: int) -> None:
        self.token_cache_entries.set(entries)
        self.token_cache_bytes.set(size)

    def observe_tenant_source(self, provider: str, event: str, tenants: int) -> None:
        self.jwks_tenant_sources.labels(provider, event).inc()
        self.jwks_tenants.labels(provider).set(tenants)

    def observe_introspection(self, provider: str, result: str, seconds: float) -> None:
        self.introspection_requests.labels(provider, result).inc()
        self.introspection_duration.labels(provider).observe(seconds)

    def observe_introspection_cache(self, provider: str, result: str) -> None:
        # Once per introspected check: the children are looked up once (see observe_check).
        key = (provider, result)
        child = self._introspection_cache_children.get(key)
        if child is None:
            child = self._introspection_cache_children[key] = self.introspection_cache.labels(
                provider, result
            )
        child.inc()

    def observe_dry_run(self, rule: str, decision: str, reason: str) -> None:
        self.dry_run.labels(rule, decision, reason).inc()

    def observe_jwks(self, provider: str, result: str, keys: int | None) -> None:
        self.jwks_refresh.labels(provider, result).inc()
        if keys is not None:
            self.jwks_keys.labels(provider).set(keys)
        if result in ("ok", "not_modified"):
            self.jwks_last_success.labels(provider).set(time.time())

    def observe_unknown_kid(self, provider: str, result: str) -> None:
        self.unknown_kid_refetch.labels(provider, result).inc()

    def render(self) -> bytes:
        folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if folder:
            # Several workers: add up every worker's samples (see authz/runtime/workers.py).
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=folder)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
