"""`make soak`: bounded reliability scenarios against real processes -> RELIABILITY.md.

Each scenario runs authz (and Envoy and the echo upstream, where the scenario is about
what clients see through Envoy) under load while something goes wrong, and counts every
request by what it should have been answered and what it was:

- a **wrong answer** is an allow where a deny was due, or a deny (401/403) where an allow
  was: the one thing authz must never give;
- an **error** is anything else: a 5xx from Envoy, a gRPC error, a refused connection.

Scenarios: sustained mixed load with fresh tokens; JWKS outage and key rotation; config
reloads under load; rolling SIGTERMs of one of two authz behind Envoy; a worker killed
(kill -9) under direct gRPC load; floods of idle and slow connections on every port;
authz killed behind Envoy. Each reports requests sent, wrong answers, errors, p50/p99
latency and authz's RSS over time. About 6 minutes on 2 cores.

Run: python -m bench.soak   (BENCH_SOAK_SECONDS scales every phase)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz.keys.crypto import public_jwk, sign_token
from dev.stack import DEV_AUDIENCE, DEV_ISSUER, ROOT, Ports, Stack, dev_config, free_port

SCALE = float(os.environ.get("BENCH_SOAK_SECONDS", "1"))  # 1: the phases as written
CONCURRENCY = 16
POOL = 20_000  # distinct valid tokens: the cache keeps missing as the pool turns over

# --- what is sent, and what each answer should be ----------------------------------------


def es256_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class Tokens:
    """Tokens of every kind the mix sends, signed by ``pem`` (its kid in the header)."""

    def __init__(self, pem: bytes, count: int = POOL, issuer: str = DEV_ISSUER) -> None:
        self.pem = pem
        self.kid = public_jwk(pem)["kid"]
        self.issuer = issuer
        now = int(time.time())
        self.valid = [self.mint(sub=f"user-{i}", iat=now, exp=now + 7200) for i in range(count)]
        self.expired = self.mint(sub="late", iat=now - 7200, exp=now - 3600)
        other = es256_pem()
        claims = self.claims(sub="mallory", iat=now, exp=now + 7200)
        self.forged = sign_token(claims, other, algorithm="ES256", kid=self.kid)
        self.turn = 0

    def claims(self, **extra: Any) -> dict[str, Any]:
        return {"iss": self.issuer, "aud": DEV_AUDIENCE, "scope": "read", **extra}

    def mint(self, **claims: Any) -> str:
        return sign_token(self.claims(**claims), self.pem, algorithm="ES256", kid=self.kid)

    def next_valid(self) -> str:
        self.turn += 1
        return self.valid[self.turn % len(self.valid)]


@dataclass(frozen=True)
class Ask:
    path: str
    headers: dict[str, str]
    allow: bool  # what the answer must be


def mixed(tokens: Tokens) -> Ask:
    """70% valid tokens, then expired, forged, missing, and a rule the token fails."""
    roll = random.random()
    if roll < 0.70:
        return Ask("/hello", {"authorization": f"Bearer {tokens.next_valid()}"}, True)
    if roll < 0.78:
        return Ask("/hello", {"authorization": f"Bearer {tokens.expired}"}, False)
    if roll < 0.86:
        return Ask("/hello", {"authorization": f"Bearer {tokens.forged}"}, False)
    if roll < 0.93:
        return Ask("/hello", {}, False)
    return Ask("/admin/x", {"authorization": f"Bearer {tokens.next_valid()}"}, False)


# --- counting -----------------------------------------------------------------------------


@dataclass
class Tally:
    name: str
    what: str
    outcomes: list[tuple[float, float, bool, str]] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)  # MB, sampled every second
    notes: list[str] = field(default_factory=list)
    # Errors that are the scenario's point, not failures: e.g. checks on a killed
    # worker's own connections, or everything while authz is down behind Envoy.
    expected_errors: int = 0
    # Answers wrong for the scenario's own reason (e.g. an allow while authz was down).
    extra_wrong: int = 0

    def record(self, sent: float, allow: bool, answer: str) -> None:
        self.outcomes.append((sent, time.monotonic() - sent, allow, answer))

    @property
    def wrong(self) -> int:
        return self.extra_wrong + sum(
            1
            for _, _, allow, answer in self.outcomes
            if (allow and answer in ("401", "403", "denied"))
            or (not allow and answer in ("200", "allowed"))
        )

    @property
    def errors(self) -> int:
        answers = ("200", "401", "403", "allowed", "denied")
        return sum(1 for _, _, _, answer in self.outcomes if answer not in answers)

    def latency_ms(self, quantile: float) -> float:
        ordered = sorted(latency for _, latency, _, _ in self.outcomes)
        return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))] * 1000 if ordered else 0


async def through_envoy(
    tally: Tally, port: int, ask: Callable[[], Ask], stop: asyncio.Event
) -> None:
    """CONCURRENCY clients sending through Envoy until ``stop``."""
    url = f"http://127.0.0.1:{port}"
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def client() -> None:
            while not stop.is_set():
                request = ask()
                sent = time.monotonic()
                try:
                    async with session.get(url + request.path, headers=request.headers) as reply:
                        await reply.read()
                        answer = str(reply.status)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    answer = type(exc).__name__
                tally.record(sent, request.allow, answer)
                if answer not in ("200", "401", "403"):
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(client() for _ in range(CONCURRENCY)))


def grpc_request(token: str) -> Any:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.host, http.path = "GET", "api.test", "/hello"
    http.headers["authorization"] = f"Bearer {token}"
    return request


async def over_grpc(
    tally: Tally, channels: list[grpc.aio.Channel], tokens: Tokens, stop: asyncio.Event
) -> None:
    """Direct gRPC checks of valid tokens over ``channels`` until ``stop``."""

    async def client(stub: Any) -> None:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                response = await stub.Check(grpc_request(tokens.next_valid()), timeout=5)
                answer = "allowed" if response.HasField("ok_response") else "denied"
            except grpc.aio.AioRpcError as exc:
                answer = str(exc.code().name)
            tally.record(sent, True, answer)
            if answer not in ("allowed", "denied"):
                await asyncio.sleep(0.01)

    stubs = [external_auth_pb2_grpc.AuthorizationStub(c) for c in channels]
    await asyncio.gather(*(client(stubs[i % len(stubs)]) for i in range(CONCURRENCY)))


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def family(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return [pid, *(int(p) for p in out.split())]


async def sample_rss(tally: Tally, pids: Callable[[], list[int]], stop: asyncio.Event) -> None:
    while not stop.is_set():
        tally.rss.append(rss_mb(pids()))
        await asyncio.sleep(1)


async def run_for(
    seconds: float, *loads: Awaitable[None], stop: asyncio.Event | None = None
) -> None:
    """Run ``loads`` for ``seconds`` (their shared stop event set afterwards)."""
    assert stop is not None
    tasks = [asyncio.ensure_future(load) for load in loads]
    await asyncio.sleep(seconds * SCALE)
    stop.set()
    await asyncio.gather(*tasks)


def authz_pids(stack: Stack) -> list[int]:
    proc = stack.procs.get("authz")
    return family(proc.pid) if proc is not None and proc.poll() is None else []


def stack_for(workdir: Path, name: str, jwks_file: Path, **config: Any) -> Stack:
    ports = Ports()
    settings = {**dev_config(jwks_file, ports), "log_level": "WARNING", **config}
    return Stack(workdir / name, settings, ports)


# --- scenarios ----------------------------------------------------------------------------


async def sustained(workdir: Path, tokens: Tokens, jwks: Path) -> Tally:
    tally = Tally("sustained mixed load", "70% valid tokens (20,000 distinct), 30% to deny")
    stack = stack_for(workdir, "sustained", jwks)
    await asyncio.to_thread(stack.start)
    try:
        stop = asyncio.Event()
        await run_for(
            60,
            through_envoy(tally, stack.ports.envoy, lambda: mixed(tokens), stop),
            sample_rss(tally, lambda: authz_pids(stack), stop),
            stop=stop,
        )
    finally:
        await asyncio.to_thread(stack.stop)
    return tally


class Idp:
    """A JWKS endpoint the scenario takes down and rotates."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.down = False
        self.hits = 0

    async def certs(self, _: web.Request) -> web.Response:
        self.hits += 1
        if self.down:
            return web.Response(status=503)
        return web.json_response({"keys": self.keys})


