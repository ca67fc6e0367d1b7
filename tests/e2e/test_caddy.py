"""End to end through Debian's Caddy with deploy/Caddyfile (only its ports changed):
forward_auth to authz's HTTP endpoint in the caddy style."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from dev.stack import (
    CADDY_TEMPLATE,
    Ports,
    Stack,
    caddy_binary,
    http_dev_config,
)
from tests.support import Signer, ec_signer, proxy_call
from tests.support.configs import with_deploy_rules
from tests.support.dpop import make_proof, thumbprint
from tests.support.tokens import minted

pytestmark = pytest.mark.e2e

HOST = "shop.example"


def start(workdir: Path, rsa_signer: Signer, template: Path = CADDY_TEMPLATE) -> Stack:
    if caddy_binary() is None:
        pytest.fail("caddy is not installed: .ci/run installs Debian's caddy")
    jwks = workdir / "jwks.json"
    jwks.write_text(json.dumps({"keys": [rsa_signer.jwk]}))
    ports = Ports()
    config = http_dev_config(jwks, ports, "caddy")
    config["decision_log"] = {"enabled": True}
    provider = config["providers"]["dev"]
    # Every identity header of deploy/authz.yaml, so that each copy_headers entry of
    # deploy/Caddyfile is one authz answers.
    with_deploy_rules(config)
    # Caddy says the scheme (X-Forwarded-Proto): DPoP needs no external_origin here.
    (workdir / "nonce-secret").write_bytes(b"n" * 32)
    provider["dpop"] = {"nonce": {"secret": {"file": str(workdir / "nonce-secret")}}}
    stack = Stack(workdir, config, ports, proxy="caddy", proxy_template=template)
    stack.start()
    return stack


@pytest.fixture(scope="module")
def caddy(tmp_path_factory: pytest.TempPathFactory, rsa_signer: Signer) -> Iterator[Stack]:
    stack = start(tmp_path_factory.mktemp("caddy"), rsa_signer)
    yield stack
    stack.stop()


def test_caddy_allows_with_identity_headers_and_keeps_the_token(
    caddy: Stack, rsa_signer: Signer
) -> None:
    token = minted(rsa_signer, email="alice@example.com", realm_access={"roles": ["user"]})
    reply = proxy_call(
        caddy.ports.envoy,
        "/hello?x=1",
        host=HOST,
        authorization=f"Bearer {token}",
        x_user_id="admin",
        x_user_roles="admin",
    )
    assert reply.status == 200, reply.body
    seen = reply.echo["headers"]
    assert seen["x-user-id"] == "alice"
    assert seen["x-user-email"] == "alice@example.com"
    assert seen["x-user-roles"] == "user"
    assert seen["x-jwt-payload"] == token.split(".")[1]
    assert "authorization" not in seen  # request_header -Authorization after forward_auth
    assert seen["host"] == HOST
    assert reply.echo["path"] == "/hello?x=1"
    profile = proxy_call(
        caddy.ports.envoy, "/users/alice", host=HOST, authorization=f"Bearer {token}"
    )
    assert profile.status == 200 and profile.echo["headers"]["x-profile-access"] == "self"


def test_caddy_hands_on_authz_denials(caddy: Stack, rsa_signer: Signer) -> None:
    """Caddy copies any answer but a 2xx back to the client: status, challenge, body."""
    port = caddy.ports.envoy
    missing = proxy_call(port, "/hello", host=HOST)
    assert missing.status == 401
    assert missing.every("www-authenticate") == [f'Bearer realm="{HOST}"']
    assert json.loads(missing.body)["error"] == "unauthorized"
    reader = minted(rsa_signer, scope="read")
    scope = proxy_call(port, "/items", "POST", host=HOST, authorization=f"Bearer {reader}")
    assert scope.status == 403 and len(scope.every("www-authenticate")) == 1
    assert 'error="insufficient_scope"' in scope.headers["www-authenticate"]
    user = minted(rsa_signer, realm_access={"roles": ["user"]})
    forbidden = proxy_call(port, "/admin/x", host=HOST, authorization=f"Bearer {user}")
    assert forbidden.status == 403 and forbidden.every("www-authenticate") == []
    ambiguous = proxy_call(port, "/healthz/..;/admin", host=HOST)
    assert ambiguous.status == 400
    assert json.loads(ambiguous.body)["error"] == "invalid_request"


def test_caddy_never_hands_on_a_client_copy_of_an_identity_header(
    caddy: Stack, rsa_signer: Signer
) -> None:
    """The token has neither email nor roles: authz answers those headers empty, and the
    client's copies of them, deleted before forward_auth, never come back. Caddy 2.6.2
    would otherwise send the placeholder {http.reverse_proxy.header.X-User-Email}."""
    port = caddy.ports.envoy
    token = minted(rsa_signer)
    reply = proxy_call(
        port,
        "/hello",
        host=HOST,
        authorization=f"Bearer {token}",
        x_user_email="root@example.com",
        x_user_roles="admin",
        x_profile_access="self",
        x_authz_dry_run="allow",
    )
    assert reply.status == 200
    seen = reply.echo["headers"]
    assert seen["x-user-id"] == "alice"
    for name in ("x-user-email", "x-user-roles", "x-profile-access", "x-authz-dry-run"):
        assert seen[name] == "", name
    assert "{http." not in json.dumps(seen)
    public = proxy_call(port, "/healthz", host=HOST, x_user_id="admin", x_jwt_payload="forged")
    assert public.status == 200
    assert (public.echo["headers"]["x-user-id"], public.echo["headers"]["x-jwt-payload"]) == (
        "",
        "",
    )


def test_caddy_drops_other_spellings_of_header_names(caddy: Stack, rsa_signer: Signer) -> None:
    """X_User_Id and X.User.Id are not X-User-Id to Caddy, but CGI, WSGI and PHP read all
    of them as HTTP_X_USER_ID: deploy/Caddyfile drops every header name holding a
    character other than a letter, a digit or "-"."""
    token = minted(rsa_signer)
    spoofs = {f"X{char}User{char}Id": "admin" for char in "!#$%&'*+.^_`|~"}
    spoofs |= {"x-user_roles": "admin", "X.Authz.Dry.Run": "allow"}
    reply = proxy_call(
        caddy.ports.envoy, "/hello", raw=spoofs, host=HOST, authorization=f"Bearer {token}"
    )
    assert reply.status == 200
    seen = reply.echo["headers"]
    assert [name for name in seen if not re.fullmatch("[a-z0-9-]+", name)] == []
    assert seen["x-user-id"] == "alice"
    assert "admin" not in json.dumps(seen)


def test_caddy_replaces_the_headers_naming_the_request(caddy: Stack) -> None:
    """A client's X-Forwarded-Uri, -Method and -Host never reach authz: forward_auth and
    reverse_proxy set them (the client is no trusted proxy), so the request judged is the
    one the upstream gets."""
    reply = proxy_call(
        caddy.ports.envoy,
        "/hello",
        host=HOST,
        x_request_id="forwarded-spoof",
        x_forwarded_uri="/healthz",
        x_forwarded_method="GET",
        x_forwarded_host="admin.example",
        x_forwarded_proto="https",
    )
    assert reply.status == 401
    lines = [
        json.loads(line) for line in caddy.log("authz").splitlines() if "forwarded-spoof" in line
    ]
    assert [(line["host"], line["path"], line["reason"]) for line in lines] == [
        (HOST, "/hello", "missing_token")
    ]


def test_caddy_dpop_without_an_external_origin(caddy: Stack, rsa_signer: Signer) -> None:
    """Caddy says the scheme (X-Forwarded-Proto) and passes the 401's DPoP-Nonce on."""
    key = ec_signer()
    token = minted(rsa_signer, cnf={"jkt": thumbprint(key)})
    url = f"http://{HOST}/hello"
    port = caddy.ports.envoy
    first = make_proof(key, "GET", url, token)
    nonce_reply = proxy_call(port, "/hello", host=HOST, authorization=f"DPoP {token}", dpop=first)
    assert nonce_reply.status == 401
    assert 'error="use_dpop_nonce"' in nonce_reply.headers["www-authenticate"]
    retry = make_proof(key, "GET", url, token, nonce=nonce_reply.headers["dpop-nonce"])
    reply = proxy_call(port, "/hello", host=HOST, authorization=f"DPoP {token}", dpop=retry)
    assert reply.status == 200, reply.body
    assert "dpop" not in reply.echo["headers"]
    assert "authorization" not in reply.echo["headers"]


