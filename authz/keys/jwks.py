"""Key sets: a JWKS validated and parsed once into an immutable lookup table.

Nothing here runs on the request path except ``KeySet.find``, a dictionary lookup.
Where key sets come from, and how they are refreshed, is sources.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from authz.core.errors import AlgorithmNotAllowed, JwksError, KeyRejected, UnknownKey
from authz.keys.algorithms import ALGORITHMS
from authz.keys.crypto import VerifyKey, construct_hmac_key, construct_key

log = logging.getLogger(__name__)

# A JWKS written into the config itself is refused beyond this many keys, as a fetched or
# file JWKS is beyond its configured max_keys.
INLINE_MAX_KEYS = 100


@dataclass(frozen=True, slots=True)
class KeySet:
    """The usable keys of one JWKS, each bound to the algorithms it may verify."""

    by_kid: Mapping[str, Mapping[str, VerifyKey]]
    by_alg: Mapping[str, tuple[VerifyKey, ...]]
    size: int
    ignore_kid: bool = False  # a shared secret without a kid: tokens' kids mean nothing

    def lacks(self, kid: str) -> bool:
        """Whether ``kid`` names a key this set does not have (a refetch may find it)."""
        return kid not in self.by_kid and not self.ignore_kid

    def find(self, kid: str | None, algorithm: str) -> VerifyKey:
        if kid is None or self.ignore_kid:
            # Without a kid the key must be unambiguous: exactly one usable for this algorithm.
            candidates = self.by_alg.get(algorithm, ())
            if len(candidates) != 1:
                raise UnknownKey("token has no kid and the key is ambiguous or missing")
            return candidates[0]
        keys = self.by_kid.get(kid)
        if keys is None:
            raise UnknownKey("kid not in key set")
        key = keys.get(algorithm)
        if key is None:
            raise AlgorithmNotAllowed("the key for this kid does not verify this algorithm")
        return key


def parse_jwks(document: Any, algorithms: tuple[str, ...], max_keys: int) -> KeySet:
    """Validate a JWKS document and build its key set; JwksError if no key is usable."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError('a JWKS must be a JSON object with a "keys" list')
    if len(document["keys"]) > max_keys:
        raise JwksError(f"the JWKS has more than {max_keys} keys")
    by_kid: dict[str, dict[str, VerifyKey]] = {}
    by_alg: dict[str, list[VerifyKey]] = {}
    size = 0
    for index, jwk in enumerate(document["keys"]):
        usable = _usable_algorithms(index, jwk, algorithms)
        built: dict[str, VerifyKey] = {}
        for alg in usable:
            try:
                built[alg] = construct_key(jwk, alg)
            except KeyRejected as exc:
                log.warning("JWKS key %d skipped: %s", index, exc)
                break
        else:
            if not built:
                continue
            kid = jwk.get("kid")
            if isinstance(kid, str):
                if kid in by_kid:
                    log.warning("JWKS key %d skipped: duplicate kid (the first one is used)", index)
                    continue
                by_kid[kid] = built
            size += 1
            for alg, key in built.items():
                by_alg.setdefault(alg, []).append(key)
    if size == 0:
        raise JwksError("the JWKS holds no usable signing key")
    return KeySet(by_kid, {alg: tuple(keys) for alg, keys in by_alg.items()}, size)


def _usable_algorithms(index: int, jwk: Any, algorithms: tuple[str, ...]) -> tuple[str, ...]:
    if not isinstance(jwk, dict):
        log.warning("JWKS key %d skipped: not an object", index)
        return ()
    if jwk.get("use", "sig") != "sig":
        return ()
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        return ()
    kty = jwk.get("kty")
    if kty not in ("RSA", "EC", "OKP"):
        # oct (shared secrets) never verify tokens from a JWKS; other types are unknown.
        log.warning("JWKS key %d skipped: key type %r is not accepted", index, str(kty)[:16])
        return ()
    pinned = jwk.get("alg")
    if pinned is not None:
        # A key's own alg pins it: tokens may use it with that algorithm only.
        if not isinstance(pinned, str) or pinned not in algorithms:
            return ()
        return (pinned,) if ALGORITHMS[pinned].kty == kty else ()
    # An EC or OKP key without alg serves only the algorithms of its own curve.
    return tuple(
        alg
        for alg in algorithms
        if ALGORITHMS[alg].kty == kty and (kty == "RSA" or ALGORITHMS[alg].curve == jwk.get("crv"))
    )


def parse_json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise JwksError(f"the {what} is not valid JSON") from exc


def parse_jwks_bytes(data: bytes, algorithms: tuple[str, ...], max_keys: int) -> KeySet:
    return parse_jwks(parse_json(data, "JWKS"), algorithms, max_keys)


def hmac_key_set(secret: bytes, algorithms: tuple[str, ...], kid: str | None) -> KeySet:
    """The key set of a shared_secret provider: one secret, one key per HS algorithm."""
    try:
        built = {alg: construct_hmac_key(secret, alg, kid) for alg in algorithms}
    except KeyRejected as exc:
        raise JwksError(str(exc)) from exc
    by_kid = {kid: built} if kid is not None else {}
    return KeySet(by_kid, {alg: (key,) for alg, key in built.items()}, 1, ignore_kid=kid is None)
