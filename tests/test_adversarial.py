"""Attacks on the verifier, each sent through the gRPC Check handler.

Every case must end in an explicit deny (a CheckResponse with a denied_response, never
an exception out of Check), and no token or signature may appear in the logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz.adapters.grpc_server import AuthorizationServicer
from authz.core.authorizer import Authorizer
from authz.core.errors import MalformedToken
from authz.core.jws import parse_token
from authz.keys.crypto import public_jwk
from tests.support import (
    AUDIENCE,
    ISSUER,
    Signer,
    answer,
    authorizer,
    b64,
    b64json,
    check_request,
    config,
    fixed_keys,
    provider,
)

ALGORITHMS = ["RS256", "ES256", "ES384", "PS256", "EdDSA"]


def authorizer_for(jwks: dict[str, Any], limits: dict[str, int] | None = None) -> Authorizer:
    corp = provider(
        jwks={"inline": jwks},
        algorithms=ALGORITHMS,
        claim_to_headers=[{"header": "x-user-id", "claim": "sub"}],
    )
    settings = config(
        providers={"corp": corp},
        expose_reasons=True,  # so each case can assert why it was denied
        limits=limits or {},
    )
    return authorizer(settings, fixed_keys(jwks, tuple(ALGORITHMS)))


async def check(authorizer: Authorizer, token: str) -> Any:
    servicer = AuthorizationServicer(authorizer)
    return await answer(servicer, check_request(authorization=f"Bearer {token}"))


def hs256(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def with_signature(token: str, signature: bytes) -> str:
    return token.rsplit(".", 1)[0] + "." + b64(signature)


@dataclass
class Keys:
    rsa: Signer
    other: Signer
    ec: Signer

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.rsa.jwk, self.ec.jwk]}


Attack = Callable[[Keys], "tuple[str, dict[str, Any] | None]"]


def rsa_public(keys: Keys, encoding: Any, fmt: Any) -> bytes:
    return keys.rsa.key.public_key().public_bytes(encoding, fmt)


def forged_with_e1(keys: Keys) -> tuple[str, dict[str, Any]]:
    """With e = 1 the 'signature' is the padded digest itself: anyone can forge it."""
    jwk = {**keys.rsa.jwk, "e": b64(b"\x01"), "kid": "e1"}
    signing_input = f"{b64json({'alg': 'RS256', 'kid': 'e1'})}.{b64json(keys.rsa.claims())}"
    digest_info = bytes.fromhex("3031300d060960864801650304020105000420")
    digest = hashlib.sha256(signing_input.encode()).digest()
    size = (keys.rsa.key.key_size + 7) // 8
    encoded = b"\x00\x01" + b"\xff" * (size - 3 - 19 - 32) + b"\x00" + digest_info + digest
    return f"{signing_input}.{b64(encoded)}", {"keys": [keys.rsa.jwk, jwk]}


def weak_key_token(key: Any, extra: dict[str, Any]) -> Callable[[Keys], tuple[str, dict[str, Any]]]:
    def make(keys: Keys) -> tuple[str, dict[str, Any]]:
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        signer = Signer(key, pem, {**public_jwk(pem), **extra, "kid": "weak"})
        jwk = {k: v for k, v in signer.jwk.items() if v is not None}
        return signer.token(), {"keys": [keys.rsa.jwk, jwk]}

    return make


def private_jwk(keys: Keys) -> tuple[str, dict[str, Any]]:
    numbers = keys.other.key.private_numbers()
    d = numbers.d.to_bytes((numbers.d.bit_length() + 7) // 8, "big")
    jwk = {**keys.other.jwk, "d": b64(d)}
    return keys.other.token(), {"keys": [keys.rsa.jwk, jwk]}


def none_alg(spelling: str, signature: str) -> Attack:
    def make(keys: Keys) -> tuple[str, None]:
        head = b64json({"alg": spelling, "kid": keys.rsa.kid})
        return f"{head}.{b64json(keys.rsa.claims())}.{signature}", None

    return make


def claim(**claims: Any) -> Attack:
    return lambda keys: (keys.rsa.token(**claims), None)


def header(**values: Any) -> Attack:
    return lambda keys: (keys.rsa.token(header=values), None)


def raw(text: str) -> Attack:
    return lambda keys: (text, None)


ATTACKS: list[tuple[str, Attack]] = [
    *[(f"alg {a} unsigned", none_alg(a, "")) for a in ("none", "None", "NONE", "nOnE")],
    *[(f"alg {a} signed", none_alg(a, b64(b"x" * 32))) for a in ("none", "None", "NONE", "nOnE")],
    (
        "HS256 keyed with the RSA public key PEM",
        lambda k: (
            hs256(
                {"alg": "HS256", "kid": k.rsa.kid},
                k.rsa.claims(),
                rsa_public(
                    k, serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                ),
            ),
            None,
        ),
    ),
    (
        "HS256 keyed with the RSA public key DER",
        lambda k: (
            hs256(
                {"alg": "HS256", "kid": k.rsa.kid},
                k.rsa.claims(),
                rsa_public(
                    k, serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                ),
            ),
            None,
        ),
    ),
    (
        "HS256 keyed with the RSA public key PKCS1 PEM",
        lambda k: (
            hs256(
                {"alg": "HS256", "kid": k.rsa.kid},
                k.rsa.claims(),
                rsa_public(k, serialization.Encoding.PEM, serialization.PublicFormat.PKCS1),
            ),
            None,
        ),
    ),
    (
        "HS256 keyed with the JWK JSON",
        lambda k: (
            hs256(
                {"alg": "HS256", "kid": k.rsa.kid}, k.rsa.claims(), json.dumps(k.rsa.jwk).encode()
            ),
            None,
        ),
    ),
    (
        "HS256 keyed with an OpenSSH public key",
        lambda k: (
            hs256(
                {"alg": "HS256", "kid": k.rsa.kid},
                k.rsa.claims(),
                rsa_public(k, serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH),
            ),
            None,
        ),
    ),
    (
        "HS256 keyed with the modulus",
        lambda k: (hs256({"alg": "HS256"}, k.rsa.claims(), k.rsa.jwk["n"].encode()), None),
    ),
    ("ES256 header on an RSA key", header(alg="ES256")),
    ("RS256 header on an EC key", lambda k: (k.ec.token(header={"alg": "RS256"}), None)),
    ("ES384 header on a P-256 key", lambda k: (k.ec.token(header={"alg": "ES384"}), None)),
    ("PS256 header on an RS256-pinned key", header(alg="PS256")),
    ("EdDSA header on an RSA key", header(alg="EdDSA")),
    ("kid path traversal", header(kid="../../../../etc/passwd")),
    ("kid SQL", header(kid="' OR '1'='1' --")),
    ("kid integer", header(kid=1)),
    ("kid list", header(kid=["a"])),
    ("kid object", header(kid={"$ne": None})),
    ("kid null", lambda k: (k.other.token(header={"kid": None}), None)),
    ("kid huge", header(kid="k" * 3000)),  # long, yet inside max_token_bytes
    ("kid NUL", header(kid="\x00")),
    (
        "two keys with one kid",
        lambda k: (
            k.other.token(header={"kid": k.rsa.kid}),
            {"keys": [k.rsa.jwk, {**k.other.jwk, "kid": k.rsa.kid}]},
        ),
    ),
    ("embedded jwk", lambda k: (k.other.token(header={"kid": None, "jwk": k.other.jwk}), None)),
    ("jku", lambda k: (k.other.token(header={"jku": "https://evil.test/jwks"}), None)),
    ("x5u", lambda k: (k.other.token(header={"x5u": "https://evil.test/cert"}), None)),
    ("x5c", lambda k: (k.other.token(header={"kid": None, "x5c": ["MIIB"]}), None)),
    ("crit", header(crit=["exp"])),
    ("crit empty", header(crit=[])),
    ("b64 false", header(b64=False)),
    ("JWE five parts", lambda k: (k.rsa.token() + ".YQ.YQ", None)),
    ("two segments", lambda k: (".".join(k.rsa.token().split(".")[:2]), None)),
    ("four segments", lambda k: (k.rsa.token() + ".YQ", None)),
    ("six segments", lambda k: (k.rsa.token() + ".YQ.YQ.YQ", None)),
    ("empty signature", lambda k: (k.rsa.token().rsplit(".", 1)[0] + ".", None)),
    ("empty payload", lambda k: (k.rsa.token().split(".")[0] + "..YQ", None)),
    ("all empty", raw("..")),
    (
        "JSON serialization",
        lambda k: (
            json.dumps(
                {
                    "payload": k.rsa.token().split(".")[1],
                    "signatures": [
                        {
                            "protected": k.rsa.token().split(".")[0],
                            "signature": k.rsa.token().split(".")[2],
                        }
                    ],
                }
            ),
            None,
        ),
    ),
    (
        "duplicate key in header",
        lambda k: (
            k.rsa.raw(
                b'{"alg":"none","alg":"RS256","kid":"' + k.rsa.kid.encode() + b'"}', k.rsa.claims()
            ),
            None,
        ),
    ),
    (
        "duplicate key in payload",
        lambda k: (
            k.rsa.raw(
                {"alg": "RS256", "kid": k.rsa.kid},
                json.dumps(k.rsa.claims()).encode()[:-1] + b', "sub": "admin"}',
            ),
            None,
        ),
    ),
    ("base64 padding", lambda k: (k.rsa.token().replace(".", "==.", 1), None)),
    (
        "base64 plus and slash",
        lambda k: (
            k.rsa.token().replace("-", "+").replace("_", "/")
            if "-" in k.rsa.token() or "_" in k.rsa.token()
            else k.rsa.token() + "+/",
            None,
        ),
    ),
    ("base64 spaces", lambda k: (k.rsa.token().replace(".", ". ", 1), None)),
    (
        "non-canonical base64",
        lambda k: (k.rsa.token()[:-1] + chr(ord(k.rsa.token()[-1]) ^ 1), None),
    ),
    ("header is an array", lambda k: (k.rsa.raw(["RS256"], k.rsa.claims()), None)),
    ("header is a string", lambda k: (k.rsa.raw("RS256", k.rsa.claims()), None)),
    ("payload is null", lambda k: (k.rsa.raw({"alg": "RS256", "kid": k.rsa.kid}, None), None)),
    ("payload is a number", lambda k: (k.rsa.raw({"alg": "RS256", "kid": k.rsa.kid}, 5), None)),
    (
        "invalid UTF-8 header",
        lambda k: (b64(b'{"alg":"\xff"}') + "." + k.rsa.token().split(".", 1)[1], None),
    ),
    (
        "invalid UTF-8 payload",
        lambda k: (k.rsa.raw({"alg": "RS256", "kid": k.rsa.kid}, b'{"sub":"\xc3"}'), None),
    ),
    ("1 MB token", lambda k: (k.rsa.token() + "A" * (1 << 20), None)),
    (
        "deep nesting",
        lambda k: (
            k.rsa.raw(
                {"alg": "RS256", "kid": k.rsa.kid}, b'{"a":' + b"[" * 2000 + b"]" * 2000 + b"}"
            ),
            None,
        ),
    ),
    (
        "5000-digit integer",
        lambda k: (
            k.rsa.raw({"alg": "RS256", "kid": k.rsa.kid}, b'{"exp":' + b"9" * 5000 + b"}"),
            None,
        ),
    ),
    *[
        (f"exp {v!r}", claim(exp=v))
        for v in ("1900000000", True, [1900000000], {"t": 1}, -5, 10**12, 1.5e300)
    ],
    (
        "exp null",
        lambda k: (
            k.rsa.raw({"alg": "RS256", "kid": k.rsa.kid}, {**k.rsa.claims(), "exp": None}),
            None,
        ),
    ),
    *[(f"nbf {v!r}", claim(nbf=v)) for v in ("0", False, [0], -1, 10**12)],
    *[(f"iat {v!r}", claim(iat=v)) for v in ("0", True, {"a": 1}, -1, 10**13)],
    *[
        (f"aud {v!r}", claim(aud=v))
        for v in (5, [5], {"aud": AUDIENCE}, [], [AUDIENCE.upper()], "")
    ],
    *[
        (f"iss {v!r}", claim(iss=v))
        for v in (5, [ISSUER], {"iss": ISSUER}, ISSUER + "/", ISSUER.upper())
    ],
    ("no exp", claim(exp=None)),
    ("expired", claim(exp=1)),
    ("ECDSA psychic signature", lambda k: (with_signature(k.ec.token(), bytes(64)), None)),
    (
        "ECDSA r = s = n",
        lambda k: (
            with_signature(
                k.ec.token(),
                bytes.fromhex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551")
                * 2,
            ),
            None,
        ),
    ),
    (
        "DER ES256 signature",
        lambda k: (
            with_signature(
                k.ec.token(),
                k.ec.key.sign(k.ec.token().rsplit(".", 1)[0].encode(), ec.ECDSA(hashes.SHA256())),
            ),
            None,
        ),
    ),
    (
        "RSA signature too short",
        lambda k: (
            with_signature(k.rsa.token(), k.rsa.sign(k.rsa.token().rsplit(".", 1)[0].encode())[1:]),
            None,
        ),
    ),
    (
        "RSA signature zero-prefixed",
        lambda k: (
            with_signature(
                k.rsa.token(), b"\x00" + k.rsa.sign(k.rsa.token().rsplit(".", 1)[0].encode())
            ),
            None,
        ),
    ),
    ("RSA signature all zero", lambda k: (with_signature(k.rsa.token(), bytes(256)), None)),
    ("JWKS private key", private_jwk),
    (
        "JWKS symmetric key",
        lambda k: (
            hs256({"alg": "HS256", "kid": "sym"}, k.rsa.claims(), b"s" * 32),
            {"keys": [k.rsa.jwk, {"kty": "oct", "kid": "sym", "k": b64(b"s" * 32)}]},
        ),
    ),
    (
        "JWKS use enc key",
        lambda k: (k.other.token(), {"keys": [k.rsa.jwk, {**k.other.jwk, "use": "enc"}]}),
    ),
    (
        "JWKS 1024-bit key",
        weak_key_token(rsa.generate_private_key(public_exponent=65537, key_size=1024), {}),
    ),
    ("JWKS e=1 key", forged_with_e1),
    (
        "JWKS small-order Ed25519 key",
        lambda k: (
            # With the identity point as public key, R = identity and S = 0 "verify" anything.
            f"{b64json({'alg': 'EdDSA', 'kid': 'weak-ed'})}.{b64json(k.rsa.claims(sub='admin'))}."
            + b64((1).to_bytes(32, "little") + bytes(32)),
            {
                "keys": [
                    k.rsa.jwk,
                    {
                        "kty": "OKP",
                        "crv": "Ed25519",
                        "kid": "weak-ed",
                        "x": b64((1).to_bytes(32, "little")),
                    },
                ]
            },
        ),
    ),
]


EXPECTED: dict[str, str] = {
    "alg none unsigned": "malformed_token",
    "alg None unsigned": "malformed_token",
    "alg NONE unsigned": "malformed_token",
    "alg nOnE unsigned": "malformed_token",
    "alg none signed": "algorithm_not_allowed",
    "alg None signed": "algorithm_not_allowed",
    "alg NONE signed": "algorithm_not_allowed",
    "alg nOnE signed": "algorithm_not_allowed",
    "HS256 keyed with the RSA public key PEM": "algorithm_not_allowed",
    "HS256 keyed with the RSA public key DER": "algorithm_not_allowed",
    "HS256 keyed with the RSA public key PKCS1 PEM": "algorithm_not_allowed",
    "HS256 keyed with the JWK JSON": "algorithm_not_allowed",
    "HS256 keyed with an OpenSSH public key": "algorithm_not_allowed",
    "HS256 keyed with the modulus": "algorithm_not_allowed",
    "ES256 header on an RSA key": "algorithm_not_allowed",
    "RS256 header on an EC key": "algorithm_not_allowed",
    "ES384 header on a P-256 key": "algorithm_not_allowed",
    "PS256 header on an RS256-pinned key": "algorithm_not_allowed",
    "EdDSA header on an RSA key": "algorithm_not_allowed",
    "kid path traversal": "unknown_kid",
    "kid SQL": "unknown_kid",
    "kid integer": "malformed_token",
    "kid list": "malformed_token",
    "kid object": "malformed_token",
    "kid null": "invalid_signature",
    "kid huge": "unknown_kid",
    "kid NUL": "unknown_kid",
    "two keys with one kid": "invalid_signature",
    "embedded jwk": "invalid_signature",
    "jku": "unknown_kid",
    "x5u": "unknown_kid",
    "x5c": "invalid_signature",
    "crit": "malformed_token",
    "crit empty": "malformed_token",
    "b64 false": "malformed_token",
    "JWE five parts": "malformed_token",
    "two segments": "malformed_token",
    "four segments": "malformed_token",
    "six segments": "malformed_token",
    "empty signature": "malformed_token",
    "empty payload": "malformed_token",
    "all empty": "malformed_token",
    "JSON serialization": "malformed_token",
    "duplicate key in header": "malformed_token",
    "duplicate key in payload": "malformed_token",
    "base64 padding": "malformed_token",
    "base64 plus and slash": "malformed_token",
    "base64 spaces": "malformed_token",
    "non-canonical base64": "malformed_token",
    "header is an array": "malformed_token",
    "header is a string": "malformed_token",
    "payload is null": "malformed_token",
    "payload is a number": "malformed_token",
    "invalid UTF-8 header": "malformed_token",
    "invalid UTF-8 payload": "malformed_token",
    "1 MB token": "request_too_large",
    "deep nesting": "malformed_token",
    "5000-digit integer": "malformed_token",
    "exp '1900000000'": "invalid_claims",
    "exp True": "invalid_claims",
    "exp [1900000000]": "invalid_claims",
    "exp {'t': 1}": "invalid_claims",
    "exp -5": "invalid_claims",
    "exp 1000000000000": "invalid_claims",
    "exp 1.5e+300": "invalid_claims",
    "exp null": "invalid_claims",
    "nbf '0'": "invalid_claims",
    "nbf False": "invalid_claims",
    "nbf [0]": "invalid_claims",
    "nbf -1": "invalid_claims",
    "nbf 1000000000000": "invalid_claims",
    "iat '0'": "invalid_claims",
    "iat True": "invalid_claims",
    "iat {'a': 1}": "invalid_claims",
    "iat -1": "invalid_claims",
    "iat 10000000000000": "invalid_claims",
    "aud 5": "invalid_audience",
    "aud [5]": "invalid_audience",
    "aud {'aud': 'api'}": "invalid_audience",
    "aud []": "invalid_audience",
    "aud ['API']": "invalid_audience",
    "aud ''": "invalid_audience",
    "iss 5": "invalid_issuer",
    "iss ['https://idp.test/realms/corp']": "invalid_issuer",
    "iss {'iss': 'https://idp.test/realms/corp'}": "invalid_issuer",
    "iss 'https://idp.test/realms/corp/'": "invalid_issuer",
    "iss 'HTTPS://IDP.TEST/REALMS/CORP'": "invalid_issuer",
    "no exp": "missing_exp",
    "expired": "token_expired",
    "ECDSA psychic signature": "invalid_signature",
    "ECDSA r = s = n": "invalid_signature",
    "DER ES256 signature": "invalid_signature",
    "RSA signature too short": "invalid_signature",
    "RSA signature zero-prefixed": "invalid_signature",
    "RSA signature all zero": "invalid_signature",
    "JWKS private key": "unknown_kid",
    "JWKS symmetric key": "algorithm_not_allowed",
    "JWKS use enc key": "unknown_kid",
    "JWKS 1024-bit key": "unknown_kid",
    "JWKS e=1 key": "unknown_kid",
    "JWKS small-order Ed25519 key": "unknown_kid",
}


@pytest.fixture(scope="module")
def keys(rsa_signer: Signer, other_rsa_signer: Signer, ec_signer: Signer) -> Keys:
    return Keys(rsa_signer, other_rsa_signer, ec_signer)


@pytest.mark.parametrize(("name", "attack"), ATTACKS, ids=[a[0] for a in ATTACKS])
async def test_attack_is_denied(
    name: str, attack: Attack, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token, jwks = attack(keys)
    response = await check(authorizer_for(jwks or keys.jwks), token)
    assert response.WhichOneof("http_response") == "denied_response", name
    assert json.loads(response.denied_response.body)["reason"] == EXPECTED[name]
    for secret in (token, token.rsplit(".", 1)[-1]):
        if len(secret) > 8:
            assert secret not in caplog.text


async def test_the_baseline_is_allowed(keys: Keys) -> None:
    """The suite's setup really accepts good tokens, so each deny above means something."""
    for signer in (keys.rsa, keys.ec):
        response = await check(authorizer_for(keys.jwks), signer.token())
        assert response.WhichOneof("http_response") == "ok_response"


