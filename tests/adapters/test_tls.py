"""TLS and mutual TLS on authz's own listeners."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc
from google.rpc import code_pb2

from authz.runtime.app import App
from tests.support import (
    LISTEN_ANYWHERE,
    Signer,
    check_request,
    config,
    provider,
    wall_clock_claims,
)
from tests.support.pki import Pki


def tls_config(pki: Pki, jwks: dict[str, Any], *, mutual: bool) -> Any:
    tls = {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)}
    if mutual:
        tls["client_ca_file"] = str(pki.ca)
    listen = {**LISTEN_ANYWHERE, "grpc_tls": tls, "http_tls": tls}
    return config(listen=listen, providers={"corp": provider(jwks={"inline": jwks})})


def credentials(pki: Pki, cert: Path | None, key: Path | None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )


async def check(port: int, creds: grpc.ChannelCredentials, token: str) -> Any:
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        return await stub.Check(check_request(authorization=f"Bearer {token}"), timeout=5)


async def test_mutual_tls_on_grpc(pki: Pki, jwks: dict[str, Any], rsa_signer: Signer) -> None:
    token = rsa_signer.token(**wall_clock_claims())
    async with App(tls_config(pki, jwks, mutual=True)) as app:
        assert app.grpc is not None
        trusted = credentials(pki, pki.client_cert, pki.client_key)
        assert (await check(app.grpc.port, trusted, token)).status.code == code_pb2.OK
        for cert, key in ((None, None), (pki.other_client_cert, pki.other_client_key)):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await check(app.grpc.port, credentials(pki, cert, key), token)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as plain:
            with pytest.raises(grpc.aio.AioRpcError):
                await external_auth_pb2_grpc.AuthorizationStub(plain).Check(
                    check_request(), timeout=2
                )


async def test_server_only_tls_and_https_endpoints(pki: Pki, jwks: dict[str, Any]) -> None:
    async with App(tls_config(pki, jwks, mutual=False)) as app:
        assert app.grpc is not None and app.http is not None
        response = await check(app.grpc.port, credentials(pki, None, None), "x.y.z")
        assert response.denied_response.status.code == 401
        client_tls = ssl.create_default_context(cafile=str(pki.ca))
        async with aiohttp.ClientSession() as session:
            url = f"https://127.0.0.1:{app.http.port}/healthz"
            async with session.get(url, ssl=client_tls) as reply:
                assert reply.status == 200


async def test_mutual_tls_on_http(pki: Pki, jwks: dict[str, Any]) -> None:
    async with App(tls_config(pki, jwks, mutual=True)) as app:
        assert app.http is not None
        url = f"https://127.0.0.1:{app.http.port}/healthz"
        with_cert = ssl.create_default_context(cafile=str(pki.ca))
        with_cert.load_cert_chain(pki.client_cert, pki.client_key)
        without = ssl.create_default_context(cafile=str(pki.ca))
        async with aiohttp.ClientSession() as session:
            async with session.get(url, ssl=with_cert) as reply:
                assert reply.status == 200
            with pytest.raises(aiohttp.ClientError):
                async with session.get(url, ssl=without) as reply:
                    await reply.read()
