"""/healthz, /readyz and /metrics of a running App, with a remote JWKS served locally."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc

from authz.runtime.app import App
from tests.support import (
    LISTEN_ANYWHERE,
    FakeIdp,
    Signer,
    check_request,
    config,
    provider,
    wall_clock_claims,
)


def remote_config(uri: str) -> Any:
    remote = {"remote": {"uri": uri, "refresh_interval": 0.2, "timeout": 1}}
    return config(listen=LISTEN_ANYWHERE, providers={"corp": provider(jwks=remote)})


async def get(session: aiohttp.ClientSession, port: int, path: str) -> tuple[int, str]:
    async with session.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.text()


async def test_ready_follows_the_remote_jwks(idp: FakeIdp, rsa_signer: Signer) -> None:
    idp.serve({"error": "down"}, status=500)
    async with App(remote_config(idp.uri)) as app, aiohttp.ClientSession() as session:
        assert app.http is not None and app.grpc is not None
        port = app.http.port
        assert await get(session, port, "/healthz") == (200, "ok\n")
        assert (await get(session, port, "/readyz"))[0] == 503

        idp.serve({"keys": [rsa_signer.jwk]})
        async with asyncio.timeout(10):
            while (await get(session, port, "/readyz"))[0] != 200:
                await asyncio.sleep(0.05)

        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            token = rsa_signer.token(**wall_clock_claims())
            await stub.Check(check_request(authorization=f"Bearer {token}"))
            await stub.Check(check_request())

        status, text = await get(session, port, "/metrics")
        assert status == 200
        checks = 'authz_checks_total{{decision="{}",provider="corp",reason="{}",rule="0"}} 1.0'
        for line in (
            checks.format("allow", "allowed"),
            checks.format("deny", "missing_token"),
            'authz_jwks_refresh_total{provider="corp",result="http_error"}',
            'authz_jwks_refresh_total{provider="corp",result="ok"}',
            'authz_jwks_keys{provider="corp"} 1.0',
            'authz_jwks_last_success_timestamp_seconds{provider="corp"}',
            "authz_check_duration_seconds_count 2.0",
        ):
            assert line in text
        assert token not in text


def test_the_page_has_build_and_process_metrics_and_no_created_series() -> None:
    from authz import __version__
    from authz.runtime.metrics import Metrics

    page = Metrics().render().decode()
    assert f'version="{__version__}"' in page and "authz_build_info{" in page
    assert "process_resident_memory_bytes " in page and "process_open_fds " in page
    assert "_created" not in page
