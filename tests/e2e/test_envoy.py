"""End to end: HTTP through a real Envoy (deploy/envoy.yaml) to authz and an echo upstream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from dev.stack import DEV_AUDIENCE, DEV_ISSUER, Ports, Stack, dev_config
from tests.support import Signer, call, log_entries, wall_clock_claims

pytestmark = pytest.mark.e2e


def echo_metadata(config: dict[str, Any]) -> None:
    """Have Envoy copy one claim from authz's dynamic metadata into an upstream header."""
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    routes = hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    routes[-1]["request_headers_to_add"] = [
        {
            "header": {
                "key": "x-metadata-sub",
                "value": "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:dev:sub)%",
            }
        }
    ]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, rsa_signer: Signer) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("stack")
    jwks = workdir / "jwks.json"
    jwks.write_text(json.dumps({"keys": [rsa_signer.jwk]}))
    ports = Ports()
    config = {
        **dev_config(jwks, ports),
        "log_level": "DEBUG",
        "decision_log": {"enabled": True, "log_subject": True},
    }
    running = Stack(workdir, config, ports, envoy_patch=echo_metadata)
    running.start()
    yield running
    running.stop()


SENT_TOKENS: list[str] = []


def token(signer: Signer, **claims: Any) -> str:
    minted = signer.token(
        **{"iss": DEV_ISSUER, "aud": DEV_AUDIENCE, **wall_clock_claims(), **claims}
    )
    SENT_TOKENS.append(minted)
    return minted


def bearer(value: str) -> str:
    return f"Bearer {value}"


def test_valid_token_reaches_the_upstream_with_identity_headers(stack: Stack, rsa_signer: Signer):
    minted = token(rsa_signer, realm_access={"roles": ["user", "dev"]})
    status, _, echo = call(
        stack, "/hello", authorization=bearer(minted), x_user_id="mallory", x_jwt_payload="forged"
    )
    assert status == 200
    headers = echo["headers"]
    assert headers["x-user-id"] == "alice"
    assert headers["x-user-roles"] == "user,dev"
    assert headers["x-jwt-payload"] == minted.split(".")[1]
    assert headers["x-metadata-sub"] == "alice"  # the claims reached Envoy's dynamic metadata
    assert "authorization" not in headers


def test_underscore_spoof_is_rejected_by_envoy(stack: Stack, rsa_signer: Signer) -> None:
    spoof = {"x_user_id": "mallory"}
    status = call(stack, "/hello", raw=spoof, authorization=bearer(token(rsa_signer)))[0]
    assert status == 400


def test_spoofed_identity_header_never_reaches_the_upstream(stack: Stack, rsa_signer: Signer):
    # The token has no realm_access, so x-user-roles is not set: the client's copy must go.
    status, _, echo = call(
        stack, "/hello", authorization=bearer(token(rsa_signer)), x_user_roles="admin"
    )
    assert status == 200
    assert "x-user-roles" not in echo["headers"]


def test_missing_token_is_401_with_a_challenge(stack: Stack) -> None:
    status, headers, body = call(stack, "/hello")
    assert status == 401
    assert headers["www-authenticate"] == f'Bearer realm="127.0.0.1:{stack.ports.envoy}"'
    assert body["error"] == "unauthorized"


@pytest.mark.parametrize(
    ("name", "claims", "description"),
    [
        ("expired", {"exp": 1_600_000_000, "iat": 1_599_999_000}, "the token has expired"),
        ("wrong audience", {"aud": "someone-else"}, "the token audience is not accepted"),
    ],
)
def test_invalid_tokens_are_401(
    stack: Stack, rsa_signer: Signer, name: str, claims: dict[str, Any], description: str
) -> None:
    status, headers, body = call(stack, "/hello", authorization=bearer(token(rsa_signer, **claims)))
    assert status == 401
    assert 'error="invalid_token"' in headers["www-authenticate"]
    assert f'error_description="{description}"' in headers["www-authenticate"]
    assert body == {"error": "invalid_token", "error_description": description}


def test_bad_signature_is_401(stack: Stack, rsa_signer: Signer, other_rsa_signer: Signer):
    forged = token(other_rsa_signer, sub="admin", header={"kid": rsa_signer.kid})
    status, headers, _ = call(stack, "/hello", authorization=bearer(forged))
    assert status == 401
    assert 'error_description="the token signature is invalid"' in headers["www-authenticate"]


