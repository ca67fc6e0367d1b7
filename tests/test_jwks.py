from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from authz.crypto import public_jwk
from authz.errors import AlgorithmNotAllowed, JwksError, UnknownKey
from authz.jwks import (
    AiohttpFetcher,
    FileKeySource,
    KeySet,
    RemoteKeySource,
    StaticKeySource,
    parse_jwks,
)
from tests.conftest import FakeIdp, Signer

ALGS = ("RS256", "ES256")


def pem_of(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_parse_builds_keys_per_algorithm(rsa_signer: Signer, ec_signer: Signer) -> None:
    keys = parse_jwks({"keys": [rsa_signer.jwk, ec_signer.jwk]}, ALGS)
    assert keys.size == 2
    assert keys.find(rsa_signer.kid, "RS256").algorithm == "RS256"
    assert keys.find(ec_signer.kid, "ES256").kid == ec_signer.kid
    with pytest.raises(AlgorithmNotAllowed):
        keys.find(rsa_signer.kid, "ES256")
    with pytest.raises(UnknownKey):
        keys.find("nope", "RS256")


def test_rsa_key_without_alg_serves_every_allowed_rsa_algorithm(rsa_signer: Signer) -> None:
    jwk = {k: v for k, v in rsa_signer.jwk.items() if k != "alg"}
    keys = parse_jwks({"keys": [jwk]}, ("RS256", "RS384", "ES256"))
    assert set(keys.by_kid[rsa_signer.kid]) == {"RS256", "RS384"}


def _skipped(rsa_signer: Signer, ec_signer: Signer) -> list[tuple[str, Any]]:
    small = public_jwk(pem_of(rsa.generate_private_key(public_exponent=65537, key_size=1024)))
    p384 = public_jwk(pem_of(ec.generate_private_key(ec.SECP384R1())))
    return [
        ("encryption key", {**rsa_signer.jwk, "use": "enc"}),
        ("key_ops without verify", {**rsa_signer.jwk, "key_ops": ["encrypt"]}),
        ("private member", {**rsa_signer.jwk, "d": "AAAA"}),
        ("symmetric", {"kty": "oct", "k": "c2VjcmV0", "kid": "h"}),
        ("rsa 1024", small),
        ("curve mismatch", {**p384, "alg": "ES256"}),
        ("p384 without ES384 allowed", {k: v for k, v in p384.items() if k != "alg"}),
        ("alg not allowed", {**rsa_signer.jwk, "alg": "RS512"}),
        ("garbage modulus", {**rsa_signer.jwk, "n": "!!"}),
        ("not an object", "key"),
        ("unknown kty", {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}),
    ]


def test_unusable_keys_are_skipped(rsa_signer: Signer, ec_signer: Signer, caplog) -> None:
    for name, bad in _skipped(rsa_signer, ec_signer):
        keys = parse_jwks({"keys": [bad, ec_signer.jwk]}, ALGS)
        assert keys.size == 1, name
        with pytest.raises(JwksError, match="no usable signing key"):
            parse_jwks({"keys": [bad]}, ALGS)
    assert "AAAA" not in caplog.text


def test_duplicate_kid_keeps_the_first(rsa_signer: Signer, other_rsa_signer: Signer) -> None:
    twin = {**other_rsa_signer.jwk, "kid": rsa_signer.kid}
    keys = parse_jwks({"keys": [rsa_signer.jwk, twin]}, ALGS)
    assert keys.size == 1


@pytest.mark.parametrize("document", [[], {}, {"keys": {}}, {"keys": []}, "x", None])
def test_invalid_documents(document: Any) -> None:
    with pytest.raises(JwksError):
        parse_jwks(document, ALGS)


class Listener:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, int | None]] = []

    async def __call__(self, provider: str, result: str, keys: KeySet | None) -> None:
        self.events.append((provider, result, keys.size if keys else None))


async def test_static_and_file_sources(tmp_path, rsa_signer: Signer) -> None:
    listener = Listener()
    static = StaticKeySource("s", ALGS, listener, {"keys": [rsa_signer.jwk]})
    await static.start()
    assert static.current() is not None
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [rsa_signer.jwk]}))
    file_source = FileKeySource("f", ALGS, listener, path)
    await file_source.start()
    assert file_source.current() is not None
    missing = FileKeySource("m", ALGS, listener, tmp_path / "nope.json")
    await missing.start()
    assert missing.current() is None
    assert listener.events == [("s", "success", 1), ("f", "success", 1), ("m", "failure", None)]


@pytest.fixture
async def fetcher():
    import aiohttp

    async with aiohttp.ClientSession() as session:
        yield AiohttpFetcher(session)


async def wait_for(predicate, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_remote_refresh_rotates_and_keeps_last_good(
    idp: FakeIdp, fetcher: AiohttpFetcher, rsa_signer: Signer, other_rsa_signer: Signer, caplog
) -> None:
    caplog.set_level(logging.WARNING)
    listener = Listener()
    idp.serve({"keys": [rsa_signer.jwk]})
    source = RemoteKeySource(
        "corp", ALGS, listener, idp.uri, refresh_interval=0.05, timeout=1, fetcher=fetcher
    )
    await source.start()
    try:
        first = source.current()
        assert first is not None and rsa_signer.kid in first.by_kid

        # The IdP rotates: the new key appears without a restart.
        idp.serve({"keys": [other_rsa_signer.jwk]})
        await wait_for(lambda: other_rsa_signer.kid in source.current().by_kid)

        # A broken IdP never wipes the last good set.
        good = source.current()
        for broken in ([b"not json", 200], [{"keys": []}, 200], [{"error": "x"}, 500]):
            idp.serve(*broken)
            hits = idp.hits
            await wait_for(lambda h=hits: idp.hits > h + 1)
            assert source.current() is good
        assert ("corp", "failure", good.size) in listener.events
        assert "HTTP 500" in caplog.text
    finally:
        await source.stop()


async def test_remote_timeout_is_a_failure(
    idp: FakeIdp, fetcher: AiohttpFetcher, rsa_signer: Signer
) -> None:
    listener = Listener()
    idp.serve({"keys": [rsa_signer.jwk]})
    idp.delay_s = 1.0
    source = RemoteKeySource(
        "corp", ALGS, listener, idp.uri, refresh_interval=60, timeout=0.1, fetcher=fetcher
    )
    assert await source.refresh() is False
    assert source.current() is None
    assert listener.events == [("corp", "failure", None)]


async def test_remote_unreachable(fetcher: AiohttpFetcher) -> None:
    from dev.stack import free_port

    listener = Listener()
    source = RemoteKeySource(
        "corp",
        ALGS,
        listener,
        f"http://127.0.0.1:{free_port()}/certs",
        refresh_interval=60,
        timeout=1,
        fetcher=fetcher,
    )
    await source.start()
    await source.stop()
    assert source.current() is None
    assert listener.events == [("corp", "failure", None)]
