"""Shared test keys and a signer that can produce any token, well-formed or not."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from authz.keys.crypto import public_jwk

ISSUER = "https://idp.test/realms/corp"
AUDIENCE = "api"
NOW = 1_800_000_000.0


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value).encode() if not isinstance(value, bytes) else value)


@dataclass
class Signer:
    """Signs arbitrary header/payload pairs with one private key."""

    key: Any
    pem: bytes
    jwk: dict[str, str]

    @property
    def kid(self) -> str:
        return self.jwk["kid"]

    @property
    def alg(self) -> str:
        return self.jwk["alg"]

    def sign(self, signing_input: bytes) -> bytes:
        if isinstance(self.key, rsa.RSAPrivateKey):
            return self.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        r, s = decode_dss_signature(self.key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def raw(self, header: Any, payload: Any) -> str:
        signing_input = f"{b64json(header)}.{b64json(payload)}"
        return f"{signing_input}.{b64(self.sign(signing_input.encode()))}"

    def claims(self, **overrides: Any) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "alice",
            "iat": int(NOW),
            "exp": int(NOW) + 600,
        }
        for name, value in overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def token(self, header: dict[str, Any] | None = None, **claims: Any) -> str:
        head = {"alg": self.alg, "typ": "JWT", "kid": self.kid, **(header or {})}
        return self.raw({k: v for k, v in head.items() if v is not None}, self.claims(**claims))


def _signer(key: Any) -> Signer:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Signer(key, pem, public_jwk(pem))


@pytest.fixture(scope="session")
def rsa_signer() -> Signer:
    return _signer(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="session")
def other_rsa_signer() -> Signer:
    return _signer(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="session")
def ec_signer() -> Signer:
    return _signer(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="session")
def jwks(rsa_signer: Signer, ec_signer: Signer) -> dict[str, Any]:
    return {"keys": [rsa_signer.jwk, ec_signer.jwk]}


@pytest.fixture
def now() -> float:
    return NOW


def fixed_clock(at: float = NOW) -> Any:
    return lambda: at


def wall_clock_claims() -> dict[str, int]:
    now = int(time.time())
    return {"iat": now, "exp": now + 600}


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


@pytest.fixture
async def idp():
    fake = FakeIdp()
    await fake.server.start_server()
    yield fake
    await fake.server.close()


async def wait_for(predicate: Any, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


class FixedKeys:
    """A KeyLookup holding one key set that never changes; counts unknown-kid refetches."""

    def __init__(self, keys: Any) -> None:
        self.keys = keys
        self.refetches = 0

    def current(self) -> Any:
        return self.keys

    async def first_keys(self) -> Any:
        return self.keys

    async def refetch_for_unknown_kid(self) -> bool:
        self.refetches += 1
        return False
