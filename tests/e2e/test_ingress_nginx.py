"""End to end through Debian's nginx configured as the Kubernetes ingress-nginx controller
configures external authentication (tests/e2e/ingress-nginx.conf: the template's auth
location and auth-response-headers lines for the annotations of docs/ingress-nginx.md),
with authz in the ingress-nginx style."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dev.stack import Ports, Stack, http_dev_config, nginx_binary
from tests.support import Reply, Signer, proxy_call
from tests.support.configs import with_deploy_rules
from tests.support.tokens import minted

pytestmark = pytest.mark.e2e

CONF = Path(__file__).with_name("ingress-nginx.conf")
HOST = "shop.example"


def start(workdir: Path, rsa_signer: Signer, conf: Path) -> Stack:
    if nginx_binary() is None:
        pytest.fail("nginx is not installed: .ci/run installs Debian's nginx")
    jwks = workdir / "jwks.json"
    jwks.write_text(json.dumps({"keys": [rsa_signer.jwk]}))
    ports = Ports()
    config = http_dev_config(jwks, ports, "ingress-nginx")
    config["decision_log"] = {"enabled": True}
    # The identity headers of the documented auth-response-headers (deploy/authz.yaml's).
    with_deploy_rules(config)
    stack = Stack(workdir, config, ports, proxy="nginx", proxy_template=conf)
    stack.start()
    return stack


@pytest.fixture(scope="module")
def ingress(tmp_path_factory: pytest.TempPathFactory, rsa_signer: Signer) -> Iterator[Stack]:
    stack = start(tmp_path_factory.mktemp("ingress-nginx"), rsa_signer, CONF)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def forwarding_ingress(
    tmp_path_factory: pytest.TempPathFactory, rsa_signer: Signer
) -> Iterator[Stack]:
    """The controller with use-forwarded-headers: true: $best_http_host, the Host the
    upstream gets, is the first host of the client's X-Forwarded-Host."""
    workdir = tmp_path_factory.mktemp("ingress-nginx-forwarded")
    text = CONF.read_text()
    line = "set $best_http_host $lua_best_http_host;"
    assert text.count(line) == 2  # one location per server block
    conf = workdir / "ingress-nginx-forwarded.conf"
    conf.write_text(text.replace(line, "set $best_http_host $lua_forwarded_best_http_host;"))
    stack = start(workdir, rsa_signer, conf)
    yield stack
    stack.stop()


def decision_lines(stack: Stack, request_id: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stack.log("authz").splitlines() if '"request_id"' in line]
    return [line for line in lines if line["request_id"] == request_id]


def through(stack: Stack, path: str, method: str = "GET", **headers: str) -> Reply:
    return proxy_call(stack.ports.envoy, path, method, **{"host": HOST, **headers})


def test_ingress_nginx_allows_with_identity_headers(ingress: Stack, rsa_signer: Signer) -> None:
    token = minted(rsa_signer, email="alice@example.com", realm_access={"roles": ["user"]})
    reply = through(
        ingress, "/hello?x=1", authorization=f"Bearer {token}", x_user_id="admin", dpop="proof"
    )
    assert reply.status == 200, reply.body
    seen = reply.echo["headers"]
    assert (seen["x-user-id"], seen["x-user-email"], seen["x-user-roles"]) == (
        "alice",
        "alice@example.com",
        "user",
    )
    # auth-response-headers lists Authorization and DPoP: authz never answers them, so
    # their proxy_set_header is empty and nginx sends neither to the upstream.
    assert "authorization" not in seen and "dpop" not in seen
    assert seen["host"] == HOST and reply.echo["path"] == "/hello?x=1"
    [line] = decision_lines(ingress, seen["x-request-id"])
    assert (line["host"], line["path"], line["decision"]) == (HOST, "/hello", "allow")
    profile = through(ingress, "/users/alice", authorization=f"Bearer {token}")
    assert profile.status == 200 and profile.echo["headers"]["x-profile-access"] == "self"


def test_ingress_nginx_never_hands_on_a_client_copy_of_an_identity_header(
    ingress: Stack, rsa_signer: Signer
) -> None:
    """Absent claims come back empty from authz, so nginx sends no header for them; other
    spellings of the names (X_User_Id, X.User.Id) are dropped by the controller's
    defaults (underscores_in_headers off, ignore_invalid_headers on)."""
    token = minted(rsa_signer)
    reply = proxy_call(
        ingress.ports.envoy,
        "/hello",
        raw={f"X{char}User{char}Id": "admin" for char in "!#$%&'*+.^_`|~"},
        host=HOST,
        authorization=f"Bearer {token}",
        x_user_email="root@example.com",
        x_user_roles="admin",
        x_authz_dry_run="allow",
    )
    assert reply.status == 200
    seen = reply.echo["headers"]
    assert seen["x-user-id"] == "alice"
    for name in ("x-user-email", "x-user-roles", "x-authz-dry-run"):
        assert name not in seen, name
    assert "admin" not in json.dumps(seen)
    public = through(ingress, "/healthz", x_user_id="admin", x_jwt_payload="forged")
    assert public.status == 200
    assert not {"x-user-id", "x-jwt-payload"} & set(public.echo["headers"])


