"""A bounded cache of verified tokens, so a repeated token skips parsing and the signature.

Keyed by a 128-bit BLAKE2b hash of the provider's name and the token (the token itself is
not kept). Only tokens that passed every check are stored. An entry is used only while
the key set that verified it is still the provider's current one (a refresh that changes
the keys drops it) and until the token's exp; the time checks and the rule still run on
every hit.

What an entry keeps is what a hit needs, compactly: the payload's JSON text (the claims
are decoded from it again when needed; the base64url payload is its canonical encoding),
the key set, exp and nbf. The most recently used entries (``hot_entries``) also keep
their decoded Identity, so that a token in steady use is not decoded on every hit and
answers with the very same claims objects (the gRPC adapter reuses its response for
them). Bounded by entry count and by the bytes entries take in the process, measured
(see bench/cache_memory.py); least recently used entries go first.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from collections import OrderedDict
from typing import Any

from authz.core.jws import b64url
from authz.core.model import Identity

# Measured in CPython 3.11 (bench/cache_memory.py): an entry's fixed cost (ordered dict
# slot, key, entry object, exp) and its payload text's cost per byte (allocator rounding
# included). A decoded Identity is measured as it is made: its objects' sizes, rounded
# up to the allocator's 16 bytes, plus its slot in the hot list and its header memo.
ENTRY_BYTES = 260
BYTES_PER_PAYLOAD_BYTE = 1.25
HOT_SLOT_BYTES = 200
# A hot Identity also keeps its rendered identity headers (Identity.rendered): measured
# with tracemalloc for three claim headers, one of them a joined list.
RENDERED_BYTES = 352
HOT_ENTRIES = 4096


class CachedToken:
    __slots__ = ("exp", "keys", "nbf", "payload", "tenant")

    def __init__(
        self,
        payload: bytes,
        keys: Any,
        exp: float | None,
        nbf: float | None,
        tenant: str | None = None,
    ) -> None:
        self.payload = payload  # the JSON text of the payload, as signed
        self.keys = keys  # the KeySet that verified it: valid only while it is current
        self.exp = exp
        self.nbf = nbf
        self.tenant = tenant  # a multi-tenant provider's tenant (whose keys those are)


def cache_key(provider: str, token: str) -> bytes:
    # surrogatepass: a header aiohttp decoded from bytes that are not UTF-8 holds lone
    # surrogates; such a token is malformed, and must get there rather than crash here.
    digest = hashlib.blake2b(provider.encode(), digest_size=16)
    digest.update(b"\0" + token.encode("utf-8", "surrogatepass"))
    return digest.digest()


def _entry_bytes(payload: bytes) -> int:
    return ENTRY_BYTES + int(BYTES_PER_PAYLOAD_BYTE * len(payload))


def _allocated(obj: object) -> int:
    return (sys.getsizeof(obj) + 15) & ~15


def decoded_bytes(identity: Identity) -> int:
    """What a decoded Identity holds in memory: its claims (every container and value,
    each counted once), its payload text and itself."""
    total = HOT_SLOT_BYTES + RENDERED_BYTES + _allocated(identity)
    total += _allocated(identity.raw_payload)
    seen: set[int] = set()
    pending: list[object] = [identity.claims]
    while pending:
        obj = pending.pop()
        if id(obj) in seen or obj is None or isinstance(obj, bool):
            continue
        seen.add(id(obj))
        total += _allocated(obj)
        if isinstance(obj, dict):
            pending.extend(obj.keys())
            pending.extend(obj.values())
        elif isinstance(obj, list):
            pending.extend(obj)
    return total


class TokenCache:
    def __init__(self, max_entries: int, max_bytes: int, hot_entries: int = HOT_ENTRIES) -> None:
        self.max_entries = max_entries  # 0 keeps nothing
        self.max_bytes = max_bytes
        self.hot_entries = max(1, hot_entries)
        self._entries: OrderedDict[bytes, CachedToken] = OrderedDict()
        self._hot: OrderedDict[bytes, tuple[Identity, int]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> CachedToken | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def identity(self, key: bytes, entry: CachedToken, provider: str) -> Identity:
        """The Identity of ``entry`` (from get): kept while hot, decoded otherwise."""
        hot = self._hot.get(key)
        if hot is not None:
            self._hot.move_to_end(key)
            return hot[0]
        # The text passed strict parsing when the token was verified: plain json reads it
        # the same, and the canonical base64url of it is the payload as signed.
        claims = json.loads(entry.payload)
        raw = b64url(entry.payload)
        identity = Identity(provider, claims, raw, entry.tenant)
        self._make_hot(key, identity)
        self._evict()
        return identity

    def put(
        self,
        key: bytes,
        identity: Identity,
        keys: Any,
        exp: float | None,
        nbf: float | None,
        tenant: str | None = None,
    ) -> None:
        if self.max_entries <= 0:
            return
        self.drop(key)
        payload = base64.urlsafe_b64decode(
            identity.raw_payload + "=" * (-len(identity.raw_payload) % 4)
        )
        self._entries[key] = CachedToken(payload, keys, exp, nbf, tenant)
        self.bytes += _entry_bytes(payload)
        self._make_hot(key, identity)
        self._evict()

    def drop(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= _entry_bytes(entry.payload)
            hot = self._hot.pop(key, None)
            if hot is not None:
                self.bytes -= hot[1]

    def _make_hot(self, key: bytes, identity: Identity) -> None:
        size = decoded_bytes(identity)
        self._hot[key] = (identity, size)
        self.bytes += size
        while len(self._hot) > self.hot_entries:
            _, (_, cooled) = self._hot.popitem(last=False)
            self.bytes -= cooled

    def _evict(self) -> None:
        while self._entries and (
            len(self._entries) > self.max_entries or self.bytes > self.max_bytes
        ):
            self.drop(next(iter(self._entries)))
