from __future__ import annotations

import base64

import pytest

from authz.core.errors import CheckError
from authz.core.jws import parse_token
from authz.core.model import Identity
from authz.core.token_cache import TokenCache, cache_key, decoded_bytes
from authz.core.verify import Verifier
from tests import support
from tests.support import NOW, FakeClock, FixedKeys, Signer, b64json, fixed_keys
from tests.support.memory import texts_held_by

MAX_TOKEN_BYTES = 8192


def identity(sub: str = "a", padding: int = 100) -> Identity:
    """A decoded payload as the verifier makes it, with its base64url segment."""
    payload = b64json({"sub": sub, "pad": "x" * padding})
    return Identity("corp", {"sub": sub, "pad": "x" * padding}, payload)


def key(n: int) -> bytes:
    return cache_key("corp", f"token-{n}")


def test_lru_bounded_by_count_and_bytes() -> None:
    cache = TokenCache(max_entries=3, max_bytes=10**6)
    for i in range(4):
        cache.put(key(i), identity(), None, None, None)
    assert len(cache) == 3 and cache.get(key(0)) is None
    assert cache.get(key(1)) is not None  # now the most recent
    cache.put(key(9), identity(), None, None, None)
    assert cache.get(key(2)) is None and cache.get(key(1)) is not None

    small = TokenCache(max_entries=100, max_bytes=8000)
    for i in range(10):
        small.put(key(i), identity(padding=300), None, None, None)
    assert small.bytes <= 8000 and 0 < len(small) < 10
    kept = len(small)
    small.drop(key(9))
    assert len(small) == kept - 1


def test_only_recent_entries_stay_decoded() -> None:
    """A hit on a recent entry returns the very Identity stored; an older one is decoded
    again from its payload text, to the same claims and payload segment."""
    cache = TokenCache(max_entries=100, max_bytes=10**6, hot_entries=2)
    stored = [identity(sub=f"user-{i}") for i in range(3)]
    for i, one in enumerate(stored):
        cache.put(key(i), one, None, None, None)
    entry = cache.get(key(2))
    assert entry is not None and cache.identity(key(2), entry, "corp") is stored[2]
    cold = cache.get(key(0))
    assert cold is not None
    decoded = cache.identity(key(0), cold, "corp")
    assert decoded is not stored[0] and decoded == stored[0]
    assert cache.identity(key(0), cold, "corp") is decoded  # decoded once, then kept


def test_bytes_follow_entries_in_and_out() -> None:
    cache = TokenCache(max_entries=100, max_bytes=10**6, hot_entries=1)
    for i in range(5):
        cache.put(key(i), identity(), None, None, None)
    assert cache.bytes > 0
    for i in range(5):
        cache.drop(key(i))
    assert (cache.bytes, len(cache)) == (0, 0)


def test_decoded_bytes_count_every_object_once() -> None:
    small = decoded_bytes(identity(padding=10))
    large = decoded_bytes(identity(padding=1000))
    assert large - small >= 2 * 990  # the padding string, and the payload segment
    shared = "y" * 500
    twice = Identity("corp", {"a": shared, "b": shared}, "e30")
    once = Identity("corp", {"a": shared, "b": "z"}, "e30")
    assert abs(decoded_bytes(twice) - decoded_bytes(once)) < 100


def test_providers_do_not_share_entries() -> None:
    assert cache_key("corp", "t") != cache_key("partner", "t")


def test_disabled_cache_keeps_nothing() -> None:
    cache = TokenCache(max_entries=0, max_bytes=10**6)
    cache.put(key(0), identity(), None, None, None)
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
    assert cache.get(cache_key("corp", token)) is None  # dropped, not kept around
    with pytest.raises(CheckError) as gone:
        await v.verify(parse_token(token, MAX_TOKEN_BYTES))
    assert gone.value.reason == "unknown_kid"


async def test_the_cache_keeps_a_hash_not_the_token(rsa_signer: Signer) -> None:
    keys = fixed_keys({"keys": [rsa_signer.jwk]}, ("RS256",))
    cache = cache_of()
    token = rsa_signer.token()
    await verifier(keys, cache, FakeClock()).verify(parse_token(token, MAX_TOKEN_BYTES))
    assert len(cache) == 1
    entry = cache.get(cache_key("corp", token))  # keyed by the token's hash
    assert entry is not None
    # What is kept: the hash and the verified payload; never the token, its header or its
    # signature, in any object the cache holds (its entries and its decoded identities).
    header, payload, signature = token.split(".")
    held = texts_held_by(cache, skip=entry.keys)
    assert held, "the walk found nothing: it would prove nothing"
    for text in held:
        assert signature not in text and header not in text and token not in text
    assert payload in held  # the walk reaches the hot identity's payload segment
    assert entry.payload == base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
