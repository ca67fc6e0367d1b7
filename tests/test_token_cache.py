from __future__ import annotations

import pytest

from authz.config import Provider
from authz.core.errors import CheckError
from authz.core.model import Identity
from authz.core.token_cache import TokenCache, token_digest
from authz.core.verify import Verifier, parse_token
from authz.keys.jwks import parse_jwks
from tests.conftest import AUDIENCE, ISSUER, NOW, FixedKeys, Signer


def identity(payload: str = "x" * 100) -> Identity:
    return Identity("corp", {"sub": "a"}, payload)


def test_lru_bounded_by_count_and_bytes() -> None:
    cache = TokenCache(max_entries=3, max_bytes=10**6)
    for i in range(4):
        cache.put("corp", bytes([i]), identity(), None, None, None)
    assert len(cache) == 3 and cache.get("corp", bytes([0])) is None
    assert cache.get("corp", bytes([1])) is not None  # now the most recent
    cache.put("corp", bytes([9]), identity(), None, None, None)
    assert cache.get("corp", bytes([2])) is None and cache.get("corp", bytes([1])) is not None

    small = TokenCache(max_entries=100, max_bytes=5000)
    for i in range(10):
        small.put("corp", bytes([i]), identity("y" * 300), None, None, None)
    assert small.bytes <= 5000 and len(small) == 2
    small.drop("corp", bytes([9]))
    assert len(small) == 1


def test_providers_do_not_share_entries() -> None:
    cache = TokenCache()
    cache.put("corp", b"d", identity(), None, None, None)
    assert cache.get("partner", b"d") is None


def test_disabled_cache_keeps_nothing() -> None:
    cache = TokenCache(max_entries=0)
    cache.put("corp", b"d", identity(), None, None, None)
    assert len(cache) == 0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def verifier(keys: FixedKeys, cache: TokenCache, clock: Clock) -> Verifier:
    provider = Provider.model_validate(
        {"issuer": ISSUER, "audiences": [AUDIENCE], "jwks": {"inline": {"keys": []}}}
    )
    return Verifier.for_provider("corp", provider, keys, clock, cache)


async def test_verified_tokens_are_cached_and_rechecked_in_time(rsa_signer: Signer) -> None:
    keys = FixedKeys(parse_jwks({"keys": [rsa_signer.jwk]}, ("RS256",)))
    cache, clock = TokenCache(), Clock()
    v = verifier(keys, cache, clock)
    token = rsa_signer.token(exp=int(NOW) + 100)
    assert v.cached(token) is None
    first = await v.verify(parse_token(token))
    assert v.cached(token) is first
    assert cache.hits == 1

    clock.now += 100 + 61  # past exp and the clock skew
    assert v.cached(token) is None  # dropped: the full path gives the answer
    assert len(cache) == 0
    with pytest.raises(CheckError) as expired:
        await v.verify(parse_token(token))
    assert expired.value.reason == "token_expired"


async def test_failed_verifications_are_not_cached(rsa_signer: Signer) -> None:
    keys = FixedKeys(parse_jwks({"keys": [rsa_signer.jwk]}, ("RS256",)))
    cache = TokenCache()
    v = verifier(keys, cache, Clock())
    for bad in (rsa_signer.token(aud="other"), rsa_signer.token()[:-4] + "AAAA"):
        with pytest.raises(CheckError):
            await v.verify(parse_token(bad))
    assert len(cache) == 0


async def test_entries_die_with_their_key_set(rsa_signer: Signer, other_rsa_signer: Signer) -> None:
    keys = FixedKeys(parse_jwks({"keys": [rsa_signer.jwk]}, ("RS256",)))
    cache = TokenCache()
    v = verifier(keys, cache, Clock())
    token = rsa_signer.token()
    await v.verify(parse_token(token))
    keys.keys = parse_jwks({"keys": [other_rsa_signer.jwk]}, ("RS256",))  # rotated away
    assert v.cached(token) is None
    assert cache.get("corp", token_digest(token)) is None  # dropped, not kept around
    with pytest.raises(CheckError) as gone:
        await v.verify(parse_token(token))
    assert gone.value.reason == "unknown_kid"


async def test_the_cache_keeps_a_hash_not_the_token(rsa_signer: Signer) -> None:
    keys = FixedKeys(parse_jwks({"keys": [rsa_signer.jwk]}, ("RS256",)))
    cache = TokenCache()
    token = rsa_signer.token()
    await verifier(keys, cache, Clock()).verify(parse_token(token))
    [(provider, digest)] = list(cache._entries)
    assert (provider, digest) == ("corp", token_digest(token))
    entry = cache._entries[(provider, digest)]
    # What is kept: the hash and the verified payload; never the header or the signature.
    header, _, signature = token.split(".")
    assert signature not in repr(entry) and header not in repr(entry)
