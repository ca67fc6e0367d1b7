"""TLS and mutual TLS on authz's own listeners."""

from __future__ import annotations

import asyncio
import socket
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
from tests.support.pki import Pki, make_pki, renew_server


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


def served_serial(pki: Pki, port: int, alpn: str) -> int:
    """The serial number of the certificate a listener presents to a trusted client."""
    from cryptography import x509

    context = ssl.create_default_context(cafile=pki.ca)
    context.load_cert_chain(pki.client_cert, pki.client_key)
    context.set_alpn_protocols([alpn])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def test_a_renewed_certificate_is_served_without_a_restart(
    tmp_path: Path, jwks: dict[str, Any], rsa_signer: Signer, caplog: pytest.LogCaptureFixture
) -> None:
    """cert-manager renews weeks before expiry and the kubelet swaps the files: the next
    handshakes present the new certificate, on gRPC and on the HTTP listener. A renewal
    that does not load (a key that is not the certificate's) keeps the last one."""
    pki = make_pki(tmp_path / "pki")
    token = rsa_signer.token(**wall_clock_claims())
    async with App(tls_config(pki, jwks, mutual=True)) as app:
        assert app.grpc is not None
        trusted = credentials(pki, pki.client_cert, pki.client_key)
        ports = {"h2": app.grpc.port, "http/1.1": app.http.port}

        async def serials() -> set[int]:  # in a thread: the listeners run on this loop
            return {
                await asyncio.to_thread(served_serial, pki, port, alpn)
                for alpn, port in ports.items()
            }

        first = await serials()
        renewed = renew_server(pki)
        assert renewed not in first
        async with asyncio.timeout(10):
            while await serials() != {renewed}:
                await asyncio.sleep(0.2)
        assert (await check(app.grpc.port, trusted, token)).status.code == code_pb2.OK
        # Another key type: served alone (loaded beside the old one, OpenSSL would keep
        # the old certificate for clients preferring its type).
        other_type = renew_server(pki, rsa_key=True)
        async with asyncio.timeout(10):
            while await serials() != {other_type}:
                await asyncio.sleep(0.2)
        caplog.clear()
        renew_server(pki, matching_key=False)  # a broken pair: never served
        await asyncio.sleep(2.5)  # more than one look at the files by each listener
        assert await serials() == {other_type}
        assert (await check(app.grpc.port, trusted, token)).status.code == code_pb2.OK
        refused = [r for r in caplog.records if "renewed TLS files not taken" in r.message]
        assert 1 <= len(refused) <= 2  # once per listener, not once a look


def test_the_http_listener_trusts_only_the_configured_client_ca(pki: Pki) -> None:
    """Never the system's CAs as well: a public CA's client certificate is no client."""
    from authz.runtime.tls_files import TlsFiles

    files = TlsFiles(pki.server_cert, pki.server_key, pki.ca, where="listen.http_tls")
    context = files.serving_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert len(context.get_ca_certs()) == 1
