"""What a DPoP proof adds to a check (`make bench` runs it; alone: `python -m bench.dpop`).

In-process, one authorizer, the same RS256 token cached: a plain bearer check against a
DPoP-bound check with a fresh ES256 proof each time (proofs are made beforehand: a
client's cost, not authz's), with the in-memory replay store and with Redis (a real
redis-server on loopback). CPU time per check, measured with time.process_time over
many checks, and the ratio to the bearer check in the same run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests import support
from tests.support.dpop import make_proof, thumbprint
from tests.support.redis import RedisServer

CHECKS = 3000
URL = "https://api.example.com/items/7"


@dataclasses.dataclass
class DpopFigures:
    bearer_us: float
    memory_us: float
    redis_us: float | None

    def ratio(self, value: float | None) -> float | None:
        return None if value is None else value / self.bearer_us


def _authorizer(jwks: dict[str, Any], dpop: dict[str, Any]) -> Any:
    corp = support.provider(jwks={"inline": jwks}, dpop=dpop)
    return support.authorizer(
        support.config(providers={"corp": corp}), support.fixed_keys(jwks), clock=time.time
    )


def _request(token: str, proof: str | None) -> Any:
    headers = {"authorization": f"DPoP {token}" if proof else f"Bearer {token}"}
    if proof:
        headers["dpop"] = proof
    request = support.req("/items/7", host="api.example.com", **headers)
    return dataclasses.replace(request, scheme="https")


async def _cpu_per_check(checker: Any, requests: list[Any]) -> float:
    for request in requests[:50]:  # warm-up: caches, first key construction
        assert (await checker.check(request)).allowed
    started = time.process_time()
    for request in requests[50:]:
        decision = await checker.check(request)
        assert decision.allowed, decision.reason
    return (time.process_time() - started) / (len(requests) - 50) * 1e6


async def _measure(redis_url: str | None) -> DpopFigures:
    signer, key = support.rsa_signer(), support.ec_signer()
    jwks = {"keys": [signer.jwk]}
    claims = {**support.wall_clock_claims(), "exp": int(time.time()) + 3600}
    plain = signer.token(**claims)
    bound = signer.token(cnf={"jkt": thumbprint(key)}, **claims)
    bearer = await _cpu_per_check(
        _authorizer(jwks, {}), [_request(plain, None) for _ in range(CHECKS)]
    )

    def fresh() -> list[Any]:
        return [_request(bound, make_proof(key, "GET", URL, bound)) for _ in range(CHECKS)]

    memory = await _cpu_per_check(_authorizer(jwks, {}), fresh())
    redis = None
    if redis_url is not None:
        store = {"redis": {"url": redis_url, "key_prefix": f"bench:{time.time()}:"}}
        redis = await _cpu_per_check(_authorizer(jwks, {"replay_store": store}), fresh())
    return DpopFigures(bearer, memory, redis)


def measure() -> DpopFigures:
    """The figures, with a redis-server of its own when one is installed."""
    workdir = Path(tempfile.mkdtemp(prefix="authz-bench-dpop-"))
    server = RedisServer(workdir)
    try:
        server.start()
    except RuntimeError:
        return asyncio.run(_measure(None))
    try:
        return asyncio.run(_measure(server.url))
    finally:
        server.stop()


def main() -> int:
    figures = measure()
    print(json.dumps(dataclasses.asdict(figures), indent=2))
    print(f"memory store: {figures.ratio(figures.memory_us):.2f}x the bearer check")
    if figures.redis_us is not None:
        print(f"redis store: {figures.ratio(figures.redis_us):.2f}x the bearer check")
    return 0


if __name__ == "__main__":
    sys.exit(main())
