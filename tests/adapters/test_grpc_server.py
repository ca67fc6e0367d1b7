"""The gRPC adapter through a real grpc.aio channel to a running App."""

from __future__ import annotations

import json
import time
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.protobuf import json_format
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz.adapters.grpc_server import (
    AUTHORIZATION_SERVICE,
    AuthorizationServicer,
    struct_safe,
    to_attributes,
    trace_metadata,
)
from authz.core.model import Decision
from authz.runtime.app import App
from tests.support import (
    AUDIENCE,
    LISTEN_ANYWHERE,
    Signer,
    answer,
    authorizer,
    check_request,
    config,
    fixed_keys,
    provider,
    wall_clock_claims,
)


def app_config(jwks: dict[str, Any]) -> Any:
    corp = provider(
        jwks={"inline": jwks}, claim_to_headers=[{"header": "x-user-id", "claim": "sub"}]
    )
    rules = [
        {"match": {"prefix": "/public"}, "public": True},
        {"match": {"prefix": "/"}, "requires": {"provider": "corp"}},
    ]
    return config(listen=LISTEN_ANYWHERE, providers={"corp": corp}, rules=rules)


@pytest.fixture
async def channel(jwks: dict[str, Any]):
    async with App(app_config(jwks)) as app:
        assert app.grpc is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as channel:
            yield channel


async def test_allow(channel: grpc.aio.Channel, rsa_signer: Signer) -> None:
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
    token = rsa_signer.token(**wall_clock_claims())
    response = await stub.Check(check_request(authorization=f"Bearer {token}"))
    assert response.status.code == code_pb2.OK
    assert response.WhichOneof("http_response") == "ok_response"
    [header] = response.ok_response.headers
    assert (header.header.key, header.header.value) == ("x-user-id", "alice")
    assert header.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    assert list(response.ok_response.headers_to_remove) == ["x-authz-dry-run", "authorization"]
    metadata = json_format.MessageToDict(response.dynamic_metadata)
    assert metadata["corp"]["sub"] == "alice"
    assert metadata["corp"]["aud"] == AUDIENCE


async def test_deny(channel: grpc.aio.Channel) -> None:
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
    response = await stub.Check(check_request(authorization="Bearer not.a.token"))
    assert response.status.code == code_pb2.UNAUTHENTICATED
    denied = response.denied_response
    assert denied.status.code == 401
    headers = {h.header.key: h.header.value for h in denied.headers}
    assert headers["www-authenticate"].startswith('Bearer realm="api.test", error="invalid_token"')
    assert json.loads(denied.body)["error"] == "invalid_token"


async def test_public_route_and_no_rule(channel: grpc.aio.Channel) -> None:
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
    public = await stub.Check(check_request("/public/x", x_user_id="mallory"))
    assert public.status.code == code_pb2.OK
    assert list(public.ok_response.headers_to_remove) == ["x-authz-dry-run", "x-user-id"]


async def test_no_matching_rule(jwks: dict[str, Any]) -> None:
    config = app_config(jwks).model_copy(update={"rules": app_config(jwks).rules[:1]})
    async with App(config) as app, grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as ch:
        stub = external_auth_pb2_grpc.AuthorizationStub(ch)
        response = await stub.Check(check_request("/private"))
        assert response.status.code == code_pb2.PERMISSION_DENIED
        assert response.denied_response.status.code == 403


async def test_huge_numbers_reach_metadata_as_strings(
    channel: grpc.aio.Channel, rsa_signer: Signer
) -> None:
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
    token = rsa_signer.token(big=10**40, ok=7, **wall_clock_claims())
    response = await stub.Check(check_request(authorization=f"Bearer {token}"))
    assert response.status.code == code_pb2.OK
    metadata = json_format.MessageToDict(response.dynamic_metadata)["corp"]
    assert (metadata["big"], metadata["ok"]) == (str(10**40), 7)


@pytest.mark.parametrize(
    ("value", "safe"),
    [
        ({"a": [1, 2.5, None, True, "s"]}, {"a": [1, 2.5, None, True, "s"]}),
        (2**53 + 1, str(2**53 + 1)),
        (-(2**60), str(-(2**60))),
        (float("inf"), "inf"),
        ({1: "k"}, {"1": "k"}),
    ],
)
def test_struct_safe(value: Any, safe: Any) -> None:
    assert struct_safe(value) == safe


async def test_adapter_failure_is_a_503_not_a_grpc_error() -> None:
    class OddAuthorizer:
        async def check(self, request: Any) -> Decision:
            return Decision(allowed=True, status=200, reason="allowed", metadata={"x": object()})

    servicer = AuthorizationServicer(OddAuthorizer())  # type: ignore[arg-type]
    response = await answer(servicer, check_request())
    assert response.status.code == code_pb2.UNAVAILABLE
    assert response.denied_response.status.code == 503


async def test_empty_request_is_a_deny_not_an_error(channel: grpc.aio.Channel) -> None:
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
    response = await stub.Check(external_auth_pb2.CheckRequest())
    assert response.status.code == code_pb2.UNAUTHENTICATED
    assert response.denied_response.status.code == 401