def test_caddy_refuses_a_request_without_a_host(caddy: Stack, rsa_signer: Signer) -> None:
    """An HTTP/1.0 client may send no Host: Caddy then sends authz an empty
    X-Forwarded-Host, which authz judged as the host "" (no host rule applies to it) and
    allowed. Now it is a 400 invalid_host (the client's doing: no proxy warning), and the
    upstream is never reached."""
    token = minted(rsa_signer)
    request = (
        f"GET /hello HTTP/1.0\r\nX-Request-Id: hostless\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", caddy.ports.envoy), timeout=10) as sock:
        sock.sendall(request.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert int(head.split()[1]) == 400, answer[:300]
    assert json.loads(body)["error_description"] == "the request host is not acceptable"
    lines = [json.loads(line) for line in caddy.log("authz").splitlines() if "hostless" in line]
    assert [(line["reason"], line["status"]) for line in lines] == [("invalid_host", 400)]


@pytest.fixture(scope="module")
def trusting_caddy(tmp_path_factory: pytest.TempPathFactory, rsa_signer: Signer) -> Iterator[Stack]:
    """deploy/Caddyfile behind a load balancer, as docs/caddy.md describes it: forward_auth
    trusts the X-Forwarded-* headers of 127.0.0.1 (here: every test client)."""
    workdir = tmp_path_factory.mktemp("caddy-trusted")
    recipe = CADDY_TEMPLATE.read_text()
    assert recipe.count("\t\t\turi /check\n") == 1
    template = workdir / "Caddyfile.trusted"
    template.write_text(
        recipe.replace(
            "\t\t\turi /check\n", "\t\t\turi /check\n\t\t\ttrusted_proxies 127.0.0.1/32\n"
        )
    )
    stack = start(workdir, rsa_signer, template)
    yield stack
    stack.stop()


def test_caddy_behind_trusted_proxies_judges_the_host_it_routes_by(
    trusting_caddy: Stack, rsa_signer: Signer
) -> None:
    """A trusted hop's X-Forwarded-Host is the client's own (the balancer passes it on):
    Caddy routes by Host and sends it upstream, so that is the host authz must judge.
    Without header_up X-Forwarded-Host in forward_auth, authz judged shop.example and a
    user reached admin.example."""
    user = minted(rsa_signer, realm_access={"roles": ["user"]})
    port = trusting_caddy.ports.envoy
    reply = proxy_call(
        port,
        "/x",
        host="admin.example",
        authorization=f"Bearer {user}",
        x_forwarded_host="shop.example",
        x_request_id="trusted-spoof",
    )
    lines = [
        json.loads(line)
        for line in trusting_caddy.log("authz").splitlines()
        if "trusted-spoof" in line
    ]
    assert [(line["host"], line["reason"]) for line in lines] == [
        ("admin.example", "claim_mismatch")
    ]
    assert reply.status == 403
    admin = minted(rsa_signer, realm_access={"roles": ["admin"]})
    allowed = proxy_call(port, "/x", host="admin.example:8443", authorization=f"Bearer {admin}")
    assert allowed.status == 200 and allowed.echo["headers"]["host"] == "admin.example:8443"
