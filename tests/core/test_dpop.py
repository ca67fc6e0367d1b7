"""DPoP proofs (RFC 9449): every check of a proof, the thumbprint (RFC 7638), the replay
store, URI normalization, and random mutations of a valid proof never passing."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz.core.dpop import (
    DpopBinding,
    DpopSettings,
    DpopVerifier,
    MemoryReplayStore,
    NonceSettings,
    access_token_hash,
    jwk_thumbprint,
    normalized_uri,
    server_nonce,
)
from authz.core.errors import (
    DpopBindingMismatch,
    DpopError,
    DpopInvalid,
    DpopMissing,
    DpopReplayed,
    DpopUseNonce,
    ReplayStoreUnavailable,
)
from authz.core.jws import media_type
from authz.keys.crypto import construct_key
from tests import support
from tests.support import NOW, FakeClock, Signer, b64, b64json, ec_signer, rsa_signer

URL = "https://api.example.com/items/7"
TOKEN = "eyJ.token.value"
SETTINGS = DpopSettings(
    mode="when_bound",
    algorithms=frozenset({"ES256", "RS256", "EdDSA"}),
    max_age_s=60,
    clock_skew_s=5,
    external_origin=None,
)


class Ed25519Signer:
    """An EdDSA proof key (tests/support signs RSA and P-256 only)."""

    def __init__(self) -> None:
        self.key = ed25519.Ed25519PrivateKey.generate()
        raw = self.key.public_key().public_bytes_raw()
        self.jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}
        self.alg = "EdDSA"

    def raw(self, header: Any, payload: Any) -> str:
        signing_input = f"{b64json(header)}.{b64json(payload)}"
        return f"{signing_input}.{b64(self.key.sign(signing_input.encode()))}"


EC = ec_signer()
RSA = rsa_signer()
ED = Ed25519Signer()


def public(signer: Any) -> dict[str, Any]:
    return {k: v for k, v in signer.jwk.items() if k not in ("kid", "alg", "use")}


def proof(
    signer: Any = EC,
    *,
    header: dict[str, Any] | None = None,
    token: str = TOKEN,
    **claims: Any,
) -> str:
    head = {"typ": "dpop+jwt", "alg": signer.alg, "jwk": public(signer), **(header or {})}
    body = {
        "jti": str(uuid.uuid4()),
        "htm": "GET",
        "htu": URL,
        "iat": int(NOW),
        "ath": access_token_hash(token),
        **claims,
    }
    return signer.raw(
        {k: v for k, v in head.items() if v is not None},
        {k: v for k, v in body.items() if v is not None},
    )


def private_d(signer: Signer) -> str:
    """The real private scalar of an EC key, base64url: a jwk carrying it is refused
    because it is private, not because it is broken."""
    number = signer.key.private_numbers().private_value
    return b64(number.to_bytes(32, "big"))


def bound(signer: Any = EC) -> dict[str, Any]:
    return {"sub": "alice", "cnf": {"jkt": jwk_thumbprint(public(signer))}}


def verifier(**overrides: Any) -> DpopVerifier:
    settings_ = dataclasses.replace(SETTINGS, **overrides)
    return DpopVerifier(settings_, construct_key, MemoryReplayStore(), FakeClock())


async def check(
    checker: DpopVerifier,
    proofs: str | None,
    claims: dict[str, Any] | None = None,
    *,
    scheme_dpop: bool = True,
    method: str = "GET",
    url: str = URL,
    token: str = TOKEN,
) -> None:
    await checker.check(
        proofs,
        scheme_dpop=scheme_dpop,
        method=method,
        url=url,
        token=token,
        claims=bound() if claims is None else claims,
    )


def test_the_rfc_7638_thumbprint() -> None:
    """The example of RFC 7638 3.1."""
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tS"
        "oc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65"
        "YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyr"
        "dkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzK"
        "nqDKgw"
    )
    jwk = {"kty": "RSA", "n": n, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize("signer", [EC, RSA, ED], ids=["ES256", "RS256", "EdDSA"])
async def test_a_valid_proof_passes_once(signer: Any) -> None:
    checker = verifier()
    one = proof(signer)
    await check(checker, one, bound(signer))
    with pytest.raises(DpopReplayed):
        await check(checker, one, bound(signer))


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: proof(header={"typ": "JWT"}), DpopInvalid),
        (lambda: proof(header={"typ": None}), DpopInvalid),
        (lambda: proof(RSA, header={"alg": "RS512"}), DpopInvalid),  # not allowed
        (lambda: proof(header={"alg": "HS256"}), DpopInvalid),
        (lambda: proof(header={"alg": "none"}), DpopInvalid),
        (lambda: proof(header={"jwk": None}), DpopInvalid),
        (lambda: proof(header={"jwk": {**public(EC), "d": private_d(EC)}}), DpopInvalid),
        (lambda: proof(header={"jwk": public(RSA)}), DpopInvalid),  # RSA key, ES256 alg
        (lambda: proof(header={"jwk": public(ec_signer())}), DpopInvalid),  # another EC key
        (lambda: proof(iat=10**400), DpopInvalid),
        (lambda: proof(iat=-1), DpopInvalid),
        (lambda: proof(header={"jwk": "x"}), DpopInvalid),
        (lambda: proof(htm="POST"), DpopInvalid),
        (lambda: proof(htm=None), DpopInvalid),
        (lambda: proof(htu="https://api.example.com/items/8"), DpopInvalid),
        (lambda: proof(htu="https://other.example.com/items/7"), DpopInvalid),
        (lambda: proof(htu="http://api.example.com/items/7"), DpopInvalid),
        (lambda: proof(htu=None), DpopInvalid),
        (lambda: proof(iat=int(NOW) - 66), DpopInvalid),  # max_age 60 + skew 5
        (lambda: proof(iat=int(NOW) + 6), DpopInvalid),
        (lambda: proof(iat="now"), DpopInvalid),
        (lambda: proof(iat=None), DpopInvalid),
        (lambda: proof(ath=access_token_hash("another")), DpopInvalid),
        (lambda: proof(ath=None), DpopInvalid),
        (lambda: proof(jti=None), DpopInvalid),
        (lambda: proof(jti=""), DpopInvalid),
        (lambda: proof(RSA), DpopBindingMismatch),  # a valid proof by another key
        (lambda: proof() + "," + proof(), DpopInvalid),  # two DPoP headers, joined
        (lambda: proof()[:-4] + "AAAA", DpopInvalid),  # signature
        (lambda: "not a jwt", DpopInvalid),
        (lambda: "", DpopMissing),
        (lambda: None, DpopMissing),
    ],
)
async def test_every_check_of_a_proof(make: Any, error: type[DpopError]) -> None:
    with pytest.raises(error):
        await check(verifier(), make())


async def test_within_the_window_and_the_skew() -> None:
    for iat in (int(NOW) - 64, int(NOW) + 4):
        await check(verifier(), proof(iat=iat))


async def test_what_the_token_and_scheme_must_say() -> None:
    # A bound token sent as Bearer: a downgrade (RFC 9449 7.2).
    with pytest.raises(DpopMissing):
        await check(verifier(), proof(), scheme_dpop=False)
    # Authorization: DPoP with a token bound to nothing.
    with pytest.raises(DpopBindingMismatch):
        await check(verifier(), proof(), {"sub": "alice"})
    with pytest.raises(DpopBindingMismatch):
        await check(verifier(), proof(), {"cnf": {"jkt": 7}})
    checker = verifier()
    assert checker.wanted(None, scheme_dpop=False) is False  # when_bound, plain bearer
    assert checker.wanted("jkt", scheme_dpop=False) and checker.wanted(None, scheme_dpop=True)
    assert verifier(mode="required").wanted(None, scheme_dpop=False)
    assert not verifier(mode="off").wanted("jkt", scheme_dpop=True)


@pytest.mark.parametrize(
    ("mode", "scheme", "claims", "outcome"),
    [
        ("when_bound", "Bearer", {"sub": "a"}, "none"),  # a plain bearer token
        ("when_bound", "DPoP", bound(), "unchecked"),
        ("when_bound", "Bearer", bound(), DpopMissing),  # a downgrade
        ("when_bound", "DPoP", {"sub": "a"}, DpopBindingMismatch),
        ("when_bound", "DPoP", {"cnf": {"jkt": 7}}, DpopBindingMismatch),
        ("required", "Bearer", {"sub": "a"}, DpopMissing),
        ("required", "DPoP", {"sub": "a"}, DpopBindingMismatch),
        ("required", "DPoP", bound(), "unchecked"),
        ("off", "Bearer", bound(), "none"),
    ],
)
async def test_without_a_verifier_the_token_and_scheme_are_still_checked(
    mode: Any, scheme: str, claims: dict[str, Any], outcome: Any
) -> None:
    """Offline judging: the checks the token and the request as written answer are made,
    by the verifier's own code; the proof is never read, and ``prove`` says when one was
    due. The verifier answers the same on the same token and scheme."""
    binding = DpopBinding(dataclasses.replace(SETTINGS, mode=mode))
    request = support.req(authorization=f"{scheme} {TOKEN}", dpop="not even a proof")
    live = verifier(mode=mode)
    if isinstance(outcome, str):
        assert await binding.prove(request, TOKEN, claims) is (outcome == "unchecked")
        if outcome == "none":
            assert await live.prove(request, TOKEN, claims) is False
        return
    for checker in (binding, live):
        with pytest.raises(outcome) as refused:
            await checker.prove(request, TOKEN, claims)
        assert refused.value.algs == "ES256 EdDSA RS256"  # for the challenge


@pytest.mark.parametrize(
    ("sent", "request_url", "same"),
    [
        ("HTTPS://API.Example.COM/items/7", URL, True),
        ("https://api.example.com:443/items/7", URL, True),
        ("https://api.example.com/items/7?x=1#f", URL, True),  # query and fragment ignored
        ("https://api.example.com/%69tems/7", URL, True),  # an unreserved escape
        ("https://api.example.com/a%2fb", "https://api.example.com/a%2Fb", True),
        ("https://api.example.com/items/7/", URL, False),
        ("https://api.example.com:8443/items/7", URL, False),
        ("https://api.example.com/a%2Fb", "https://api.example.com/a/b", False),
        ("https://api.example.com/%zz", "https://api.example.com/%zz", False),
        ("https://user@api.example.com/items/7", URL, False),
        ("ftp://api.example.com/items/7", "ftp://api.example.com/items/7", False),
        ("https://api.example.com", "https://api.example.com/", True),
    ],
)
def test_htu_is_compared_after_normalization(sent: str, request_url: str, same: bool) -> None:
    mine, theirs = normalized_uri(sent), normalized_uri(request_url)
    assert (mine is not None and mine == theirs) is same


async def test_replays_are_kept_for_the_window_only() -> None:
    clock = FakeClock()
    store = MemoryReplayStore(max_entries=3, clock=clock)
    assert await store.first_use(b"a", 70)
    assert not await store.first_use(b"a", 70)
    clock.advance(70)
    assert await store.first_use(b"a", 70)  # the window has passed
    assert await store.first_use(b"short", 10)
    assert await store.first_use(b"b", 70)
    assert len(store) == 3


async def test_a_full_store_refuses_rather_than_forget_a_live_proof() -> None:
    """Dropping the oldest live entry to make room would let its proof be replayed."""
    clock = FakeClock()
    store = MemoryReplayStore(max_entries=2, clock=clock)
    assert await store.first_use(b"long", 70)
    assert await store.first_use(b"short", 10)
    with pytest.raises(ReplayStoreUnavailable):
        await store.first_use(b"c", 70)
    assert not await store.first_use(b"long", 70)  # still remembered
    clock.advance(10)  # the short one expires first, whatever the order it came in
    assert await store.first_use(b"c", 70)
    assert not await store.first_use(b"long", 70)


def mutations() -> st.SearchStrategy[tuple[str, str, Any]]:
    """A header or claim of a valid proof, replaced by another value."""
    values = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.text(max_size=20),
        st.lists(st.text(max_size=5), max_size=2),
        st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
    )
    part = st.sampled_from(
        [("header", n) for n in ("typ", "alg", "jwk")]
        + [("claims", n) for n in ("jti", "htm", "htu", "iat", "ath")]
    )
    return st.tuples(part, values).map(lambda pv: (pv[0][0], pv[0][1], pv[1]))


def still_valid(name: str, value: Any) -> bool:
    """Values that make another valid proof: any jti, an iat within the window, the
    media type spelled otherwise."""
    if name == "jti":
        return isinstance(value, str) and value != ""
    if name == "iat":
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return number and NOW - 65 <= value <= NOW + 5
    if name == "typ":
        return media_type(value) == "dpop+jwt"
    return False


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations())
async def test_no_mutation_of_a_valid_proof_passes(mutation: tuple[str, str, Any]) -> None:
    where, name, value = mutation
    head = {"typ": "dpop+jwt", "alg": "ES256", "jwk": public(EC)}
    body = {"jti": "j1", "htm": "GET", "htu": URL, "iat": int(NOW), "ath": access_token_hash(TOKEN)}
    target = head if where == "header" else body
    if target.get(name) == value or still_valid(name, value):
        return  # not a mutation that makes the proof wrong
    target[name] = value
    signed = EC.raw(head, body)
    with pytest.raises(DpopError):
        await check(verifier(), signed)


def test_the_access_token_hash_is_rfc_9449s() -> None:
    digest = hashlib.sha256(TOKEN.encode()).digest()
    assert access_token_hash(TOKEN) == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert json.dumps(bound()["cnf"])  # serializable as the OP puts it in a token


# --- in the authorizer ---------------------------------------------------------------


def bound_token(signer: Signer, key: Any = EC, **claims: Any) -> str:
    return signer.token(cnf={"jkt": jwk_thumbprint(public(key))}, **claims)


def dpop_request(token: str, proofs: str | None, scheme: str = "DPoP", **extra: str) -> Any:
    headers = {"authorization": f"{scheme} {token}", **extra}
    if proofs is not None:
        headers["dpop"] = proofs
    request = support.req("/items/7", host="api.example.com", **headers)
    return dataclasses.replace(request, scheme="https")


def authorizer_for(jwks: dict[str, Any], **dpop: Any) -> Any:
    corp = support.provider(jwks={"inline": jwks}, **({"dpop": dpop} if dpop else {}))
    return support.authorizer(
        support.config(providers={"corp": corp}), support.fixed_keys(jwks), clock=FakeClock()
    )


async def test_a_bound_token_with_its_proof_is_allowed_and_the_proof_goes_no_further(
    jwks: dict[str, Any], rsa_signer: Signer
) -> None:
    checker = authorizer_for(jwks)
    token = bound_token(rsa_signer)
    decision = await checker.check(dpop_request(token, proof(token=token)))
    assert decision.allowed, decision.reason
    assert {"authorization", "dpop"} <= set(decision.remove_headers)


async def test_a_cache_hit_still_needs_a_fresh_proof(
    jwks: dict[str, Any], rsa_signer: Signer
) -> None:
    checker = authorizer_for(jwks)
    token = bound_token(rsa_signer)
    once = proof(token=token)
    assert (await checker.check(dpop_request(token, once))).allowed
    replayed = await checker.check(dpop_request(token, once))  # the token is cached now
    assert (replayed.status, replayed.reason) == (401, "dpop_replayed")
    challenge = dict(replayed.response_headers)["www-authenticate"]
    assert challenge.startswith('DPoP algs="ES256 EdDSA PS256 RS256", error="invalid_dpop_proof"')
    assert (await checker.check(dpop_request(token, proof(token=token)))).allowed
    missing = await checker.check(dpop_request(token, None))
    assert (missing.status, missing.reason) == (401, "dpop_missing")


async def test_what_is_refused_around_the_proof(jwks: dict[str, Any], rsa_signer: Signer) -> None:
    checker = authorizer_for(jwks)
    token = bound_token(rsa_signer)
    downgrade = await checker.check(dpop_request(token, proof(token=token), scheme="Bearer"))
    assert (downgrade.status, downgrade.reason) == (401, "dpop_missing")
    assert 'error="invalid_token"' in dict(downgrade.response_headers)["www-authenticate"]
    stolen = await checker.check(dpop_request(token, proof(RSA, token=token)))
    assert stolen.reason == "dpop_binding_mismatch"
    plain = rsa_signer.token()
    assert (await checker.check(support.req(authorization=f"Bearer {plain}"))).allowed
    as_dpop = await checker.check(dpop_request(plain, proof(token=plain)))
    assert as_dpop.reason == "dpop_binding_mismatch"  # DPoP scheme, token bound to nothing


async def test_modes_and_the_external_origin(jwks: dict[str, Any], rsa_signer: Signer) -> None:
    plain = rsa_signer.token()
    required = authorizer_for(jwks, mode="required")
    refused = await required.check(support.req(authorization=f"Bearer {plain}"))
    assert refused.reason == "dpop_missing"
    off = authorizer_for(jwks, mode="off")
    token = bound_token(rsa_signer)
    assert (await off.check(support.req(authorization=f"Bearer {token}"))).allowed
    assert (await off.check(dpop_request(token, proof(token=token)))).reason == "missing_token"
    behind = authorizer_for(jwks, external_origin="https://public.example.com")
    outside = proof(token=token, htu="https://public.example.com/items/7")
    assert (await behind.check(dpop_request(token, outside))).allowed
    inside = proof(token=token)  # the URL as the inner proxy saw it
    assert (await behind.check(dpop_request(token, inside))).reason == "dpop_invalid"


async def test_one_store_across_reloads_and_providers(
    jwks: dict[str, Any], rsa_signer: Signer
) -> None:
    """A reload must not reopen the window; two providers reading one token in one check
    see one proof, which is then spent for both."""
    from authz.runtime.build import ReplayStores, build_authorizer

    stores = ReplayStores(100)
    corp = support.provider(jwks={"inline": jwks})
    partner = support.provider(jwks={"inline": jwks})
    rules = [{"match": {"prefix": "/"}, "requires": {"all": ["corp", "partner"]}}]
    config = support.config(providers={"corp": corp, "partner": partner}, rules=rules)

    def reloaded() -> Any:
        lookups = {"corp": support.fixed_keys(jwks), "partner": support.fixed_keys(jwks)}
        return build_authorizer(config, lookups, FakeClock(), None, replay=stores)

    token = bound_token(rsa_signer)
    once = proof(token=token)
    assert (await reloaded().check(dpop_request(token, once))).allowed  # both providers
    again = await reloaded().check(dpop_request(token, once))
    assert again.reason == "dpop_replayed"


async def test_a_method_override_judged_both_ways_needs_one_proof_for_the_real_method(
    jwks: dict[str, Any], rsa_signer: Signer
) -> None:
    corp = support.provider(jwks={"inline": jwks})
    checker = support.authorizer(
        support.config(providers={"corp": corp}, method_override="judge_both"),
        support.fixed_keys(jwks),
        clock=FakeClock(),
    )
    token = bound_token(rsa_signer)
    request = dpop_request(token, proof(token=token), x_http_method_override="DELETE")
    decision = await checker.check(request)
    assert decision.allowed, decision.reason


async def test_dpop_over_http_without_the_scheme_is_a_503_and_a_warning(
    jwks: dict[str, Any], rsa_signer: Signer
) -> None:
    from authz.runtime.build import validate

    checker = authorizer_for(jwks)
    token = bound_token(rsa_signer)
    unknown = dataclasses.replace(dpop_request(token, proof(token=token)), scheme="")
    decision = await checker.check(unknown)
    assert (decision.status, decision.reason) == (503, "dpop_origin_unknown")
    over_nginx = support.config(
        providers={"corp": support.provider(jwks={"inline": jwks})},
        listen=support.LISTEN_ANYWHERE,
        http_authz={"listen": "127.0.0.1:0", "original_request": "nginx"},
    )
    assert any("dpop.external_origin" in warning.message for warning in validate(over_nginx))


NONCE = NonceSettings(rotation_s=60, secret=b"n" * 32)


async def test_server_nonces_are_handed_out_then_required() -> None:
    clock = FakeClock()
    checker = DpopVerifier(
        dataclasses.replace(SETTINGS, nonce=NONCE), construct_key, MemoryReplayStore(), clock
    )
    with pytest.raises(DpopUseNonce) as asked:
        await check(checker, proof())
    nonce = asked.value.nonce
    assert nonce == server_nonce(NONCE, clock())
    await check(checker, proof(nonce=nonce))
    clock.advance(60)  # the next slot: the previous nonce still counts
    await check(checker, proof(nonce=nonce, iat=int(clock())))
    clock.advance(60)
    with pytest.raises(DpopUseNonce):
        await check(checker, proof(nonce=nonce, iat=int(clock())))
    with pytest.raises(DpopUseNonce):
        await check(checker, proof(nonce="made-up", iat=int(clock())))


async def test_a_nonce_from_one_worker_is_good_at_another() -> None:
    """Stateless: the secret, not the process, makes a nonce."""
    clock = FakeClock()
    one, two = (
        DpopVerifier(
            dataclasses.replace(SETTINGS, nonce=NONCE), construct_key, MemoryReplayStore(), clock
        )
        for _ in range(2)
    )
    with pytest.raises(DpopUseNonce) as asked:
        await check(one, proof())
    await check(two, proof(nonce=asked.value.nonce))
    other_secret = dataclasses.replace(NONCE, secret=b"o" * 32)
    three = DpopVerifier(
        dataclasses.replace(SETTINGS, nonce=other_secret), construct_key, MemoryReplayStore(), clock
    )
    with pytest.raises(DpopUseNonce):
        await check(three, proof(nonce=asked.value.nonce))


async def test_the_nonce_reaches_the_client_in_the_denial(
    jwks: dict[str, Any], rsa_signer: Signer, tmp_path: Any
) -> None:
    secret = tmp_path / "nonce"
    secret.write_bytes(b"s" * 32)
    checker = authorizer_for(jwks, nonce={"secret": {"file": str(secret)}})
    token = bound_token(rsa_signer)
    denied = await checker.check(dpop_request(token, proof(token=token)))
    assert (denied.status, denied.reason) == (401, "dpop_use_nonce")
    headers = dict(denied.response_headers)
    assert 'error="use_dpop_nonce"' in headers["www-authenticate"]
    retry = proof(token=token, nonce=headers["dpop-nonce"])
    assert (await checker.check(dpop_request(token, retry))).allowed
