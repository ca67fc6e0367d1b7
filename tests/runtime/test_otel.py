"""Traces from a running App to a real OTLP/gRPC receiver (tests/support/otlp.py): the
caller's context from the gRPC metadata or the request's header, sampling, what a span
holds, export on stop (each worker its own), and nothing of OpenTelemetry when tracing
is off."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from authz.config import parse_config
from authz.core.tracing import TraceParent
from authz.runtime.app import App
from authz.runtime.otel import OtelTracing, otlp_exporter
from dev.stack import free_port
from tests.support import (
    LISTEN_ANYWHERE,
    Signer,
    check_request,
    config_data,
    provider,
    wait_ready,
    wall_clock_claims,
)
from tests.support.otlp import OtlpReceiver, receiver_thread

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
SERVER = 2  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER


def caller(flags: str = "01", trace: str = TRACE, parent: str = PARENT) -> str:
    return f"00-{trace}-{parent}-{flags}"


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    running = OtlpReceiver()
    await running.start()
    yield running
    await running.stop()


def traced_data(
    jwks: dict[str, Any], receiver: OtlpReceiver, sample_ratio: float, **top: Any
) -> dict[str, Any]:
    corp = provider(jwks={"inline": jwks})
    rules = [
        {"name": "public", "match": {"prefix": "/public"}, "public": True},
        {"name": "api", "match": {"prefix": "/"}, "requires": {"provider": "corp"}},
    ]
    tracing = {
        "otlp_endpoint": receiver.endpoint,
        "sample_ratio": sample_ratio,
        "service_name": "authz-test",
    }
    return config_data(
        listen=LISTEN_ANYWHERE, providers={"corp": corp}, rules=rules, tracing=tracing, **top
    )


def traced_config(
    jwks: dict[str, Any], receiver: OtlpReceiver, sample_ratio: float, **top: Any
) -> Any:
    return parse_config(traced_data(jwks, receiver, sample_ratio, **top))


async def grpc_check(app: App, metadata: tuple[tuple[str, str], ...] = (), **headers: str) -> Any:
    assert app.grpc is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        return await stub.Check(check_request("/items", **headers), metadata=metadata)


async def test_spans_for_the_sampler_s_answer_and_none_when_it_surely_says_no() -> None:
    exporter, own_exporter = InMemorySpanExporter(), InMemorySpanExporter()
    sampled = TraceParent(TRACE, PARENT, 1, (("vendor", "x"),))
    unsampled = TraceParent(TRACE, PARENT, 0)
    zero = OtelTracing(exporter, sample_ratio=0.0, service_name="authz")
    assert zero.start_check(None) is None  # no span object at all
    assert zero.start_check(unsampled) is None
    check = zero.start_check(sampled)
    assert check is not None and check.trace_id == TRACE
    step = check.child("authz.policy", {"authz.rule": "api"})
    step.end({"authz.policy.result": "fail"})
    check.end({"authz.reason": "jwks_unavailable"}, error="jwks_unavailable")
    one = OtelTracing(own_exporter, sample_ratio=1.0, service_name="authz")
    root = one.start_check(None)
    assert root is not None and root.trace_id is not None and root.trace_id != TRACE
    root.end()
    assert one.start_check(unsampled) is None  # the caller decides, at any ratio
    await zero.stop()
    await one.stop()
    policy, failed = exporter.get_finished_spans()
    (own,) = own_exporter.get_finished_spans()
    assert failed.parent is not None and failed.parent.span_id == int(PARENT, 16)
    assert failed.kind.name == "SERVER" and failed.status.status_code.name == "ERROR"
    assert failed.status.description == "jwks_unavailable"
    assert failed.context.trace_state.get("vendor") == "x"  # the caller's tracestate goes on
    assert policy.parent is not None and policy.parent.span_id == failed.context.span_id
    assert policy.kind.name == "INTERNAL" and dict(policy.attributes or {}) == {
        "authz.rule": "api",
        "authz.policy.result": "fail",
    }
    assert own.parent is None


async def test_log_lines_during_a_traced_check_carry_its_trace_id() -> None:
    from authz.runtime.logs import JsonLines
    from authz.support.log_context import current_trace_id

    tracing = OtelTracing(InMemorySpanExporter(), sample_ratio=1.0, service_name="authz")
    formatter = JsonLines(worker=None)

    def line() -> dict[str, Any]:
        record = logging.LogRecord("authz.x", logging.INFO, __file__, 1, "m", None, None)
        parsed: dict[str, Any] = json.loads(formatter.format(record))
        return parsed

    check = tracing.start_check(TraceParent(TRACE, PARENT, 1))
    assert check is not None
    child = check.child("authz.policy", {})
    assert current_trace_id.get() == TRACE and line()["trace_id"] == TRACE
    child.end()
    assert current_trace_id.get() == TRACE  # a child span's end changes nothing
    check.end()
    assert current_trace_id.get() is None and "trace_id" not in line()
    await tracing.stop()


async def test_stop_returns_while_a_stuck_export_still_runs() -> None:
    """The SDK's shutdown waits up to 30 s for an export; stop gives up at its bound and
    leaves a daemon thread behind, which neither the loop nor the interpreter waits for."""
    import threading

    from opentelemetry.sdk.trace.export import SpanExportResult

    release, exporting = threading.Event(), threading.Event()

    class Stuck(InMemorySpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            exporting.set()
            release.wait(30)
            return SpanExportResult.SUCCESS

    tracing = OtelTracing(Stuck(), sample_ratio=1.0, service_name="authz", schedule_delay_s=0.01)
    span = tracing.start_check(None)
    assert span is not None
    span.end()
    assert await asyncio.to_thread(exporting.wait, 5)
    await tracing.stop(wait_s=0.2)
    assert not release.is_set()  # stop came back while the export was still stuck
    shutdown = [t for t in threading.enumerate() if t.name == "otel-shutdown"]
    assert shutdown and all(t.daemon for t in shutdown)
    release.set()


async def test_tasks_started_during_a_check_do_not_log_under_its_trace_id() -> None:
    from authz.support.log_context import current_trace_id
    from authz.support.tasks import OwnedTasks

    tasks = OwnedTasks()
    token = current_trace_id.set(TRACE)
    try:
        seen = await tasks.spawn(asyncio.sleep(0, result=None), "probe")
        background = tasks.spawn(_current_trace_id(), "refresh")
        assert seen is None and await background is None
    finally:
        current_trace_id.reset(token)
    await tasks.stop()


async def _current_trace_id() -> str | None:
    from authz.support.log_context import current_trace_id

    return current_trace_id.get()


async def test_the_caller_s_context_in_the_grpc_metadata_comes_first(
    jwks: dict[str, Any], receiver: OtlpReceiver, rsa_signer: Signer
) -> None:
    """Envoy with a tracer sends its span in the metadata; the client's header is older."""
    token = rsa_signer.token()
    envoy = caller(trace="1" * 32, parent="2" * 16)
    async with App(traced_config(jwks, receiver, 0.0)) as app:
        metadata = (("traceparent", envoy), ("tracestate", "envoy=1"))
        await grpc_check(app, metadata, authorization=f"Bearer {token}", traceparent=caller())
        await grpc_check(app, authorization=f"Bearer {token}", traceparent=caller())
    with_metadata, header_only = receiver.named("authz.check")
    assert (with_metadata.trace_id, with_metadata.parent_span_id) == ("1" * 32, "2" * 16)
    assert (header_only.trace_id, header_only.parent_span_id) == (TRACE, PARENT)
    assert with_metadata.kind == SERVER
    assert with_metadata.resource["service.name"] == "authz-test"
    assert with_metadata.attributes["authz.decision"] == "allow"


