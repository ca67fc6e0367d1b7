"""The operations endpoint: /healthz (liveness), /readyz (readiness) and /metrics."""

from __future__ import annotations

import ssl
from collections.abc import Callable

from aiohttp import web

from authz.adapters.listener import ConnectionBounds, Listener

# Closed last, after the checks have drained: a scrape in flight gets a moment.
CLOSE_TIMEOUT_S = 1.0


class OpsServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        metrics: Callable[[], bytes],  # the Prometheus text page
        metrics_content_type: str,
        ready: Callable[[], bool],
        connections: ConnectionBounds,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> None:
        self._metrics = metrics
        self._content_type = metrics_content_type
        self._ready = ready
        self._pages = {"/healthz": self._healthz, "/readyz": self._readyz, "/metrics": self._page}
        self._listener = Listener(
            self._answer,
            host,
            port,
            header_timeout_s=connections.header_timeout_s,
            idle_timeout_s=connections.idle_timeout_s,
            max_connections=connections.max_connections,
            close_timeout_s=CLOSE_TIMEOUT_S,
            ssl_context=ssl_context,
            reuse_port=reuse_port,
        )

    @property
    def port(self) -> int:
        return self._listener.port

    async def start(self) -> None:
        await self._listener.start()

    async def stop(self) -> None:
        await self._listener.stop()

    async def _answer(self, request: web.BaseRequest) -> web.Response:
        page = self._pages.get(request.path)
        if page is None:
            return web.Response(status=404, text="not found\n")
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, text="method not allowed\n", headers={"allow": "GET"})
        return page()

    def _healthz(self) -> web.Response:
        return web.Response(text="ok\n")

    def _readyz(self) -> web.Response:
        if self._ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    def _page(self) -> web.Response:
        return web.Response(body=self._metrics(), headers={"content-type": self._content_type})
