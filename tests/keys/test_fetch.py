"""The JWKS fetcher against a real local HTTP server."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from authz.core.errors import JwksError, JwksHttpError, JwksNetworkError, JwksTimeout
from authz.keys.fetch import AiohttpFetcher, cache_max_age, ssl_context_for
from dev.stack import free_port
from tests.support import FakeIdp


def fetcher(session: aiohttp.ClientSession, **overrides: float) -> AiohttpFetcher:
    settings = {"timeout_s": 2.0, "connect_timeout_s": 1.0, "max_bytes": 1024, **overrides}
    return AiohttpFetcher(
        session,
        timeout_s=settings["timeout_s"],
        connect_timeout_s=settings["connect_timeout_s"],
        max_bytes=int(settings["max_bytes"]),
    )


async def test_body_etag_and_max_age(idp: FakeIdp, session) -> None:
    idp.serve({"keys": []})
    idp.etag = '"v1"'
    idp.headers = {"cache-control": "public, max-age=120"}
    result = await fetcher(session)(idp.uri)
    assert result.body == b'{"keys": []}'
    assert (result.etag, result.max_age_s) == ('"v1"', 120.0)
    revalidated = await fetcher(session)(idp.uri, etag='"v1"')
    assert revalidated.body is None
    assert idp.conditional_hits == 1


async def test_errors_are_translated(idp: FakeIdp, session) -> None:
    idp.serve({"error": "x"}, status=503)
    with pytest.raises(JwksHttpError, match="HTTP 503"):
        await fetcher(session)(idp.uri)
    with pytest.raises(JwksNetworkError):
        await fetcher(session)(f"http://127.0.0.1:{free_port()}/certs")
    idp.serve({"keys": []})
    idp.delay_s = 1.0
    with pytest.raises(JwksTimeout):
        await fetcher(session, timeout_s=0.1)(idp.uri)


async def test_body_cap_is_enforced_while_reading(idp: FakeIdp, session) -> None:
    idp.serve(b"x" * 5000)
    with pytest.raises(JwksHttpError, match="larger than 1024 bytes"):
        await fetcher(session)(idp.uri)


async def test_slow_drip_hits_the_total_timeout(idp: FakeIdp, session) -> None:
    idp.serve({"keys": [], "padding": "x" * 200})
    idp.drip_s = 0.01
    with pytest.raises(JwksTimeout):
        await fetcher(session, timeout_s=0.3)(idp.uri)


async def test_redirects_only_within_the_origin(idp: FakeIdp, session) -> None:
    idp.serve({"keys": []})
    idp.redirect_to = "/certs"
    assert (await fetcher(session)(idp.url("/moved"))).body == b'{"keys": []}'
    idp.redirect_to = idp.uri.replace("127.0.0.1", "localhost")
    with pytest.raises(JwksHttpError, match="another origin"):
        await fetcher(session)(idp.url("/moved"))


@pytest.mark.parametrize("location", ["http://127.0.0.1:99999/x", "http://[zz/x"])
async def test_unparseable_redirects_are_http_errors(idp: FakeIdp, session, location: str):
    idp.redirect_to = location
    with pytest.raises(JwksHttpError):
        await fetcher(session)(idp.url("/moved"))


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("max-age=60", 60.0),
        ("public, max-age=300, must-revalidate", 300.0),
        ('max-age="5"', 5.0),
        ("s-maxage=10", None),
        ("no-store", None),
        ("no-cache, max-age=60", None),
        ("", None),
        (None, None),
    ],
)
def test_cache_max_age(header: str | None, seconds: float | None) -> None:
    assert cache_max_age(header) == seconds


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.local")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_with_a_private_ca_bundle(tmp_path: Path, session) -> None:
    cert, key = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def certs(_: web.Request) -> web.Response:
        return web.json_response({"keys": []})

    app = web.Application()
    app.router.add_get("/certs", certs)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_tls).start()
    try:
        uri = f"https://127.0.0.1:{port}/certs"
        with pytest.raises(JwksNetworkError):  # not trusted by the system store
            await fetcher(session)(uri)
        trusted = AiohttpFetcher(
            session,
            timeout_s=2,
            connect_timeout_s=1,
            max_bytes=1024,
            ssl_context=ssl_context_for(str(cert)),
        )
        assert (await trusted(uri)).body == b'{"keys": []}'
    finally:
        await runner.cleanup()
    with pytest.raises(JwksError, match="cannot load CA bundle"):
        ssl_context_for(str(tmp_path / "missing.pem"))
