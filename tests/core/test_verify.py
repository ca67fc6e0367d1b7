from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from authz.config import ConfigError
from authz.core.errors import CheckError, JwksError
from authz.core.jws import parse_token
from authz.core.verify import Verifier
from authz.keys.jwks import KeySet, parse_jwks
from authz.runtime.build import build, validate
from tests import support
from tests.support import AUDIENCE, ISSUER, NOW, Signer, b64, b64json, config, provider, verifier


class NoEvents:
    async def key_set(self, provider: str, result: str, keys: KeySet | None) -> None:
        return None

    def unknown_kid(self, provider: str, result: str) -> None:
        return None


def make_verifier(jwks: dict[str, Any] | None, **settings: Any) -> Verifier:
    return verifier(jwks, **settings)


async def reason_of(verifier: Verifier, token: str) -> str:
    try:
        await verifier.verify(parse_token(token, verifier.max_token_bytes))
    except CheckError as exc:
        return exc.reason
    return "ok"


async def test_valid_rsa_and_ec_tokens(jwks: dict[str, Any], rsa_signer: Signer, ec_signer: Signer):
    verifier = make_verifier(jwks)
    for signer in (rsa_signer, ec_signer):
        identity = await verifier.verify(parse_token(signer.token(sub="bob"), 8192))
        assert identity.provider == "corp"
        assert identity.claims["sub"] == "bob"


TokenCase = Callable[[Signer, Signer], str]

