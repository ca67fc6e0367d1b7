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
    """A source that records its life."""

    def __init__(self, tenant: str, log: list[str]) -> None:
        super().__init__("mt", ("RS256",), NoEvents())
        self.tenant = tenant
        self.log = log

    async def start(self) -> None:
        self.log.append(f"start {self.tenant}")

    async def stop(self) -> None:
        self.log.append(f"stop {self.tenant}")


def sources(
    clock: FakeClock, log: list[str], *, max_tenants: int = 3, per_s: float = 1, burst: int = 2
) -> TenantKeySources:
    return TenantKeySources(
        "mt",
        ("RS256",),
        NoEvents(),
        lambda tenant: Recorded(tenant, log),
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