async def jwks_outage(workdir: Path, tokens: Tokens, jwks: Path) -> Tally:
    tally = Tally(
        "JWKS outage and rotation",
        "the IdP down for a phase, then a new key added and the old one removed",
    )
    idp = Idp()
    idp.keys = [public_jwk(tokens.pem)]
    app = web.Application()
    app.router.add_get("/certs", idp.certs)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    idp_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", idp_port).start()
    remote = {"uri": f"http://127.0.0.1:{idp_port}/certs", "refresh_interval": 1, "timeout": 1}
    stack = stack_for(workdir, "jwks", jwks)
    stack.config["providers"]["dev"]["jwks"] = {"remote": remote}
    newer = Tokens(es256_pem(), count=2000)
    # Which tokens the mix sends, and which key signed them: changed phase by phase.
    phase = {"old": True, "new": False, "old_allowed": True}
    withdrawn = [0]

    def ask() -> Ask:
        if phase["new"] and random.random() < 0.5:
            return Ask("/hello", {"authorization": f"Bearer {newer.next_valid()}"}, True)
        if phase["old"]:
            allow = phase["old_allowed"]
            withdrawn[0] += not allow
            return Ask("/hello", {"authorization": f"Bearer {tokens.next_valid()}"}, allow)
        return mixed(newer)

    await asyncio.to_thread(stack.start)
    stop = asyncio.Event()
    try:
        loads = [
            asyncio.ensure_future(through_envoy(tally, stack.ports.envoy, ask, stop)),
            asyncio.ensure_future(sample_rss(tally, lambda: authz_pids(stack), stop)),
        ]
        await asyncio.sleep(15 * SCALE)  # normal
        idp.down = True
        await asyncio.sleep(20 * SCALE)  # the IdP answers 503: the known keys keep working
        idp.down = False
        idp.keys = [public_jwk(tokens.pem), public_jwk(newer.pem)]
        phase["new"] = True  # the new kid: fetched on first sight
        await asyncio.sleep(15 * SCALE)
        idp.keys = [public_jwk(newer.pem)]  # the old key is withdrawn...
        removed = time.monotonic()
        phase["old"] = False  # ...so its tokens are sent only once authz must know
        await asyncio.sleep(3)  # refresh_interval 1 s, twice, and a margin
        phase["old"], phase["old_allowed"] = True, False
        await asyncio.sleep(12 * SCALE)
        stop.set()
        await asyncio.gather(*loads)
        tally.notes.append(
            f"The IdP was asked {idp.hits} times (refresh_interval 1 s); {withdrawn[0]:,} "
            f"requests carried tokens of the withdrawn key, from 3 s after its withdrawal "
            f"(they must be denied, cached or not), the last "
            f"{time.monotonic() - removed:.0f} s"
        )
    finally:
        stop.set()
        await asyncio.to_thread(stack.stop)
        await runner.cleanup()
    return tally


