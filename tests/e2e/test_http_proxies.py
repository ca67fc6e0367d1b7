"""End to end over HTTP authorization: Envoy http_service (deploy/envoy-http.yaml) and
nginx auth_request (deploy/nginx.conf), each through the real proxy."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dev.stack import (
    ROOT,
    Ports,
    Stack,
    http_dev_config,
    nginx_binary,
)
from tests.support import Signer, call, ec_signer, proxy_call
from tests.support.dpop import make_proof, thumbprint
from tests.support.tokens import minted

pytestmark = pytest.mark.e2e


def with_dpop_nonce(config: dict[str, Any], workdir: Path) -> None:
    """The dev provider asks DPoP clients for a nonce. Neither proxy tells authz the
    scheme: DPoP needs the origin clients use."""
    (workdir / "nonce-secret").write_bytes(b"n" * 32)
    config["providers"]["dev"]["dpop"] = {
        "external_origin": "https://app.example",
        "nonce": {"secret": {"file": str(workdir / "nonce-secret")}},
    }


def answered_with_a_nonce(port: int, signer: Signer) -> dict[str, Any]:
    """A DPoP-bound request through the proxy on ``port``, refused for want of a nonce,
    then sent again proving with the nonce the denial handed over: the upstream's echo."""
    key = ec_signer()
    token = minted(signer, cnf={"jkt": thumbprint(key)})
    url = "https://app.example/hello"
    first = make_proof(key, "GET", url, token)
    refused = proxy_call(port, "/hello", authorization=f"DPoP {token}", dpop=first)
    assert refused.status == 401
    assert 'error="use_dpop_nonce"' in refused.headers["www-authenticate"]
    retry = make_proof(key, "GET", url, token, nonce=refused.headers["dpop-nonce"])
    allowed = proxy_call(port, "/hello", authorization=f"DPoP {token}", dpop=retry)
    assert allowed.status == 200, allowed.body
    echo: dict[str, Any] = json.loads(allowed.body)
    return echo


@pytest.fixture(scope="module")
def envoy_http(tmp_path_factory: pytest.TempPathFactory, rsa_signer: Signer) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("envoy-http")
    jwks = workdir / "jwks.json"
    jwks.write_text(json.dumps({"keys": [rsa_signer.jwk]}))
    ports = Ports()
    config = http_dev_config(jwks, ports, "envoy")
    config["http_authz"]["certificate_source"] = "xfcc"
    with_dpop_nonce(config, workdir)
    stack = Stack(workdir, config, ports, envoy_template=ROOT / "deploy" / "envoy-http.yaml")
    stack.start()
    yield stack
    stack.stop()


def test_envoy_http_service_allows_with_identity_headers(envoy_http: Stack, rsa_signer: Signer):
    token = minted(rsa_signer, realm_access={"roles": ["user"]})
    status, _, echo = call(
        envoy_http,
        "/hello?x=1",
        authorization=f"Bearer {token}",
        x_user_id="mallory",
        x_user_roles="admin",
        cookie=f"theme=dark; session={token}",
    )
    assert status == 200
    headers = echo["headers"]
    assert headers["x-user-id"] == "alice"
    assert headers["x-user-roles"] == "user"
    assert "authorization" not in headers  # removed through x-envoy-auth-headers-to-remove
    assert headers["cookie"] == "theme=dark"
    assert echo["path"] == "/hello?x=1"
    spoof_only = call(envoy_http, "/healthz", x_user_id="mallory", x_jwt_payload="forged")
    assert spoof_only[0] == 200
    assert "x-user-id" not in spoof_only[2]["headers"]
    assert "x-jwt-payload" not in spoof_only[2]["headers"]


def test_envoy_http_service_denies(envoy_http: Stack, rsa_signer: Signer) -> None:
    status, headers, body = call(envoy_http, "/hello")
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer realm=")
    assert body["error"] == "unauthorized"
    expired = minted(rsa_signer, exp=1_600_000_000, iat=1_599_999_000)
    status, headers, _ = call(envoy_http, "/hello", authorization=f"Bearer {expired}")
    assert status == 401 and 'error="invalid_token"' in headers["www-authenticate"]
    reader = minted(rsa_signer, scope="read")
    status, headers, _ = call(envoy_http, "/items", "POST", authorization=f"Bearer {reader}")
    assert status == 403 and 'error="insufficient_scope"' in headers["www-authenticate"]
    user = minted(rsa_signer, realm_access={"roles": ["user"]})
    assert call(envoy_http, "/admin/x", authorization=f"Bearer {user}")[0] == 403


