"""Published JWS examples (RFC 7515, Appendix A) verify with authz's key handling.

The keys and tokens are the RFC's own example values, written out from its text.
Their exp (1300819380) is long past, so they are checked at the signature layer.
"""

from __future__ import annotations

import base64

import pytest

from authz.core.jws import parse_token
from authz.keys.crypto import construct_hmac_key, construct_key

PAYLOAD = (
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
)

# A.1: HMAC SHA-256
A1_KEY = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"
A1_TOKEN = (
    f"eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.{PAYLOAD}."
    "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
)

# A.2: RSASSA-PKCS1-v1_5 SHA-256
A2_JWK = {
    "kty": "RSA",
    "n": (
        "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddx"
        "HmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMs"
        "D1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSH"
        "SXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdV"
        "MTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8"
        "NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ"
    ),
    "e": "AQAB",
}
A2_TOKEN = (
    f"eyJhbGciOiJSUzI1NiJ9.{PAYLOAD}."
    "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7"
    "AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4"
    "BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K"
    "0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqv"
    "hJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrB"
    "p0igcN_IoypGlUPQGe77Rw"
)

# A.3: ECDSA P-256 SHA-256
A3_JWK = {
    "kty": "EC",
    "crv": "P-256",
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
}
A3_TOKEN = (
    f"eyJhbGciOiJFUzI1NiJ9.{PAYLOAD}."
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
)


def _key(name: str):  # type: ignore[no-untyped-def]
    if name == "A.1":
        return construct_hmac_key(base64.urlsafe_b64decode(A1_KEY + "=="), "HS256", None)
    if name == "A.2":
        return construct_key(A2_JWK, "RS256")
    return construct_key(A3_JWK, "ES256")


@pytest.mark.parametrize(
    ("name", "token"), [("A.1", A1_TOKEN), ("A.2", A2_TOKEN), ("A.3", A3_TOKEN)]
)
def test_rfc7515_examples_verify(name: str, token: str) -> None:
    parsed = parse_token(token, 8192)
    key = _key(name)
    assert key.verify(parsed.signing_input, parsed.signature)
    assert parsed.claims == {"iss": "joe", "exp": 1300819380, "http://example.com/is_root": True}
    # One changed payload byte and the same signature no longer verifies.
    tampered = parse_token(token.replace(".eyJpc3MiOiJqb2Ui", ".eyJpc3MiOiJqb2Ei", 1), 8192)
    assert not key.verify(tampered.signing_input, tampered.signature)


def test_rfc8037_ed25519_example_verifies() -> None:
    # RFC 8037 A.4: the payload is plain text, so the signature is checked directly.
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    token = (
        "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
        "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
    )
    header, payload, signature = token.split(".")
    key = construct_key(jwk, "EdDSA")
    raw = base64.urlsafe_b64decode(signature + "==")
    assert key.verify(f"{header}.{payload}".encode(), raw)
    assert not key.verify(f"{header}.{payload}x".encode(), raw)
