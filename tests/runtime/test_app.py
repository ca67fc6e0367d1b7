"""The assembled App against a real local identity provider, checked over gRPC."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz.adapters.grpc_server import AUTHORIZATION_SERVICE
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


def config_for(idp: FakeIdp, **remote: Any) -> Any:
    jwks = {"remote": {"uri": idp.uri, "refresh_interval": 300, **remote}}
    corp = provider(issuer=idp.issuer, jwks=jwks)
    return config(listen=LISTEN_ANYWHERE, providers={"corp": corp})


class Client:
    def __init__(self, channel: grpc.aio.Channel, idp: FakeIdp) -> None:
        self.stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        self.issuer = idp.issuer

    async def status(self, signer: Signer, **header: Any) -> int:
        token = signer.token(header=header or None, iss=self.issuer, **wall_clock_claims())
        response = await self.stub.Check(check_request(authorization=f"Bearer {token}"))
        return (
            200
            if response.WhichOneof("http_response") == "ok_response"
            else int(response.denied_response.status.code)
        )


@pytest.fixture
async def running(idp: FakeIdp, rsa_signer: Signer):
    idp.serve({"keys": [rsa_signer.jwk]})
    app = App(
        config_for(idp),
    )
    async with app, grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as channel:
        yield app, Client(channel, idp)


async def test_rotation_through_unknown_kid_refetch_and_removal(
    idp: FakeIdp, rsa_signer: Signer, other_rsa_signer: Signer
) -> None:
    idp.serve({"keys": [rsa_signer.jwk]})
    app = App(config_for(idp, min_refresh_interval=0.01))
    async with app, grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as channel:
        client = Client(channel, idp)
        source = app.sources["corp"]
        await asyncio.wait_for(_until(lambda: source.keys is not None), 5)
        assert await client.status(rsa_signer) == 200

        # The IdP publishes a new key. The scheduled refresh is 300 s away, so only the
        # unknown-kid refetch can pick it up, and the first token signed with it passes.
        idp.serve({"keys": [rsa_signer.jwk, other_rsa_signer.jwk]})
        assert await client.status(other_rsa_signer) == 200

        # The old key is retired: after the next refresh its tokens are rejected.
        idp.serve({"keys": [other_rsa_signer.jwk]})
        assert await source.refresh()
        await asyncio.sleep(0.02)  # past min_refresh_interval: the refetch finds nothing new
        assert await client.status(rsa_signer) == 401
        text = app.metrics.render().decode()
        assert 'authz_jwks_unknown_kid_refetch_total{provider="corp",result="ok"} 2.0' in text
        assert 'reason="unknown_kid",rule="0"} 1.0' in text


async def test_idp_outage_keeps_known_keys_working(
    running: tuple[App, Client], idp: FakeIdp, rsa_signer: Signer
) -> None:
    app, client = running
    await asyncio.wait_for(_until(lambda: app.sources["corp"].keys is not None), 5)
    idp.serve({"error": "down"}, status=503)
    assert await app.sources["corp"].refresh() is False
    await idp.server.close()
    assert await app.sources["corp"].refresh() is False
    assert await client.status(rsa_signer) == 200
    assert app.ready
    text = app.metrics.render().decode()
    assert 'authz_jwks_refresh_total{provider="corp",result="http_error"} 1.0' in text
    assert 'authz_jwks_refresh_total{provider="corp",result="network_error"} 1.0' in text


async def test_random_kid_flood_fetches_at_most_once_per_interval(
    running: tuple[App, Client], idp: FakeIdp, rsa_signer: Signer
) -> None:
    app, client = running
    await asyncio.wait_for(_until(lambda: app.sources["corp"].keys is not None), 5)
    before = idp.hits
    statuses = await asyncio.gather(
        *(client.status(rsa_signer, kid=uuid.uuid4().hex) for _ in range(1000))
    )
    assert set(statuses) == {401}
    assert idp.hits - before <= 1
    text = app.metrics.render().decode()
    assert 'reason="unknown_kid",rule="0"} 1000.0' in text


@pytest.mark.parametrize(("startup_wait", "status"), [(0.0, 503), (5.0, 200)])
async def test_startup_wait_lets_early_checks_wait_for_the_first_key_set(
    idp: FakeIdp, rsa_signer: Signer, startup_wait: float, status: int
) -> None:
    idp.serve({"keys": [rsa_signer.jwk]})
    idp.delay_s = 0.3
    config = config_for(idp).model_copy(update={"startup_wait": startup_wait})
    app = App(config)
    async with app, grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as channel:
        assert not app.ready  # serving at once, not ready until the keys arrive
        assert await Client(channel, idp).status(rsa_signer) == status
        await asyncio.wait_for(_until(lambda: app.ready), 5)


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


async def test_stop_drains_every_listener_before_closing(
    jwks: dict[str, Any], rsa_signer: Signer
) -> None:
    """While draining: not ready, health NOT_SERVING, yet gRPC and HTTP checks answered."""
    settings = config(
        listen=LISTEN_ANYWHERE,
        http_authz={"listen": "127.0.0.1:0", "original_request": "envoy"},
        providers={"corp": provider(jwks={"inline": jwks})},
        shutdown_grace=3,
        shutdown_drain=0.5,
    )
    token = rsa_signer.token(**wall_clock_claims())
    app = App(settings)
    await app.start()
    assert app.grpc is not None and app.http is not None and app.http_authz is not None
    ops, http_authz = app.http.port, app.http_authz.port
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as channel,
        aiohttp.ClientSession() as session,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        stopping = asyncio.create_task(app.stop())
        await asyncio.sleep(0.1)
        assert not stopping.done() and not app.ready
        async with session.get(f"http://127.0.0.1:{ops}/readyz") as readyz:
            assert readyz.status == 503
        for service in ("", AUTHORIZATION_SERVICE):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        allowed = await stub.Check(check_request(authorization=f"Bearer {token}"))
        assert allowed.HasField("ok_response")
        headers = {"authorization": f"Bearer {token}"}
        async with session.get(f"http://127.0.0.1:{http_authz}/x", headers=headers) as answer:
            assert answer.status == 200
        await asyncio.wait_for(stopping, 5)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Check(check_request(), timeout=1)