def test_envoy_http_service_hands_the_dpop_nonce(envoy_http: Stack, rsa_signer: Signer) -> None:
    """Envoy's http_service passes a denial's headers only when allowed_client_headers
    lists them: deploy/envoy-http.yaml lists DPoP-Nonce, or no client could answer
    use_dpop_nonce."""
    echo = answered_with_a_nonce(envoy_http.ports.envoy, rsa_signer)
    assert "dpop" not in echo["headers"] and "authorization" not in echo["headers"]


@pytest.fixture(scope="module")
def nginx(
    tmp_path_factory: pytest.TempPathFactory, rsa_signer: Signer
) -> Iterator[tuple[int, Stack]]:
    if nginx_binary() is None:
        pytest.fail("nginx is not installed: .ci/run installs Debian's nginx")
    workdir = tmp_path_factory.mktemp("nginx")
    jwks = workdir / "jwks.json"
    jwks.write_text(json.dumps({"keys": [rsa_signer.jwk]}))
    ports = Ports()
    config = http_dev_config(jwks, ports, "nginx")
    config["decision_log"] = {"enabled": True}
    with_dpop_nonce(config, workdir)
    stack = Stack(workdir, config, ports, proxy="nginx")
    stack.start()
    yield ports.envoy, stack
    stack.stop()


def nginx_call(
    port: int, path: str, method: str = "GET", **headers: str
) -> tuple[int, dict[str, str], str]:
    reply = proxy_call(port, path, method, **headers)
    return reply.status, reply.headers, reply.body


def test_nginx_auth_request(nginx: tuple[int, Stack], rsa_signer: Signer) -> None:
    port, _ = nginx
    token = minted(rsa_signer)
    status, _, body = nginx_call(
        port, "/hello", authorization=f"Bearer {token}", x_user_id="mallory"
    )
    assert status == 200
    echo = json.loads(body)
    assert echo["headers"]["x-user-id"] == "alice"
    assert "authorization" not in echo["headers"]
    status, headers, _ = nginx_call(port, "/hello")
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer realm=")
    reader = minted(rsa_signer, scope="read")
    status, headers, _ = nginx_call(port, "/items", "POST", authorization=f"Bearer {reader}")
    assert status == 403
    assert 'error="insufficient_scope"' in headers["www-authenticate"]
    user = minted(rsa_signer, realm_access={"roles": ["user"]})
    assert nginx_call(port, "/admin/x", authorization=f"Bearer {user}")[0] == 403
    spoofed = nginx_call(
        port,
        "/hello",
        authorization=f"Bearer {token}",
        x_user_email="m@x",
        x_authz_dry_run="allow",
        x_profile_access="self",
    )
    assert not {"x-user-email", "x-authz-dry-run", "x-profile-access"} & set(
        json.loads(spoofed[2])["headers"]
    )
    public = nginx_call(port, "/healthz", x_user_id="mallory")
    assert public[0] == 200 and "x-user-id" not in json.loads(public[2])["headers"]


def test_a_forged_xfcc_never_stands_for_a_client_certificate(
    envoy_http: Stack, rsa_signer: Signer
) -> None:
    """authz trusts x-forwarded-client-cert (certificate_source: xfcc) because Envoy
    replaces the client's copy (forward_client_cert_details: SANITIZE_SET in
    deploy/envoy-http.yaml): a client without a certificate cannot claim one."""
    digest = hashlib.sha256(b"the certificate the token is bound to").digest()
    x5t = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    token = minted(rsa_signer, cnf={"x5t#S256": x5t})
    forged = f'Hash={digest.hex()};Subject="CN=alice"'
    status, headers, _ = call(
        envoy_http, "/hello", authorization=f"Bearer {token}", x_forwarded_client_cert=forged
    )
    assert status == 401 and "did not present" in headers["www-authenticate"]
    # Straight to authz, past Envoy, the same header would be believed: Envoy's
    # sanitizing is what the 401 above proves.
    direct = http.client.HTTPConnection("127.0.0.1", envoy_http.ports.authz_http_authz, timeout=5)
    try:
        direct.request(
            "GET",
            "/authz/hello",
            headers={"authorization": f"Bearer {token}", "x-forwarded-client-cert": forged},
        )
        assert direct.getresponse().status == 200
    finally:
        direct.close()


