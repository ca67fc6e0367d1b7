"""The DPoP replay store in a real Redis: one atomic SET NX per proof, expiry with the
window, and a Redis that does not answer is a 503, never an allow."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from authz.core.errors import ReplayStoreUnavailable
from authz.keys.replay import RedisReplayStore
from dev.stack import free_port
from tests.support.redis import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisReplayStore]:
    replay = RedisReplayStore(redis_server.url, "authz:dpop:", timeout_s=0.5)
    yield replay
    await replay.close()


async def test_a_proof_is_accepted_once_for_the_window(store: RedisReplayStore) -> None:
    assert await store.first_use(b"\x01" * 32, 0.3)
    assert not await store.first_use(b"\x01" * 32, 0.3)
    assert await store.first_use(b"\x02" * 32, 0.3)  # another proof
    await asyncio.sleep(0.4)
    assert await store.first_use(b"\x01" * 32, 0.3)  # the window has passed


async def test_stores_sharing_redis_see_each_others_proofs(redis_server: RedisServer) -> None:
    """Two replicas (or workers) each with their own client."""
    one = RedisReplayStore(redis_server.url, "authz:dpop:", timeout_s=0.5)
    two = RedisReplayStore(redis_server.url, "authz:dpop:", timeout_s=0.5)
    other_prefix = RedisReplayStore(redis_server.url, "other:", timeout_s=0.5)
    try:
        assert await one.first_use(b"k" * 32, 10)
        assert not await two.first_use(b"k" * 32, 10)
        assert await other_prefix.first_use(b"k" * 32, 10)  # another deployment's keys
    finally:
        for replay in (one, two, other_prefix):
            await replay.close()


async def test_a_redis_that_does_not_answer_fails_closed(
    store: RedisReplayStore, redis_server: RedisServer
) -> None:
    assert await store.first_use(b"a" * 32, 10)
    redis_server.stop()
    with pytest.raises(ReplayStoreUnavailable):
        await store.first_use(b"b" * 32, 10)
    nowhere = RedisReplayStore(
        f"redis://:s3cret@127.0.0.1:{free_port()}/0", "authz:dpop:", timeout_s=0.2
    )
    try:
        with pytest.raises(ReplayStoreUnavailable) as caught:
            await nowhere.first_use(b"c" * 32, 10)
        assert "s3cret" not in str(caught.value)
    finally:
        await nowhere.close()