async def test_sampling_follows_the_caller_else_the_ratio(
    jwks: dict[str, Any], receiver: OtlpReceiver, rsa_signer: Signer
) -> None:
    bearer = f"Bearer {rsa_signer.token()}"
    async with App(traced_config(jwks, receiver, 0.0)) as app:
        await grpc_check(app, authorization=bearer)  # no caller: ratio 0, not recorded
        await grpc_check(app, authorization=bearer, traceparent=caller("00"))  # caller: no
        await grpc_check(app, authorization=bearer, traceparent=caller("01"))  # caller: yes
    (only,) = receiver.named("authz.check")
    assert only.parent_span_id == PARENT
    assert {span.trace_id for span in receiver.spans} == {TRACE}
    receiver.requests.clear()
    async with App(traced_config(jwks, receiver, 1.0)) as app:
        await grpc_check(app, authorization=bearer)
        await grpc_check(app, authorization=bearer, traceparent=caller("00"))
    (root,) = receiver.named("authz.check")  # the unsampled caller is followed at 1.0 too
    assert root.parent_span_id == ""


async def test_sample_ratio_zero_without_callers_exports_nothing(
    jwks: dict[str, Any], receiver: OtlpReceiver, rsa_signer: Signer
) -> None:
    async with App(traced_config(jwks, receiver, 0.0)) as app:
        for _ in range(20):
            await grpc_check(app, authorization=f"Bearer {rsa_signer.token()}")
        await grpc_check(app)
    assert receiver.requests == []


async def test_the_http_endpoint_continues_the_request_s_trace(
    jwks: dict[str, Any], receiver: OtlpReceiver, rsa_signer: Signer
) -> None:
    http_authz = {"listen": "127.0.0.1:0", "original_request": "envoy"}
    settings = traced_config(jwks, receiver, 0.0, http_authz=http_authz)
    token = rsa_signer.token(sub="subject-in-a-claim")
    async with App(settings) as app, aiohttp.ClientSession() as session:
        assert app.http_authz is not None
        url = f"http://127.0.0.1:{app.http_authz.port}/items"
        headers = {"authorization": f"Bearer {token}", "traceparent": caller()}
        async with session.get(url, headers=headers) as response:
            assert response.status == 200
        async with session.get(url, headers={"traceparent": caller()}) as response:
            assert response.status == 401
    allow, deny = receiver.named("authz.check")
    assert (allow.trace_id, allow.parent_span_id) == (TRACE, PARENT)
    assert allow.attributes == {
        "authz.decision": "allow",
        "authz.status": 200,
        "authz.reason": "allowed",
        "authz.rule": "api",
        "authz.provider": "corp",
        "authz.token_cache": "miss",
    }
    assert deny.attributes["authz.reason"] == "missing_token"
    assert deny.status_code == 0  # a denial is an answer, not an error of authz
    for span in receiver.spans:
        for text in span.texts:
            assert token.split(".")[2] not in text and "subject-in-a-claim" not in text


