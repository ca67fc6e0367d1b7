"""The ext_authz gRPC adapter: CheckRequest in, plain data to the core, CheckResponse out.

The only module that imports Envoy's protobuf types. ``Check`` always answers with a
CheckResponse: an escaped exception would become a gRPC error, which Envoy with
``failure_mode_allow: true`` would turn into an allow.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from authz.adapters.certificates import certificate_sha256, peer_certificate
from authz.core.authorizer import Checker
from authz.core.decisions import deny, internal_error
from authz.core.errors import MalformedRequest
from authz.core.model import Decision, RequestAttributes

log = logging.getLogger(__name__)

AUTHORIZATION_SERVICE = "envoy.service.auth.v3.Authorization"
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_RPC_CODE = {
    200: code_pb2.OK,
    400: code_pb2.INVALID_ARGUMENT,
    413: code_pb2.INVALID_ARGUMENT,
    431: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    403: code_pb2.PERMISSION_DENIED,
    503: code_pb2.UNAVAILABLE,
}


@dataclass(frozen=True, slots=True)
class Received:
    """A CheckRequest and its size on the wire, as the deserializer hands it on."""

    message: Any
    size: int


@dataclass(frozen=True, slots=True)
class Unreadable:
    """Bytes that did not decode as a CheckRequest, in its place."""

    size: int


def _already_serialized(answer: bytes) -> bytes:
    return answer


def read_check_request(data: bytes) -> Received | Unreadable:
    """The deserializer. Garbage becomes Unreadable, which the handler denies: an
    exception here would become a gRPC error, an allow under failure_mode_allow."""
    try:
        return Received(external_auth_pb2.CheckRequest.FromString(data), len(data))
    except Exception:  # DecodeError, or whatever the protobuf runtime raises on garbage
        return Unreadable(len(data))


def trace_metadata(metadata: Iterable[tuple[str, Any]] | None) -> tuple[str, str]:
    """The W3C trace context in a call's metadata (Envoy's tracer puts it there): the
    ``traceparent`` and ``tracestate`` values, each joined by commas when repeated (so
    that two parents are none), "" when absent."""
    parents: list[str] = []
    states: list[str] = []
    for key, value in metadata or ():
        if key == "traceparent" and isinstance(value, str):
            parents.append(value)
        elif key == "tracestate" and isinstance(value, str):
            states.append(value)
    return ",".join(parents), ",".join(states)


def to_attributes(
    request: Any, size: int = 0, trace_context: tuple[str, str] = ("", "")
) -> RequestAttributes:
    """``trace_context``: the call's traceparent and tracestate (trace_metadata)."""
    attributes = request.attributes
    http = attributes.request.http
    headers: dict[str, str] = dict(http.headers)
    entries = len(headers)
    if not headers and http.header_map.headers:
        # Envoy sends header_map instead of headers when encode_raw_headers is on.
        entries = len(http.header_map.headers)
        values: dict[str, list[str]] = {}
        for entry in http.header_map.headers:
            value = entry.raw_value.decode("utf-8", "replace") if entry.raw_value else entry.value
            values.setdefault(entry.key.lower(), []).append(value)
        headers = {key: ",".join(parts) for key, parts in values.items()}
    return RequestAttributes(
        method=http.method,
        host=http.host or headers.get(":authority", ""),
        path=http.path or headers.get(":path", "/"),
        headers=headers,
        context=dict(attributes.context_extensions) if attributes.context_extensions else {},
        header_count=entries,
        size=size,
        scheme=http.scheme.lower(),
        client_certificate_sha256=certificate_sha256(
            peer_certificate(attributes.source.certificate)
        ),
        trace_parent=trace_context[0],
        trace_state=trace_context[1],
    )


_MAX_EXACT_INT = 2**53


