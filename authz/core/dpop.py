"""DPoP proofs (RFC 9449): the caller shows it holds the key a token is bound to.

A proof is a JWT the client signs, per request, with the private key whose public half it
carries in the header (``jwk``). The resource server checks, in this order (RFC 9449 4.3
and 7.1): one well-formed JWS; ``typ: dpop+jwt``; an asymmetric algorithm from the
allowlist; a public ``jwk`` (a private member is an error) that verifies the signature;
``htm`` is the request method; ``htu`` is the request URI without query and fragment,
compared after RFC 3986 normalization; ``iat`` within ``max_age`` and the skew; ``ath`` is
base64url(SHA-256(access token)); the JWK's thumbprint (RFC 7638) is the token's
``cnf.jkt``; ``jti`` was not seen before within the window (replay).

Keys from the proof are built by the keys layer (``KeyFromJwk``); the replay store is a
``ReplayStore`` (in memory here, Redis in the keys layer). Nothing in a proof is trusted
before its signature verifies, and the token's binding is checked after the signature.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from authz.core.errors import (
    DpopBindingMismatch,
    DpopError,
    DpopInvalid,
    DpopMissing,
    DpopOriginUnknown,
    DpopReplayed,
    DpopUseNonce,
    KeyRejected,
    MalformedToken,
    ReplayStoreUnavailable,
)
from authz.core.jws import b64url, media_type, parse_token
from authz.core.model import RequestAttributes
from authz.core.verify import VerificationKey

Mode = Literal["required", "when_bound", "off"]
MAX_PROOF_BYTES = 8192
MAX_IAT = 253_402_300_799  # the end of year 9999, as for tokens
MAX_CACHED_KEYS = 4096  # proof keys kept built
# RFC 7638 3.2: the members of each key type a thumbprint hashes, in lexicographic order.
THUMBPRINT_MEMBERS = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
}
DEFAULT_PORTS = {"http": 80, "https": 443}
UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(r"%(.{0,2})")

# Builds a verification key for an algorithm from a public JWK; KeyRejected when it can't.
KeyFromJwk = Callable[[Mapping[str, Any], str], VerificationKey]


class ReplayStore(Protocol):
    async def first_use(self, key: bytes, ttl_s: float) -> bool:
        """Record ``key`` for ``ttl_s`` seconds; False when it was already recorded."""
        ...


@dataclass(frozen=True, slots=True)
class NonceSettings:
    rotation_s: float  # a nonce is accepted in its time slot and the next one
    secret: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class DpopSettings:
    mode: Mode
    algorithms: frozenset[str]  # asymmetric only (the config refuses others)
    max_age_s: float
    clock_skew_s: float
    external_origin: str | None  # scheme://authority the client used, when not the request's
    nonce: NonceSettings | None = None

    @property
    def replay_window_s(self) -> float:
        return self.max_age_s + 2 * self.clock_skew_s


def server_nonce(settings: NonceSettings, now: float, slots_back: int = 0) -> str:
    """The nonce of the time slot ``now`` falls in (or one ``slots_back`` before it)."""
    slot = int(now // settings.rotation_s) - slots_back
    return b64url(hmac.new(settings.secret, f"dpop-nonce:{slot}".encode(), "sha256").digest())


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638: SHA-256 of the required members' JSON, no whitespace, sorted keys."""
    members = THUMBPRINT_MEMBERS.get(jwk.get("kty"))  # type: ignore[arg-type]
    if members is None or not all(isinstance(jwk.get(m), str) for m in members):
        raise DpopInvalid("the proof's jwk is not an RSA, EC or OKP public key")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def access_token_hash(token: str) -> str:
    return b64url(hashlib.sha256(token.encode("ascii", "surrogateescape")).digest())


def normalize_escapes(path: str) -> str | None:
    """RFC 3986 6.2.2.1 and 6.2.2.2: upper-case hex digits, unreserved characters decoded;
    None for a malformed escape."""
    result = []
    position = 0
    for match in _ESCAPE.finditer(path):
        digits = match.group(1)
        if len(digits) != 2 or not all(c in "0123456789abcdefABCDEF" for c in digits):
            return None
        byte = int(digits, 16)
        result.append(path[position : match.start()])
        result.append(chr(byte) if byte in UNRESERVED else f"%{digits.upper()}")
        position = match.end()
    result.append(path[position:])
    return "".join(result)


