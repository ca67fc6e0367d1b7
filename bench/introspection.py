"""`make bench-introspection`: what an introspected (opaque) token costs, against a real
OpenID Provider (oidc-provider, tests/idp), side by side with a cached JWT.

1. Direct gRPC load with h2load on one authz: a JWT access token from the OP (token cache
   hit) and an opaque one whose introspection answer is kept (introspection cache hit).
   Then one check at a time: the latency of a JWT hit, an introspection hit, and an
   introspection miss (a second authz with cache.max_ttl 0).
2. The hit rate of a workload: 300 opaque tokens from the OP, 6,000 checks picking
   tokens Zipf-distributed (s = 1.1), 16 at a time, max_ttl 60; read from authz's
   authz_introspection_cache_total.

Writes bench/introspection.md.
"""

from __future__ import annotations

import asyncio
import random
import re
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from bench.run import H2LOAD_REQUESTS, Row, Server, grpc_frame, measure_h2load
from dev.stack import ROOT, free_port
from tests.support.openid import (
    ALGORITHMS,
    INTROSPECTOR,
    JWT_RESOURCES,
    OPAQUE_RESOURCE,
    OpenIdProvider,
)

TOKENS = 300
CHECKS = 6000
SEQUENTIAL = 500


def authz_config(workdir: Path, op: OpenIdProvider, max_ttl: float) -> tuple[Path, int, int]:
    port, http_port = free_port(), free_port()
    (workdir / "secret").write_text(INTROSPECTOR[1])
    config: dict[str, Any] = {
        "listen": {"grpc": f"127.0.0.1:{port}", "http": f"127.0.0.1:{http_port}"},
        "log_level": "WARNING",
        "providers": {
            "op": {
                "issuer": op.issuer(),
                "audiences": list(JWT_RESOURCES.values()),
                "algorithms": list(ALGORITHMS),
                "jwks": {"discovery": True},
                "claim_to_headers": [{"header": "x-client-id", "claim": "client_id"}],
            },
            "opaque": {
                "issuer": op.issuer(),
                "audiences": [OPAQUE_RESOURCE],
                "introspection": {
                    "discovery": True,
                    "client_id": INTROSPECTOR[0],
                    "client_secret": {"file": str(workdir / "secret")},
                    "cache": {"max_ttl": max_ttl},
                },
                "claim_to_headers": [{"header": "x-client-id", "claim": "client_id"}],
            },
        },
        "rules": [{"match": {"prefix": "/"}, "requires": {"any": ["op", "opaque"]}}],
    }
    path = workdir / f"authz-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, port, http_port


def authz(workdir: Path, op: OpenIdProvider, name: str, max_ttl: float) -> Server:
    path, port, http_port = authz_config(workdir, op, max_ttl)
    server = Server(name, [sys.executable, "-m", "authz", "serve", "-c", str(path)], port)
    server.http_port = http_port
    return server.start(workdir)


def scrape(port: int) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        return str(page.read().decode())


def counter(page: str, result: str) -> float:
    found = re.search(
        rf'^authz_introspection_cache_total{{provider="opaque",result="{result}"}} (\S+)$',
        page,
        re.M,
    )
    return float(found.group(1)) if found else 0.0


