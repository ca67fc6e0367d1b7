"""End to end: a client's traceparent through a real Envoy (deploy/envoy.yaml, no tracer:
the header travels inside the CheckRequest) to authz, whose spans reach a real OTLP/gRPC
receiver (tests/support/otlp.py) when authz stops."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from dev.stack import DEV_AUDIENCE, DEV_ISSUER, Ports, Stack, dev_config
from tests.support import Signer, call, wall_clock_claims
from tests.support.otlp import ReceivedSpan, receiver_thread

pytestmark = pytest.mark.e2e

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
SERVER = 2  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER


def traceparent(flags: str, trace: str = CLIENT_TRACE, span: str = CLIENT_SPAN) -> str:
    return f"00-{trace}-{span}-{flags}"


@dataclass
class Run:
    spans: list[ReceivedSpan]
    log: str
    tokens: list[str]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, rsa_signer: Signer) -> Iterator[Run]:
    """Requests through Envoy to an authz tracing at sample_ratio 0, then a stop."""
    workdir = tmp_path_factory.mktemp("tracing")
    jwks = workdir / "jwks.json"
    jwks.write_text(json.dumps({"keys": [rsa_signer.jwk]}))

    def token(**claims: Any) -> str:
        base = {"iss": DEV_ISSUER, "aud": DEV_AUDIENCE, **wall_clock_claims()}
        return rsa_signer.token(**{**base, **claims})

    admin = token(sub="subject-alice", realm_access={"roles": ["admin", "role-secret"]})
    expired = token(exp=1_600_000_000, iat=1_599_999_000)
    reader = token(realm_access={"roles": ["reader"]})
    with receiver_thread() as receiver:
        ports = Ports()
        config = {
            **dev_config(jwks, ports),
            "decision_log": {"enabled": True},
            "tracing": {
                "otlp_endpoint": receiver.endpoint,
                "sample_ratio": 0,  # only callers that sampled their span are recorded
                "service_name": "authz-e2e",
            },
        }
        stack = Stack(workdir, config, ports)
        stack.start()
        try:
            sampled = traceparent("01")
            checks = [
                call(stack, "/admin/users", authorization=f"Bearer {admin}", traceparent=sampled),
                call(stack, "/hello", authorization=f"Bearer {expired}", traceparent=sampled),
                call(stack, "/admin/x", authorization=f"Bearer {reader}", traceparent=sampled),
                # Not recorded: the caller did not sample, or there is no caller (ratio 0).
                call(
                    stack, "/hello", authorization=f"Bearer {admin}", traceparent=traceparent("00")
                ),
                call(stack, "/hello", authorization=f"Bearer {admin}"),
            ]
            assert [status for status, _, _ in checks] == [200, 401, 403, 200, 200]
        finally:
            codes = stack.stop()  # authz exports what waits as it stops
        assert codes["authz"] == 0
        yield Run(receiver.spans, stack.log("authz"), [admin, expired, reader])


def checks(run: Run) -> list[ReceivedSpan]:
    return [span for span in run.spans if span.name == "authz.check"]


def test_authz_s_span_is_a_child_of_the_client_s(run: Run) -> None:
    spans = checks(run)
    assert len(spans) == 3  # the sampled callers only
    for span in spans:
        assert (span.trace_id, span.parent_span_id) == (CLIENT_TRACE, CLIENT_SPAN)
        assert span.kind == SERVER
        assert span.resource["service.name"] == "authz-e2e"


def test_the_span_says_how_the_check_ended(run: Run) -> None:
    allow, expired, forbidden = checks(run)
    assert allow.attributes == {
        "authz.decision": "allow",
        "authz.status": 200,
        "authz.reason": "allowed",
        "authz.rule": "admin",
        "authz.provider": "dev",
        "authz.token_cache": "miss",
    }
    assert {k: expired.attributes[k] for k in ("authz.decision", "authz.status")} == {
        "authz.decision": "deny",
        "authz.status": 401,
    }
    assert (expired.attributes["authz.reason"], expired.attributes["authz.rule"]) == (
        "token_expired",
        "default",
    )
    assert (forbidden.attributes["authz.reason"], forbidden.attributes["authz.status"]) == (
        "claim_mismatch",
        403,
    )
    assert all(span.status_code == 0 for span in (allow, expired, forbidden))  # no errors
    # The admin rule's conditions are a step of their own, within the check's span.
    policies = {span.parent_span_id: span for span in run.spans if span.name == "authz.policy"}
    assert policies[allow.span_id].attributes["authz.policy.result"] == "pass"
    assert policies[forbidden.span_id].attributes["authz.policy.result"] == "fail"


def test_no_span_holds_the_token_or_a_claim(run: Run) -> None:
    texts = [text for span in run.spans for text in span.texts]
    assert texts
    for token in run.tokens:
        _, payload, signature = token.split(".")
        for secret in (token, payload, signature):
            assert all(secret not in text for text in texts)
    for claim in ("subject-alice", "role-secret", "reader", DEV_ISSUER):
        assert all(claim not in text for text in texts), claim


def test_decision_lines_name_the_client_s_trace(run: Run) -> None:
    entries = [json.loads(line) for line in run.log.splitlines() if line.startswith('{"time":')]
    decisions = [entry for entry in entries if "decision" in entry]
    assert [line["trace_id"] for line in decisions] == [CLIENT_TRACE] * 4 + [None]
    # Operational lines written during a traced check carry its trace id too.
    assert all(
        entry.get("trace_id") in (None, CLIENT_TRACE) for entry in entries if "level" in entry
    )
