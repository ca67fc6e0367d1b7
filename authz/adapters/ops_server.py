"""The operations HTTP listener: /healthz, /readyz and /metrics."""

from __future__ import annotations

import ssl
from collections.abc import Callable

from aiohttp import web

from authz.runtime.metrics import Metrics


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class HttpServer:
    def __init__(
        self,
        address: str,
        metrics: Metrics,
        ready: Callable[[], bool],
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> None:
        self._ssl = ssl_context
        self._reuse_port = reuse_port
        self._host, self._port = _split(address)
        self._metrics = metrics
        self._ready = ready
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_page)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self.port = 0

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            self._host,
            self._port,
            reuse_port=self._reuse_port,
            ssl_context=self._ssl,
        )
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        if self._ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    async def _metrics_page(self, _: web.Request) -> web.Response:
        return web.Response(
            body=self._metrics.render(), headers={"content-type": self._metrics.content_type}
        )