def test_ingress_nginx_host_rules_judge_the_clients_host(
    ingress: Stack, rsa_signer: Signer
) -> None:
    """ingress-nginx sends authz its own Host (the auth-url's); the client's comes in
    X-Original-URL, the same $http_host the upstream gets."""
    user = minted(rsa_signer, realm_access={"roles": ["user"]})
    assert (
        through(ingress, "/x", host="admin.example", authorization=f"Bearer {user}").status == 403
    )
    admin = minted(rsa_signer, realm_access={"roles": ["admin"]})
    reply = through(ingress, "/x", host="admin.example", authorization=f"Bearer {admin}")
    assert reply.status == 200 and reply.echo["headers"]["host"] == "admin.example"


def test_ingress_nginx_denials(ingress: Stack, rsa_signer: Signer) -> None:
    """What reaches the client is nginx's auth_request: a 401 with authz's challenge, a
    403 without one, and a 500 for any other answer (a 400 for an ambiguous path too):
    the request never reaches the upstream."""
    missing = through(ingress, "/hello")
    assert missing.status == 401
    assert missing.every("www-authenticate") == [f'Bearer realm="{HOST}"']
    reader = minted(rsa_signer, scope="read")
    scope = through(ingress, "/items", "POST", authorization=f"Bearer {reader}")
    assert scope.status == 403 and scope.every("www-authenticate") == []
    ambiguous = through(ingress, "/healthz/..;/admin")
    assert ambiguous.status == 500
    assert "handlers" not in ambiguous.body


def test_ingress_nginx_replaces_the_headers_naming_the_request(ingress: Stack) -> None:
    """A client's X-Original-URL and X-Original-Method are replaced in the auth location:
    the request judged is the one the upstream gets."""
    reply = through(
        ingress,
        "/hello",
        x_request_id="url-spoof",
        x_original_url=f"http://{HOST}/healthz",
        x_original_method="GET",
        x_forwarded_host="admin.example",
    )
    assert reply.status == 401
    assert [(m["host"], m["path"], m["reason"]) for m in decision_lines(ingress, "url-spoof")] == [
        (HOST, "/hello", "missing_token")
    ]


def test_ingress_nginx_judges_the_host_nginx_routes_by(ingress: Stack, rsa_signer: Signer) -> None:
    """An absolute-form request line names the host nginx routes by ($host): here
    admin.example's server block, and so its Ingress and Service, whatever Host says.
    X-Original-URL is built from Host ($http_host): authz judged shop.example and let a
    user into admin.example's Service. With X-Authz-Host ($host, the recipe's
    auth-proxy-set-headers) the two hosts apart are refused: 400, nginx's 500."""
    user = minted(rsa_signer, realm_access={"roles": ["user"]})
    reply = through(
        ingress,
        "http://admin.example/x",
        authorization=f"Bearer {user}",
        x_request_id="absolute-form",
        # a client's own copies are replaced in the auth location
        x_authz_host=HOST,
        x_authz_upstream_host=HOST,
    )
    assert [(m["host"], m["reason"]) for m in decision_lines(ingress, "absolute-form")] == [
        ("authz.authz.svc.cluster.local", "invalid_host")
    ]
    assert reply.status == 500 and "x-test-ingress" not in reply.body
    # The same host in both places, in any case and with a port: judged, and routed, alike.
    admin = minted(rsa_signer, realm_access={"roles": ["admin"]})
    for target, host in (("http://admin.example/x", "admin.example"), ("/x", "Admin.Example:80")):
        allowed = through(ingress, target, host=host, authorization=f"Bearer {admin}")
        assert allowed.status == 200, (target, host, allowed.body)
        assert allowed.echo["headers"]["x-test-ingress"] == "admin"
    denied = through(ingress, "/x", host="ADMIN.example", authorization=f"Bearer {user}")
    assert denied.status == 403


def test_ingress_nginx_with_forwarded_headers_judges_the_host_the_upstream_gets(
    forwarding_ingress: Stack, rsa_signer: Signer
) -> None:
    """With use-forwarded-headers: true the upstream gets the client's X-Forwarded-Host as
    its Host ($best_http_host), while X-Original-URL carries the Host header: authz judged
    shop.example and shop's Service served admin.example. With X-Authz-Upstream-Host
    ($best_http_host) the two hosts apart are refused."""
    user = minted(rsa_signer, realm_access={"roles": ["user"]})
    reply = through(
        forwarding_ingress,
        "/x",
        authorization=f"Bearer {user}",
        x_forwarded_host="admin.example",
        x_request_id="forwarded-host",
    )
    assert [
        (m["host"], m["reason"]) for m in decision_lines(forwarding_ingress, "forwarded-host")
    ] == [("authz.authz.svc.cluster.local", "invalid_host")]
    assert reply.status == 500 and "x-test-ingress" not in reply.body
    # A balancer that passes on the same host as Host: judged, and sent, alike.
    same = through(forwarding_ingress, "/x", authorization=f"Bearer {user}", x_forwarded_host=HOST)
    assert same.status == 200 and same.echo["headers"]["host"] == HOST
    plain = through(forwarding_ingress, "/x", authorization=f"Bearer {user}")
    assert plain.status == 200 and plain.echo["headers"]["host"] == HOST
