"""Bounds on what one check may cost: request size, headers, checks in flight."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

from tests.support import FixedKeys, Signer, authorizer, config, fixed_keys, provider, req


def limited(jwks: dict[str, Any] | None, **limits: Any) -> Any:
    settings = config(providers={"corp": provider()}, limits=limits)
    return authorizer(settings, fixed_keys(jwks) if jwks else None)


async def test_a_request_larger_than_max_request_bytes_is_413(
    jwks: dict[str, Any], rsa_signer: Signer
) -> None:
    checker = limited(jwks, max_request_bytes=8192)
    token = req(authorization=f"Bearer {rsa_signer.token()}")
    assert (await checker.check(replace(token, size=8192))).allowed
    decision = await checker.check(replace(token, size=8193))
    assert (decision.status, decision.reason) == (413, "check_request_too_large")
    assert json.loads(decision.body)["error"] == "invalid_request"


async def test_a_request_too_large_is_refused_even_in_dry_run(
    jwks: dict[str, Any], rsa_signer: Signer
) -> None:
    settings = config(providers={"corp": provider()}, limits={"max_request_bytes": 8192})
    checker = authorizer(replace_mode(settings), fixed_keys(jwks))
    decision = await checker.check(replace(req(), size=10_000))
    assert (decision.status, decision.reason) == (413, "check_request_too_large")
    assert (await checker.check(req())).allowed  # dry run: everything else is allowed


def replace_mode(settings: Any) -> Any:
    return settings.model_copy(update={"mode": "dry_run"})


async def test_header_limits(jwks: dict[str, Any]) -> None:
    checker = limited(jwks, max_headers=5)
    many = {f"x-h{i}": "v" for i in range(6)}
    decision = await checker.check(req(**many))
    assert (decision.status, decision.reason) == (431, "request_too_large")
    huge = await checker.check(req(x_big="a" * 200_000))
    assert (huge.status, huge.reason) == (431, "request_too_large")


async def test_too_many_checks_in_flight_get_503_at_once(rsa_signer: Signer) -> None:
    release = asyncio.Event()

    class SlowKeys(FixedKeys):
        async def first_keys(self) -> Any:
            await release.wait()  # as if waiting for the first key set at startup
            return None

    settings = config(providers={"corp": provider()}, limits={"max_concurrent_checks": 2})
    slow = authorizer(settings, SlowKeys(None))
    request = req(authorization=f"Bearer {rsa_signer.token()}")
    waiting = [asyncio.create_task(slow.check(request)) for _ in range(2)]
    await asyncio.sleep(0.01)
    third = await slow.check(request)
    assert (third.status, third.reason) == (503, "overloaded")
    release.set()
    assert [d.reason for d in await asyncio.gather(*waiting)] == ["no_keys", "no_keys"]
    assert (await slow.check(request)).reason == "no_keys"  # the count went back down
