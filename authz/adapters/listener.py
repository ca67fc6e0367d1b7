"""The aiohttp listener both HTTP endpoints use (HTTP authorization, operations): a
low-level server bound to host:port, TLS optional, whose connections are bounded.

- A request head must arrive within ``header_timeout_s`` (for a connection's first
  request, counted from its accept): a client dribbling a head (slowloris) or sending
  nothing is cut off.
- A connection waiting for its next request closes after ``idle_timeout_s`` (aiohttp's
  keep-alive timeout, which also counts from the accept and from each answer).
- Beyond ``max_connections`` open at once, a new connection is closed as it is accepted,
  so a flood cannot take the descriptors the other listeners need.
- With TLS, the handshake (before the connection reaches the handler) must also finish
  within ``header_timeout_s``.
- stop() waits ``close_timeout_s`` for requests in flight before cancelling them.

aiohttp has no request-head timeout of its own; the one here watches its request
handler's wait for the next message (``_waiter``) and parsed messages (``_messages``).
tests/adapters/test_listener.py fails if an aiohttp release changes them.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

# Connections the kernel queues for accept (capped by net.core.somaxconn): a burst of new
# connections beyond it is dropped by the kernel before authz sees it.
BACKLOG = 1024

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class ConnectionBounds:
    header_timeout_s: float
    idle_timeout_s: float
    max_connections: int


class _BoundedHandler(RequestHandler):
    """aiohttp's request handler with a deadline on every request head."""

    def __init__(self, manager: BoundedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout_s = manager.header_timeout_s
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()  # the first request head counts from the accept

    def data_received(self, data: bytes) -> None:
        waiting = self._waiting_for_request()
        super().data_received(data)
        if self._messages:  # a whole request head arrived: it is handled now
            self._disarm()
        elif waiting and self._head_timer is None:
            self._arm()  # the first bytes of the next request

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _waiting_for_request(self) -> bool:
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self._loop.call_later(self._head_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._messages and (self._waiter is None or self._waiting_for_request()):
            self.force_close()


class _Refused(asyncio.Protocol):
    """A connection beyond the maximum: closed as soon as it is accepted."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class BoundedServer(web.Server):
    def __init__(
        self,
        handler: Handler,
        *,
        header_timeout_s: float,
        idle_timeout_s: float,
        max_connections: int,
        **kwargs: Any,
    ) -> None:
        # No access log: a request line carries the original path and query, where a
        # token may be (aiohttp's default logs it at INFO).
        super().__init__(handler, keepalive_timeout=idle_timeout_s, access_log=None, **kwargs)
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self.open_connections = 0
        self.refused = 0
        self._refusal_logged = False

    def __call__(self) -> Any:  # a protocol for one accepted connection
        if self.open_connections >= self.max_connections:
            self.refused += 1
            if not self._refusal_logged:  # once, not once per connection of a flood
                self._refusal_logged = True
                log.warning(
                    "%d connections open: closing new ones until some close",
                    self.open_connections,
                )
            return _Refused()
        return _BoundedHandler(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        self.open_connections += 1
        super().connection_made(handler, transport)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        self.open_connections -= 1
        if self.open_connections < self.max_connections:
            self._refusal_logged = False
        super().connection_lost(handler, exc)


class Listener:
    def __init__(
        self,
        handler: Handler,
        host: str,
        port: int,
        *,
        header_timeout_s: float,
        idle_timeout_s: float,
        max_connections: int,
        close_timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
        **server_options: Any,
    ) -> None:
        """``server_options``: aiohttp's parser and logger settings."""
        self._handler = handler
        self._options = dict(
            header_timeout_s=header_timeout_s,
            idle_timeout_s=idle_timeout_s,
            max_connections=max_connections,
            **server_options,
        )
        self._close_timeout_s = close_timeout_s
        self._host = host
        self._port = port
        self._ssl = ssl_context
        self._reuse_port = reuse_port
        self._runner: web.ServerRunner | None = None
        self.server: BoundedServer | None = None
        self.port = 0  # the bound port, once started (port 0 asks for a free one)

    async def start(self) -> None:
        self.server = BoundedServer(self._handler, **self._options)
        self._runner = web.ServerRunner(
            self.server, handle_signals=False, shutdown_timeout=self._close_timeout_s
        )
        await self._runner.setup()
        site = _Site(
            self._runner,
            self._host,
            self._port,
            ssl_context=self._ssl,
            reuse_port=self._reuse_port,
            # A TLS handshake precedes the handler's connection (and its header timeout):
            # bound it by the same timeout, not asyncio's default of 60 s.
            handshake_timeout_s=self._options["header_timeout_s"],
        )
        await site.start()
        self.port = site.port

    async def stop(self) -> None:
        """Stop listening, close idle connections, let requests in flight finish."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


class _Site(web.BaseSite):
    """aiohttp's TCP site, with the TLS handshake bounded."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        reuse_port: bool,
        handshake_timeout_s: float,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=BACKLOG)
        self._host = host
        self.port = port
        self._tls = ssl_context
        self._reuse_port = reuse_port
        self._handshake_timeout_s = handshake_timeout_s

    @property
    def name(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://{self._host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            server,
            self._host,
            self.port,
            ssl=self._tls,
            backlog=BACKLOG,
            reuse_address=True,
            reuse_port=self._reuse_port,
            ssl_handshake_timeout=self._handshake_timeout_s if self._tls else None,
        )
        if self._server.sockets:
            self.port = self._server.sockets[0].getsockname()[1]
