"""The operations endpoint: /healthz (liveness), /readyz (readiness) and /metrics."""

from __future__ import annotations

import ssl
from collections.abc import Callable

from aiohttp import web

from authz.adapters.listener import Listener

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
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> None:
        self._metrics = metrics
        self._content_type = metrics_content_type
        self._ready = ready
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_page)
        # Closed last, after the checks have drained: a scrape in flight gets a moment.
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=CLOSE_TIMEOUT_S
        )
        self._listener = Listener(
            runner, host, port, ssl_context=ssl_context, reuse_port=reuse_port
        )

    @property
    def port(self) -> int:
        return self._listener.port

    async def start(self) -> None:
        await self._listener.start()

    async def stop(self) -> None:
        await self._listener.stop()

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        if self._ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    async def _metrics_page(self, _: web.Request) -> web.Response:
        return web.Response(body=self._metrics(), headers={"content-type": self._content_type})