async def workload(port: int, tokens: list[str]) -> None:
    """CHECKS checks, tokens picked Zipf-distributed, 16 in flight."""
    import grpc
    from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

    weights = [1 / (rank + 1) ** 1.1 for rank in range(len(tokens))]
    picks = random.Random(7).choices(tokens, weights, k=CHECKS)
    requests = [external_auth_pb2.CheckRequest.FromString(grpc_frame(t)[5:]) for t in picks]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        queue = iter(requests)

        async def worker() -> None:
            for request in queue:
                answer = await stub.Check(request, timeout=10)
                assert answer.WhichOneof("http_response") == "ok_response"

        await asyncio.gather(*(worker() for _ in range(16)))


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="authz-bench-introspection-"))
    op = OpenIdProvider(workdir)
    op.start()
    servers: list[Server] = []
    try:
        kept = authz(workdir, op, "authz", max_ttl=60)
        servers.append(kept)
        rows: list[Row] = []
        jwt = op.token(JWT_RESOURCES["ES256"])
        rows.append(measure_h2load(kept, grpc_frame(jwt), workdir, "JWT, token cache hit", "hit"))
        opaque = op.token(OPAQUE_RESOURCE)
        rows.append(
            measure_h2load(kept, grpc_frame(opaque), workdir, "opaque, introspection hit", "hit")
        )
        uncached = authz(workdir, op, "authz-max-ttl-0", max_ttl=0)
        servers.append(uncached)
        # One check at a time, so that each is its own request to the OP (concurrent
        # checks of one token would share one).
        latencies = {
            "opaque, introspection hit": sequential(kept.port, opaque),
            "opaque, introspected (max_ttl 0)": sequential(uncached.port, opaque),
            "JWT, token cache hit": sequential(kept.port, jwt),
        }

        tokens = [op.token(OPAQUE_RESOURCE) for _ in range(TOKENS)]
        before_page = scrape(kept.http_port)
        asyncio.run(workload(kept.port, tokens))
        page = scrape(kept.http_port)
        hits = counter(page, "hit") - counter(before_page, "hit")
        misses = counter(page, "miss") - counter(before_page, "miss")
        report(workdir, rows, latencies, hits, misses)
    finally:
        for server in servers:
            server.stop()
        op.stop()
    return 0


def sequential(port: int, token: str) -> tuple[float, float]:
    """p50 and p99 (ms) of SEQUENTIAL checks of ``token``, one at a time."""
    import time

    import grpc
    from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

    request = external_auth_pb2.CheckRequest.FromString(grpc_frame(token)[5:])
    durations = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        for index in range(SEQUENTIAL + 50):
            started = time.perf_counter()
            answer = stub.Check(request, timeout=10)
            if index >= 50:  # the first ones warm up
                durations.append(time.perf_counter() - started)
            assert answer.WhichOneof("http_response") == "ok_response"
    durations.sort()
    return durations[len(durations) // 2] * 1000, durations[int(len(durations) * 0.99)] * 1000


def report(
    workdir: Path,
    rows: list[Row],
    latencies: dict[str, tuple[float, float]],
    hits: float,
    misses: float,
) -> None:
    jwt, hit = rows
    lines = [
        "# Introspection: what an opaque token costs",
        "",
        "`make bench-introspection` (bench/introspection.py), one run, against the real",
        "OpenID Provider of the tests, one authz process.",
        "",
        f"Under load (h2load, {H2LOAD_REQUESTS} checks, 4 connections x 16 streams):",
        "",
        "| check | req/s | p50 ms | p99 ms | authz CPU us/check | CPU vs JWT hit |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = (row.cpu_us or 0) / (jwt.cpu_us or 1)
        lines.append(
            f"| {row.name} | {row.rps:.0f} | {row.p50_ms:.2f} | {row.p99_ms:.2f} | "
            f"{row.cpu_us:.0f} | {ratio:.2f}x |"
        )
    lines += [
        "",
        f"One check at a time ({SEQUENTIAL} checks, gRPC client in Python):",
        "",
        "| check | p50 ms | p99 ms |",
        "|---|---|---|",
    ]
    for name, (p50, p99) in latencies.items():
        lines.append(f"| {name} | {p50:.2f} | {p99:.2f} |")
    total = hits + misses
    hit_p50 = latencies["opaque, introspection hit"][0]
    jwt_p50 = latencies["JWT, token cache hit"][0]
    miss_p50 = latencies["opaque, introspected (max_ttl 0)"][0]
    rate = f"{hits:.0f} hits, {misses:.0f} misses: {hits / total:.1%}" if total else "none"
    lines += [
        "",
        f"An introspection hit adds {hit_p50 - jwt_p50:+.2f} ms (p50) to a JWT cache hit and",
        f"{hit.cpu_us - jwt.cpu_us:+.0f} us of CPU; a miss adds the round trip to the OP:",
        f"{miss_p50 - hit_p50:+.2f} ms over a hit.",
        "",
        f"Hit rate of a workload of {TOKENS} opaque tokens, {CHECKS} checks picked",
        f"Zipf-distributed (s = 1.1), 16 in flight, cache.max_ttl 60: {rate}.",
        "",
    ]
    text = "\n".join(lines)
    (ROOT / "bench" / "introspection.md").write_text(text)
    print(text)
    print(f"(logs in {workdir})")


if __name__ == "__main__":
    sys.exit(main())
