"""`make bench`: one session, the same keys and claims, every number measured side by side.

1. Direct gRPC load with h2load (a prepared CheckRequest): the empty grpc.aio handler
   (the floor), authz with a repeated token (cache hit) and with the cache off (every
   check a full verification), for RS256 and ES256.
2. Through a real Envoy (1 worker) with wrk, to a direct response: no auth, Envoy's own
   jwt_authn with the same JWKS and claim-to-header, and Envoy + authz; then the same
   three at a fixed ~500 req/s for the latency authz adds.
3. authz's RSS idle and with 100,000 distinct cached tokens, against the cache's own count.
4. In-process: what a DPoP proof (bench/dpop.py) and a trace span (bench/tracing.py) add
   to a check.

For each: req/s, p50/p99 latency, server CPU per request (from /proc), peak RSS. Writes
BENCHMARKS.md and bench/benchmarks.png.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import timeit
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from authz.keys.crypto import public_jwk, sign_token
from bench.dpop import DpopFigures
from bench.dpop import measure as measure_dpop
from bench.tracing import TracingFigures
from bench.tracing import measure as measure_tracing
from dev.stack import ROOT, envoy_binary, free_port

TYPE = "type.googleapis.com/envoy.extensions."
HCM = TYPE + "filters.network.http_connection_manager.v3.HttpConnectionManager"
ISSUER = "https://idp.bench"
AUDIENCE = "api"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
H2LOAD_REQUESTS = int(os.environ.get("BENCH_H2LOAD_REQUESTS", "20000"))
WRK_SECONDS = int(os.environ.get("BENCH_WRK_SECONDS", "10"))
CACHED_TOKENS = int(os.environ.get("BENCH_CACHED_TOKENS", "100000"))


@dataclass
class Row:
    name: str
    group: str
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float | None = None  # server CPU per request
    cpu_of: str = ""
    rss_mb: float | None = None
    notes: str = ""


@dataclass
class Server:
    name: str
    args: list[str]
    port: int
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    http_authz_port: int = 0
    http_port: int = 0  # authz's operations port (/metrics)

    def start(self, workdir: Path) -> Server:
        log = open(workdir / f"{self.name}.log", "wb")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            self.args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}
        )
        log.close()
        wait_port(self.port, self.proc)
        return self

    def pids(self) -> list[int]:
        """The process and its children (the workers, when authz runs several)."""
        assert self.proc is not None
        children = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True
        ).stdout.split()
        return [self.proc.pid, *(int(pid) for pid in children)]

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self.pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / CLOCK_TICKS

    def peak_rss_mb(self) -> float:
        """The largest peak RSS among the process and its workers."""
        peaks = [0.0]
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        return max(peaks)

    def current_rss_mb(self) -> float:
        """The largest current RSS among the process and its workers."""
        sizes = [0.0]
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes.append(int(line.split()[1]) / 1024)
        return max(sizes)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


# --- keys, tokens and requests ------------------------------------------------------


def keys(workdir: Path) -> dict[str, Any]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    def pem(key: Any) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    rsa_pem = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    ec_pem = pem(ec.generate_private_key(ec.SECP256R1()))
    jwks = {"keys": [public_jwk(rsa_pem), public_jwk(ec_pem)]}
    (workdir / "jwks.json").write_text(json.dumps(jwks))
    return {"RS256": rsa_pem, "ES256": ec_pem, "jwks": jwks}


def claims(sub: str = "alice") -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": sub,
        "iat": now,
        "exp": now + 3600,
        "scope": "read write",
        "realm_access": {"roles": ["user", "admin"]},
        "email": f"{sub}@example.com",
    }


def token(material: dict[str, Any], alg: str, sub: str = "alice") -> str:
    pem = material[alg]
    return sign_token(claims(sub), pem, algorithm=alg, kid=public_jwk(pem)["kid"])


def grpc_frame(token_value: str) -> bytes:
    from envoy.service.auth.v3 import external_auth_pb2

    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.host, http.path = "GET", "api.example.com", "/items/42"
    http.headers.update(
        {
            ":authority": "api.example.com",
            ":path": "/items/42",
            ":method": "GET",
            "user-agent": "bench",
            "x-request-id": "5b1e2f3a-0000-4000-8000-000000000000",
            "authorization": f"Bearer {token_value}",
        }
    )
    message = request.SerializeToString()
    return b"\x00" + struct.pack(">I", len(message)) + message


def authz_config(
    workdir: Path, port: int, http_port: int, cache: bool, workers: int = 1, authz_http: int = 0
) -> Path:
    config: dict[str, Any] = {
        "workers": workers,
        "listen": {"grpc": f"127.0.0.1:{port}", "http": f"127.0.0.1:{http_port}"},
        "log_level": "WARNING",
        # Room for every token of the memory scenario: its RSS is measured with all cached.
        "token_cache": {"max_entries": 200_000 if cache else 0, "max_bytes": 1 << 30},
        "providers": {
            "bench": {
                "issuer": ISSUER,
                "audiences": [AUDIENCE],
                "jwks": {"file": str(workdir / "jwks.json")},
                "claim_to_headers": [
                    {"header": "x-user-id", "claim": "sub"},
                    {"header": "x-user-roles", "claim": "realm_access.roles"},
                ],
            }
        },
        "rules": [{"name": "all", "match": {"prefix": "/"}, "requires": {"provider": "bench"}}],
    }
    if authz_http:
        config["http_authz"] = {
            "listen": f"127.0.0.1:{authz_http}",
            "original_request": "envoy",
            "path_prefix": "/authz",
        }
    path = workdir / f"authz-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def authz_server(workdir: Path, name: str, cache: bool, workers: int = 1) -> Server:
    port, http_port, authz_http = free_port(), free_port(), free_port()
    config = authz_config(workdir, port, http_port, cache, workers, authz_http)
    server = Server(name, [sys.executable, "-m", "authz", "serve", "-c", str(config)], port)
    server.http_authz_port = authz_http
    server.http_port = http_port
    return server


def metric(port: int, name: str) -> float:
    """One unlabelled sample from authz's /metrics."""
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        text = page.read().decode()
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    if found is None:
        raise RuntimeError(f"{name} not in /metrics")
    return float(found.group(1))


