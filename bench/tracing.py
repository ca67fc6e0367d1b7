"""What tracing costs a check (`make bench` runs it; alone: `python -m bench.tracing`).

In-process, one authorizer, the same RS256 token cached: CPU time per check with tracing
off, on at sample_ratio 0 (a span object per check, nothing recorded), and on at 1.0
exporting every span through the BatchSpanProcessor and the OTLP/gRPC exporter to a real
receiver on loopback (tests/support/otlp.py, in a process of its own so that decoding is
not counted); at 1.0 with the caller's traceparent too. The exporting rows include the
export itself: the clock stops once every span has been sent (the provider shut down).
CPU time over many checks (time.process_time: every thread of the process), and the
ratio to tracing off in the same run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import subprocess
import sys
import time
from typing import Any

from authz.runtime.otel import OtelTracing, otlp_exporter
from dev.stack import ROOT, free_port
from tests import support

CHECKS = 4000
WARM = 200
CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@dataclasses.dataclass
class TracingFigures:
    off_us: float
    sample_zero_us: float
    sample_one_us: float
    sample_one_caller_us: float
    exported: int  # spans the receiver counted for the two exporting rows

    def ratio(self, value: float) -> float:
        return value / self.off_us


def _authorizer(jwks: dict[str, Any], tracer: OtelTracing | None) -> Any:
    corp = support.provider(jwks={"inline": jwks})
    # One condition, as most rules have: a policy step in each trace besides the check.
    rule = {"requires": {"provider": "corp"}, "claims": [{"claim": "sub", "exists": True}]}
    return support.authorizer(
        support.config(providers={"corp": corp}, rules=[{"match": {"prefix": "/"}, **rule}]),
        support.fixed_keys(jwks),
        clock=time.time,
        tracer=tracer,
    )


async def _cpu_per_check(
    jwks: dict[str, Any], token: str, tracing: OtelTracing | None, caller: bool = False
) -> float:
    headers = {"authorization": f"Bearer {token}", **({"traceparent": CALLER} if caller else {})}
    request = support.req("/items/7", host="api.example.com", **headers)
    checker = _authorizer(jwks, tracing)
    for _ in range(WARM):  # the token cache, first key construction
        assert (await checker.check(request)).allowed
    started = time.process_time()
    for _ in range(CHECKS):
        decision = await checker.check(request)
        assert decision.allowed, decision.reason
    if tracing is not None:
        await tracing.stop(wait_s=60)  # every span exported, on the clock
    return (time.process_time() - started) / CHECKS * 1e6


def _tracing(endpoint: str, ratio: float) -> OtelTracing:
    # A queue that holds every span of the run: none is dropped, every one is exported.
    return OtelTracing(
        otlp_exporter(endpoint), sample_ratio=ratio, service_name="bench", max_queue=4 * CHECKS
    )


def _wait_listening(port: int, proc: subprocess.Popen[str], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the OTLP receiver did not start") from None
            time.sleep(0.05)


def measure() -> TracingFigures:
    port = free_port()
    receiver = subprocess.Popen(
        [sys.executable, "-m", "tests.support.otlp", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_listening(port, receiver)
        endpoint = f"http://127.0.0.1:{port}"
        signer = support.rsa_signer()
        jwks = {"keys": [signer.jwk]}
        token = signer.token(**{**support.wall_clock_claims(), "exp": int(time.time()) + 3600})

        async def run() -> tuple[float, float, float, float]:
            off = await _cpu_per_check(jwks, token, None)
            zero = await _cpu_per_check(jwks, token, _tracing(endpoint, 0.0))
            one = await _cpu_per_check(jwks, token, _tracing(endpoint, 1.0))
            caller = await _cpu_per_check(jwks, token, _tracing(endpoint, 1.0), caller=True)
            return off, zero, one, caller

        off, zero, one, caller = asyncio.run(run())
    finally:
        receiver.terminate()
        out, _ = receiver.communicate(timeout=30)
    exported = int(out.split()[1]) if out.startswith("received") else -1
    return TracingFigures(off, zero, one, caller, exported)


def main() -> int:
    figures = measure()
    print(json.dumps(dataclasses.asdict(figures), indent=2))
    for name in ("sample_zero_us", "sample_one_us", "sample_one_caller_us"):
        print(f"{name}: {figures.ratio(getattr(figures, name)):.2f}x tracing off")
    return 0


if __name__ == "__main__":
    sys.exit(main())
