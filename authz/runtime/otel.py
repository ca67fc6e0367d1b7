"""The core's Tracer, recorded with OpenTelemetry: one SERVER span per check, exported in
batches over OTLP/gRPC. Imported only when the config has ``tracing`` (build_tracing in
build.py), so a config without it never loads OpenTelemetry.

No global state: the App owns one TracerProvider (each worker process its own), passes it
down through the build step, and shuts it down on stop. Parents are given to each span
explicitly, so OpenTelemetry's current-context variable is never set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from contextvars import Token

from opentelemetry.context import Context
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)
from opentelemetry.trace import Span as OtelSpan

from authz import __version__
from authz.core.tracing import Attributes, TraceParent
from authz.support.log_context import current_trace_id

log = logging.getLogger(__name__)

CHECK_SPAN = "authz.check"
# The batch processor: spans wait at most SCHEDULE_DELAY_S, or until a batch is full; past
# MAX_QUEUE spans waiting (a collector that is down or slow) new ones are dropped.
SCHEDULE_DELAY_S = 2.0
MAX_QUEUE = 8192
MAX_BATCH = 512
EXPORT_TIMEOUT_S = 5.0  # one export, retries included
SHUTDOWN_WAIT_S = EXPORT_TIMEOUT_S + 1.0  # the last flush on stop, at most


class RecordedSpan:
    """The core's Span and CheckSpan, over an OpenTelemetry span."""

    __slots__ = ("_caller", "_log_token", "_span", "_tracer")

    def __init__(self, span: OtelSpan, tracer: OtelTracing, caller: TraceParent | None) -> None:
        self._span = span
        self._tracer = tracer
        self._caller = caller
        self._log_token: Token[str | None] | None = None

    def log_under(self) -> None:
        """Until this span ends, log lines of the task carry its trace id."""
        trace_id = self.trace_id
        if trace_id is not None:
            self._log_token = current_trace_id.set(trace_id)

    @property
    def trace_id(self) -> str | None:
        context = self._span.get_span_context()
        if context.trace_flags.sampled or self._caller is not None:
            return format(context.trace_id, "032x")
        return None

    def child(self, name: str, attributes: Attributes) -> RecordedSpan:
        parent = set_span_in_context(self._span, Context())
        span = self._tracer.tracer.start_span(
            name, context=parent, kind=SpanKind.INTERNAL, attributes=attributes
        )
        return RecordedSpan(span, self._tracer, None)

    def end(self, attributes: Attributes | None = None, error: str | None = None) -> None:
        span = self._span
        if span.is_recording():
            if attributes:
                span.set_attributes(attributes)
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, error))
        span.end()
        if self._log_token is not None:
            token, self._log_token = self._log_token, None
            try:
                current_trace_id.reset(token)
            except ValueError:  # ended in another context than it started in
                current_trace_id.set(None)


class OtelTracing:
    """A TracerProvider with a BatchSpanProcessor: the core's Tracer, and its stop."""

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        sample_ratio: float,
        service_name: str,
        schedule_delay_s: float = SCHEDULE_DELAY_S,
        max_queue: int = MAX_QUEUE,
    ) -> None:
        self._sample_ratio = sample_ratio
        no_metrics = NoOpMeterProvider()  # never the global meter provider
        self._provider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
            # Resource(...) and not Resource.create(): no attributes from the environment.
            resource=Resource({"service.name": service_name, "service.version": __version__}),
            shutdown_on_exit=False,  # the App shuts it down, not an atexit hook
            meter_provider=no_metrics,
        )
        self._provider.add_span_processor(
            BatchSpanProcessor(
                exporter,
                max_queue_size=max_queue,
                schedule_delay_millis=schedule_delay_s * 1000,
                max_export_batch_size=min(MAX_BATCH, max_queue),
                export_timeout_millis=EXPORT_TIMEOUT_S * 1000,
                meter_provider=no_metrics,
            )
        )
        self.tracer = self._provider.get_tracer("authz", __version__)
        self._stopped = False

    def start_check(self, caller: TraceParent | None) -> RecordedSpan | None:
        # What the sampler would say without asking it, for the checks it would drop for
        # sure: no span object then. ParentBased follows a caller that did not sample;
        # TraceIdRatioBased(0) records no trace of authz's own.
        if caller is None:
            if self._sample_ratio == 0:
                return None
        elif not caller.sampled:
            return None
        context = Context() if caller is None else _caller_context(caller)
        span = self.tracer.start_span(CHECK_SPAN, context=context, kind=SpanKind.SERVER)
        recorded = RecordedSpan(span, self, caller)
        recorded.log_under()
        return recorded

    async def stop(self, wait_s: float = SHUTDOWN_WAIT_S) -> None:
        """Export what is still waiting, then stop; at most ``wait_s`` (a collector that
        does not answer must not hold up the process's exit: the rest is dropped)."""
        if self._stopped:
            return
        self._stopped = True
        # A daemon thread, not asyncio.to_thread: the loop's executor and the interpreter
        # wait for their threads at exit, and the SDK's shutdown may wait 30 s for a
        # collector that does not answer.
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def finished() -> None:
            if not done.done():
                done.set_result(None)

        def shut_down() -> None:
            try:
                self._provider.shutdown()
            finally:
                if not loop.is_closed():
                    with contextlib.suppress(RuntimeError):  # closed in between
                        loop.call_soon_threadsafe(finished)

        threading.Thread(target=shut_down, name="otel-shutdown", daemon=True).start()
        try:
            await asyncio.wait_for(asyncio.shield(done), wait_s)
        except TimeoutError:
            log.warning("tracing: spans not exported within %gs of stopping were dropped", wait_s)


def _caller_context(caller: TraceParent) -> Context:
    """An explicit context whose span is the caller's (remote) one."""
    remote = SpanContext(
        trace_id=int(caller.trace_id, 16),
        span_id=int(caller.span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(caller.flags),
        trace_state=TraceState(list(caller.state)) if caller.state else None,
    )
    return set_span_in_context(NonRecordingSpan(remote), Context())


def otlp_exporter(endpoint: str) -> SpanExporter:
    """The OTLP/gRPC exporter for ``endpoint`` (http://host:port is plaintext)."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(
        endpoint=endpoint,
        insecure=endpoint.lower().startswith("http://"),
        timeout=EXPORT_TIMEOUT_S,
        meter_provider=NoOpMeterProvider(),
    )
