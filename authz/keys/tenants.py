"""The key sources of a multi-tenant provider: one per tenant, made on first use.

Bounded (``max_tenants``, least recently used stopped first) and rate-limited (a token
bucket of ``create_per_s`` new tenants a second, ``burst`` at once), so tokens naming
random tenants can neither fill memory with sources nor hammer the IdP. A new tenant's
first check waits up to ``first_wait_s`` for its first key set.
"""

from __future__ import annotations

import asyncio
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


# What a TenantKeySources reports: "created", "evicted" or "rate_limited", and how many
# tenants have key sources now.
TenantEvent = Callable[[str, str, int], None]


class TenantKeySources(KeySource):
    """Implements the core's TenantKeys; to the App it is one more key source.

    Listed tenants (``listed``) get their sources when it starts, and it is usable (ready)
    once each has a key set, as a single provider is. With any tenant, a source is made
    when a tenant's first token arrives, so it is ready from the start. A source that
    never loaded a key set is the first to go when room is needed: tokens naming made-up
    tenants cannot push out tenants whose keys are in use.
    """

    def __init__(
        self,
        provider: str,
        algorithms: tuple[str, ...],
        events: KeyEvents,
        make_source: Callable[[str], KeySource],
        *,
        listed: tuple[str, ...] = (),
        max_tenants: int,
        create_per_s: float,
        burst: int,
        first_wait_s: float,
        on_event: TenantEvent | None = None,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        super().__init__(provider, algorithms, events, monotonic)
        self._make_source = make_source
        self._listed = listed
        self._max_tenants = max(max_tenants, len(listed))
        self._bucket = TokenBucket(create_per_s, burst, monotonic)
        self._first_wait_s = first_wait_s
        self._on_event = on_event
        self._sources: OrderedDict[str, KeySource] = OrderedDict()
        self._live: set[KeySource] = set()  # made and not yet stopped, evicted ones included
        self._tasks = OwnedTasks()
        self._running = False
        self._hold_s = 0.0

    @property
    def usable(self) -> bool:
        return all(
            (source := self._sources.get(tenant)) is not None and source.keys is not None
            for tenant in self._listed
        )

    def __len__(self) -> int:
        return len(self._sources)

    def current(self, tenant: str) -> KeySource | None:
        source = self._sources.get(tenant)
        if source is not None:
            self._sources.move_to_end(tenant)  # a tenant served from the token cache is in use
        return source

    def keys_for(self, tenant: str) -> KeySource:
        source = self.current(tenant)
        if source is not None:
            return source
        if not self._running:
            raise NoKeys(f"provider {self.provider} is not running")
        if not self._bucket.take():
            self._report("rate_limited")
            raise NoKeys(f"provider {self.provider}: new tenants arrive faster than allowed")
        return self._create(tenant, self._first_wait_s)

    def _create(self, tenant: str, hold_s: float) -> KeySource:
        source = self._make_source(tenant)
        source.hold_checks_for(hold_s)
        self._sources[tenant] = source
        self._live.add(source)
        self._tasks.spawn(source.start(), f"jwks-tenant-start-{self.provider}")
        while len(self._sources) > self._max_tenants:
            self._evict()
        self._report("created")
        return source

    def _evict(self) -> None:
        """Stop the least recently used source that never loaded keys, or else the least
        recently used one."""
        victim = next(
            (tenant for tenant, source in self._sources.items() if source.keys is None),
            next(iter(self._sources)),
        )
        source = self._sources.pop(victim)
        self._tasks.spawn(self._retire(source), f"jwks-tenant-stop-{self.provider}")
        self._report("evicted")

    async def _retire(self, source: KeySource) -> None:
        await source.stop()
        self._live.discard(source)

    def hold_checks_for(self, seconds: float) -> None:
        self._hold_s = seconds  # startup_wait: for the listed tenants' first key sets
        for source in self._sources.values():
            source.hold_checks_for(seconds)

    async def wait_loaded(self, timeout_s: float) -> bool:
        waits = [self._sources[t].wait_loaded(timeout_s) for t in self._listed]
        return all(await asyncio.gather(*waits))

    async def start(self) -> None:
        self._running = True
        for tenant in self._listed:
            self._create(tenant, max(self._hold_s, self._first_wait_s))

    async def stop(self) -> None:
        self._running = False
        await self._tasks.stop()  # starts not yet run, stops not yet done
        live, self._live = list(self._live), set()
        self._sources.clear()
        for source in live:
            await source.stop()

    def _report(self, event: str) -> None:
        if self._on_event is not None:
            self._on_event(self.provider, event, len(self._sources))