async def reloads(workdir: Path, tokens: Tokens, jwks: Path) -> Tally:
    tally = Tally("reloads under load", "the config rewritten every 2 s (a claim header renamed)")
    stack = stack_for(workdir, "reloads", jwks)
    await asyncio.to_thread(stack.start)
    stop = asyncio.Event()
    rewrites = 0

    async def rewrite() -> None:
        nonlocal rewrites
        while not stop.is_set():
            await asyncio.sleep(2)
            config = json.loads(stack.config_path.read_text())
            mapping = config["providers"]["dev"]["claim_to_headers"][0]
            mapping["header"] = "x-user-sub" if mapping["header"] == "x-user-id" else "x-user-id"
            stack.config_path.write_text(json.dumps(config))
            stack.procs["authz"].send_signal(signal.SIGHUP)  # and the watcher sees it too
            rewrites += 1

    try:
        await run_for(
            60,
            through_envoy(tally, stack.ports.envoy, lambda: mixed(tokens), stop),
            sample_rss(tally, lambda: authz_pids(stack), stop),
            rewrite(),
            stop=stop,
        )
        await asyncio.sleep(2.5)
        page = metrics_page(stack.ports.authz_http)
        ok = next((line for line in page.splitlines() if 'reload_total{result="ok"}' in line), "")
        tally.notes.append(f"{rewrites} rewrites, each also a SIGHUP; reloads counted: {ok}")
    finally:
        await asyncio.to_thread(stack.stop)
    return tally


