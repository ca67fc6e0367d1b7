"""A multi-tenant provider's key sources: one per tenant on first use, bounded, their
creation rate-limited."""

from __future__ import annotations

import asyncio

import pytest

from authz.core.errors import NoKeys
from authz.keys.sources import KeySource
from authz.keys.tenants import TenantKeySources
from tests.support import FakeClock


class NoEvents:
    async def key_set(self, provider: str, result: str, keys: object) -> None:
        return None

    def unknown_kid(self, provider: str, result: str) -> None:
        return None


class Recorded(KeySource):
    """A source that records its life; ``loads``: whether starting gives it keys."""

    def __init__(self, tenant: str, log: list[str], loads: bool = False) -> None:
        super().__init__("mt", ("RS256",), NoEvents())
        self.tenant = tenant
        self.log = log
        self.loads = loads

    async def start(self) -> None:
        self.log.append(f"start {self.tenant}")
        if self.loads:
            await self._swap(object())  # type: ignore[arg-type]

    async def stop(self) -> None:
        await asyncio.sleep(0)  # as a real source does: stopping yields
        self.log.append(f"stop {self.tenant}")


def sources(
    clock: FakeClock,
    log: list[str],
    *,
    max_tenants: int = 3,
    per_s: float = 1,
    burst: int = 2,
    listed: tuple[str, ...] = (),
    loads: tuple[str, ...] = (),
) -> TenantKeySources:
    return TenantKeySources(
        "mt",
        ("RS256",),
        NoEvents(),
        lambda tenant: Recorded(tenant, log, tenant in loads),
        listed=listed,
        max_tenants=max_tenants,
        create_per_s=per_s,
        burst=burst,
        first_wait_s=0.5,
        monotonic=clock,
    )


async def test_a_source_per_tenant_made_once_and_started() -> None:
    log: list[str] = []
    tenants = sources(FakeClock(), log)
    await tenants.start()
    assert tenants.usable  # ready before any tenant: keys load on first use
    assert tenants.current("a") is None  # asking does not create
    first = tenants.keys_for("a")
    assert tenants.keys_for("a") is first and tenants.current("a") is first
    await asyncio.sleep(0)
    assert log == ["start a"]
    await tenants.stop()
    assert log == ["start a", "stop a"]


async def test_a_tenant_served_from_the_token_cache_counts_as_used() -> None:
    clock, log = FakeClock(), []
    tenants = sources(clock, log, max_tenants=2, per_s=100, burst=100)
    await tenants.start()
    tenants.keys_for("a")
    tenants.keys_for("b")
    assert tenants.current("a") is not None  # a cache hit of a's token
    tenants.keys_for("c")
    assert tenants.current("a") is not None and tenants.current("b") is None
    await tenants.stop()


async def test_made_up_tenants_cannot_push_out_tenants_with_keys() -> None:
    """A source that never loaded keys goes first, however recently it was made."""
    clock, log = FakeClock(), []
    tenants = sources(clock, log, max_tenants=3, per_s=1000, burst=1000, loads=("a", "b"))
    await tenants.start()
    tenants.keys_for("a")
    tenants.keys_for("b")
    await asyncio.sleep(0)  # a and b load their keys
    for index in range(50):
        tenants.keys_for(f"made-up-{index}")
    assert tenants.current("a") is not None and tenants.current("b") is not None
    assert len(tenants) == 3
    await tenants.stop()


async def test_stop_stops_every_source_ever_started() -> None:
    """Sources whose start or eviction was still queued when stop came used to outlive it."""
    clock, log = FakeClock(), []
    tenants = sources(clock, log, max_tenants=1, per_s=1000, burst=1000)
    await tenants.start()
    tenants.keys_for("a")
    await asyncio.sleep(0)
    tenants.keys_for("b")  # evicts a: its stop is queued
    tenants.keys_for("c")  # evicts b, whose start is queued too
    await tenants.stop()
    started = {entry.split()[1] for entry in log if entry.startswith("start")}
    stopped = {entry.split()[1] for entry in log if entry.startswith("stop")}
    assert started <= stopped, log


async def test_listed_tenants_start_with_the_provider_and_make_it_ready() -> None:
    clock, log = FakeClock(), []
    tenants = sources(clock, log, listed=("a", "b"), max_tenants=2, loads=("a", "b"))
    assert not tenants.usable
    await tenants.start()
    assert await tenants.wait_loaded(1.0)
    assert tenants.usable and len(tenants) == 2
    await tenants.stop()
    slow = sources(clock, [], listed=("a", "b"), max_tenants=2, loads=("a",))
    await slow.start()
    assert not await slow.wait_loaded(0.05)  # b never loads: not ready
    assert not slow.usable
    await slow.stop()


async def test_creation_is_rate_limited() -> None:
    clock, log = FakeClock(), []
    tenants = sources(clock, log, max_tenants=100, per_s=1, burst=2)
    await tenants.start()
    tenants.keys_for("a")
    tenants.keys_for("b")
    with pytest.raises(NoKeys):
        tenants.keys_for("c")  # the burst is spent
    tenants.keys_for("a")  # known tenants are never limited
    clock.advance(1)
    tenants.keys_for("c")
    with pytest.raises(NoKeys):
        tenants.keys_for("d")
    assert len(tenants) == 3
    await tenants.stop()


async def test_the_least_recently_used_tenant_is_stopped_beyond_the_maximum() -> None:
    clock, log = FakeClock(), []
    tenants = sources(clock, log, max_tenants=2, per_s=100, burst=100)
    await tenants.start()
    tenants.keys_for("a")
    tenants.keys_for("b")
    tenants.keys_for("a")  # a is now the most recent
    tenants.keys_for("c")
    for _ in range(3):
        await asyncio.sleep(0)
    assert len(tenants) == 2 and tenants.current("b") is None
    assert "stop b" in log and "stop a" not in log
    await tenants.stop()


async def test_nothing_is_created_before_start_or_after_stop() -> None:
    tenants = sources(FakeClock(), [])
    with pytest.raises(NoKeys):
        tenants.keys_for("a")
    await tenants.start()
    await tenants.stop()
    with pytest.raises(NoKeys):
        tenants.keys_for("a")
