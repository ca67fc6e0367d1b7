"""The core's side of tracing: W3C trace context parsing, what a check's spans say (and
never say), and that without a tracer a check reads no trace context at all."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from authz.core.errors import InvalidSignature
from authz.core.model import Decision, RequestAttributes
from authz.core.tracing import (
    TraceParent,
    caller_trace,
    check_attributes,
    check_error,
    check_trace_id,
    parse_traceparent,
    parse_tracestate,
    traced,
)
from tests.support import Recorder, Signer, authorizer, config, fixed_keys, provider, req
from tests.support.tracing import RecordingTracer

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
SAMPLED = f"00-{TRACE}-{PARENT}-01"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (SAMPLED, TraceParent(TRACE, PARENT, 1)),
        (f"00-{TRACE}-{PARENT}-00", TraceParent(TRACE, PARENT, 0)),
        (f" 00-{TRACE}-{PARENT}-01\t", TraceParent(TRACE, PARENT, 1)),  # optional whitespace
        # A later version may add fields after the flags, and flags we do not know.
        (f"cc-{TRACE}-{PARENT}-09-what-comes-next", TraceParent(TRACE, PARENT, 9)),
        (f"cc-{TRACE}-{PARENT}-01", TraceParent(TRACE, PARENT, 1)),
        (f"00-{TRACE}-{PARENT}-01-extra", None),  # version 00 has exactly four fields
        (f"ff-{TRACE}-{PARENT}-01", None),  # the forbidden version
        (f"00-{TRACE.upper()}-{PARENT}-01", None),  # lower-case hex only
        (f"00-{'0' * 32}-{PARENT}-01", None),  # all-zero ids are invalid
        (f"00-{TRACE}-{'0' * 16}-01", None),
        (f"00-{TRACE[:-1]}-{PARENT}-01", None),
        (f"00-{TRACE}-{PARENT}-1", None),
        (f"{SAMPLED},{SAMPLED}", None),  # two traceparent headers, joined: none
        ("", None),
        ("garbage", None),
        (f"00_{TRACE}_{PARENT}_01", None),
    ],
)
def test_traceparent(value: str, expected: TraceParent | None) -> None:
    assert parse_traceparent(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ()),
        ("congo=t61rcWkgMzE", (("congo", "t61rcWkgMzE"),)),
        (
            "rojo=00f067aa0ba902b7 , ,congo=t61rcWkgMzE",
            (("rojo", "00f067aa0ba902b7"), ("congo", "t61rcWkgMzE")),
        ),
        ("tenant@vendor=x", (("tenant@vendor", "x"),)),
        ("rojo=1,rojo=2", ()),  # a duplicate key: the whole value is invalid
        ("Rojo=1", ()),  # keys are lower-case
        ("rojo=a=b", ()),
        ("rojo=", ()),
        ("congo=x\n", ()),
        (",".join(f"k{i}=v" for i in range(33)), ()),  # more than 32 members
        ("k=" + "v" * 600, ()),  # longer than authz keeps
    ],
)
def test_tracestate(value: str, expected: tuple[tuple[str, str], ...]) -> None:
    assert parse_tracestate(value) == expected


def test_the_proxy_s_trace_context_comes_before_the_request_s() -> None:
    envoy = f"00-{'1' * 32}-{'2' * 16}-01"
    headers = {"traceparent": SAMPLED, "tracestate": "client=1"}
    both = RequestAttributes("GET", "h", "/", headers, trace_parent=envoy, trace_state="envoy=2")
    assert caller_trace(both) == TraceParent("1" * 32, "2" * 16, 1, (("envoy", "2"),))
    broken = RequestAttributes("GET", "h", "/", headers, trace_parent="00-broken")
    assert caller_trace(broken) == TraceParent(TRACE, PARENT, 1, (("client", "1"),))
    assert caller_trace(RequestAttributes("GET", "h", "/", {})) is None
    assert check_trace_id(both, None) == "1" * 32
    assert check_trace_id(both, "a" * 32) == "a" * 32
    assert check_trace_id(RequestAttributes("GET", "h", "/", {}), None) is None


def test_check_attributes_name_the_outcome_and_nothing_else() -> None:
    allow = Decision(
        allowed=True,
        status=200,
        reason="allowed",
        rule="api",
        provider="corp",
        upstream_headers=(("x-user-id", "alice"),),
        metadata={"corp": {"sub": "alice"}},
    )
    assert check_attributes(allow, "hit") == {
        "authz.decision": "allow",
        "authz.status": 200,
        "authz.reason": "allowed",
        "authz.rule": "api",
        "authz.provider": "corp",
        "authz.token_cache": "hit",
    }
    deny = Decision(allowed=False, status=401, reason="missing_token", body="{}")
    assert check_attributes(deny, None) == {
        "authz.decision": "deny",
        "authz.status": 401,
        "authz.reason": "missing_token",
    }
    dry = Decision(True, 200, "allowed", rule="r", dry_run=("deny", "claim_mismatch"))
    assert check_attributes(dry, None)["authz.dry_run.reason"] == "claim_mismatch"
    assert check_error(deny) is None
    assert check_error(Decision(False, 503, "jwks_unavailable")) == "jwks_unavailable"


async def test_traced_steps_end_once_with_the_reason_of_a_denial() -> None:
    tracer = RecordingTracer()
    check = tracer.start_check(None)

    async def works() -> int:
        return 7

    async def denies() -> int:
        raise InvalidSignature("no")

    assert await traced(None, "step", {}, works()) == 7
    assert await traced(check, "step", {"a": 1}, works(), lambda n: {"n": n}) == 7
    with pytest.raises(InvalidSignature):
        await traced(check, "step", {}, denies())
    ok, denied = check.children
    assert (ok.attributes, ok.error, ok.ended) == ({"a": 1, "n": 7}, None, 1)
    assert (denied.error, denied.ended) == ("invalid_signature", 1)


# --- through the authorizer ------------------------------------------------------

RULES = [
    {"name": "health", "match": {"prefix": "/healthz"}, "public": True},
    {
        "name": "admin",
        "match": {"prefix": "/admin"},
        "requires": {"provider": "corp"},
        "claims": [{"claim": "role", "equals": "admin"}],
    },
    {"name": "any", "match": {"prefix": "/any"}, "requires": {"provider": "corp"}},
    {
        "name": "api",
        "match": {"prefix": "/"},
        "requires": {"provider": "corp"},
        "claims": [{"claim": "sub", "exists": True}],
    },
]


def traced_authorizer(
    jwks: dict[str, Any], tracer: RecordingTracer | None, observe: Recorder | None = None
) -> Any:
    corp = provider(
        jwks={"inline": jwks}, claim_to_headers=[{"header": "x-user-id", "claim": "sub"}]
    )
    built = config(providers={"corp": corp}, rules=RULES)
    return authorizer(built, fixed_keys(jwks), tracer=tracer, observe=observe)


async def test_a_check_has_one_span_with_its_outcome(jwks: dict[str, Any], rsa_signer: Signer):
    tracer, seen = RecordingTracer(), Recorder()
    checker = traced_authorizer(jwks, tracer, seen)
    token = rsa_signer.token(sub="alice-the-subject", role="reader", email="a@example.com")
    request = req("/items", authorization=f"Bearer {token}", traceparent=SAMPLED)
    first = await checker.check(request)
    second = await checker.check(request)
    assert first.allowed and second.allowed
    miss, hit = tracer.checks
    assert miss.caller == TraceParent(TRACE, PARENT, 1)
    assert miss.attributes == {
        "authz.decision": "allow",
        "authz.status": 200,
        "authz.reason": "allowed",
        "authz.rule": "api",
        "authz.provider": "corp",
        "authz.token_cache": "miss",
    }
    assert hit.attributes["authz.token_cache"] == "hit"
    assert [s.ended for s in tracer.spans] == [1] * len(tracer.spans)
    (policy, _) = tracer.named("authz.policy")
    assert policy.parent is miss
    assert policy.attributes == {"authz.rule": "api", "authz.policy.result": "pass"}
    assert [o.trace_id for _, o in seen.seen] == [TRACE, TRACE]  # for the decision log
    # Nothing of the token, its signature or its claims in any span.
    for value in tracer.values():
        for secret in (token, token.split(".")[2], "alice-the-subject", "reader", "a@example"):
            assert secret not in value


async def test_denials_and_failed_conditions(jwks: dict[str, Any], rsa_signer: Signer) -> None:
    tracer = RecordingTracer()
    checker = traced_authorizer(jwks, tracer)
    reader = rsa_signer.token(role="reader")
    assert not (await checker.check(req("/admin", authorization=f"Bearer {reader}"))).allowed
    assert not (await checker.check(req("/items"))).allowed
    assert (await checker.check(req("/healthz"))).allowed
    forbidden, missing, public = tracer.checks
    assert (forbidden.attributes["authz.reason"], forbidden.error) == ("claim_mismatch", None)
    assert forbidden.attributes["authz.status"] == 403
    assert forbidden.children[0].attributes["authz.policy.result"] == "fail"
    assert missing.attributes["authz.reason"] == "missing_token"
    assert missing.children == []  # no token, no policy evaluation
    assert public.attributes["authz.reason"] == "public"
    assert "reader" not in tracer.values()
    await checker.check(req("/any", authorization=f"Bearer {reader}"))
    assert tracer.checks[-1].children == []  # a rule without conditions: no policy step


async def test_a_key_fetch_a_check_waits_for_is_a_step(jwks: dict[str, Any], rsa_signer: Signer):
    tracer = RecordingTracer()
    token = rsa_signer.token(header={"kid": "rotated-in"})
    decision = await traced_authorizer(jwks, tracer).check(req(authorization=f"Bearer {token}"))
    assert decision.reason == "unknown_kid"
    (fetch,) = tracer.named("authz.jwks_fetch")
    assert fetch.attributes == {
        "authz.provider": "corp",
        "authz.jwks.trigger": "unknown_kid",
        "authz.jwks.refreshed": False,
    }
    assert "rotated-in" not in tracer.values()  # not even the kid: the client chose it


class NoKeysYet:
    """A key source still waiting for its first key set (or stuck there)."""

    def __init__(self, wait_s: float = 0.0) -> None:
        self.wait_s = wait_s

    keys = None

    async def first_keys(self) -> None:
        await asyncio.sleep(self.wait_s)

    async def refetch_for_unknown_kid(self) -> bool:
        return False


def keyless_authorizer(lookup: NoKeysYet, tracer: RecordingTracer) -> Any:
    built = config(providers={"corp": provider()})
    return authorizer(built, {"corp": lookup}, tracer=tracer)


async def test_a_failure_of_authz_marks_the_span(rsa_signer: Signer) -> None:
    tracer = RecordingTracer()
    checker = keyless_authorizer(NoKeysYet(), tracer)
    decision = await checker.check(req(authorization=f"Bearer {rsa_signer.token()}"))
    assert decision.status == 503
    (check,) = tracer.checks
    assert check.error == decision.reason
    (wait,) = check.children
    assert wait.attributes == {
        "authz.provider": "corp",
        "authz.jwks.trigger": "no_keys_yet",
        "authz.jwks.loaded": False,
    }


async def test_a_cancelled_check_ends_its_span(rsa_signer: Signer) -> None:
    tracer = RecordingTracer()
    checker = keyless_authorizer(NoKeysYet(wait_s=3600), tracer)
    task = asyncio.create_task(checker.check(req(authorization=f"Bearer {rsa_signer.token()}")))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (check,) = tracer.checks
    (wait,) = check.children
    assert (check.error, check.ended, wait.error, wait.ended) == ("cancelled", 1, "cancelled", 1)


class LookupsRecorded(dict[str, str]):
    """Headers that remember which names were looked up."""

    looked_up: set[str]

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.looked_up.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.looked_up.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.looked_up.add(str(key))
        return super().__contains__(key)


@pytest.fixture
def recorded_headers(rsa_signer: Signer) -> Iterator[LookupsRecorded]:
    headers = LookupsRecorded(authorization=f"Bearer {rsa_signer.token()}", traceparent=SAMPLED)
    headers.looked_up = set()
    yield headers


async def test_without_a_tracer_no_trace_context_is_read(
    jwks: dict[str, Any], recorded_headers: LookupsRecorded
) -> None:
    seen = Recorder()
    request = RequestAttributes("GET", "api.example.com", "/items", recorded_headers)
    decision = await traced_authorizer(jwks, None, seen).check(request)
    assert decision.allowed
    assert "authorization" in recorded_headers.looked_up
    assert "traceparent" not in recorded_headers.looked_up
    assert seen.seen[0][1].trace_id is None
