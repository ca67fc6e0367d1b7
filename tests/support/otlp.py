"""A real OTLP/gRPC trace receiver on a free loopback port: opentelemetry-proto's
generated TraceService, answering Export and keeping every span it is sent.

``OtlpReceiver`` runs in the test's event loop (start/stop); ``receiver_thread`` runs one
on a loop of its own, for tests that drive authz as a process (end to end, benchmarks).
``python -m tests.support.otlp --port N`` serves one until stopped, counting spans.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span, in plain data."""

    name: str
    trace_id: str  # hex
    span_id: str
    parent_span_id: str  # "" for a root span
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind
    attributes: dict[str, Any]
    status_code: int  # 0 unset, 1 ok, 2 error
    status_message: str
    resource: dict[str, Any]

    @property
    def texts(self) -> list[str]:
        """Every value it carries as text: attributes, status, resource."""
        values = [*self.attributes.values(), *self.resource.values(), self.status_message]
        return [str(value) for value in values]


def any_value(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in pairs}


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.port = 0
        self._server: grpc.aio.Server | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> None:
        """Listen on ``port`` (0: a free one, then in ``port``)."""
        self._server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port(f"127.0.0.1:{port}")
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(0)

    async def Export(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    @property
    def spans(self) -> list[ReceivedSpan]:
        found = []
        for request in list(self.requests):
            for resource_spans in request.resource_spans:
                resource = attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        found.append(
                            ReceivedSpan(
                                name=span.name,
                                trace_id=span.trace_id.hex(),
                                span_id=span.span_id.hex(),
                                parent_span_id=span.parent_span_id.hex(),
                                kind=span.kind,
                                attributes=attributes(span.attributes),
                                status_code=span.status.code,
                                status_message=span.status.message,
                                resource=resource,
                            )
                        )
        return found

    def named(self, name: str) -> list[ReceivedSpan]:
        return [span for span in self.spans if span.name == name]

    def wait_for(self, count: int, timeout_s: float = 10.0, name: str = "authz.check") -> None:
        """Until ``count`` spans called ``name`` have arrived (from any thread)."""
        deadline = time.monotonic() + timeout_s
        while len(self.named(name)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.named(name))} of {count} {name} spans arrived")
            time.sleep(0.02)


@contextmanager
def receiver_thread() -> Iterator[OtlpReceiver]:
    """A receiver serving from a thread of its own until the block ends."""
    receiver = OtlpReceiver()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stopping: asyncio.Event | None = None

    async def serve() -> None:
        nonlocal stopping
        stopping = asyncio.Event()
        await receiver.start()
        started.set()
        await stopping.wait()
        await receiver.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        if not started.wait(10):
            raise RuntimeError("the OTLP receiver did not start")
        yield receiver
    finally:
        if stopping is not None:
            loop.call_soon_threadsafe(stopping.set)
        thread.join(10)
        loop.close()


def main() -> int:
    parser = argparse.ArgumentParser(description="an OTLP/gRPC trace receiver on loopback")
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port

    async def serve() -> None:
        receiver = OtlpReceiver()
        await receiver.start(port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        await receiver.stop()
        print(f"received {len(receiver.spans)} spans", flush=True)

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