# --- load generators ----------------------------------------------------------------


def h2load(port: int, frame: bytes, workdir: Path) -> tuple[float, float, float]:
    body = workdir / "request.bin"
    body.write_bytes(frame)
    log = workdir / "h2load.log"
    log.unlink(missing_ok=True)
    out = subprocess.run(
        [
            "h2load",
            "-n",
            str(H2LOAD_REQUESTS),
            "-c",
            "4",
            "-m",
            "16",
            "-d",
            str(body),
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "--log-file",
            str(log),
            f"http://127.0.0.1:{port}/envoy.service.auth.v3.Authorization/Check",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]
    ok = re.search(r"(\d+) succeeded", out)
    assert ok and int(ok.group(1)) == H2LOAD_REQUESTS, out
    durations = sorted(int(line.split("\t")[2]) for line in log.read_text().splitlines())
    return rps, percentile(durations, 50) / 1000, percentile(durations, 99) / 1000


def percentile(ordered: list[int], p: float) -> float:
    return float(ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))])


LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(
    port: int, headers: dict[str, str], workdir: Path, rate: bool = False
) -> tuple[float, float, float, int]:
    args = ["wrk", "-t1", "-c16", f"-d{WRK_SECONDS}s", "--latency", "--timeout", "5s"]
    if rate:
        # 5 connections, each pausing 10 ms between requests: about 500 req/s.
        script = workdir / "pace.lua"
        script.write_text("function delay()\n  return 10\nend\n")
        args = ["wrk", "-t1", "-c5", f"-d{WRK_SECONDS}s", "--latency", "-s", str(script)]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run(
        [*args, f"http://127.0.0.1:{port}/items/42"], capture_output=True, text=True, check=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {int(p): float(v) * UNIT_MS[u] for p, v, u in LATENCY.findall(out)}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, lat[50], lat[99], int(non2xx.group(1)) if non2xx else 0


# --- Envoy configurations -----------------------------------------------------------


def envoy_config(
    workdir: Path, mode: str, jwks: dict[str, Any], authz_port: int = 0
) -> tuple[Path, int]:
    listen, admin = free_port(), free_port()
    filters: list[dict[str, Any]] = []
    if mode == "jwt_authn":
        filters.append(
            {
                "name": "envoy.filters.http.jwt_authn",
                "typed_config": {
                    "@type": TYPE + "filters.http.jwt_authn.v3.JwtAuthentication",
                    "providers": {
                        "bench": {
                            "issuer": ISSUER,
                            "audiences": [AUDIENCE],
                            "local_jwks": {"inline_string": json.dumps(jwks)},
                            "forward": False,
                            "claim_to_headers": [{"header_name": "x-user-id", "claim_name": "sub"}],
                        }
                    },
                    "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
                },
            }
        )
    clusters = []
    if mode == "authz-http":
        # deploy/envoy-http.yaml's ext_authz filter and cluster, pointed at authz.
        template = yaml.safe_load((ROOT / "deploy" / "envoy-http.yaml").read_text())
        hcm = template["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        filters.append(hcm["typed_config"]["http_filters"][0])
    elif mode.startswith("authz"):
        filters.append(
            {
                "name": "envoy.filters.http.ext_authz",
                "typed_config": {
                    "@type": TYPE + "filters.http.ext_authz.v3.ExtAuthz",
                    "transport_api_version": "V3",
                    "failure_mode_allow": False,
                    "grpc_service": {"envoy_grpc": {"cluster_name": "ext_authz"}, "timeout": "2s"},
                },
            }
        )
        template = yaml.safe_load((ROOT / "deploy" / "envoy.yaml").read_text())
    if mode.startswith("authz"):
        cluster = next(
            c for c in template["static_resources"]["clusters"] if c["name"] == "ext_authz"
        )
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        endpoint["address"]["socket_address"]["port_value"] = authz_port
        clusters.append(cluster)
    filters.append(
        {
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": TYPE + "filters.http.router.v3.Router"},
        }
    )
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "ingress",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": HCM,
                                        "stat_prefix": "bench",
                                        "route_config": {
                                            "virtual_hosts": [
                                                {
                                                    "name": "all",
                                                    "domains": ["*"],
                                                    "routes": [
                                                        {
                                                            "match": {"prefix": "/"},
                                                            "direct_response": {
                                                                "status": 200,
                                                                "body": {"inline_string": "ok"},
                                                            },
                                                        }
                                                    ],
                                                }
                                            ]
                                        },
                                        "http_filters": filters,
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": clusters,
        },
    }
    path = workdir / f"envoy-{mode}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, listen


