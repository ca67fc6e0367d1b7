from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from authz.config import DecisionLogSettings
from authz.core.model import Decision, RequestAttributes
from authz.runtime.decision_log import DecisionLog
from tests import support

REQUEST = RequestAttributes(
    "GET", "h", "/x", {"x-request-id": "req-1", "authorization": "Bearer t"}
)
ALLOW = Decision(
    allowed=True,
    status=200,
    reason="allowed",
    rule="api",
    provider="corp",
    metadata={"corp": {"sub": "alice", "email": "alice@example.com"}},
)
DENY = Decision(allowed=False, status=401, reason="token_expired", rule="api", provider="corp")


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "authz.decisions"]


def test_json_lines_without_claims(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    log = DecisionLog(DecisionLogSettings(enabled=True), clock=lambda: 1700000000.0)
    log.record(REQUEST, ALLOW, 0.00025)
    log.record(REQUEST, DENY, 0.001)
    allow, deny = (json.loads(line) for line in lines(caplog))
    assert allow == {
        "time": "2023-11-14T22:13:20.000Z",
        "request_id": "req-1",
        "trace_id": None,
        "method": REQUEST.method,
        "host": REQUEST.host,
        "path": REQUEST.path.split("?", 1)[0],
        "decision": "allow",
        "status": 200,
        "reason": "allowed",
        "rule": "api",
        "provider": "corp",
        "latency_ms": 0.25,
    }
    assert deny["decision"] == "deny" and deny["reason"] == "token_expired"
    assert "alice" not in caplog.text and "Bearer" not in caplog.text


def test_subject_only_when_asked(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    DecisionLog(DecisionLogSettings(enabled=True, log_subject=True)).record(REQUEST, ALLOW, 0.0)
    entry = json.loads(lines(caplog)[0])
    assert entry["subject"] == "alice"
    assert "alice@example.com" not in caplog.text


def test_allows_are_sampled_denials_never(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    draws = iter([0.05, 0.5, 0.95, 0.99])
    log = DecisionLog(
        DecisionLogSettings(enabled=True, allow_sample_rate=0.1), sample=lambda: next(draws)
    )
    for _ in range(3):
        log.record(REQUEST, ALLOW, 0.0)
    log.record(REQUEST, DENY, 0.0)
    decisions = [json.loads(line)["decision"] for line in lines(caplog)]
    assert decisions == ["allow", "deny"]


def test_text_format_and_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    DecisionLog(DecisionLogSettings(enabled=True, format="text")).record(REQUEST, DENY, 0.0)
    assert "decision=deny status=401 reason=token_expired" in lines(caplog)[0]
    quiet: Any = DecisionLog(DecisionLogSettings(enabled=True, level="DEBUG"))
    quiet.record(REQUEST, DENY, 0.0)
    assert len(lines(caplog)) == 1  # DEBUG lines are not written at INFO


def parse_text_line(line: str) -> dict[str, Any]:
    """A strict reader of the text format: key=plain or key="JSON string", space-separated."""
    fields: dict[str, Any] = {}
    rest = line
    while rest:
        key, sep, rest = rest.partition("=")
        assert sep and key.isidentifier(), line
        if rest.startswith('"'):
            value, end = json.JSONDecoder().raw_decode(rest)
            rest = rest[end:]
        else:
            value, _, rest = rest.partition(" ")
            rest = " " + rest if rest else ""
        fields[key] = value
        assert not rest or rest.startswith(" "), line
        rest = rest[1:]
    return fields


@pytest.mark.parametrize(
    "subject",
    [
        "alice\nreason=allowed decision=allow",
        "alice\r\ntime=0",
        'alice" decision="allow',
        "alice decision=allow",
        "back\\slash=",
        "a\u2028b\x1cc",
    ],
)
def test_text_lines_cannot_be_forged_by_a_subject(
    caplog: pytest.LogCaptureFixture, subject: str
) -> None:
    caplog.set_level(logging.INFO)
    decision = Decision(
        allowed=False,
        status=403,
        reason="claim_mismatch",
        rule="api",
        provider="corp",
        metadata={"corp": {"sub": subject}},
    )
    settings = DecisionLogSettings(enabled=True, format="text", log_subject=True)
    DecisionLog(settings).record(REQUEST, decision, 0.0)
    (line,) = lines(caplog)
    assert "\n" not in line and "\r" not in line and "\u2028" not in line
    fields = parse_text_line(line)
    assert fields["decision"] == "deny" and fields["reason"] == "claim_mismatch"
    assert fields["subject"] == subject
    assert list(fields) == [
        "time",
        "request_id",
        "trace_id",
        "method",
        "host",
        "path",
        "decision",
        "status",
        "reason",
        "rule",
        "provider",
        "latency_ms",
        "subject",
    ]


def test_the_time_is_rfc_3339_and_the_query_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    request = support.req("/items/7?access_token=secret-token&x=1", authorization="Bearer t")
    DecisionLog(DecisionLogSettings(enabled=True), clock=lambda: 1796185121.5).record(
        request, DENY, 0.0
    )
    entry = json.loads(lines(caplog)[0])
    assert entry["time"] == "2026-12-02T04:18:41.500Z"
    assert entry["path"] == "/items/7" and "secret-token" not in caplog.text


CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("headers", "metadata", "traced", "expected"),
    [
        ({}, "", None, None),
        ({"traceparent": CALLER}, "", None, "0af7651916cd43dd8448eb211c80319c"),
        # Envoy's tracer's context (gRPC metadata) before the client's header.
        ({"traceparent": CALLER}, CALLER.replace("0af7", "1111"), None, "1111" + CALLER[7:35]),
        ({"traceparent": "00-not-a-trace"}, "", None, None),
        ({"traceparent": '00-x\n{"forged":1}'}, "", None, None),
        # The check's own span (tracing on) names the trace.
        ({"traceparent": CALLER}, "", "ab" * 16, "ab" * 16),
        ({}, "", "cd" * 16, "cd" * 16),
    ],
)
def test_the_trace_id_is_the_span_s_or_the_caller_s(
    caplog: pytest.LogCaptureFixture,
    headers: dict[str, str],
    metadata: str,
    traced: str | None,
    expected: str | None,
) -> None:
    caplog.set_level(logging.INFO)
    request = RequestAttributes("GET", "h", "/x", headers, trace_parent=metadata)
    DecisionLog(DecisionLogSettings(enabled=True)).record(request, DENY, 0.0, traced)
    DecisionLog(DecisionLogSettings(enabled=True, format="text")).record(request, DENY, 0.0, traced)
    json_line, text_line = lines(caplog)
    assert json.loads(json_line)["trace_id"] == expected
    assert parse_text_line(text_line)["trace_id"] == (expected or "null")
