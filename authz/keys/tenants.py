"""The key sources of a multi-tenant provider: one per tenant, made on first use.

Bounded (``max_tenants``, least recently used stopped first) and rate-limited (a token
bucket of ``create_per_s`` new tenants a second, ``burst`` at once), so tokens naming
random tenants can neither fill memory with sources nor hammer the IdP. A new tenant's
first check waits up to ``first_wait_s`` for its first key set.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from authz.core.errors import NoKeys
from authz.keys.sources import KeyEvents, KeySource, Monotonic
from authz.support.tasks import OwnedTasks

log = logging.getLogger(__name__)


class TokenBucket:
    def __init__(self, per_s: float, burst: float, monotonic: Monotonic) -> None:
        self._per_s = per_s
        self._burst = burst
        self._tokens = burst
        self._monotonic = monotonic
        self._at = monotonic()

    def take(self) -> bool:
        now = self._monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._per_s)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class TenantKeySources(KeySource):
    """Implements the core's TenantKeys; to the App it is one more key source, ready
    from the start (a tenant's keys are fetched when its first token arrives)."""

    def __init__(
        self,
        provider: str,
        algorithms: tuple[str, ...],
        events: KeyEvents,
        make_source: Callable[[str], KeySource],
        *,
        max_tenants: int,
        create_per_s: float,
        burst: int,
        first_wait_s: float,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        super().__init__(provider, algorithms, events, monotonic)
        self._make_source = make_source
        self._max_tenants = max_tenants
        self._bucket = TokenBucket(create_per_s, burst, monotonic)
        self._first_wait_s = first_wait_s
        self._sources: OrderedDict[str, KeySource] = OrderedDict()
        self._tasks = OwnedTasks()
        self._running = False

    @property
    def usable(self) -> bool:
        return True

    def __len__(self) -> int:
        return len(self._sources)

    def current(self, tenant: str) -> KeySource | None:
        return self._sources.get(tenant)

    def keys_for(self, tenant: str) -> KeySource:
        source = self._sources.get(tenant)
        if source is not None:
            self._sources.move_to_end(tenant)
            return source
        if not self._running:
            raise NoKeys(f"provider {self.provider} is not running")
        if not self._bucket.take():
            raise NoKeys(f"provider {self.provider}: new tenants arrive faster than allowed")
        source = self._make_source(tenant)
        source.hold_checks_for(self._first_wait_s)
        self._sources[tenant] = source
        self._tasks.spawn(source.start(), f"jwks-tenant-start-{self.provider}")
        while len(self._sources) > self._max_tenants:
            _, oldest = self._sources.popitem(last=False)
            self._tasks.spawn(oldest.stop(), f"jwks-tenant-stop-{self.provider}")
        return source

    async def wait_loaded(self, timeout_s: float) -> bool:
        return True  # nothing to wait for: each tenant's keys load on first use

    async def start(self) -> None:
        self._running = True

    async def stop(self) -> None:
        self._running = False
        sources = list(self._sources.values())
        self._sources.clear()
        for source in sources:
            await source.stop()
        await self._tasks.stop()