CASES: list[tuple[str, TokenCase, str]] = [
    ("valid", lambda s, o: s.token(), "ok"),
    ("aud list", lambda s, o: s.token(aud=["other", AUDIENCE]), "ok"),
    ("expired", lambda s, o: s.token(exp=int(NOW) - 61), "token_expired"),
    ("expired within skew", lambda s, o: s.token(exp=int(NOW) - 30), "ok"),
    ("not yet valid", lambda s, o: s.token(nbf=int(NOW) + 61), "token_not_yet_valid"),
    ("nbf within skew", lambda s, o: s.token(nbf=int(NOW) + 30), "ok"),
    ("no exp", lambda s, o: s.token(exp=None), "missing_exp"),
    ("exp as string", lambda s, o: s.token(exp=str(int(NOW) + 600)), "invalid_claims"),
    ("exp as bool", lambda s, o: s.token(exp=True), "invalid_claims"),
    ("exp huge", lambda s, o: s.token(exp=10**30), "invalid_claims"),
    # "Never expires" as some IdPs mint it: the last second of year 9999, and no later.
    ("exp in year 9999", lambda s, o: s.token(exp=253_402_300_799), "ok"),
    ("exp after year 9999", lambda s, o: s.token(exp=253_402_300_800), "invalid_claims"),
    ("exp past 1e11", lambda s, o: s.token(exp=10**11), "ok"),
    ("sub a number", lambda s, o: s.token(sub=42), "invalid_claims"),
    ("sub a list", lambda s, o: s.token(sub=["alice"]), "invalid_claims"),
    ("jti a number", lambda s, o: s.token(jti=7), "invalid_claims"),
    ("client_id an object", lambda s, o: s.token(client_id={"id": "x"}), "invalid_claims"),
    ("client_id a string", lambda s, o: s.token(client_id="app"), "ok"),
    ("trailing newline", lambda s, o: s.token() + "\n", "malformed_token"),
    ("iat as string", lambda s, o: s.token(iat="yesterday"), "invalid_claims"),
    (
        "exp NaN",
        lambda s, o: s.raw(
            {"alg": "RS256", "kid": s.kid}, b'{"iss": "' + ISSUER.encode() + b'", "exp": NaN}'
        ),
        "malformed_token",
    ),
    ("huge integer claim", lambda s, o: s.token(big=10**40), "ok"),
    ("wrong issuer", lambda s, o: s.token(iss="https://evil.test"), "invalid_issuer"),
    ("no issuer", lambda s, o: s.token(iss=None), "invalid_issuer"),
    ("wrong audience", lambda s, o: s.token(aud="other"), "invalid_audience"),
    ("no audience", lambda s, o: s.token(aud=None), "invalid_audience"),
    ("audience number", lambda s, o: s.token(aud=5), "invalid_audience"),
    ("signed by other key", lambda s, o: o.token(header={"kid": s.kid}), "invalid_signature"),
    ("unknown kid", lambda s, o: s.token(header={"kid": "nope"}), "unknown_kid"),
    ("kid not a string", lambda s, o: s.token(header={"kid": 7}), "malformed_token"),
    (
        "alg none",
        lambda s, o: s.raw({"alg": "none", "kid": s.kid}, s.claims()).rsplit(".", 1)[0] + ".",
        "malformed_token",
    ),
    ("alg none signed", lambda s, o: s.token(header={"alg": "none"}), "algorithm_not_allowed"),
    ("alg HS256", lambda s, o: s.token(header={"alg": "HS256"}), "algorithm_not_allowed"),
    ("alg not allowed", lambda s, o: s.token(header={"alg": "RS512"}), "algorithm_not_allowed"),
    ("alg mismatching key", lambda s, o: s.token(header={"alg": "ES256"}), "algorithm_not_allowed"),
    ("crit", lambda s, o: s.token(header={"crit": ["exp"]}), "malformed_token"),
    ("b64 false", lambda s, o: s.token(header={"b64": False}), "malformed_token"),
    ("two segments", lambda s, o: ".".join(s.token().split(".")[:2]), "malformed_token"),
    ("four segments", lambda s, o: s.token() + ".abc", "malformed_token"),
    ("padding", lambda s, o: s.token() + "==", "malformed_token"),
    ("garbage", lambda s, o: "not a token", "malformed_token"),
    (
        "header not json",
        lambda s, o: b64(b"{nope") + "." + s.token().split(".", 1)[1],
        "malformed_token",
    ),
    ("header is a list", lambda s, o: s.raw(["RS256"], s.claims()), "malformed_token"),
    (
        "payload is a string",
        lambda s, o: s.raw({"alg": "RS256", "kid": s.kid}, "hello"),
        "malformed_token",
    ),
    (
        "duplicate claim",
        lambda s, o: s.raw(
            {"alg": "RS256", "kid": s.kid},
            b'{"iss": "x", "iss": "' + ISSUER.encode() + b'", "aud": "api", "exp": 1800000600}',
        ),
        "malformed_token",
    ),
    ("oversized", lambda s, o: s.token(blob="x" * 9000), "malformed_token"),
    ("bad signature bytes", lambda s, o: s.token()[:-4] + "AAAA", "invalid_signature"),
    (
        "deep nesting",
        lambda s, o: s.raw({"alg": "RS256", "kid": s.kid}, b'{"a":' * 3000 + b"1" + b"}" * 3000),
        "malformed_token",
    ),
    # The attacker's own key rides in the header; it is ignored, the provider's key fails.
    (
        "embedded jwk ignored",
        lambda s, o: o.token(header={"kid": None, "jwk": o.jwk}),
        "invalid_signature",
    ),
    ("jku ignored", lambda s, o: o.token(header={"jku": "https://evil.test/jwks"}), "unknown_kid"),
]