def test_failed_claim_rule_is_403(stack: Stack, rsa_signer: Signer) -> None:
    user = token(rsa_signer, realm_access={"roles": ["user"]})
    status, _, body = call(stack, "/admin/users", authorization=bearer(user))
    assert status == 403
    assert body["error"] == "access_denied"
    admin = token(rsa_signer, realm_access={"roles": ["admin"]})
    assert call(stack, "/admin/users", authorization=bearer(admin))[0] == 200


def test_routes_select_policies_with_context_extensions(stack: Stack, rsa_signer: Signer):
    admin = token(rsa_signer, realm_access={"roles": ["admin"]})
    reporter = token(rsa_signer, scope="reports:read")
    # Envoy's /admin route names policy "admin", its /reports route policy "reports".
    assert call(stack, "/admin/x", authorization=bearer(admin))[0] == 200
    assert call(stack, "/admin/x", authorization=bearer(reporter))[0] == 403
    assert call(stack, "/reports/q", authorization=bearer(reporter))[0] == 200
    status, headers, _ = call(stack, "/reports/q", authorization=bearer(admin))
    assert status == 403
    assert 'error="insufficient_scope"' in headers["www-authenticate"]
    # The same path without Envoy's context would fall to the default rule.
    assert call(stack, "/elsewhere/admin", authorization=bearer(reporter))[0] == 200


def test_missing_scope_is_403_insufficient_scope(stack: Stack, rsa_signer: Signer) -> None:
    reader = token(rsa_signer, scope="read")
    status, headers, _ = call(stack, "/items", "POST", authorization=bearer(reader))
    assert status == 403
    assert 'error="insufficient_scope"' in headers["www-authenticate"]
    writer = token(rsa_signer, scope="read write")
    assert call(stack, "/items", "POST", authorization=bearer(writer))[0] == 200


def test_public_route_needs_no_token_and_strips_spoofs(stack: Stack) -> None:
    status, _, echo = call(stack, "/healthz", x_user_id="mallory")
    assert status == 200
    assert "x-user-id" not in echo["headers"]


def test_route_with_ext_authz_disabled(stack: Stack) -> None:
    assert call(stack, "/envoy-health")[:1] == (200,)


def test_token_in_query_and_cookie_is_stripped(stack: Stack, rsa_signer: Signer) -> None:
    status, _, echo = call(stack, f"/q?access_token={token(rsa_signer)}&keep=1")
    assert status == 200
    assert echo["path"] == "/q?keep=1"
    second = token(rsa_signer)
    status, _, echo = call(
        stack, f"/q?access%5Ftoken={second}&keep=1", authorization=bearer(token(rsa_signer))
    )
    assert status == 200
    assert echo["path"] == "/q?keep=1"
    status, _, echo = call(stack, "/c", cookie=f"theme=dark; session={token(rsa_signer)}")
    assert status == 200
    assert echo["headers"]["cookie"] == "theme=dark"


def test_path_tricks_do_not_escape_a_rule(stack: Stack, rsa_signer: Signer) -> None:
    user = token(rsa_signer)
    for path in ("/healthz/../admin/users", "//admin/users", "/healthz/%2e%2e/admin/users"):
        status = call(stack, path, authorization=bearer(user))[0]
        assert status in (403, 400), path


def test_graceful_shutdown_and_no_secrets_in_logs(stack: Stack) -> None:
    codes = stack.stop()
    assert codes["authz"] == 0
    log = stack.log("authz")
    assert "shutting down" in log
    assert "deny token_expired" in log  # DEBUG logging was on while tokens flowed
    assert '"decision":"allow"' in log and '"reason":"token_expired"' in log  # decision log
    entries = log_entries(log)  # every line is one JSON object (log_format: json)
    decision_lines = [entry for entry in entries if "decision" in entry]
    assert decision_lines and all("message" not in entry for entry in decision_lines)
    assert '"subject":"alice"' in log and "read write" not in log  # no other claim
    for sent in SENT_TOKENS:
        assert sent not in log
        assert sent.split(".")[2] not in log