def test_nginx_hands_the_dpop_nonce_and_drops_the_proof(
    nginx: tuple[int, Stack], rsa_signer: Signer
) -> None:
    """nginx passes only WWW-Authenticate of a 401 on its own: deploy/nginx.conf copies
    DPoP-Nonce too, and keeps the proof from the upstream."""
    echo = answered_with_a_nonce(nginx[0], rsa_signer)
    assert "dpop" not in echo["headers"]


def test_nginx_answers_one_challenge(nginx: tuple[int, Stack], rsa_signer: Signer) -> None:
    """nginx's auth_request copies WWW-Authenticate from a 401 itself; deploy/nginx.conf
    adds authz's challenge on a 403 only, so no answer carries two."""
    port, _ = nginx
    missing = proxy_call(port, "/hello")
    assert missing.status == 401
    assert missing.every("www-authenticate") == ['Bearer realm="127.0.0.1"']
    expired = minted(rsa_signer, exp=1_600_000_000, iat=1_599_999_000)
    invalid = proxy_call(port, "/hello", authorization=f"Bearer {expired}")
    assert invalid.status == 401 and len(invalid.every("www-authenticate")) == 1
    assert 'error="invalid_token"' in invalid.headers["www-authenticate"]
    reader = minted(rsa_signer, scope="read")
    scope = proxy_call(port, "/items", "POST", authorization=f"Bearer {reader}")
    assert scope.status == 403 and len(scope.every("www-authenticate")) == 1
    assert 'error="insufficient_scope"' in scope.headers["www-authenticate"]
    user = minted(rsa_signer, realm_access={"roles": ["user"]})
    forbidden = proxy_call(port, "/admin/x", authorization=f"Bearer {user}")
    assert forbidden.status == 403 and forbidden.every("www-authenticate") == []


def test_nginx_hands_on_the_host_and_one_request_id(
    nginx: tuple[int, Stack], rsa_signer: Signer
) -> None:
    """The upstream sees the Host the client asked for (not the upstream block's name),
    and the request id nginx made, which authz's decision line names too; a client's own
    X-Request-Id is replaced in both."""
    port, stack = nginx
    token = minted(rsa_signer)
    reply = proxy_call(
        port,
        "/hello",
        host="shop.example",
        authorization=f"Bearer {token}",
        x_request_id="client-chosen",
    )
    assert reply.status == 200
    seen = reply.echo["headers"]
    assert seen["host"] == "shop.example"
    request_id = seen["x-request-id"]
    assert len(request_id) == 32 and request_id != "client-chosen"
    lines = [json.loads(line) for line in stack.log("authz").splitlines() if '"request_id"' in line]
    mine = [line for line in lines if line["request_id"] == request_id]
    assert [(m["host"], m["decision"]) for m in mine] == [("shop.example", "allow")]
    assert not any(line["request_id"] == "client-chosen" for line in lines)


def test_nginx_never_hands_on_a_client_copy_of_an_absent_claim(
    nginx: tuple[int, Stack], rsa_signer: Signer
) -> None:
    """The token has no realm_access: authz answers X-User-Roles empty, nginx sets it
    empty (so sends none), and the client's own copy never reaches the upstream, in no
    spelling."""
    port, _ = nginx
    token = minted(rsa_signer)
    # Other spellings of the names, which CGI, WSGI and PHP read as X-User-Id: nginx's
    # defaults (underscores_in_headers off, ignore_invalid_headers on) drop them.
    aliases = {f"X{char}User{char}Id": "admin" for char in "!#$%&'*+.^_`|~"}
    reply = proxy_call(
        port,
        "/hello",
        raw=aliases,
        authorization=f"Bearer {token}",
        x_user_roles="admin",
        x_user_id="root",
    )
    assert reply.status == 200
    seen = reply.echo["headers"]
    assert seen["x-user-id"] == "alice"
    assert "x-user-roles" not in seen, seen
    assert "admin" not in json.dumps(seen)
