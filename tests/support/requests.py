"""Requests as the adapters hand them to the core, and as Envoy sends them over gRPC."""

from __future__ import annotations

from typing import Any

from envoy.service.auth.v3 import external_auth_pb2

from authz.core.model import RequestAttributes


def req(
    path: str = "/",
    method: str = "GET",
    host: str = "api.example.com",
    *,
    context: dict[str, str] | None = None,
    **headers: str,
) -> RequestAttributes:
    """A request; keyword headers have "_" turned into "-" (x_user_id -> x-user-id)."""
    return RequestAttributes(
        method,
        host,
        path,
        {k.replace("_", "-"): v for k, v in headers.items()},
        context or {},
    )


def check_request(path: str = "/x", /, **headers: str) -> Any:
    """An Envoy CheckRequest for GET ``path`` on api.test, with an x-request-id."""
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.host, http.path = "GET", "api.test", path
    http.headers.update({"x-request-id": "r1", **headers})
    return request


async def answer(servicer: Any, request: Any) -> Any:
    """What the gRPC adapter answers ``request`` with, as a CheckResponse (it hands grpcio
    the serialized bytes)."""
    return external_auth_pb2.CheckResponse.FromString(await servicer.Check(request, None))
