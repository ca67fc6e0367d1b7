"""The JWKS fetcher against a real local HTTP server."""

from __future__ import annotations

import aiohttp
import pytest

from authz.errors import JwksHttpError, JwksNetworkError, JwksTimeout
from authz.fetch import AiohttpFetcher, cache_max_age
from dev.stack import free_port
from tests.conftest import FakeIdp


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as client:
        yield client


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
