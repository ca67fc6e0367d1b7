"""A bounded cache of verified tokens, so a repeated token skips parsing and the signature.

Keyed by a 128-bit BLAKE2b hash of the token (the token itself is not kept), per provider.
Bounded by entry count and by an estimate of the bytes held; least recently used entries
go first. Only tokens that passed every check are stored. An entry is used only while the
key set that verified it is still the provider's current one (a refresh that changes the
keys drops it) and until the token's exp; the time checks and the rule still run on every
hit.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from authz.core.model import Identity

# Measured: an entry costs about 1000 bytes plus four times its payload's length in Python
# objects (the claims dict with its strings, the payload text, the key and the slot).
_ENTRY_OVERHEAD_BYTES = 1000
_BYTES_PER_PAYLOAD_CHAR = 4


@dataclass(frozen=True, slots=True)
class CachedToken:
    identity: Identity
    keys: Any  # the KeySet that verified it: the entry is valid only while it is current
    exp: float | None
    nbf: float | None
    size: int


def token_digest(token: str) -> bytes:
    # surrogatepass: a header aiohttp decoded from bytes that are not UTF-8 holds lone
    # surrogates; such a token is malformed, and must get there rather than crash here.
    return hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class TokenCache:
    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries  # 0 keeps nothing
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, bytes], CachedToken] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, provider: str, digest: bytes) -> CachedToken | None:
        entry = self._entries.get((provider, digest))
        if entry is not None:
            self._entries.move_to_end((provider, digest))
        return entry

    def put(
        self,
        provider: str,
        digest: bytes,
        identity: Identity,
        keys: Any,
        exp: float | None,
        nbf: float | None,
    ) -> None:
        if self.max_entries <= 0:
            return
        size = _ENTRY_OVERHEAD_BYTES + _BYTES_PER_PAYLOAD_CHAR * len(identity.raw_payload)
        key = (provider, digest)
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old.size
        self._entries[key] = CachedToken(identity, keys, exp, nbf, size)
        self.bytes += size
        while self._entries and (
            len(self._entries) > self.max_entries or self.bytes > self.max_bytes
        ):
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= evicted.size

    def drop(self, provider: str, digest: bytes) -> None:
        entry = self._entries.pop((provider, digest), None)
        if entry is not None:
            self.bytes -= entry.size