def envoy(workdir: Path, mode: str, jwks: dict[str, Any], authz_port: int = 0) -> Server:
    path, port = envoy_config(workdir, mode, jwks, authz_port)
    args = [
        envoy_binary(),
        "-c",
        str(path),
        "--concurrency",
        "1",
        "--disable-hot-restart",
        "--log-level",
        "error",
    ]
    return Server(f"envoy-{mode}", args, port)


# --- scenarios ----------------------------------------------------------------------


def assert_allowed(port: int, frame: bytes) -> None:
    """gRPC answers 200 for denials too: make sure the request under load is an allow."""
    import grpc
    from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        response = stub.Check(external_auth_pb2.CheckRequest.FromString(frame[5:]), timeout=5)
    assert response.WhichOneof("http_response") in (None, "ok_response"), response


def measure_h2load(server: Server, frame: bytes, workdir: Path, name: str, group: str) -> Row:
    assert_allowed(server.port, frame)
    h2load(server.port, frame, workdir)  # warm-up: caches, JIT-free but connection setup
    before = server.cpu_seconds()
    rps, p50, p99 = h2load(server.port, frame, workdir)
    cpu = (server.cpu_seconds() - before) / H2LOAD_REQUESTS * 1e6
    return Row(name, group, rps, p50, p99, cpu, server.name, server.peak_rss_mb())