async def test_a_reload_keeps_tracing_and_a_change_asks_for_a_restart(
    jwks: dict[str, Any],
    receiver: OtlpReceiver,
    rsa_signer: Signer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "authz.json"
    first = traced_data(jwks, receiver, 0.0)
    path.write_text(json.dumps(first))
    bearer = f"Bearer {rsa_signer.token()}"
    async with App(parse_config(first), config_path=path, watch_interval_s=3600) as app:
        tracing = app.tracing
        path.write_text(json.dumps({**first, "tracing": {**first["tracing"], "sample_ratio": 1}}))
        with caplog.at_level(logging.WARNING):
            assert await app.reload()
        assert "tracing changes need a restart" in caplog.text
        assert app.tracing is tracing
        await grpc_check(app, authorization=bearer)  # still ratio 0: not recorded
        await grpc_check(app, authorization=bearer, traceparent=caller())
    assert len(receiver.named("authz.check")) == 1


async def test_stopping_waits_a_bounded_time_for_a_collector_that_is_gone() -> None:
    with socket_bound_and_closed() as port:
        tracing = OtelTracing(
            otlp_exporter(f"http://127.0.0.1:{port}"), sample_ratio=1.0, service_name="authz"
        )
    span = tracing.start_check(None)
    span.end()
    started = time.monotonic()
    await tracing.stop(wait_s=0.5)
    assert time.monotonic() - started < 2.0


class socket_bound_and_closed:
    """A loopback port nothing listens on."""

    def __enter__(self) -> int:
        import socket

        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        port: int = self._socket.getsockname()[1]
        return port

    def __exit__(self, *_: object) -> None:
        self._socket.close()


@pytest.mark.parametrize("traced", [False, True])
def test_opentelemetry_is_loaded_only_when_tracing_is_configured(
    tmp_path: Path, jwks: dict[str, Any], traced: bool
) -> None:
    """Idle memory and the hot path stay as they were when tracing is off."""
    tracing = {"otlp_endpoint": "http://127.0.0.1:1"} if traced else None
    settings = config_data(
        listen=LISTEN_ANYWHERE,
        providers={"corp": provider(jwks={"inline": jwks})},
        **({"tracing": tracing} if tracing else {}),
    )
    path = tmp_path / "authz.json"
    path.write_text(json.dumps(settings))
    program = (
        "import asyncio, sys\n"
        "from authz.config import load_config\n"
        "from authz.runtime.app import App\n"
        "async def main():\n"
        f"    async with App(load_config({str(path)!r})):\n"
        "        pass\n"
        "asyncio.run(main())\n"
        "print(any(m.startswith('opentelemetry') for m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == str(traced)


@pytest.mark.e2e
def test_with_workers_each_exports_its_own_spans_on_stop(
    tmp_path: Path, jwks: dict[str, Any], rsa_signer: Signer
) -> None:
    """`workers: 2`: each worker process has its own provider, and exports as it stops."""
    grpc_port, http_port = free_port(), free_port()
    bearer = f"Bearer {rsa_signer.token(**wall_clock_claims())}"
    with receiver_thread() as receiver:
        settings = config_data(
            listen={"grpc": f"127.0.0.1:{grpc_port}", "http": f"127.0.0.1:{http_port}"},
            providers={"corp": provider(jwks={"inline": jwks})},
            workers=2,
            shutdown_grace=2,
            tracing={"otlp_endpoint": receiver.endpoint, "sample_ratio": 0},
        )
        path = tmp_path / "authz.json"
        path.write_text(json.dumps(settings))
        with open(tmp_path / "authz.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "authz", "serve", "-c", str(path)], stderr=log
            )
        try:
            wait_ready(http_port, proc)
            time.sleep(1.0)  # the second worker binds a moment after the first
            checks = 24
            for n in range(checks):  # a new connection each time: the kernel spreads them
                with grpc_sync_channel(grpc_port) as stub:
                    parent = caller(parent=f"{n + 1:016x}")
                    request = check_request(authorization=bearer, traceparent=parent)
                    assert stub.Check(request, timeout=5).HasField("ok_response")
        finally:
            proc.terminate()
            assert proc.wait(timeout=30) == 0
        spans = receiver.named("authz.check")
    assert sorted(int(span.parent_span_id, 16) for span in spans) == list(range(1, checks + 1))


class grpc_sync_channel:
    def __init__(self, port: int) -> None:
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}")

    def __enter__(self) -> Any:
        return external_auth_pb2_grpc.AuthorizationStub(self._channel)

    def __exit__(self, *_: object) -> None:
        self._channel.close()
