"""Stand-in keys: each algorithm authz verifies can be minted offline, and the key set
made with the key verifies its tokens (and nothing else)."""

from __future__ import annotations

import pytest

from authz.core.jws import parse_token
from authz.keys.algorithms import ALGORITHMS
from authz.keys.stand_in import stand_in_key


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_a_stand_in_key_signs_what_its_key_set_verifies(algorithm):
    key = stand_in_key((algorithm,))
    assert key.algorithm == algorithm
    token = parse_token(key.sign({"sub": "alice"}, typ="at+jwt"), 16384)
    assert token.header == {"alg": algorithm, "kid": key.kid, "typ": "at+jwt"}
    verify_key = key.keys.find(key.kid, algorithm)
    assert verify_key.verify(token.signing_input, token.signature)
    tampered = parse_token(key.sign({"sub": "mallory"}), 16384)
    assert not verify_key.verify(token.signing_input, tampered.signature)


def test_the_cheapest_allowed_algorithm_is_chosen():
    assert stand_in_key(("RS256", "ES256")).algorithm == "ES256"
    assert stand_in_key(("PS384",)).algorithm == "PS384"


def test_each_stand_in_key_is_new():
    first, second = stand_in_key(("ES256",)), stand_in_key(("ES256",))
    assert first.kid != second.kid
    token = parse_token(first.sign({"sub": "a"}), 16384)
    assert second.keys.lacks(first.kid)
    assert token.kid == first.kid