async def test_health(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", AUTHORIZATION_SERVICE):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_not_ready_without_keys(tmp_path, rsa_signer: Signer) -> None:
    keyless = provider(jwks={"file": str(tmp_path / "none")})
    settings = config(listen=LISTEN_ANYWHERE, providers={"corp": keyless})
    async with App(settings) as app, grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        overall = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert overall.status == health_pb2.HealthCheckResponse.SERVING
        authz = await health.Check(health_pb2.HealthCheckRequest(service=AUTHORIZATION_SERVICE))
        assert authz.status == health_pb2.HealthCheckResponse.NOT_SERVING
        response = await external_auth_pb2_grpc.AuthorizationStub(ch).Check(
            check_request(authorization=f"Bearer {rsa_signer.token(**wall_clock_claims())}")
        )
        assert response.denied_response.status.code == 503
        assert not app.ready


PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ((("traceparent", PARENT), ("tracestate", "a=1"), ("x", "y")), (PARENT, "a=1")),
        ((("traceparent", PARENT), ("traceparent", PARENT)), (f"{PARENT},{PARENT}", "")),
        ((("tracestate", "a=1"), ("tracestate", "b=2")), ("", "a=1,b=2")),
        ((("traceparent-bin", b"\x00"),), ("", "")),
        (None, ("", "")),
    ],
)
def test_trace_context_from_the_call_metadata(metadata: Any, expected: tuple[str, str]) -> None:
    assert trace_metadata(metadata) == expected


class Seen:
    """A ServicerContext that records whether the call's metadata was read."""

    def __init__(self) -> None:
        self.read = 0

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        self.read += 1
        return (("traceparent", PARENT),)


@pytest.mark.parametrize("trace_context", [False, True])
async def test_the_call_metadata_is_read_only_for_tracing(trace_context: bool) -> None:
    seen: list[Any] = []

    class Keeps:
        async def check(self, request: Any) -> Decision:
            seen.append(request)
            return Decision(allowed=False, status=401, reason="missing_token")

    context = Seen()
    servicer = AuthorizationServicer(Keeps(), trace_context=trace_context)  # type: ignore[arg-type]
    await servicer.Check(check_request(traceparent="00-client"), context)  # type: ignore[arg-type]
    assert context.read == int(trace_context)
    assert seen[0].trace_parent == (PARENT if trace_context else "")
    assert seen[0].headers["traceparent"] == "00-client"  # the request's own, beside it


def test_to_attributes_reads_header_map_when_headers_are_raw() -> None:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.host, http.path = "POST", "h", "/p?q=1"
    for key, value in (("Authorization", b"Bearer t"), ("x-a", b"1"), ("x-a", b"2")):
        http.header_map.headers.add(key=key, raw_value=value)
    attributes = to_attributes(request)
    assert attributes.headers == {"authorization": "Bearer t", "x-a": "1,2"}
    assert (attributes.method, attributes.path, attributes.query) == ("POST", "/p?q=1", "q=1")


async def test_oversized_check_request_is_a_413_deny_not_a_grpc_error(
    jwks: dict[str, Any],
) -> None:
    """Over limits.max_request_bytes (headers and body as sent) is a deny: a gRPC error
    (RESOURCE_EXHAUSTED, as grpcio's own receive limit answers) would be an allow under
    Envoy's failure_mode_allow: true. The receive limit sits above Envoy's largest."""
    config = app_config(jwks)
    config = config.model_copy(
        update={"limits": config.limits.model_copy(update={"max_request_bytes": 8192})}
    )
    async with App(config) as app, grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as ch:
        stub = external_auth_pb2_grpc.AuthorizationStub(ch)
        for size in (10_000, 8 << 20):  # the second: as large as Envoy's headers can be
            big = check_request()
            big.attributes.request.http.body = "a" * size
            response = await stub.Check(big)
            assert response.denied_response.status.code == 413
            assert json.loads(response.denied_response.body)["error"] == "invalid_request"
        small = await stub.Check(check_request())
        assert small.denied_response.status.code == 401


async def test_bytes_that_are_no_check_request_get_a_deny(jwks: dict[str, Any]) -> None:
    async with (
        App(app_config(jwks)) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as ch,
    ):
        raw = ch.unary_unary(
            "/envoy.service.auth.v3.Authorization/Check",
            request_serializer=lambda data: data,
            response_deserializer=external_auth_pb2.CheckResponse.FromString,
        )
        response = await raw(b"\xff\xff\xff\xff")  # a truncated varint: not protobuf
        assert response.denied_response.status.code == 400
        assert response.status.code == code_pb2.INVALID_ARGUMENT


def test_header_map_lines_are_counted_before_joining() -> None:
    request = external_auth_pb2.CheckRequest()
    for _ in range(500):
        request.attributes.request.http.header_map.headers.add(key="x-a", raw_value=b"1")
    attributes = to_attributes(request)
    assert len(attributes.headers) == 1 and attributes.header_count == 500


async def test_answers_are_reused_only_for_the_same_identity(
    jwks: dict[str, Any], rsa_signer: Signer
) -> None:
    corp = provider(
        jwks={"inline": jwks}, claim_to_headers=[{"header": "x-user-id", "claim": "sub"}]
    )
    checker = authorizer(config(providers={"corp": corp}), fixed_keys(jwks), clock=time.time)
    servicer = AuthorizationServicer(checker)
    alice = check_request(authorization=f"Bearer {rsa_signer.token(**wall_clock_claims())}")
    bob_token = rsa_signer.token(sub="bob", **wall_clock_claims())
    bob = check_request(authorization=f"Bearer {bob_token}")
    first = await servicer.Check(alice, None)  # verified now; the token cache keeps the identity
    second = await servicer.Check(alice, None)  # the same identity from the token cache: reused
    assert second is first
    other = await servicer.Check(bob, None)
    again = await servicer.Check(bob, None)
    assert again is other and again is not first
    parsed = [external_auth_pb2.CheckResponse.FromString(r) for r in (first, again)]
    subs = {json_format.MessageToDict(r.dynamic_metadata)["corp"]["sub"] for r in parsed}
    assert subs == {"alice", "bob"}
    # Another identity with equal claims is not the same identity: built anew.
    fresh = authorizer(config(providers={"corp": corp}), fixed_keys(jwks), clock=time.time)
    assert await AuthorizationServicer(fresh).Check(alice, None) is not first
