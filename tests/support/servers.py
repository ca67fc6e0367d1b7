"""Real local servers the tests talk to, and the waiting that goes with them."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from dev.stack import OPENER, Stack


class FakeIdp:
    """A real local identity provider over HTTP whose answers the test controls.

    Serves a JWKS at /certs (with optional ETag revalidation, Cache-Control, delays and a
    slow drip), OIDC discovery at /.well-known/openid-configuration, and redirects.
    """

    def __init__(self) -> None:
        self.status = 200
        self.body = b"{}"
        self.other_body = b"{}"  # served at /other-certs
        self.headers: dict[str, str] = {}
        self.etag: str | None = None
        self.hits = 0
        self.conditional_hits = 0
        self.delay_s = 0.0
        self.drip_s = 0.0  # when set, the body is sent one byte at a time, this far apart
        self.discovery: dict[str, Any] | None = None
        self.redirect_to = ""
        self.last_if_none_match: str | None = None
        app = web.Application()
        app.router.add_get("/other-certs", self.other_certs)
        app.router.add_get("/certs", self.certs)
        app.router.add_get("/.well-known/openid-configuration", self.openid_configuration)
        app.router.add_get("/moved", self.moved)
        self.server = TestServer(app, host="127.0.0.1")

    async def certs(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        self.last_if_none_match = request.headers.get("if-none-match")
        await asyncio.sleep(self.delay_s)
        if self.etag and request.headers.get("if-none-match") == self.etag:
            self.conditional_hits += 1
            return web.Response(status=304, headers={"etag": self.etag})
        headers = {**self.headers, **({"etag": self.etag} if self.etag else {})}
        if not self.drip_s:
            return web.Response(
                status=self.status,
                body=self.body,
                content_type="application/json",
                headers=headers,
            )
        response = web.StreamResponse(status=self.status, headers=headers)
        await response.prepare(request)
        for byte in self.body:
            await response.write(bytes([byte]))
            await asyncio.sleep(self.drip_s)
        await response.write_eof()
        return response

    async def other_certs(self, _: web.Request) -> web.Response:
        return web.Response(body=self.other_body, content_type="application/json")

    async def openid_configuration(self, _: web.Request) -> web.Response:
        if self.discovery is None:
            return web.Response(status=404)
        return web.json_response(self.discovery)

    async def moved(self, _: web.Request) -> web.Response:
        raise web.HTTPFound(self.redirect_to)

    def serve(self, document: Any, status: int = 200) -> None:
        self.body = json.dumps(document).encode() if not isinstance(document, bytes) else document
        self.status = status

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    @property
    def uri(self) -> str:
        return self.url("/certs")

    @property
    def issuer(self) -> str:
        return self.url("/").rstrip("/")


def start_serve(
    tmp_path: Path,
    config: dict[str, Any],
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], Path]:
    """`authz serve` on ``config`` (written to tmp_path/authz.yaml), with more ``args`` and
    ``env`` added to ours: the process, and the file its stderr goes to."""
    path, log = tmp_path / "authz.yaml", tmp_path / "authz.log"
    path.write_text(json.dumps(config))
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "authz", "serve", "-c", str(path), *args],
            stderr=out,
            env={**os.environ, **env} if env else None,
        )
    return proc, log


def wait_logged(
    log: Path, text: str, proc: subprocess.Popen[bytes], times: int = 1, timeout_s: float = 30
) -> None:
    """Until ``text`` is in the file ``log`` ``times`` times, while ``proc`` runs."""
    deadline = time.monotonic() + timeout_s
    while log.read_text().count(text) < times:
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
        time.sleep(0.05)


def log_entries(text: str) -> list[dict[str, Any]]:
    """Each line of a log written with log_format: json, as the one JSON object it is."""
    return [json.loads(line) for line in text.splitlines()]


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10) -> None:
    """SIGTERM, then SIGKILL if it is still there after ``timeout_s``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def wait_for(predicate: Any, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


def scrape(port: int) -> str:
    """The /metrics page of an authz on ``port``."""
    with OPENER.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Until the authz process answers /readyz with 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "authz exited"
        try:
            with OPENER.open(f"http://127.0.0.1:{port}/readyz", timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("authz did not become ready")


def call(
    stack: Stack,
    path: str,
    method: str = "GET",
    raw: dict[str, str] | None = None,
    **headers: str,
) -> tuple[int, dict[str, str], Any]:
    """One request through the stack's proxy; keyword headers have "_" turned into "-",
    ``raw`` ones not. The body is parsed when it is JSON."""
    reply = proxy_call(stack.ports.envoy, path, method, raw, **headers)
    response_headers = reply.headers
    parsed = (
        json.loads(reply.body)
        if response_headers.get("content-type", "").startswith("application/json")
        else reply.body
    )
    return reply.status, response_headers, parsed


@dataclass
class Reply:
    """A proxy's answer, every header line kept (names lower-cased): a header sent twice
    shows twice."""

    status: int
    lines: list[tuple[str, str]]
    body: str

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.lines)

    def every(self, name: str) -> list[str]:
        return [value for key, value in self.lines if key == name]

    @property
    def echo(self) -> dict[str, Any]:
        """What the echo upstream saw."""
        seen: dict[str, Any] = json.loads(self.body)
        return seen


def proxy_call(
    port: int, path: str, method: str = "GET", raw: dict[str, str] | None = None, **headers: str
) -> Reply:
    """One request to a proxy on ``port``; "_" in keyword header names becomes "-", ``raw``
    names are sent as they are (X_User_Id)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(
            method,
            path,
            headers={**{k.replace("_", "-"): v for k, v in headers.items()}, **(raw or {})},
        )
        response = connection.getresponse()
        lines = [(k.lower(), v) for k, v in response.getheaders()]
        return Reply(response.status, lines, response.read().decode())
    finally:
        connection.close()