def raw_verify_us(material: dict[str, Any], alg: str) -> float:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding

    key = serialization.load_pem_private_key(material[alg], password=None)
    data = b"x" * 400
    if alg == "RS256":
        sig = key.sign(data, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[call-arg]
        pub = key.public_key()
        fn = lambda: pub.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())  # noqa: E731
    else:
        sig = key.sign(data, ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg]
        pub = key.public_key()
        fn = lambda: pub.verify(sig, data, ec.ECDSA(hashes.SHA256()))  # noqa: E731
    return min(timeit.repeat(fn, number=2000, repeat=5)) / 2000 * 1e6


async def fill_cache(port: int, material: dict[str, Any], count: int, first: int = 0) -> None:
    import grpc
    from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

    pem = material["ES256"]
    kid = public_jwk(pem)["kid"]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        queue = list(range(first, first + count))

        async def worker() -> None:
            while queue:
                n = queue.pop()
                value = sign_token(claims(f"user{n}"), pem, algorithm="ES256", kid=kid)
                request = external_auth_pb2.CheckRequest()
                http = request.attributes.request.http
                http.method, http.host, http.path = "GET", "api", "/items"
                http.headers["authorization"] = f"Bearer {value}"
                response = await stub.Check(request)
                assert response.HasField("ok_response")

        await asyncio.gather(*(worker() for _ in range(32)))