@pytest.mark.parametrize(("name", "make", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_token_cases(
    name: str,
    make: TokenCase,
    expected: str,
    rsa_signer: Signer,
    other_rsa_signer: Signer,
    jwks: dict[str, Any],
) -> None:
    verifier = make_verifier(jwks)
    assert await reason_of(verifier, make(rsa_signer, other_rsa_signer)) == expected


async def test_no_keys_is_unavailable(rsa_signer: Signer) -> None:
    assert await reason_of(make_verifier(None), rsa_signer.token()) == "no_keys"


async def test_token_without_kid_needs_an_unambiguous_key(
    rsa_signer: Signer, other_rsa_signer: Signer
) -> None:
    single = make_verifier({"keys": [rsa_signer.jwk]})
    assert await reason_of(single, rsa_signer.token(header={"kid": None})) == "ok"
    two = make_verifier({"keys": [rsa_signer.jwk, other_rsa_signer.jwk]})
    assert await reason_of(two, rsa_signer.token(header={"kid": None})) == "unknown_kid"


async def test_expiration_can_be_optional(jwks: dict[str, Any], rsa_signer: Signer) -> None:
    verifier = make_verifier(jwks, require_expiration=False)
    assert await reason_of(verifier, rsa_signer.token(exp=None)) == "ok"


async def test_audiences_are_required() -> None:
    with pytest.raises(ConfigError, match="audiences"):
        make_verifier(None, audiences=[])


async def test_algorithm_allowlist_excludes_es256(jwks: dict[str, Any], ec_signer: Signer) -> None:
    verifier = make_verifier(jwks, algorithms=["RS256"])
    assert await reason_of(verifier, ec_signer.token()) == "algorithm_not_allowed"


async def test_raw_payload_is_the_signed_segment(jwks: dict[str, Any], rsa_signer: Signer) -> None:
    token = rsa_signer.token()
    identity = await make_verifier(jwks).verify(parse_token(token, 8192))
    assert identity.raw_payload == token.split(".")[1]
    assert token.split(".")[1] == b64json(rsa_signer.claims())


def _sign_raw(signing_input: bytes, key: Any, alg: str) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    if alg == "PS256":
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        return key.sign(signing_input, pss, hashes.SHA256())
    return key.sign(signing_input)  # Ed25519


@pytest.mark.parametrize("alg", ["PS256", "EdDSA"])
async def test_ps256_and_eddsa(alg: str, rsa_signer: Signer) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if alg == "PS256":
        key: Any = rsa_signer.key
        jwk = {**rsa_signer.jwk, "alg": "PS256", "kid": "ps"}
    else:
        key = Ed25519PrivateKey.generate()
        x = key.public_key().public_bytes_raw()
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64(x), "kid": "ed"}
    verifier = make_verifier({"keys": [jwk]}, algorithms=[alg])
    signing_input = f"{b64json({'alg': alg, 'kid': jwk['kid']})}.{b64json(rsa_signer.claims())}"
    signature = _sign_raw(signing_input.encode(), key, alg)
    token = f"{signing_input}.{b64(signature)}"
    assert await reason_of(verifier, token) == "ok"
    forged = f"{signing_input}.{b64(bytes(len(signature)))}"
    assert await reason_of(verifier, forged) == "invalid_signature"
    # A PKCS#1 v1.5 signature is not a PSS one, even from the same RSA key.
    if alg == "PS256":
        v15 = f"{signing_input}.{b64(rsa_signer.sign(signing_input.encode()))}"
        assert await reason_of(verifier, v15) == "invalid_signature"


async def test_hs256_with_an_explicit_shared_secret(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, rsa_signer: Signer
) -> None:
    import hashlib
    import hmac

    from authz.keys.jwks import hmac_key_set

    secret = b"s" * 40
    (tmp_path / "secret").write_bytes(secret + b"\n")
    for source in ({"file": str(tmp_path / "secret")}, {"env": "AUTHZ_TEST_SECRET"}):
        monkeypatch.setenv("AUTHZ_TEST_SECRET", secret.decode())
        settings = {"shared_secret": source, "algorithms": ["HS256"], "jwks": None}
        corp = {k: v for k, v in provider(**settings).items() if v is not None}
        built = build(
            config(providers={"corp": corp}),
            events=NoEvents(),
            fetcher_for=lambda _, __: pytest.fail("no fetching"),
            observe=None,
        )
        keys = built.sources["corp"]
        await keys.start()  # a static source: swaps its parsed secret in
        hmac_verifier = support.verifier(keys=keys, **settings)
        signing_input = (
            f"{b64json({'alg': 'HS256', 'kid': 'ignored'})}.{b64json(rsa_signer.claims())}"
        )
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        assert await reason_of(hmac_verifier, f"{signing_input}.{b64(mac)}") == "ok"
        wrong = hmac.new(b"t" * 40, signing_input.encode(), hashlib.sha256).digest()
        bad = f"{signing_input}.{b64(wrong)}"
        assert await reason_of(hmac_verifier, bad) == "invalid_signature"
    with pytest.raises(JwksError, match="at least 32 bytes"):
        hmac_key_set(b"short", ("HS256",), None)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"jwks": {"inline": {"keys": []}}, "algorithms": ["HS256"]}, "need a shared_secret"),
        ({"shared_secret": {"env": "X"}, "algorithms": ["RS256"]}, "accepts only HS256"),
        (
            {"shared_secret": {"env": "X"}, "algorithms": ["HS256"], "jwks": {"discovery": True}},
            "exactly one of jwks, shared_secret or introspection",
        ),
    ],
)
def test_hmac_configuration_is_explicit(settings: dict[str, Any], message: str) -> None:
    corp = {k: v for k, v in provider(**{"jwks": None, **settings}).items() if v is not None}
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(config(providers={"corp": corp}))


