"""The HTTP authorization adapter: Envoy's http_service mode, nginx auth_request, Traefik
and Caddy forward auth, all served by the same authorizer as the gRPC endpoint.

How each proxy names the request to judge is original_request.py; here, a request that
does not name it is refused (counted, logged as a decision, and warned about), and the
decision is rendered for the proxy.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from authz.adapters.certificates import Source
from authz.adapters.listener import ConnectionBounds, Listener
from authz.adapters.original_request import Style, to_attributes
from authz.core.authorizer import Checker, Observation, Observer
from authz.core.decisions import deny, internal_error
from authz.core.errors import CheckError, MissingOriginalRequest
from authz.core.model import Decision, RequestAttributes
from authz.support.throttle import Throttle

log = logging.getLogger(__name__)

REMOVE_HEADER = "x-envoy-auth-headers-to-remove"
# The styles answering every identity header of the config, empty when this allow does
# not set it. Caddy 2.5.1 to 2.8.4 would otherwise copy their placeholder text
# ({http.reverse_proxy.header.X-User-Email}) onto the request. nginx (ingress-nginx too)
# sends no header for an empty value, as for an absent one, and drops a client's copy
# either way: the upstream sees none. Traefik passes an empty header on as one, after
# deleting the client's copies of every name its regex matches; it is answered empty
# too, so that a Caddy configured with the traefik style (as the recipe once said) never
# sends its placeholder text. Envoy is told what to remove instead.
ANSWERED_EMPTY: frozenset[Style] = frozenset({"nginx", "ingress-nginx", "traefik", "caddy"})
# A proxy that does not name the original request does so for every request: warn once a
# minute, not once a request.
MISSING_WARNING_INTERVAL_S = 60.0


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
    if style == "envoy":
        if decision.remove_headers:
            # Envoy removes these from the upstream request (identity headers a client
            # sent, the token). An empty header here would reach the upstream as sent.
            headers[REMOVE_HEADER] = ",".join(decision.remove_headers)
    elif style in ANSWERED_EMPTY:
        for name in decision.unset_identity_headers:
            headers.setdefault(name, "")
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
        observe: Observer | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``max_headers``, ``max_header_bytes``: authz's own limits (431 beyond them);
        aiohttp's parser is set just above them, so its defaults (8190-byte lines, 128
        headers) never refuse a request authz would judge. ``close_timeout_s``: how long
        stop() lets checks in flight finish. ``observe``: told of the requests refused
        here, before any check (the authorizer tells it of the others)."""
        self._authorizer = authorizer
        self._observe = observe
        self._missing_warning = Throttle(MISSING_WARNING_INTERVAL_S, monotonic)
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
        started = time.perf_counter()
        try:
            try:
                attributes = to_attributes(
                    request, self._style, self._prefix, self._certificate_source
                )
            except CheckError as exc:
                return to_response(self._refuse(request, exc, started), self._style)
            return to_response(await self._authorizer.check(attributes), self._style)
        except Exception as exc:  # fail closed: never a 5xx page from aiohttp, never an allow
            log.error("HTTP check adapter failed with %s", type(exc).__name__)
            return to_response(internal_error(), self._style)

    def _refuse(self, request: web.BaseRequest, error: CheckError, started: float) -> Decision:
        """The deny for a request that names no request to judge, observed like any
        check's: the check request as it came stands for the request (its own method, Host
        and path: a decision line and a metric, never a verdict on another request)."""
        if isinstance(error, MissingOriginalRequest):
            held = self._missing_warning.due()
            if held is not None:
                log.warning(
                    "HTTP check refused (400 missing_original_request): %s; is the proxy "
                    "configured for original_request: %s?%s",
                    error.detail,
                    self._style,
                    f" ({held} more since the last warning)" if held else "",
                )
        # The Host header as sent: aiohttp's request.host would name this machine without one.
        host = request.headers.get("host", "")
        decision = deny(error, host, None, None, expose=False)
        if self._observe is not None:
            headers = {key.lower(): value for key, value in request.headers.items()}
            stand_in = RequestAttributes(request.method, host, request.raw_path, headers)
            self._observe(stand_in, decision, Observation(time.perf_counter() - started))
        return decision
