from __future__ import annotations

import pytest

from authz.core.errors import CheckError
from authz.core.jws import parse_token
from authz.core.model import Identity
from authz.core.token_cache import TokenCache, token_digest
from authz.core.verify import Verifier
from tests import support
from tests.support import NOW, FakeClock, FixedKeys, Signer, fixed_keys

MAX_TOKEN_BYTES = 8192


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
    cache = cache_of()
    cache.put("corp", b"d", identity(), None, None, None)
    assert cache.get("partner", b"d") is None


def test_disabled_cache_keeps_nothing() -> None:
    cache = TokenCache(max_entries=0, max_bytes=10**6)
    cache.put("corp", b"d", identity(), None, None, None)
    assert len(cache) == 0


def cache_of(size: int = 100) -> TokenCache:
    return TokenCache(max_entries=size, max_bytes=10**6)


def verifier(keys: FixedKeys, cache: TokenCache, clock: FakeClock) -> Verifier:
    return support.verifier(keys=keys, cache=cache, clock=clock)


async def test_verified_tokens_are_cached_and_rechecked_in_time(rsa_signer: Signer) -> None:
    keys = fixed_keys({"keys": [rsa_signer.jwk]}, ("RS256",))
    cache, clock = cache_of(), FakeClock()
    v = verifier(keys, cache, clock)
    token = rsa_signer.token(exp=int(NOW) + 100)
    assert v.cached(token) is None
    first = await v.verify(parse_token(token, MAX_TOKEN_BYTES))
    assert v.cached(token) is first

    clock.now += 100 + 61  # past exp and the clock skew
    assert v.cached(token) is None  # dropped: the full path gives the answer
    assert len(cache) == 0
    with pytest.raises(CheckError) as expired:
        await v.verify(parse_token(token, MAX_TOKEN_BYTES))
    assert expired.value.reason == "token_expired"


async def test_failed_verifications_are_not_cached(rsa_signer: Signer) -> None:
    keys = fixed_keys({"keys": [rsa_signer.jwk]}, ("RS256",))
    cache = cache_of()
    v = verifier(keys, cache, FakeClock())
    for bad in (rsa_signer.token(aud="other"), rsa_signer.token()[:-4] + "AAAA"):
        with pytest.raises(CheckError):
            await v.verify(parse_token(bad, MAX_TOKEN_BYTES))
    assert len(cache) == 0


async def test_entries_die_with_their_key_set(rsa_signer: Signer, other_rsa_signer: Signer) -> None:
    keys = fixed_keys({"keys": [rsa_signer.jwk]}, ("RS256",))
    cache = cache_of()
    v = verifier(keys, cache, FakeClock())
    token = rsa_signer.token()
    await v.verify(parse_token(token, MAX_TOKEN_BYTES))
    keys.keys = fixed_keys({"keys": [other_rsa_signer.jwk]}, ("RS256",)).keys  # rotated away
    assert v.cached(token) is None
    assert cache.get("corp", token_digest(token)) is None  # dropped, not kept around
    with pytest.raises(CheckError) as gone:
        await v.verify(parse_token(token, MAX_TOKEN_BYTES))
    assert gone.value.reason == "unknown_kid"


async def test_the_cache_keeps_a_hash_not_the_token(rsa_signer: Signer) -> None:
    keys = fixed_keys({"keys": [rsa_signer.jwk]}, ("RS256",))
    cache = cache_of()
    token = rsa_signer.token()
    await verifier(keys, cache, FakeClock()).verify(parse_token(token, MAX_TOKEN_BYTES))
    assert len(cache) == 1
    entry = cache.get("corp", token_digest(token))  # keyed by the token's hash
    assert entry is not None
    # What is kept: the hash and the verified payload; never the header or the signature.
    header, _, signature = token.split(".")
    assert signature not in repr(entry) and header not in repr(entry)
