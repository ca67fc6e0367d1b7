"""The seam for traces: the core names the steps of a check and says what came of them;
the runtime records them (as OpenTelemetry spans, authz/runtime/otel.py).

Without a tracer the authorizer makes no span and reads no trace context, so a check
costs what it did. What a span may carry is decided here, in ``check_attributes`` and the
few attributes the steps pass: names, codes and counts, never a token, a signature or a
claim value.

W3C Trace Context (https://www.w3.org/TR/trace-context/): a check continues the caller's
trace, from the ``traceparent`` the proxy sent beside the CheckRequest (Envoy's tracer
puts it in the gRPC metadata) or, failing that, the request's own ``traceparent`` header.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from authz.core.errors import CheckError
from authz.core.model import Decision, RequestAttributes

AttributeValue = str | int | bool
Attributes = Mapping[str, AttributeValue]
T = TypeVar("T")

# version-traceid-parentid-flags, lower-case hex; a later version may append "-..." fields.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
# tracestate list members, key=value (W3C Trace Context §3.3.1).
_STATE_MEMBER = re.compile(
    r"([a-z][_0-9a-z*/-]{0,255}|[a-z0-9][_0-9a-z*/-]{0,240}@[a-z][_0-9a-z*/-]{0,13})"
    r"=([\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e])"
)
MAX_STATE_MEMBERS = 32
MAX_STATE_BYTES = 512  # W3C lets a vendor cut a longer tracestate; authz drops it whole


@dataclass(frozen=True, slots=True)
class TraceParent:
    """The caller's span, as its traceparent names it."""

    trace_id: str  # 32 lower-case hex digits, not all zero
    span_id: str  # 16 lower-case hex digits, not all zero
    flags: int  # bit 0: the caller sampled its span
    # The tracestate sent with it, as (key, value) pairs; empty when none, or when it
    # breaks the specification's grammar or bounds (it is then dropped whole).
    state: tuple[tuple[str, str], ...] = ()

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 1)


def parse_traceparent(value: str, state: str = "") -> TraceParent | None:
    """A ``traceparent`` value, or None when it is not one (W3C Trace Context §3.2): then
    the check starts a trace of its own, as the specification asks. Repeated headers arrive
    joined by commas, which makes them invalid: two parents are none."""
    found = _TRACEPARENT.fullmatch(value.strip(" \t"))
    if found is None:
        return None
    version, trace_id, span_id, flags, rest = found.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceParent(trace_id, span_id, int(flags, 16), parse_tracestate(state))


def parse_tracestate(value: str) -> tuple[tuple[str, str], ...]:
    """A ``tracestate`` value's members; () when it is absent or not valid as a whole."""
    if not value or len(value) > MAX_STATE_BYTES:
        return ()
    pairs: dict[str, str] = {}
    for member in value.split(","):
        member = member.strip(" \t")
        if not member:
            continue
        found = _STATE_MEMBER.fullmatch(member)
        if found is None or found.group(1) in pairs:
            return ()
        pairs[found.group(1)] = found.group(2)
    if len(pairs) > MAX_STATE_MEMBERS:
        return ()
    return tuple(pairs.items())


def caller_trace(request: RequestAttributes) -> TraceParent | None:
    """The caller's trace context: what the proxy sent beside the request (gRPC metadata)
    first, else the request's own ``traceparent`` header."""
    if request.trace_parent:
        found = parse_traceparent(request.trace_parent, request.trace_state)
        if found is not None:
            return found
    header = request.headers.get("traceparent")
    if header is None:
        return None
    return parse_traceparent(header, request.headers.get("tracestate", ""))


def check_trace_id(request: RequestAttributes, traced: str | None) -> str | None:
    """The trace a check belongs to, as 32 hex digits: its span's (``traced``, the
    Observation's trace_id) when tracing is on, else the caller's; None when neither.
    For decision lines and any other log line about one check."""
    if traced is not None:
        return traced
    caller = caller_trace(request)
    return caller.trace_id if caller is not None else None


class Span(Protocol):
    """One timed step of a check, recorded by the runtime's tracer."""

    def child(self, name: str, attributes: Attributes) -> Span:
        """A step within this one, started now."""
        ...

    def end(self, attributes: Attributes | None = None, error: str | None = None) -> None:
        """The step is over; ``error``: the reason it failed (a stable snake_case code)."""
        ...


class CheckSpan(Span, Protocol):
    """The span of one whole check."""

    @property
    def trace_id(self) -> str | None:
        """The trace's id (32 hex digits) when the span is recorded or continues a caller's
        trace; None for a check that starts an unsampled trace of its own."""
        ...


class Tracer(Protocol):
    """What the authorizer asks for one span per check."""

    def start_check(self, caller: TraceParent | None) -> CheckSpan | None:
        """A span for a check starting now, a child of ``caller`` when there is one; None
        when the check is surely not recorded (a caller that did not sample its span, or
        no caller and nothing to sample), so that it then costs what it does untraced."""
        ...


def check_attributes(
    decision: Decision, token_cache: Literal["hit", "miss"] | None
) -> dict[str, AttributeValue]:
    """Everything a check's span says about its outcome: the decision, its status, reason,
    rule and provider, and whether the token came from the token cache."""
    attributes: dict[str, AttributeValue] = {
        "authz.decision": "allow" if decision.allowed else "deny",
        "authz.status": decision.status,
        "authz.reason": decision.reason,
    }
    if decision.rule is not None:
        attributes["authz.rule"] = decision.rule
    if decision.provider is not None:
        attributes["authz.provider"] = decision.provider
    if token_cache is not None:
        attributes["authz.token_cache"] = token_cache
    if decision.dry_run is not None:
        attributes["authz.dry_run.decision"], attributes["authz.dry_run.reason"] = decision.dry_run
    return attributes


def check_error(decision: Decision) -> str | None:
    """The check failed (authz, not the client): its span is marked as an error."""
    return decision.reason if decision.status >= 500 else None


async def traced(
    span: Span | None,
    name: str,
    attributes: Attributes,
    work: Awaitable[T],
    outcome: Callable[[T], Attributes] | None = None,
) -> T:
    """``await work``, inside a child span of ``span`` when there is one; ``outcome``
    describes the result for the span. A denial ends it with its reason."""
    if span is None:
        return await work
    step = span.child(name, attributes)
    try:
        result = await work
    except CheckError as exc:
        step.end(error=exc.reason)
        raise
    except asyncio.CancelledError:
        step.end(error="cancelled")
        raise
    except BaseException:
        step.end(error="failed")
        raise
    step.end(outcome(result) if outcome is not None else None)
    return result
