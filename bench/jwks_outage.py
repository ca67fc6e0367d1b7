"""Key lifecycle under stress, measured in one run against a local identity provider.

1. A flood of 1,000 tokens with random kids: how many JWKS fetches it causes.
2. Check latency (p50/p99, over gRPC) in normal operation, while the IdP refuses
   connections, and while it hangs until the fetch timeout; the refresh loop keeps
   failing and retrying throughout.

Run: .venv/bin/python -m bench.jwks_outage
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any

import grpc
from aiohttp import web
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz.config import parse_config
from authz.keys.crypto import generate_rsa_private_key_pem, public_jwk, sign_token
from authz.runtime.app import App
from dev.stack import free_port

CHECKS = 2000
CONCURRENCY = 8
PHASE_S = 4.0  # long enough for several refresh attempts to fail in each outage phase


class Idp:
    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        self.mode = "up"  # up | hang
        self.hits = 0
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    async def certs(self, _: web.Request) -> web.Response:
        self.hits += 1
        if self.mode == "hang":
            await asyncio.sleep(30)
        return web.json_response(self.jwks)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/certs", self.certs)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


def request(token: str) -> Any:
    message = external_auth_pb2.CheckRequest()
    http = message.attributes.request.http
    http.method, http.host, http.path = "GET", "api", "/x"
    http.headers["authorization"] = f"Bearer {token}"
    return message


async def latencies(stub: Any, tokens: list[str], min_seconds: float = 0.0) -> list[float]:
    """Check every token once, and keep cycling through them for at least min_seconds."""
    results: list[float] = []
    queue = list(tokens)
    deadline = time.perf_counter() + min_seconds

    async def worker() -> None:
        while queue:
            token = queue.pop()
            if not queue and time.perf_counter() < deadline:
                queue.extend(tokens)
            started = time.perf_counter()
            response = await stub.Check(request(token))
            results.append(time.perf_counter() - started)
            assert response.HasField("ok_response") or response.HasField("denied_response")

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return results


def summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1e6
    p99 = ordered[int(len(ordered) * 0.99) - 1] * 1e6
    return f"{name:<34} p50 {p50:7.0f} us   p99 {p99:7.0f} us   (n={len(samples)})"


async def main() -> None:
    pem = generate_rsa_private_key_pem()
    jwk = public_jwk(pem)
    idp = Idp({"keys": [jwk]})
    await idp.start()
    issuer = "https://idp.bench"
    config = parse_config(
        {
            "listen": {"grpc": "127.0.0.1:0", "http": "127.0.0.1:0"},
            "providers": {
                "corp": {
                    "issuer": issuer,
                    "audiences": ["api"],
                    "jwks": {
                        "remote": {
                            "uri": f"http://127.0.0.1:{idp.port}/certs",
                            "refresh_interval": 1,
                            "timeout": 0.5,
                        }
                    },
                }
            },
            "rules": [{"requires": {"provider": "corp"}}],
        }
    )

    def token(kid: str) -> str:
        now = int(time.time())
        claims = {"iss": issuer, "aud": "api", "sub": "u", "iat": now, "exp": now + 600}
        return sign_token(claims, pem, algorithm="RS256", kid=kid)

    good = [token(jwk["kid"]) for _ in range(CHECKS)]
    async with App(config) as app, grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as ch:
        stub = external_auth_pb2_grpc.AuthorizationStub(ch)
        while app.sources["corp"].keys is None:
            await asyncio.sleep(0.01)
        await latencies(stub, good[:200])  # warm up

        before = idp.hits
        flood = [token(uuid.uuid4().hex) for _ in range(1000)]
        started = time.perf_counter()
        await latencies(stub, flood)
        print(
            f"random-kid flood: 1000 tokens in {time.perf_counter() - started:.2f}s; "
            f"unknown-kid refetches {counts(app.metrics.unknown_kid_refetch)}; "
            f"JWKS requests seen by the IdP {idp.hits - before} (the 1 s background refresh "
            "included)"
        )

        normal = await latencies(stub, good, PHASE_S)
        print(summary("normal operation", normal))

        await idp.stop()  # connection refused from now on
        refused = await latencies(stub, good, PHASE_S)
        print(summary("IdP down (connection refused)", refused))

        idp.mode = "hang"
        await idp.start()
        hanging = await latencies(stub, good, PHASE_S)
        print(summary("IdP hanging (fetch timeouts)", hanging))
        print(f"refresh results: {counts(app.metrics.jwks_refresh)}")
    await idp.stop()


def counts(counter: Any) -> dict[str, float]:
    by_result: dict[str, float] = {}
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                by_result[sample.labels["result"]] = sample.value
    return by_result


if __name__ == "__main__":
    asyncio.run(main())
