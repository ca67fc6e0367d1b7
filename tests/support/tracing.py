"""A Tracer for the core's tests: keeps every span it is asked for, as plain data.

The runtime's OpenTelemetry tracer is tested against a real OTLP receiver
(tests/support/otlp.py); this one shows what the core asks a tracer for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from authz.core.tracing import Attributes, TraceParent


@dataclass
class RecordedSpan:
    name: str
    attributes: dict[str, Any]
    parent: RecordedSpan | None = None
    caller: TraceParent | None = None
    error: str | None = None
    ended: int = 0  # how many times end() was called
    children: list[RecordedSpan] = field(default_factory=list)
    tracer: RecordingTracer | None = field(default=None, repr=False)

    @property
    def trace_id(self) -> str | None:
        return self.caller.trace_id if self.caller is not None else "f" * 32

    def child(self, name: str, attributes: Attributes) -> RecordedSpan:
        span = RecordedSpan(name, dict(attributes), parent=self, tracer=self.tracer)
        self.children.append(span)
        assert self.tracer is not None
        self.tracer.spans.append(span)
        return span

    def end(self, attributes: Attributes | None = None, error: str | None = None) -> None:
        self.attributes.update(attributes or {})
        self.error = error
        self.ended += 1


class RecordingTracer:
    def __init__(self) -> None:
        self.spans: list[RecordedSpan] = []

    def start_check(self, caller: TraceParent | None) -> RecordedSpan:
        span = RecordedSpan("check", {}, caller=caller, tracer=self)
        self.spans.append(span)
        return span

    @property
    def checks(self) -> list[RecordedSpan]:
        return [span for span in self.spans if span.parent is None]

    def named(self, name: str) -> list[RecordedSpan]:
        return [span for span in self.spans if span.name == name]

    def values(self) -> list[str]:
        """Every attribute value and error of every span, as text."""
        return [
            str(value)
            for span in self.spans
            for value in (*span.attributes.values(), span.error)
            if value is not None
        ]