async def test_a_huge_token_meets_the_token_size_cap(keys: Keys) -> None:
    big = keys.rsa.token() + "A" * (1 << 20)
    limits = {"max_header_bytes": 2 << 20}
    response = await check(authorizer_for(keys.jwks, limits), big)
    assert json.loads(response.denied_response.body)["reason"] == "malformed_token"


def test_deep_nesting_is_refused_even_under_a_large_size_cap(keys: Keys) -> None:
    deep = keys.rsa.raw({"alg": "RS256"}, b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    with pytest.raises(MalformedToken):
        parse_token(deep, max_bytes=10**7)
    moderate = keys.rsa.raw({"alg": "RS256"}, b'{"a":' + b"[" * 40 + b"]" * 40 + b"}")
    with pytest.raises(MalformedToken, match="nested too deeply"):
        parse_token(moderate, 8192)


# --- property-based --------------------------------------------------------------

B64 = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=60
)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200) | st.builds(lambda a, b, c: f"{a}.{b}.{c}", B64, B64, B64))
def test_parser_raises_only_malformed_token(text: str) -> None:
    with contextlib.suppress(MalformedToken):
        parse_token(text, 8192)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    headers=st.dictionaries(
        st.sampled_from(["authorization", "cookie", "x-user-id", "x-token"]) | st.text(max_size=20),
        st.text(max_size=100) | st.builds(lambda t: f"Bearer {t}", st.text(max_size=100)),
        max_size=8,
    ),
    path=st.text(max_size=50).map(lambda p: "/" + p),
)
def test_check_never_raises_and_never_allows_garbage(
    headers: dict[str, str], path: str, keys: Keys
) -> None:
    servicer = AuthorizationServicer(authorizer_for(keys.jwks))
    response = asyncio.run(answer(servicer, check_request(path, **headers)))
    assert response.WhichOneof("http_response") == "denied_response"


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(position=st.integers(min_value=0), replacement=st.sampled_from("AQgw_-.=+ xZ9"))
def test_any_one_character_change_is_denied(position: int, replacement: str, keys: Keys) -> None:
    token = keys.rsa.token()
    index = position % len(token)
    mutated = token[:index] + replacement + token[index + 1 :]
    servicer = AuthorizationServicer(authorizer_for(keys.jwks))
    response = asyncio.run(answer(servicer, check_request(authorization=f"Bearer {mutated}")))
    allowed = response.WhichOneof("http_response") == "ok_response"
    assert allowed == (mutated == token)