def metrics_page(port: int) -> str:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        text: str = page.read().decode()
    return text


def serve(config: dict[str, Any], path: Path) -> subprocess.Popen[bytes]:
    path.write_text(json.dumps(config))
    with open(path.with_suffix(".log"), "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "authz", "serve", "-c", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    from tests.support import wait_ready as ready

    ready(port, proc, timeout_s)


async def rolling_sigterm(workdir: Path, tokens: Tokens, jwks: Path) -> Tally:
    tally = Tally(
        "SIGTERM under load",
        "two authz behind Envoy; one gets SIGTERM and comes back, three times",
    )
    other = Ports()
    # The defaults (dev_config shortens them for tests): a drain longer than Envoy's
    # health-check interval (1 s) plus its timeout.
    timing = {"shutdown_grace": 10, "shutdown_drain": 3}
    second_config = {**dev_config(jwks, other), "log_level": "WARNING", **timing}
    second_path = workdir / "second.yaml"
    second = serve(second_config, second_path)
    wait_ready(other.authz_http, second)

    def both(envoy: dict[str, Any]) -> None:
        cluster = next(c for c in envoy["static_resources"]["clusters"] if c["name"] == "ext_authz")
        address = {"socket_address": {"address": "127.0.0.1", "port_value": other.authz_grpc}}
        cluster["load_assignment"]["endpoints"][0]["lb_endpoints"].append(
            {"endpoint": {"address": address}}
        )

    ports = Ports()
    stack = Stack(
        workdir / "rolling",
        {**dev_config(jwks, ports), "log_level": "WARNING", **timing},
        ports,
        envoy_patch=both,
    )
    await asyncio.to_thread(stack.start)
    stop = asyncio.Event()
    exits: list[int] = []
    try:
        loads = [
            asyncio.ensure_future(through_envoy(tally, ports.envoy, lambda: mixed(tokens), stop)),
            asyncio.ensure_future(sample_rss(tally, lambda: family(second.pid), stop)),
        ]
        for _ in range(3):
            await asyncio.sleep(5 * SCALE)
            second.send_signal(signal.SIGTERM)
            exits.append(await asyncio.to_thread(second.wait, 30))
            await asyncio.sleep(2)
            second = serve(second_config, second_path)
            await asyncio.to_thread(wait_ready, other.authz_http, second)
        await asyncio.sleep(5 * SCALE)
        stop.set()
        await asyncio.gather(*loads)
        tally.notes.append(f"exit codes {exits}")
    finally:
        stop.set()
        await asyncio.to_thread(stack.stop)
        if second.poll() is None:
            second.terminate()
            second.wait()
    return tally


async def worker_kill(workdir: Path, tokens: Tokens, jwks: Path) -> Tally:
    from tests.support.procnet import my_ports_to, server_of

    tally = Tally(
        "worker kill",
        "workers: 2, kill -9 of one under direct gRPC load; counted on the other's connections",
    )
    victims = Tally("victim", "")
    ports = Ports()
    config = {**dev_config(jwks, ports), "log_level": "WARNING", "workers": 2}
    proc = serve(config, workdir / "workers.yaml")
    stop = asyncio.Event()
    channels: list[grpc.aio.Channel] = []
    try:
        wait_ready(ports.authz_http, proc)
        deadline = time.monotonic() + 15
        while len(family(proc.pid)) < 3:
            assert time.monotonic() < deadline, "the workers did not start"
            await asyncio.sleep(0.1)
        workers = set(family(proc.pid)[1:])
        await asyncio.sleep(1)  # both serving
        grouped: dict[int, list[grpc.aio.Channel]] = {pid: [] for pid in workers}
        for _ in range(60):
            before = my_ports_to(ports.authz_grpc)
            channel = grpc.aio.insecure_channel(
                f"127.0.0.1:{ports.authz_grpc}", options=[("grpc.use_local_subchannel_pool", 1)]
            )
            channels.append(channel)
            await asyncio.wait_for(channel.channel_ready(), 5)
            (client_port,) = my_ports_to(ports.authz_grpc) - before
            owner = server_of(client_port, ports.authz_grpc, workers)
            if owner is not None:
                grouped[owner].append(channel)
            if all(len(g) >= 2 for g in grouped.values()):
                break
        victim, survivor = sorted(workers)
        loads = [
            asyncio.ensure_future(over_grpc(tally, grouped[survivor], tokens, stop)),
            asyncio.ensure_future(over_grpc(victims, grouped[victim], tokens, stop)),
            asyncio.ensure_future(sample_rss(tally, lambda: family(proc.pid), stop)),
        ]
        await asyncio.sleep(10 * SCALE)
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        replaced = None
        while time.monotonic() - killed < 20:
            fresh = set(family(proc.pid)[1:]) - workers
            if fresh:
                replaced = time.monotonic() - killed
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(10 * SCALE)
        stop.set()
        await asyncio.gather(*loads)
        tally.notes.append(
            f"a replacement worker ran {replaced:.1f} s after the kill; on the killed "
            f"worker's own connections {victims.errors} of {len(victims.outcomes)} checks "
            f"failed (in flight or sent before the channels reconnected), "
            f"{victims.wrong} wrong"
            if replaced is not None
            else "no replacement worker started"
        )
    finally:
        stop.set()
        for channel in channels:
            await channel.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return tally


async def slow_connections(workdir: Path, tokens: Tokens, jwks: Path) -> Tally:
    from tests.support.floods import open_connections, still_open

    tally = Tally(
        "slow connections",
        "2,000 idle and 50 slowloris connections on each authz port in turn, through-Envoy "
        "load meanwhile",
    )
    limits = {"http_header_timeout": 2, "http_idle_timeout": 5, "max_http_connections": 500}
    stack = stack_for(workdir, "slow", jwks, limits={**limits, "max_grpc_connections": 500})
    await asyncio.to_thread(stack.start)
    stop = asyncio.Event()
    try:
        loads = [
            asyncio.ensure_future(
                through_envoy(tally, stack.ports.envoy, lambda: mixed(tokens), stop)
            ),
            asyncio.ensure_future(sample_rss(tally, lambda: authz_pids(stack), stop)),
        ]
        for port in (stack.ports.authz_grpc, stack.ports.authz_http):
            idle = await asyncio.to_thread(open_connections, port, 2000)
            slow = await asyncio.to_thread(open_connections, port, 50)
            started = time.monotonic()
            while time.monotonic() - started < 6 and still_open(idle + slow):
                for sock in slow:
                    with contextlib.suppress(OSError):
                        sock.send(b"G")
                await asyncio.sleep(0.5)
            left = still_open(idle + slow)
            tally.notes.append(
                f"port {port}: {len(idle) + len(slow)} opened, {left} open after "
                f"{time.monotonic() - started:.1f} s"
            )
            for sock in idle + slow:
                sock.close()
        await asyncio.sleep(5 * SCALE)
        stop.set()
        await asyncio.gather(*loads)
    finally:
        stop.set()
        await asyncio.to_thread(stack.stop)
    return tally


async def killed_behind_envoy(workdir: Path, tokens: Tokens, jwks: Path) -> Tally:
    tally = Tally(
        "authz killed behind Envoy",
        "kill -9 of authz for 8 s, then started again: Envoy must never let a request "
        "through meanwhile (its 503s are expected errors)",
    )
    stack = stack_for(workdir, "killed", jwks)
    await asyncio.to_thread(stack.start)
    stop = asyncio.Event()
    try:
        loads = [
            asyncio.ensure_future(
                through_envoy(tally, stack.ports.envoy, lambda: mixed(tokens), stop)
            ),
            asyncio.ensure_future(sample_rss(tally, lambda: authz_pids(stack), stop)),
        ]
        await asyncio.sleep(10 * SCALE)
        stack.procs["authz"].kill()
        stack.procs["authz"].wait()
        down = time.monotonic()
        await asyncio.sleep(8)
        stack.procs["authz"] = await asyncio.to_thread(serve, stack.config, stack.config_path)
        await asyncio.to_thread(wait_ready, stack.ports.authz_http, stack.procs["authz"])
        back = time.monotonic()
        await asyncio.sleep(10 * SCALE)
        stop.set()
        await asyncio.gather(*loads)
        # In flight at the kill (sent just before it) through a moment after the restart.
        outage = [o for o in tally.outcomes if down - 0.5 <= o[0] < back + 2]
        tally.expected_errors = sum(1 for o in outage if o[3] not in ("200", "401", "403"))
        # Sent well inside the outage: nothing can have authorized them.
        while_down = [o for o in tally.outcomes if down + 0.05 <= o[0] < back - 1]
        tally.extra_wrong = sum(1 for o in while_down if o[3] == "200")
        tally.notes.append(
            f"authz down {back - down:.1f} s; of the {len(outage):,} requests sent from "
            f"0.5 s before the kill to 2 s after the restart, {tally.expected_errors:,} "
            f"were answered with an error (Envoy's 503: fail closed); "
            f"{tally.extra_wrong} of the {len(while_down):,} sent while it was down were allowed"
        )
    finally:
        stop.set()
        await asyncio.to_thread(stack.stop)
    return tally


SCENARIOS = [
    sustained,
    jwks_outage,
    reloads,
    rolling_sigterm,
    worker_kill,
    slow_connections,
    killed_behind_envoy,
]


def report(tallies: list[Tally], elapsed: float) -> str:
    lines = [
        "# Reliability",
        "",
        f"Measured by `make soak` on {time.strftime('%Y-%m-%d')} in {elapsed:.0f} s "
        f"({os.cpu_count()} cores, Python {sys.version.split()[0]}). A wrong answer is an "
        "allow where a deny was due or a deny where an allow was; an error is anything "
        "else (an Envoy 5xx, a gRPC error, a refused connection). RSS is authz's "
        "(all its processes), sampled every second.",
        "",
        "| scenario | requests | wrong answers | errors | p50 ms | p99 ms | RSS MB "
        "(start / peak / end) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for t in tallies:
        rss = f"{t.rss[0]:.0f} / {max(t.rss):.0f} / {t.rss[-1]:.0f}" if t.rss else ""
        errors = f"{t.errors}" + (f" ({t.expected_errors} expected)" if t.expected_errors else "")
        lines.append(
            f"| {t.name} | {len(t.outcomes):,} | {t.wrong} | {errors} | "
            f"{t.latency_ms(0.5):.1f} | {t.latency_ms(0.99):.1f} | {rss} |"
        )
    lines += ["", "## Scenarios", ""]
    for t in tallies:
        lines.append(f"- **{t.name}**: {t.what}." + "".join(f" {n}." for n in t.notes))
    lines.append("")
    return "\n".join(lines)


async def main() -> int:
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="authz-soak-"))
    pem = es256_pem()
    jwks = workdir / "jwks.json"
    jwks.write_text(json.dumps({"keys": [public_jwk(pem)]}))
    tokens = Tokens(pem)
    only = os.environ.get("SOAK_ONLY")
    tallies = []
    for scenario in SCENARIOS:
        if only and scenario.__name__ != only:
            continue
        print(f"soak: {scenario.__name__} ...", flush=True)
        tally = await scenario(workdir, tokens, jwks)
        print(
            f"soak: {tally.name}: {len(tally.outcomes)} requests, {tally.wrong} wrong, "
            f"{tally.errors} errors",
            flush=True,
        )
        tallies.append(tally)
    text = report(tallies, time.monotonic() - started)
    if not only:
        (ROOT / "RELIABILITY.md").write_text(text)
    print(text)
    unexpected = sum(t.errors - t.expected_errors for t in tallies)
    return 1 if any(t.wrong for t in tallies) or unexpected else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