async def test_typ_require_kid_and_max_lifetime(jwks: dict[str, Any], rsa_signer: Signer):
    typed = make_verifier(jwks, typ="at+jwt")
    assert await reason_of(typed, rsa_signer.token(header={"typ": "at+jwt"})) == "ok"
    assert await reason_of(typed, rsa_signer.token(header={"typ": "application/AT+JWT"})) == "ok"
    assert await reason_of(typed, rsa_signer.token(header={"typ": "JWT"})) == "invalid_claims"
    strict = make_verifier({"keys": [rsa_signer.jwk]}, require_kid=True)
    assert await reason_of(strict, rsa_signer.token(header={"kid": None})) == "unknown_kid"
    short = make_verifier(jwks, max_lifetime=300)
    assert await reason_of(short, rsa_signer.token()) == "invalid_claims"  # lives 600 s
    assert await reason_of(short, rsa_signer.token(exp=int(NOW) + 200, iat=None)) == "ok"


async def test_a_future_iat_does_not_stretch_max_lifetime(jwks: dict[str, Any], rsa_signer: Signer):
    short = make_verifier(jwks, max_lifetime=300)
    far = int(NOW) + 10 * 365 * 86400
    assert await reason_of(short, rsa_signer.token(exp=far, iat=far - 100)) == "invalid_claims"


@pytest.mark.parametrize(
    "payload",
    [
        '{"sub":"a"}'.encode("utf-16"),
        "\ufeff{}".encode(),  # a BOM
        b'{"sub":"\\ud800"}',  # a lone surrogate
        b'{"sub":"\xed\xa0\x80"}',  # CESU-8 surrogate bytes
    ],
)
async def test_json_must_be_strict_utf8(payload: bytes, jwks: dict[str, Any], rsa_signer: Signer):
    token = rsa_signer.raw({"alg": "RS256", "kid": rsa_signer.kid}, payload)
    assert await reason_of(make_verifier(jwks), token) == "malformed_token"


async def test_emoji_escapes_are_fine(jwks: dict[str, Any], rsa_signer: Signer) -> None:
    claims = json.dumps(rsa_signer.claims(name="\U0001f600"), ensure_ascii=True).encode()
    token = rsa_signer.raw({"alg": "RS256", "kid": rsa_signer.kid}, claims)
    assert await reason_of(make_verifier(jwks), token) == "ok"


async def test_configured_typ_may_carry_the_application_prefix(
    jwks: dict[str, Any], rsa_signer: Signer
) -> None:
    verifier = make_verifier(jwks, typ="application/at+jwt")
    assert await reason_of(verifier, rsa_signer.token(header={"typ": "at+jwt"})) == "ok"


def test_ec_keys_without_alg_serve_their_curve_only(ec_signer: Signer) -> None:
    jwk = {k: v for k, v in ec_signer.jwk.items() if k != "alg"}
    keys = parse_jwks({"keys": [jwk]}, ("ES256", "ES384", "RS256"), max_keys=100)
    assert set(keys.by_kid[ec_signer.kid]) == {"ES256"}


@pytest.mark.parametrize(
    "secret",
    [b"-----BEGIN PUBLIC KEY-----\n" + b"A" * 64, b"ssh-rsa " + b"A" * 64, b'{"kty"' + b" " * 40],
)
def test_a_key_is_not_a_shared_secret(secret: bytes) -> None:
    from authz.keys.jwks import hmac_key_set

    with pytest.raises(JwksError, match="looks like a key"):
        hmac_key_set(secret, ("HS256",), None)