def struct_safe(value: Any) -> Any:
    """Claims as a protobuf Struct can hold them: numbers are doubles there, so integers
    beyond 2**53 (which would lose digits or overflow) become strings."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if abs(value) <= _MAX_EXACT_INT else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, list):
        return [struct_safe(item) for item in value]
    if isinstance(value, dict):
        return {str(key): struct_safe(item) for key, item in value.items()}
    raise TypeError(f"{type(value).__name__} cannot go into dynamic metadata")


def _header_options(headers: tuple[tuple[str, str], ...]) -> list[Any]:
    return [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=key, value=value), append_action=_OVERWRITE
        )
        for key, value in headers
    ]


def serialized(response: Any) -> bytes:
    data: bytes = response.SerializeToString()
    return data


def to_check_response(decision: Decision) -> Any:
    response = external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=_RPC_CODE.get(decision.status, code_pb2.UNAVAILABLE))
    )
    if decision.allowed:
        ok = response.ok_response
        ok.headers.extend(_header_options(decision.upstream_headers))
        ok.headers_to_remove.extend(decision.remove_headers)
        ok.query_parameters_to_remove.extend(decision.remove_query_params)
        if decision.metadata:
            response.dynamic_metadata.update(struct_safe(dict(decision.metadata)))
    else:
        denied = response.denied_response
        denied.status.code = decision.status
        denied.headers.extend(_header_options(decision.response_headers))
        denied.body = decision.body
    return response


class AuthorizationServicer(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    MAX_PREBUILT_DENIALS = 1024
    MAX_PREBUILT_ALLOWS = 1024  # each keeps its claims alive, outside the cache's byte bound

    def __init__(self, authorizer: Checker, *, trace_context: bool = False) -> None:
        """``trace_context``: read the W3C trace context from each call's metadata (when
        tracing is on; otherwise the metadata is never looked at)."""
        self._authorizer = authorizer
        self._trace_context = trace_context
        # Answers leave serialized (grpcio passes the bytes on): the prebuilt ones are
        # serialized once, not on every call.
        self._internal_error = serialized(to_check_response(internal_error()))
        unreadable = MalformedRequest("the CheckRequest did not decode")
        self._unreadable = serialized(
            to_check_response(deny(unreadable, "", None, None, expose=False))
        )
        # Denials repeat (same status, headers and body per reason and host): build each once.
        self._denials: dict[tuple[Any, ...], Any] = {}
        # A token from the token cache yields the same claims objects (the same identity) on
        # every hit, and so the same answer for the same headers: the response, its metadata
        # Struct above all, is built once per identity. Each entry holds the claims objects
        # it was built from and is used only while they are the very objects of the
        # decision, so a recycled id() can never match.
        self._allows: OrderedDict[tuple[Any, ...], tuple[tuple[Any, ...], bytes]] = OrderedDict()

    def _allow_response(self, decision: Decision) -> bytes:
        claims = tuple(decision.metadata.values())
        key = (
            tuple(id(c) for c in claims),
            decision.upstream_headers,
            decision.remove_headers,
            decision.remove_query_params,
            tuple(decision.metadata),
        )
        entry = self._allows.get(key)
        if entry is not None and all(a is b for a, b in zip(entry[0], claims, strict=True)):
            self._allows.move_to_end(key)
            return entry[1]
        response = serialized(to_check_response(decision))
        self._allows[key] = (claims, response)
        if len(self._allows) > self.MAX_PREBUILT_ALLOWS:
            self._allows.popitem(last=False)
        return response

    def _response(self, decision: Decision) -> bytes:
        if decision.allowed:
            if decision.metadata:
                return self._allow_response(decision)
            return serialized(to_check_response(decision))
        key = (decision.status, decision.response_headers, decision.body)
        response = self._denials.get(key)
        if response is None:
            if len(self._denials) >= self.MAX_PREBUILT_DENIALS:
                self._denials.clear()  # hosts come from clients: never let this grow unbounded
            response = self._denials[key] = serialized(to_check_response(decision))
        return response

    async def Check(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        """``request``: what read_check_request made of the bytes (a bare CheckRequest
        is taken too, its size unmeasured). The answer: a serialized CheckResponse."""
        try:
            if isinstance(request, Received):
                message, size = request.message, request.size
            elif isinstance(request, Unreadable):
                log.info("a check request of %d bytes did not decode", request.size)
                return self._unreadable
            else:
                message, size = request, 0
            if self._trace_context and context is not None:
                traced = trace_metadata(context.invocation_metadata())
                attributes = to_attributes(message, size, traced)
            else:
                attributes = to_attributes(message, size)
            decision = await self._authorizer.check(attributes)
            return self._response(decision)
        except Exception as exc:  # the authorizer never raises; this guards the conversions
            log.error("Check adapter failed with %s", type(exc).__name__)
            return self._internal_error


# Every connection option grpcio's server takes from its defaults, chosen here instead.
KEEPALIVE_TIME_S = 60  # ping a connection quiet this long, to find dead peers...
KEEPALIVE_TIMEOUT_S = 20  # ...and close it when the ping is not answered in time
MIN_CLIENT_PING_INTERVAL_S = 10  # pings from a client more often: GOAWAY (too_many_pings)
MAX_CONNECTION_IDLE_S = 600  # a connection without a call this long: GOAWAY
MAX_CONNECTION_AGE_GRACE_S = 30  # calls on a connection past its age may finish
MAX_CONCURRENT_STREAMS = 1000  # per connection; limits.max_concurrent_checks bounds them all


def grpc_options(
    *,
    receive_bytes: int,
    handshake_timeout_s: float,
    max_connections: int,
    max_connection_age_s: float,
    reuse_port: bool,
) -> list[tuple[str, int]]:
    options = [
        ("grpc.enable_channelz", 0),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        ("grpc.max_receive_message_length", receive_bytes),
        ("grpc.server_handshake_timeout_ms", int(handshake_timeout_s * 1000)),
        ("grpc.max_allowed_incoming_connections", max_connections),
        ("grpc.max_concurrent_streams", MAX_CONCURRENT_STREAMS),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_S * 1000),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_S * 1000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),  # keep pinging a connection without calls
        ("grpc.http2.min_recv_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_S * 1000),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_S * 1000),
        ("grpc.max_connection_idle_ms", MAX_CONNECTION_IDLE_S * 1000),
    ]
    if max_connection_age_s > 0:
        options.append(("grpc.max_connection_age_ms", int(max_connection_age_s * 1000)))
        options.append(("grpc.max_connection_age_grace_ms", MAX_CONNECTION_AGE_GRACE_S * 1000))
    return options


class TlsSource(Protocol):
    """A listener's TLS material, and its renewal when there is one."""

    material: tuple[bytes, bytes, bytes | None]  # certificate chain, key, client CA

    @property
    def mutual(self) -> bool: ...

    def refreshed(self) -> tuple[bytes, bytes, bytes | None] | None: ...