def normalized_uri(uri: str) -> str | None:
    """scheme://host[:port]/path of ``uri`` after RFC 3986 6.2.2 and 6.2.3 normalization
    (case, default port, percent-encoding, empty path), without query and fragment;
    None when it is no absolute http(s) URI."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in DEFAULT_PORTS or not host or parts.username or parts.password:
        return None
    authority = f"[{host}]" if ":" in host else host
    if port is not None and port != DEFAULT_PORTS[scheme]:
        authority = f"{authority}:{port}"
    path = normalize_escapes(parts.path) if parts.path else "/"
    if path is None:
        return None
    return f"{scheme}://{authority}{path}"


def request_url(request: RequestAttributes, external_origin: str | None) -> str | None:
    """The URI a proof's htu must name: the origin the client used and the path, without
    the query; None when the scheme is unknown and no external_origin is configured."""
    path = request.path.split("?", 1)[0].split("#", 1)[0] or "/"
    if external_origin is not None:
        return external_origin + path
    if request.scheme not in DEFAULT_PORTS or not request.host:
        return None
    return f"{request.scheme}://{request.host}{path}"


def presented_as_dpop(request: RequestAttributes, token: str) -> bool:
    """Whether ``token`` came in ``Authorization: DPoP <token>``."""
    value = request.headers.get("authorization", "")
    return value[:5].lower() == "dpop " and value[5:].strip() == token


class MemoryReplayStore:
    """The proofs accepted within their window; bounded. Full of live entries, it refuses
    (503) rather than forget one that could then be replayed. Each process (each worker)
    sees only its own requests: replicas need a shared store."""

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic):
        self._seen: dict[bytes, float] = {}
        self._expiries: list[tuple[float, bytes]] = []  # a heap: the next to expire first
        self._max_entries = max_entries
        self._clock = clock

    def __len__(self) -> int:
        return len(self._seen)

    async def first_use(self, key: bytes, ttl_s: float) -> bool:
        now = self._clock()
        while self._expiries and self._expiries[0][0] <= now:
            _, expired = heapq.heappop(self._expiries)
            if self._seen.get(expired, now + 1) <= now:
                del self._seen[expired]
        if key in self._seen:
            return False
        if len(self._seen) >= self._max_entries:
            raise ReplayStoreUnavailable("the in-memory DPoP replay store is full")
        self._seen[key] = now + ttl_s
        heapq.heappush(self._expiries, (now + ttl_s, key))
        return True


def claimed_key(claims: Mapping[str, Any]) -> object:
    """cnf.jkt as the token gives it, checked or not: None when the token binds no key."""
    cnf = claims.get("cnf")
    return cnf.get("jkt") if isinstance(cnf, dict) else None


def proof_wanted(mode: Mode, jkt: object, scheme_dpop: bool) -> bool:
    """Whether a check under ``mode`` needs a proof: the token is bound (``jkt``, from
    claimed_key), the client said DPoP, or the provider requires DPoP."""
    if mode == "off":
        return False
    return mode == "required" or jkt is not None or scheme_dpop


def bound_key(claims: Mapping[str, Any], scheme_dpop: bool) -> str:
    """The checks the token and the request's scheme answer before any proof: the key
    thumbprint (cnf.jkt) a proof must show; DpopMissing or DpopBindingMismatch otherwise.
    ``scheme_dpop``: the token came as ``Authorization: DPoP``."""
    jkt = claimed_key(claims)
    if jkt is not None and not isinstance(jkt, str):
        raise DpopBindingMismatch("cnf.jkt is not a string")
    if not scheme_dpop:
        # RFC 9449 7.2: a bound token sent as Bearer is a downgrade.
        raise DpopMissing("a DPoP-bound token or provider needs Authorization: DPoP")
    if jkt is None:
        raise DpopBindingMismatch("the token is not bound to a DPoP key (no cnf.jkt)")
    return jkt


class DpopBinding:
    """One provider's DPoP checks that need only the token and the request as written:
    whether a proof is wanted, the scheme, cnf.jkt. Alone it checks no proof: offline
    judging (authz eval and test) has no live request for one to prove. ``DpopVerifier``
    checks the proof too."""

    def __init__(self, settings: DpopSettings) -> None:
        self.settings = settings
        self.algs = " ".join(sorted(settings.algorithms))  # for the DPoP challenge

    def wanted(self, jkt: object, scheme_dpop: bool) -> bool:
        """Whether this check needs a proof (proof_wanted, under this provider's mode)."""
        return proof_wanted(self.settings.mode, jkt, scheme_dpop)

    def binding(
        self, request: RequestAttributes, token: str, claims: Mapping[str, Any]
    ) -> str | None:
        """The key thumbprint a proof must show for ``token`` in ``request``; None when no
        proof is needed (a plain bearer token under when_bound); otherwise the DpopError
        that denies, carrying the algorithms for the challenge."""
        scheme_dpop = presented_as_dpop(request, token)
        if not self.wanted(claimed_key(claims), scheme_dpop):
            return None
        try:
            return bound_key(claims, scheme_dpop)
        except DpopError as exc:
            exc.algs = self.algs
            raise

    async def prove(
        self,
        request: RequestAttributes,
        token: str,
        claims: Mapping[str, Any],
        recorded: set[bytes] | None = None,
    ) -> bool:
        """The checks of ``binding``; True when a proof was needed and left unchecked."""
        return self.binding(request, token, claims) is not None


class DpopVerifier(DpopBinding):
    """Checks one provider's DPoP proofs."""

    def __init__(
        self,
        settings: DpopSettings,
        key_from_jwk: KeyFromJwk,
        replay: ReplayStore,
        clock: Callable[[], float],
    ) -> None:
        super().__init__(settings)
        self._key_from_jwk = key_from_jwk
        self._replay = replay
        self._clock = clock
        self._keys: OrderedDict[tuple[str, str], VerificationKey] = OrderedDict()

    async def prove(
        self,
        request: RequestAttributes,
        token: str,
        claims: Mapping[str, Any],
        recorded: set[bytes] | None = None,
    ) -> bool:
        """The DPoP checks ``request`` needs for ``token`` (none for a plain bearer token
        when the mode is when_bound); the DpopError that denies otherwise, carrying the
        algorithms for the challenge. ``recorded``: the proofs this same check already
        recorded (several providers, or a method override judged twice, see one proof).
        False: no check was left out."""
        jkt = self.binding(request, token, claims)
        if jkt is None:
            return False
        try:
            await self._check_proof(
                request.headers.get("dpop"),
                jkt,
                method=request.sent_method or request.method,  # the proof names the real one
                url=request_url(request, self.settings.external_origin),
                token=token,
                recorded=recorded,
            )
        except DpopError as exc:
            exc.algs = self.algs
            raise
        return False

    async def check(
        self,
        proofs: str | None,
        *,
        scheme_dpop: bool,
        method: str,
        url: str | None,
        token: str,
        claims: Mapping[str, Any],
        recorded: set[bytes] | None = None,
    ) -> None:
        """DpopMissing, DpopInvalid, DpopReplayed or DpopBindingMismatch unless ``proofs``
        (the DPoP header, as the proxy joined it) proves possession of the key ``claims``
        bind the token to. ``scheme_dpop``: the token came as ``Authorization: DPoP``."""
        jkt = bound_key(claims, scheme_dpop)
        await self._check_proof(proofs, jkt, method=method, url=url, token=token, recorded=recorded)

    async def _check_proof(
        self,
        proofs: str | None,
        jkt: str,
        *,
        method: str,
        url: str | None,
        token: str,
        recorded: set[bytes] | None,
    ) -> None:
        """The checks that need the proof of the live request: its presence, signature,
        htm, htu, iat, nonce, ath, key (``jkt``) and first use."""
        if not proofs:
            raise DpopMissing("no DPoP proof")
        if "," in proofs:
            raise DpopInvalid("more than one DPoP proof")  # Envoy joins repeated headers
        proof = self._parse(proofs)
        header, claims_of_proof = proof.header, proof.claims
        key = self._key(header)
        if not key.verify(proof.signing_input, proof.signature):
            raise DpopInvalid("the proof's signature does not verify")
        self._check_request(claims_of_proof, method, url)
        self._check_time(claims_of_proof)
        self._check_nonce(claims_of_proof)
        if claims_of_proof.get("ath") != access_token_hash(token):
            raise DpopInvalid("ath is not the hash of the access token")
        jti = claims_of_proof.get("jti")
        if not isinstance(jti, str) or not jti:
            raise DpopInvalid("jti is missing")
        thumbprint = jwk_thumbprint(header["jwk"])
        if not hmac.compare_digest(thumbprint.encode(), jkt.encode()):
            raise DpopBindingMismatch("the proof's key is not the one the token is bound to")
        replay_key = hashlib.sha256(f"{thumbprint}\0{jti}".encode()).digest()
        if recorded is not None and replay_key in recorded:
            return  # recorded earlier in this very check
        if not await self._replay.first_use(replay_key, self.settings.replay_window_s):
            raise DpopReplayed("this proof was used before")
        if recorded is not None:
            recorded.add(replay_key)

    def _parse(self, proof: str) -> Any:
        try:
            parsed = parse_token(proof.strip(), MAX_PROOF_BYTES)
        except MalformedToken as exc:
            raise DpopInvalid(f"the proof is malformed: {exc.detail}") from exc
        if media_type(parsed.header.get("typ")) != "dpop+jwt":
            raise DpopInvalid("the proof's typ is not dpop+jwt")
        if parsed.alg not in self.settings.algorithms:
            raise DpopInvalid("the proof's alg is not allowed")
        if not isinstance(parsed.header.get("jwk"), dict):
            raise DpopInvalid("the proof carries no jwk")
        return parsed

    def _key(self, header: Mapping[str, Any]) -> VerificationKey:
        """The proof's key, built once per key and algorithm (a client signs many proofs
        with one key; building it costs about a third of verifying with it)."""
        try:
            identity = (header["alg"], json.dumps(header["jwk"], sort_keys=True))
        except (TypeError, ValueError) as exc:
            raise DpopInvalid("the proof's jwk is not JSON") from exc
        key = self._keys.get(identity)
        if key is not None:
            self._keys.move_to_end(identity)
            return key
        try:
            key = self._key_from_jwk(header["jwk"], header["alg"])
        except KeyRejected as exc:
            raise DpopInvalid(f"the proof's jwk is not usable: {exc}") from exc
        self._keys[identity] = key
        if len(self._keys) > MAX_CACHED_KEYS:
            self._keys.popitem(last=False)
        return key

    def _check_request(self, claims: Mapping[str, Any], method: str, url: str | None) -> None:
        if claims.get("htm") != method.upper():
            raise DpopInvalid("htm is not the request method")
        if url is None:
            # A gap in authz's setup, not in the client's proof: 503, not 401.
            raise DpopOriginUnknown("the request's scheme is unknown: set dpop.external_origin")
        htu = claims.get("htu")
        expected = normalized_uri(url)
        if not isinstance(htu, str) or expected is None or normalized_uri(htu) != expected:
            raise DpopInvalid("htu is not the request URI")

    def _check_nonce(self, claims: Mapping[str, Any]) -> None:
        settings = self.settings.nonce
        if settings is None:
            return
        now = self._clock()
        nonce = claims.get("nonce")
        current = server_nonce(settings, now)
        valid = (current, server_nonce(settings, now, slots_back=1))
        if not isinstance(nonce, str) or not any(
            hmac.compare_digest(nonce.encode(), v.encode()) for v in valid
        ):
            error = DpopUseNonce("the proof carries no current server nonce")
            error.nonce = current
            raise error

    def _check_time(self, claims: Mapping[str, Any]) -> None:
        iat = claims.get("iat")
        if isinstance(iat, bool) or not isinstance(iat, int | float):
            raise DpopInvalid("iat is missing or not a number")
        # Compare before any float conversion: math.isfinite(10**400) overflows.
        if not (0 <= iat <= MAX_IAT) or not math.isfinite(iat):
            raise DpopInvalid("iat is out of range")
        now, settings = self._clock(), self.settings
        if iat > now + settings.clock_skew_s:
            raise DpopInvalid("the proof was issued in the future")
        if iat < now - settings.max_age_s - settings.clock_skew_s:
            raise DpopInvalid("the proof is too old")
