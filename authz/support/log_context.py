"""What log lines say about the work in hand, beyond the record itself.

``current_trace_id`` is the seam between tracing and logging: whatever starts a trace for a
check sets it (``token = current_trace_id.set(trace_id)``, and ``current_trace_id.reset(
token)`` when the check ends); every JSON log line written in that context then carries it
as ``trace_id`` (authz/runtime/logs.py). Unset, the default None, lines have no trace_id.
"""

from __future__ import annotations

from contextvars import ContextVar

current_trace_id: ContextVar[str | None] = ContextVar("current_trace_id", default=None)
