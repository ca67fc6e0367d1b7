"""The HTTP authorization adapter: Envoy's http_service mode, nginx auth_request, Traefik
and Caddy forward auth, all served by the same authorizer as the gRPC endpoint.

Only the request headers of the configured ``original_request`` style are trusted to say
what the client asked for; a client cannot pick another style by sending other headers.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

from aiohttp import web

from authz.adapters.certificates import Source, forwarded_certificate_sha256
from authz.adapters.listener import ConnectionBounds, Listener
from authz.core.authorizer import Checker
from authz.core.decisions import deny, internal_error
from authz.core.errors import InvalidPath
from authz.core.model import Decision, RequestAttributes

log = logging.getLogger(__name__)

Style = Literal["envoy", "nginx", "traefik"]
REMOVE_HEADER = "x-envoy-auth-headers-to-remove"
# Headers that only carry the original request for a proxy; never treated as the client's.
FORWARDING = {
    "envoy": (),
    "nginx": ("x-original-uri", "x-original-method"),
    "traefik": ("x-forwarded-method", "x-forwarded-uri", "x-forwarded-host", "x-forwarded-proto"),
}


def to_attributes(
    request: web.BaseRequest, style: Style, path_prefix: str, certificates: Source = "none"
) -> RequestAttributes:
    # Repeated headers are joined, as Envoy does for gRPC, and counted as sent: a second
    # copy must never silently replace the first.
    joined: dict[str, list[str]] = {}
    for key, value in request.headers.items():
        joined.setdefault(key.lower(), []).append(value)
    headers = {key: ",".join(values) for key, values in joined.items()}
    count = len(request.headers)
    certificate = forwarded_certificate_sha256(certificates, headers)
    if style == "envoy":
        # Envoy sends the original method and headers, and the original path behind its
        # http_service path_prefix.
        path = request.raw_path
        if path_prefix and path.startswith(path_prefix):
            path = path[len(path_prefix) :] or "/"
        return RequestAttributes(
            request.method,
            request.host,
            path,
            headers,
            header_count=count,
            query_removable=False,
            # allowed_upstream_headers lets authz's cookie header replace the client's; a
            # Cookie header that is not UTF-8 cannot be written back as it came.
            cookie_rewritable=_utf8(headers.get("cookie", "")),
            client_certificate_sha256=certificate,
        )
    if style == "nginx":
        original_path = headers.get("x-original-uri")
        method = headers.get("x-original-method")
        host = request.host
    else:
        original_path = headers.get("x-forwarded-uri")
        method = headers.get("x-forwarded-method")
        host = headers.get("x-forwarded-host", request.host)
    # Traefik sets X-Forwarded-Proto itself (the client's copy is replaced); nginx's
    # recipe does not send one.
    scheme = headers.get("x-forwarded-proto", "").lower() if style == "traefik" else ""
    if not original_path or not method:
        raise InvalidPath(f"the {style} headers naming the original request are missing")
    for name in FORWARDING[style]:
        headers.pop(name, None)
    return RequestAttributes(
        method.upper(),
        host,
        original_path,
        headers,
        header_count=count,
        query_removable=False,
        cookie_rewritable=False,
        scheme=scheme,
        client_certificate_sha256=certificate,
    )


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")  # aiohttp decodes other bytes to lone surrogates
    except UnicodeEncodeError:
        return False
    return True


class _ParserLogger(logging.Logger):
    """aiohttp's log of a request its parser refused. The exception's text can quote the
    request's bytes (a token in an over-long header line), so only its type is written."""

    def _log(
        self, level: int, msg: object, args: Any, exc_info: Any = None, *more: Any, **kw: Any
    ) -> None:
        error = exc_info[1] if isinstance(exc_info, tuple) else exc_info
        if not isinstance(error, BaseException):
            error = sys.exc_info()[1]
        kind = type(error).__name__ if error is not None else "error"
        # aiohttp writes these at ERROR (DEBUG for non-HTTP bytes): they are the client's fault.
        level = min(level, logging.INFO)
        super()._log(level, "HTTP request refused by the parser (%s)", (kind,))


def to_response(decision: Decision, style: Style) -> web.Response:
    if not decision.allowed:
        return web.Response(
            status=decision.status,
            headers=dict(decision.response_headers),
            body=decision.body.encode(),
        )
    headers = dict(decision.upstream_headers)
    if decision.remove_headers and style == "envoy":
        # Envoy removes these from the upstream request (identity headers a client sent,
        # the token); nginx and Traefik overwrite them with what authz returns instead.
        headers[REMOVE_HEADER] = ",".join(decision.remove_headers)
    return web.Response(status=200, headers=headers)


class HttpAuthzServer:
    """A listener answering every request with a decision, whatever its path (Envoy appends
    the original path): a low-level aiohttp server, so no router can answer in its place."""

    def __init__(
        self,
        authorizer: Checker,
        host: str,
        port: int,
        *,
        style: Style,
        path_prefix: str,
        max_headers: int,
        max_header_bytes: int,
        connections: ConnectionBounds,
        close_timeout_s: float,
        reuse_port: bool = False,
        certificate_source: Source = "none",
    ) -> None:
        """``max_headers``, ``max_header_bytes``: authz's own limits (431 beyond them);
        aiohttp's parser is set just above them, so its defaults (8190-byte lines, 128
        headers) never refuse a request authz would judge. ``close_timeout_s``: how long
        stop() lets checks in flight finish."""
        self._authorizer = authorizer
        self._style = style
        self._prefix = path_prefix.rstrip("/")
        self._certificate_source = certificate_source
        parser_log = _ParserLogger(f"{__name__}.parser")
        parser_log.parent = log
        self._listener = Listener(
            self._check,
            host,
            port,
            header_timeout_s=connections.header_timeout_s,
            idle_timeout_s=connections.idle_timeout_s,
            max_connections=connections.max_connections,
            close_timeout_s=close_timeout_s,
            reuse_port=reuse_port,
            logger=parser_log,
            max_line_size=max_header_bytes + 1024,
            max_field_size=max_header_bytes + 1024,
            max_headers=max_headers + 64,
        )

    @property
    def port(self) -> int:
        return self._listener.port

    async def start(self) -> None:
        await self._listener.start()

    async def stop(self) -> None:
        await self._listener.stop()

    async def _check(self, request: web.BaseRequest) -> web.Response:
        try:
            try:
                attributes = to_attributes(
                    request, self._style, self._prefix, self._certificate_source
                )
            except InvalidPath as exc:
                return to_response(deny(exc, request.host, None, None, expose=False), self._style)
            return to_response(await self._authorizer.check(attributes), self._style)
        except Exception as exc:  # fail closed: never a 5xx page from aiohttp, never an allow
            log.error("HTTP check adapter failed with %s", type(exc).__name__)
            return to_response(internal_error(), self._style)
