"""Load for reliability tests: concurrent callers repeating one call, every outcome kept
with the moment it was sent, so a test can ask what happened to calls sent before an event."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc

Call = Callable[[], Awaitable[str]]  # one request; its outcome as a word ("OK", "401", ...)


class Load:
    """``concurrency`` callers running ``call`` back to back until stop()."""

    def __init__(self, call: Call, concurrency: int) -> None:
        self._call = call
        self._concurrency = concurrency
        self._running = False
        self._tasks: list[asyncio.Task[None]] = []
        self.outcomes: list[tuple[float, str]] = []  # (monotonic time sent, outcome)

    async def __aenter__(self) -> Load:
        self._running = True
        self._tasks = [asyncio.create_task(self._caller()) for _ in range(self._concurrency)]
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        self._running = False
        await asyncio.gather(*self._tasks)

    async def _caller(self) -> None:
        while self._running:
            sent = time.monotonic()
            outcome = await self._call()
            self.outcomes.append((sent, outcome))
            if outcome != "OK":
                await asyncio.sleep(0.005)  # a refusing server must not be spun against

    def sent_before(self, moment: float) -> Counter[str]:
        return Counter(outcome for sent, outcome in self.outcomes if sent < moment)

    def sent_between(self, start: float, end: float) -> Counter[str]:
        return Counter(outcome for sent, outcome in self.outcomes if start <= sent < end)


def grpc_check(channels: list[grpc.aio.Channel], request: Any, timeout_s: float = 5.0) -> Call:
    """Check ``request`` over the channels in turn: "OK" for an allow, "denied <status>"
    for a deny, the gRPC status code's name for a failed call."""
    stubs = [external_auth_pb2_grpc.AuthorizationStub(channel) for channel in channels]
    turn = [0]

    async def call() -> str:
        turn[0] += 1
        stub = stubs[turn[0] % len(stubs)]
        try:
            response = await stub.Check(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            return str(exc.code().name)
        if response.HasField("ok_response"):
            return "OK"
        return f"denied {response.denied_response.status.code}"

    return call


def http_get(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], timeout_s: float = 5.0
) -> Call:
    """GET ``url``: "OK" for a 200, the status otherwise, the exception's name on failure."""

    async def call() -> str:
        try:
            async with session.get(
                url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as response:
                await response.read()
                return "OK" if response.status == 200 else str(response.status)
        except (TimeoutError, aiohttp.ClientError) as exc:
            return type(exc).__name__

    return call
