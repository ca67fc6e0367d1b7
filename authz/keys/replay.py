"""A DPoP replay store in Redis (``dpop.replay_store: {redis: ...}``): every replica and
worker records the proofs it accepts in one place, with one atomic ``SET NX PX`` per
proof, so a proof replayed to another replica is refused too.

The key is the prefix and the hex SHA-256 of the proof's key thumbprint and jti (the
client chooses jti's length; the store never sees it). An unreachable or slow Redis is
ReplayStoreUnavailable, a 503: never an allow. The Redis client is imported only when a
provider is configured to use it.
"""

from __future__ import annotations

from typing import Any

from authz.core.errors import ReplayStoreUnavailable


class RedisReplayStore:
    def __init__(
        self, url: str, key_prefix: str, *, timeout_s: float, password: str | None = None
    ) -> None:
        import redis.asyncio  # loaded only for a config that uses Redis

        self._errors: tuple[type[BaseException], ...] = (
            redis.RedisError,
            OSError,
            TimeoutError,
        )
        self._prefix = key_prefix
        # Nothing connects before the first command.
        self._client: Any = redis.asyncio.from_url(
            url,
            password=password,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry_on_timeout=False,
        )

    async def first_use(self, key: bytes, ttl_s: float) -> bool:
        try:
            stored = await self._client.set(
                self._prefix + key.hex(), b"1", nx=True, px=max(1, int(ttl_s * 1000))
            )
        except self._errors as exc:
            # The URL may hold a password: name the error's type only.
            raise ReplayStoreUnavailable(f"redis: {type(exc).__name__}") from exc
        return bool(stored)

    async def close(self) -> None:
        await self._client.aclose()
