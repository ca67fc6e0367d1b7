"""Observation: what checks and key sources report becomes metrics, decision-log lines and
health. The core only calls an Observer; the keys layer only calls KeyEvents."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from authz.config import DecisionLogSettings
from authz.core.authorizer import Observation
from authz.core.model import Decision, RequestAttributes
from authz.keys.jwks import KeySet
from authz.runtime.decision_log import DecisionLog
from authz.runtime.metrics import Metrics


class Telemetry:
    """The core's Observer and the keys layer's KeyEvents and IntrospectionEvents, for one
    running authz."""

    def __init__(
        self,
        metrics: Metrics,
        decision_log: DecisionLogSettings,
        keys_changed: Callable[[], Awaitable[None]],
    ) -> None:
        self.metrics = metrics
        self._keys_changed = keys_changed
        self.use_decision_log(decision_log)

    def use_decision_log(self, settings: DecisionLogSettings) -> None:
        """On reload: the decision log's new settings."""
        self._decisions = DecisionLog(settings) if settings.enabled else None

    def __call__(
        self, request: RequestAttributes, decision: Decision, observation: Observation
    ) -> None:
        if self._decisions is not None:
            self._decisions.record(request, decision, observation.seconds, observation.trace_id)
        self.metrics.observe_check(
            "allow" if decision.allowed else "deny",
            decision.reason,
            decision.provider or "none",
            decision.rule or "none",
            observation.seconds,
        )
        if decision.dry_run is not None:
            self.metrics.observe_dry_run(decision.rule or "none", *decision.dry_run)
        if decision.reason == "allowed" and observation.token_cache is not None:
            self.metrics.observe_token_cache(observation.token_cache)

    def observe_reload(self, result: str) -> None:
        self.metrics.observe_reload(result)

    # KeyEvents
    async def key_set(self, provider: str, result: str, keys: KeySet | None) -> None:
        self.metrics.observe_jwks(provider, result, keys.size if keys else None)
        await self._keys_changed()

    def unknown_kid(self, provider: str, result: str) -> None:
        self.metrics.observe_unknown_kid(provider, result)

    # IntrospectionEvents, and the core Introspector's cache events
    def introspection(self, provider: str, result: str, seconds: float) -> None:
        self.metrics.observe_introspection(provider, result, seconds)

    def introspection_cache(self, provider: str, result: str) -> None:
        self.metrics.observe_introspection_cache(provider, result)

    def tenant_source(self, provider: str, event: str, tenants: int) -> None:
        self.metrics.observe_tenant_source(provider, event, tenants)
