"""The bounded aiohttp listener: request-head and idle timeouts, the connection maximum,
no access log. Real sockets against a real listener on loopback."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from pathlib import Path

import pytest
from aiohttp import web

from authz.adapters.listener import Listener
from tests.support.pki import make_pki


async def hello(request: web.BaseRequest) -> web.Response:
    return web.Response(text="hello")


async def listening(tls: ssl.SSLContext | None = None, **bounds: float) -> Listener:
    settings = {"header_timeout_s": 0.4, "idle_timeout_s": 5.0, "max_connections": 64, **bounds}
    listener = Listener(
        hello,
        "127.0.0.1",
        0,
        header_timeout_s=settings["header_timeout_s"],
        idle_timeout_s=settings["idle_timeout_s"],
        max_connections=int(settings["max_connections"]),
        close_timeout_s=1.0,
        ssl_context=tls,
    )
    await listener.start()
    return listener


REQUEST = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the server closes the connection within ``seconds`` (reading what it sends)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = await asyncio.wait_for(reader.read(4096), deadline - time.monotonic())
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        if not chunk:
            return True
    return False


async def test_a_slowloris_is_cut_off_at_the_header_timeout() -> None:
    listener = await listening(header_timeout_s=0.5)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        started = time.monotonic()
        closed = False
        for byte in b"GET /x HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"a" * 100:
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                closed = True
                break
            if await closed_within(reader, 0.05):
                closed = True
                break
        assert closed, "a head dribbled for ever was never cut off"
        assert time.monotonic() - started < 3
        writer.close()
    finally:
        await listener.stop()


async def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout() -> None:
    listener = await listening(header_timeout_s=0.3, idle_timeout_s=30)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        assert await closed_within(reader, 3)
        writer.close()
    finally:
        await listener.stop()


async def test_a_tls_handshake_never_begun_is_closed_at_the_header_timeout(
    tmp_path: Path,
) -> None:
    """The handshake comes before the handler sees the connection; asyncio's own bound
    on it is 60 s."""
    pki = make_pki(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(pki.server_cert, pki.server_key)
    listener = await listening(tls=tls, header_timeout_s=0.3, idle_timeout_s=30)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        assert await closed_within(reader, 3)
        writer.close()
        client = ssl.create_default_context(cafile=pki.ca)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", listener.port, ssl=client, server_hostname="localhost"
        )
        writer.write(REQUEST)
        assert b"hello" in await reader.read(4096)  # a client that does shake hands
        writer.close()
    finally:
        await listener.stop()


async def test_an_idle_connection_is_closed_after_the_idle_timeout() -> None:
    listener = await listening(header_timeout_s=5, idle_timeout_s=0.5)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(REQUEST)
        assert (await reader.readuntil(b"hello")).startswith(b"HTTP/1.1 200")
        assert await closed_within(reader, 3)
        writer.close()
    finally:
        await listener.stop()


async def test_a_busy_keep_alive_connection_stays_open_past_both_timeouts() -> None:
    listener = await listening(header_timeout_s=0.3, idle_timeout_s=0.5)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        for _ in range(12):  # 1.2 s of requests on one connection
            writer.write(REQUEST)
            assert (await reader.readuntil(b"hello")).startswith(b"HTTP/1.1 200")
            await asyncio.sleep(0.1)
        writer.close()
    finally:
        await listener.stop()


async def test_connections_beyond_the_maximum_are_closed_at_once() -> None:
    listener = await listening(max_connections=16, header_timeout_s=30, idle_timeout_s=30)
    try:
        held = [await asyncio.open_connection("127.0.0.1", listener.port) for _ in range(16)]
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        assert await closed_within(reader, 1)
        writer.close()
        assert listener.server is not None and listener.server.refused == 1
        # The held connections are served; once one closes, a new one is accepted.
        held_reader, held_writer = held.pop()
        held_writer.write(REQUEST)
        assert (await held_reader.readuntil(b"hello")).startswith(b"HTTP/1.1 200")
        held_writer.close()
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(REQUEST)
        assert (await reader.readuntil(b"hello")).startswith(b"HTTP/1.1 200")
        writer.close()
        for _, other in held:
            other.close()
    finally:
        await listener.stop()


async def test_no_access_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    listener = await listening()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(b"GET /x?access_token=secret-token HTTP/1.1\r\nHost: a\r\n\r\n")
        await reader.readuntil(b"hello")
        writer.close()
    finally:
        await listener.stop()
    assert "secret-token" not in caplog.text