def main() -> int:
    for tool in ("h2load", "wrk"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing: make bench installs it (Debian nghttp2-client, wrk)")
            return 2
    rows: list[Row] = []
    memory_figures: dict[str, float] = {}
    workdir = Path(tempfile.mkdtemp(prefix="authz-bench-"))
    material = keys(workdir)
    servers: list[Server] = []
    started = time.monotonic()
    try:
        # 1. direct gRPC
        frame = grpc_frame(token(material, "RS256"))
        for loop, label in (("", "asyncio"), ("--uvloop", "uvloop, as authz runs")):
            port = free_port()
            args = [sys.executable, "-m", "bench.empty_server", "--port", str(port)]
            empty = Server(f"empty-{label.split(',')[0]}", [*args, *filter(None, [loop])], port)
            servers.append(empty.start(workdir))
            name = f"empty grpc.aio handler, {label}" + (" (the floor)" if loop else "")
            rows.append(measure_h2load(empty, frame, workdir, name, "grpc"))
            empty.stop()
        for alg in ("RS256", "ES256"):
            frame = grpc_frame(token(material, alg))
            for cache in (True, False):
                label = "cache hit" if cache else "cache off (full verify)"
                server = authz_server(
                    workdir, f"authz-{alg}-{'hit' if cache else 'miss'}", cache
                ).start(workdir)
                servers.append(server)
                rows.append(measure_h2load(server, frame, workdir, f"authz {alg}, {label}", "grpc"))
                server.stop()

        if os.environ.get("BENCH_ONLY") == "grpc":
            for row in rows:
                print(f"{row.name}: {row.rps:.0f} req/s, {row.cpu_us:.0f} us/req CPU")
            return 0
        # 2. through Envoy
        bearer = {"authorization": f"Bearer {token(material, 'RS256')}"}
        authz = authz_server(workdir, "authz-envoy", True).start(workdir)
        servers.append(authz)
        for mode in ("none", "jwt_authn", "authz", "authz-http", "authz-2-workers"):
            if mode == "authz-2-workers":
                authz.stop()
                authz = authz_server(workdir, "authz-envoy-2w", True, workers=2).start(workdir)
                servers.append(authz)
                time.sleep(1.0)  # the second worker binds a moment after the first
            target = authz.http_authz_port if mode == "authz-http" else authz.port
            proxy = envoy(workdir, mode, material["jwks"], target).start(workdir)
            servers.append(proxy)
            wrk(proxy.port, bearer, workdir)  # warm-up
            cpu_server = authz if mode.startswith("authz") else proxy
            before = cpu_server.cpu_seconds()
            rps, p50, p99, bad = wrk(proxy.port, bearer, workdir)
            cpu = (cpu_server.cpu_seconds() - before) / max(1.0, rps * WRK_SECONDS) * 1e6
            label = {
                "none": "Envoy, no auth",
                "jwt_authn": "Envoy jwt_authn (RS256)",
                "authz": "Envoy + authz (RS256, gRPC)",
                "authz-http": "Envoy + authz (RS256, HTTP mode)",
                "authz-2-workers": "Envoy + authz, workers: 2",
            }[mode]
            rows.append(
                Row(
                    label,
                    "envoy",
                    rps,
                    p50,
                    p99,
                    cpu,
                    cpu_server.name,
                    cpu_server.peak_rss_mb(),
                    f"{bad} non-2xx" if bad else "",
                )
            )
            r_rps, r_p50, r_p99, r_bad = wrk(proxy.port, bearer, workdir, rate=True)
            rows.append(
                Row(
                    f"{label} @ ~500 req/s",
                    "paced",
                    r_rps,
                    r_p50,
                    r_p99,
                    notes=f"{r_bad} non-2xx" if r_bad else "",
                )
            )
            proxy.stop()
        authz.stop()
        # The same paced load through Envoy to the empty grpc.aio handler: what any
        # Python gRPC ext_authz adds at this rate, before authz does anything.
        port = free_port()
        empty_args = [sys.executable, "-m", "bench.empty_server", "--uvloop", "--port", str(port)]
        empty = Server("empty-uvloop", empty_args, port).start(workdir)
        servers.append(empty)
        proxy = envoy(workdir, "authz", material["jwks"], empty.port).start(workdir)
        servers.append(proxy)
        wrk(proxy.port, bearer, workdir, rate=True)  # warm-up
        r_rps, r_p50, r_p99, _ = wrk(proxy.port, bearer, workdir, rate=True)
        rows.append(
            Row("Envoy + the empty grpc.aio handler @ ~500 req/s", "paced", r_rps, r_p50, r_p99)
        )
        proxy.stop()
        empty.stop()

        # 3. memory: idle, then with many cached tokens, against the cache's own count
        filled = authz_server(workdir, "authz-rss", True).start(workdir)
        servers.append(filled)
        time.sleep(1)  # settled: the ops listener answers, key files are read
        idle_rss = filled.current_rss_mb()
        # The first tokens also grow what serving load takes whatever is cached (gRPC
        # buffers, the hot entries, the answer memo): the cache is measured past them.
        warm = CACHED_TOKENS // 10
        asyncio.run(fill_cache(filled.port, material, warm))
        warm_rss = filled.current_rss_mb()
        warm_counted = metric(filled.http_port, "authz_token_cache_bytes") / 2**20
        asyncio.run(fill_cache(filled.port, material, CACHED_TOKENS - warm, first=warm))
        filled_rss = filled.current_rss_mb()
        counted = metric(filled.http_port, "authz_token_cache_bytes") / 2**20 - warm_counted
        grown = filled_rss - warm_rss
        per_entry = grown * 2**20 / (CACHED_TOKENS - warm)
        rows.append(
            Row(
                f"authz with {CACHED_TOKENS:,} cached tokens",
                "memory",
                0,
                0,
                0,
                rss_mb=filled_rss,
                notes=(
                    f"idle RSS {idle_rss:.1f} MB, {warm_rss:.1f} after the first {warm:,}; "
                    f"then {per_entry:.0f} B per entry: RSS grew {grown:.1f} MB, the cache "
                    f"counted {counted:.1f} MB"
                ),
            )
        )
        memory_figures.update(idle=idle_rss, per_entry=per_entry, counted=counted, grown=grown)
        filled.stop()
    finally:
        for server in servers:
            server.stop()
    raw = {alg: raw_verify_us(material, alg) for alg in ("RS256", "ES256")}
    dpop = measure_dpop()
    tracing = measure_tracing()
    elapsed = time.monotonic() - started
    report(rows, raw, elapsed, memory_figures, dpop, tracing)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def by_name(rows: list[Row], name: str) -> Row:
    return next(r for r in rows if r.name == name)


def report(
    rows: list[Row],
    raw: dict[str, float],
    elapsed: float,
    memory: dict[str, float],
    dpop: DpopFigures,
    tracing: TracingFigures,
) -> None:
    floor = by_name(rows, "empty grpc.aio handler, uvloop, as authz runs (the floor)")
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `make bench` on {time.strftime('%Y-%m-%d')}, all in one run of "
        f"{elapsed:.0f} s, on this machine: {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}, Linux {platform.release()}, "
        f"Python {platform.python_version()}. The machine is shared and noisy: compare ratios "
        "within one run, not absolute numbers across runs.",
        "",
        "| scenario | req/s | p50 ms | p99 ms | server CPU µs/req | peak RSS MB | notes |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        cpu = f"{r.cpu_us:.0f} ({r.cpu_of})" if r.cpu_us is not None else ""
        rss = f"{r.rss_mb:.0f}" if r.rss_mb is not None else ""
        rps = f"{r.rps:,.0f}" if r.rps else ""
        p50 = f"{r.p50_ms:.2f}" if r.rps else ""
        p99 = f"{r.p99_ms:.2f}" if r.rps else ""
        lines.append(f"| {r.name} | {rps} | {p50} | {p99} | {cpu} | {rss} | {r.notes} |")
    hit = by_name(rows, "authz RS256, cache hit")
    miss = by_name(rows, "authz RS256, cache off (full verify)")
    es_miss = by_name(rows, "authz ES256, cache off (full verify)")
    jwt = by_name(rows, "Envoy jwt_authn (RS256)")
    ours = max(
        (by_name(rows, n) for n in ("Envoy + authz (RS256, gRPC)", "Envoy + authz, workers: 2")),
        key=lambda r: r.rps,
    )
    http_mode = by_name(rows, "Envoy + authz (RS256, HTTP mode)")
    bare = by_name(rows, "Envoy, no auth @ ~500 req/s")
    paced = by_name(rows, "Envoy + authz (RS256, gRPC) @ ~500 req/s")
    empty_paced = by_name(rows, "Envoy + the empty grpc.aio handler @ ~500 req/s")
    assert floor.cpu_us and hit.cpu_us and miss.cpu_us and es_miss.cpu_us
    accuracy = memory["counted"] / memory["grown"]
    checks = [
        (
            "cache-hit CPU per check vs the floor",
            f"{hit.cpu_us / floor.cpu_us:.2f}x",
            "≤ 1.15x",
            hit.cpu_us / floor.cpu_us <= 1.15,
        ),
        (
            "RS256 cache-off CPU: floor + k * raw verify",
            f"k = {(miss.cpu_us - floor.cpu_us) / raw['RS256']:.1f} "
            f"(raw verify {raw['RS256']:.0f} µs)",
            "k ≤ 1.3",
            (miss.cpu_us - floor.cpu_us) / raw["RS256"] <= 1.3,
        ),
        (
            "ES256 cache-off CPU: floor + k * raw verify",
            f"k = {(es_miss.cpu_us - floor.cpu_us) / raw['ES256']:.1f} "
            f"(raw verify {raw['ES256']:.0f} µs)",
            "(for reference)",
            True,
        ),
        (
            f"Envoy + authz req/s vs Envoy jwt_authn (best: {ours.name})",
            f"{ours.rps / jwt.rps:.2f}x",
            "≥ 0.35x",
            ours.rps / jwt.rps >= 0.35,
        ),
        (
            "Envoy + authz over HTTP req/s vs Envoy jwt_authn",
            f"{http_mode.rps / jwt.rps:.2f}x",
            "≥ 0.75x",
            http_mode.rps / jwt.rps >= 0.75,
        ),
        (
            "p50 added over no auth at ~500 req/s (gRPC)",
            f"{paced.p50_ms - bare.p50_ms:.2f} ms (the empty grpc.aio handler: "
            f"{empty_paced.p50_ms - bare.p50_ms:.2f} ms)",
            "≤ 0.4 ms",
            paced.p50_ms - bare.p50_ms <= 0.4,
        ),
        (
            "p99 added over no auth at ~500 req/s (gRPC)",
            f"{paced.p99_ms - bare.p99_ms:.2f} ms",
            "< 2 ms",
            paced.p99_ms - bare.p99_ms < 2,
        ),
        (
            "idle RSS",
            f"{memory['idle']:.1f} MB",
            "≤ 75 MB",
            memory["idle"] <= 75,
        ),
        (
            f"RSS per cached token ({CACHED_TOKENS:,} cached)",
            f"{memory['per_entry']:.0f} B",
            "≤ 800 B",
            memory["per_entry"] <= 800,
        ),
        (
            "the cache's byte count against the RSS it grew",
            f"{accuracy:.2f}",
            "0.90 to 1.10",
            0.9 <= accuracy <= 1.1,
        ),
    ]
    lines += [
        "",
        "## Against the targets",
        "",
        "| measure | this run | target | met |",
        "|---|---|---|---|",
    ]
    for measure, value, target, met in checks:
        lines.append(f"| {measure} | {value} | {target} | {'yes' if met else 'no'} |")
    lines += [
        "",
        "## DPoP proofs (bench/dpop.py, in-process)",
        "",
        "CPU per check of one authorizer, the RS256 token cached, a fresh ES256 proof per",
        "check (made beforehand), against the plain bearer check of the same run:",
        "",
        "| check | CPU µs per check | vs bearer |",
        "|---|---|---|",
        f"| bearer, token cache hit | {dpop.bearer_us:.0f} | 1.00x |",
        f"| DPoP-bound, in-memory replay store | {dpop.memory_us:.0f} | "
        f"{dpop.memory_us / dpop.bearer_us:.2f}x |",
    ]
    if dpop.redis_us is not None:
        lines.append(
            f"| DPoP-bound, Redis replay store | {dpop.redis_us:.0f} | "
            f"{dpop.redis_us / dpop.bearer_us:.2f}x |"
        )
    lines += ["", *tracing_section(tracing), "", "![chart](bench/benchmarks.png)", ""]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(lines))
    chart(rows)
    print("\n".join(lines))