def _credentials(tls: TlsSource) -> grpc.ServerCredentials:
    """Credentials that ask ``tls`` at each handshake whether a renewal came (grpcio calls
    the fetcher on every new connection; None keeps the current certificate)."""

    def configuration(material: tuple[bytes, bytes, bytes | None]) -> Any:
        cert, key, client_ca = material
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=client_ca)

    def fetch() -> Any:
        try:
            fresh = tls.refreshed()
        except Exception:  # never fail a handshake over a renewal
            return None
        return None if fresh is None else configuration(fresh)

    return grpc.dynamic_ssl_server_credentials(
        configuration(tls.material), fetch, require_client_authentication=tls.mutual
    )


class GrpcServer:
    """The gRPC listener: ext_authz and grpc.health.v1, with start/stop."""

    def __init__(
        self,
        authorizer: Checker,
        address: str,
        *,
        receive_bytes: int,
        handshake_timeout_s: float,
        max_connections: int,
        max_connection_age_s: float,
        tls: TlsSource | None = None,
        reuse_port: bool = False,
        trace_context: bool = False,
    ) -> None:
        """``receive_bytes``: grpcio's receive limit (limits.max_request_bytes is the
        authorizer's, a 413 deny); ``tls``: the certificate chain, private key and client
        CA (None: any client), a renewal served from the next handshake on.
        ``handshake_timeout_s``: for the TLS and HTTP/2 handshake of a new connection;
        ``max_connections``: more are closed as they are accepted;
        ``max_connection_age_s``: then GOAWAY (0: never); ``trace_context``: read the
        callers' W3C trace context from the call metadata (when tracing is on)."""
        self._server = grpc.aio.server(
            options=grpc_options(
                receive_bytes=receive_bytes,
                handshake_timeout_s=handshake_timeout_s,
                max_connections=max_connections,
                max_connection_age_s=max_connection_age_s,
                reuse_port=reuse_port,
            )
        )
        servicer = AuthorizationServicer(authorizer, trace_context=trace_context)
        check = grpc.unary_unary_rpc_method_handler(
            servicer.Check,
            request_deserializer=read_check_request,
            response_serializer=_already_serialized,
        )
        methods = {"Check": check}
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(AUTHORIZATION_SERVICE, methods),)
        )
        # grpcio looks registered methods up without the generic handlers' search.
        self._server.add_registered_method_handlers(  # type: ignore[attr-defined]
            AUTHORIZATION_SERVICE, methods
        )
        self.health = health_aio.HealthServicer()
        self._started = False
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        try:
            if tls is None:
                self.port = self._server.add_insecure_port(address)
            else:
                self.port = self._server.add_secure_port(address, _credentials(tls))
        except RuntimeError as exc:  # grpcio's way of saying the bind failed
            raise OSError(f"cannot listen on {address} (gRPC)") from exc
        if self.port == 0:
            raise OSError(f"cannot listen on {address} (gRPC)")

    async def start(self) -> None:
        await self.set_serving(overall=True, authorization=False)
        self._started = True
        await self._server.start()

    async def set_serving(self, *, overall: bool, authorization: bool) -> None:
        def status(serving: bool) -> Any:
            return (
                health_pb2.HealthCheckResponse.SERVING
                if serving
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )

        await self.health.set("", status(overall))
        await self.health.set(AUTHORIZATION_SERVICE, status(authorization))

    async def stop(self, grace_s: float) -> None:
        """Send GOAWAY, refuse new calls, give calls in handlers ``grace_s`` to finish.
        (Calls received but not yet handed to a handler are cancelled: drain first.)"""
        if not self._started:
            return
        self._started = False
        await self.health.enter_graceful_shutdown()
        await self._server.stop(grace_s)
