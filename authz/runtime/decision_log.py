"""One line per decision, for audit: JSON (default) or plain text for development.

Each line has the time (RFC 3339, UTC), Envoy's x-request-id, the trace id (the check's
span's, else the caller's traceparent's), the method, host and path (never the query
string), the rule, the provider, the decision, the reason and the latency; the subject
(`sub`) only with `log_subject: true`. Never the token, and no other claim. Allows may be
sampled; denials are always written. runtime/logs.py writes the lines (a JSON one as it
is, with the worker's index added in a supervised worker).
"""

from __future__ import annotations

import datetime
import json
import logging
import random
import re
import time
from collections.abc import Callable
from typing import Any

from authz.config import DecisionLogSettings
from authz.core.model import Decision, RequestAttributes
from authz.core.tracing import check_trace_id

LOGGER = "authz.decisions"
# Set on the records of JSON lines: their message is a whole JSON object (runtime/logs.py).
JSON_LINE = "authz_json_line"
log = logging.getLogger(LOGGER)
_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")
_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING}


class DecisionLog:
    def __init__(
        self,
        settings: DecisionLogSettings,
        *,
        sample: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._level = _LEVELS[settings.level]
        self._sample = sample
        self._clock = clock

    def record(
        self,
        request: RequestAttributes,
        decision: Decision,
        seconds: float,
        trace_id: str | None = None,
    ) -> None:
        """``trace_id``: the check's span's (the Observation's), when tracing is on."""
        settings = self._settings
        if decision.allowed and self._sample() >= settings.allow_sample_rate:
            return
        if not log.isEnabledFor(self._level):
            return
        request_id = request.headers.get("x-request-id")
        entry: dict[str, Any] = {
            "time": rfc3339(self._clock()),
            # Client-set behind nginx or Traefik: bounded, and no spaces or = to forge fields.
            "request_id": _UNSAFE.sub("_", request_id[:128]) if request_id else None,
            # 32 hex digits, checked as such: the caller's traceparent is client-set too.
            "trace_id": check_trace_id(request, trace_id),
            "method": request.method[:MAX_FIELD],
            "host": request.host[:MAX_FIELD],
            # Never the query string: tokens travel there.
            "path": request.path.split("?", 1)[0][:MAX_PATH],
            "decision": "allow" if decision.allowed else "deny",
            "status": decision.status,
            "reason": decision.reason,
            "rule": decision.rule,
            "provider": decision.provider,
            "latency_ms": round(seconds * 1000, 3),
        }
        if decision.dry_run is not None:
            entry["dry_run"] = {"decision": decision.dry_run[0], "reason": decision.dry_run[1]}
        if settings.log_subject and decision.provider:
            claims = decision.metadata.get(decision.provider)
            subject = claims.get("sub") if isinstance(claims, dict) else None
            if isinstance(subject, str):
                entry["subject"] = subject
        if settings.format == "json":
            line = json.dumps(entry, separators=(",", ":"))
            log.log(self._level, "%s", line, extra={JSON_LINE: True})
        else:
            text = " ".join(f"{key}={_text_value(value)}" for key, value in entry.items())
            log.log(self._level, "%s", text)


MAX_FIELD = 256
MAX_PATH = 1024  # longer paths are cut: a line stays a line an operator can read


def rfc3339(epoch: float) -> str:
    """UTC with milliseconds and Z, e.g. 2026-12-01T23:15:50.123Z."""
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


_PLAIN = re.compile(r"[A-Za-z0-9._:/@+-]+")


def _text_value(value: Any) -> str:
    """One value of a text line. Anything but plain words becomes a JSON string with ``=``
    escaped too, so a subject holding newlines, quotes, spaces or ``key=value`` can never
    end its field or forge another, and a reader can json.loads it back."""
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    if _PLAIN.fullmatch(text):
        return text
    return json.dumps(text).replace("=", "\\u003d")  # ASCII only: no U+2028 line breaks