def tracing_section(tracing: TracingFigures) -> list[str]:
    rows = [
        ("tracing off (no `tracing` section)", tracing.off_us),
        (
            "tracing on, `sample_ratio: 0`, no caller's trace (nothing recorded)",
            tracing.sample_zero_us,
        ),
        ("tracing on, `sample_ratio: 1`, every span exported", tracing.sample_one_us),
        (
            "tracing on, `sample_ratio: 1`, the caller's `traceparent` too",
            tracing.sample_one_caller_us,
        ),
    ]
    lines = [
        "## Traces (bench/tracing.py, in-process)",
        "",
        "CPU per check of one authorizer, the RS256 token cached, a rule with one condition",
        "(two spans per recorded check), against the same check with tracing off; the",
        "exporting rows include the export to a real OTLP/gRPC receiver on loopback",
        f"({tracing.exported:,} spans received):",
        "",
        "| check | CPU µs per check | vs off |",
        "|---|---|---|",
    ]
    for name, value in rows:
        lines.append(f"| {name} | {value:.0f} | {tracing.ratio(value):.2f}x |")
    return lines


def chart(rows: list[Row]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    grpc_rows = [r for r in rows if r.group == "grpc"]
    left.barh([r.name for r in grpc_rows], [r.cpu_us or 0 for r in grpc_rows], color="#4477aa")
    left.set_xlabel("server CPU µs per check (lower is better)")
    left.set_title("direct gRPC (h2load)")
    left.invert_yaxis()
    envoy_rows = [r for r in rows if r.group == "envoy"]
    right.barh([r.name for r in envoy_rows], [r.rps for r in envoy_rows], color="#228833")
    right.set_xlabel("req/s through Envoy (higher is better)")
    right.set_title("wrk, 16 connections, 1 Envoy worker")
    right.invert_yaxis()
    fig.tight_layout()
    fig.savefig(ROOT / "bench" / "benchmarks.png", dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
