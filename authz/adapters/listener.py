"""One aiohttp listener, shared by the HTTP authorization endpoint and the operations
endpoint: a runner bound to host:port, TLS optional, started and stopped by its owner.

The runner is built by the owner; its ``shutdown_timeout`` bounds how long stop() waits
for requests in flight before cancelling them."""

from __future__ import annotations

import ssl

from aiohttp import web


class Listener:
    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> None:
        self._runner = runner
        self._host = host
        self._port = port
        self._ssl = ssl_context
        self._reuse_port = reuse_port
        self.port = 0  # the bound port, once started (port 0 asks for a free one)
        self._started = False

    async def start(self) -> None:
        self._started = True
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            self._host,
            self._port,
            ssl_context=self._ssl,
            reuse_port=self._reuse_port,
        )
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop listening, close idle connections, let requests in flight finish."""
        if self._started:
            self._started = False
            await self._runner.cleanup()
