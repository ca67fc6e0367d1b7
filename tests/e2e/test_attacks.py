"""Attacks on the request side, through every proxy the repository ships a config for.

Envoy over gRPC (deploy/envoy.yaml), Envoy over HTTP (deploy/envoy-http.yaml), nginx
(deploy/nginx.conf), Caddy (deploy/Caddyfile) and nginx as ingress-nginx configures it
(tests/e2e/ingress-nginx.conf), each with only its ports changed, in front of an upstream
that routes as Express, Tomcat and decoding frameworks would and reports every handler any
of them would run (tests/framework_upstream.py). The invariant: no protected handler runs
for a request without the right token, and the path spellings that once slipped through
are denied.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dev.stack import DEV_AUDIENCE, DEV_ISSUER, ROOT, Ports, Stack
from tests.support import Signer
from tests.support.tokens import minted
from tests.support.upstream import PUBLIC_HANDLERS

pytestmark = pytest.mark.e2e

PROXIES = ("envoy-grpc", "envoy-http", "nginx", "caddy", "ingress-nginx")
STYLES = {
    "envoy-http": "envoy",
    "nginx": "nginx",
    "caddy": "caddy",
    "ingress-nginx": "ingress-nginx",
}
# What a client gets when authz answers 400: ingress-nginx (nginx's auth_request) turns
# it into a 500; the others hand it on.
REFUSED = {"ingress-nginx": 500}


def attack_config(jwks_file: Path, ports: Ports, proxy: str) -> dict[str, Any]:
    provider: dict[str, Any] = {
        "issuer": DEV_ISSUER,
        "audiences": [DEV_AUDIENCE],
        "jwks": {"file": str(jwks_file)},
        "claim_to_headers": [{"header": "x-user-id", "claim": "sub"}],
    }
    if proxy == "envoy-grpc":
        provider.update(from_params=["access_token"], from_cookies=["session"])
    elif proxy == "envoy-http":
        provider.update(from_cookies=["session"])
    admin = [{"claim": "realm_access.roles", "contains": "admin"}]
    config: dict[str, Any] = {
        "listen": {
            "grpc": f"127.0.0.1:{ports.authz_grpc}",
            "http": f"127.0.0.1:{ports.authz_http}",
        },
        "shutdown_grace": 1,
        "shutdown_drain": 0.5,
        "providers": {"dev": provider},
        "rules": [
            {
                "name": "admin-host",
                "match": {"hosts": ["admin.example.com"]},
                "requires": {"provider": "dev"},
                "claims": admin,
            },
            {"name": "healthz", "match": {"path_separated_prefix": "/healthz"}, "public": True},
            {"name": "public", "match": {"path_separated_prefix": "/public"}, "public": True},
            {
                "name": "own-profile",
                "match": {"template": "/users/{id}"},
                "requires": {"provider": "dev"},
                "claims": [{"request": "param.id", "equals_claim": "sub"}],
            },
            {
                "name": "users",
                "match": {"prefix": "/users/"},
                "requires": {"provider": "dev"},
                "claims": admin,
            },
            # the README's own example
            {
                "name": "admin",
                "match": {"prefix": "/admin"},
                "requires": {"provider": "dev"},
                "claims": admin,
            },
            {
                "name": "secret",
                "match": {"path_separated_prefix": "/secret"},
                "requires": {"provider": "dev"},
            },
            {"name": "default", "match": {"prefix": "/"}, "requires": {"provider": "dev"}},
        ],
    }
    if proxy != "envoy-grpc":
        style = STYLES[proxy]
        config["http_authz"] = {
            "listen": f"127.0.0.1:{ports.authz_http_authz}",
            "original_request": style,
            **({"path_prefix": "/authz"} if style == "envoy" else {}),
        }
    return config


@pytest.fixture(scope="module", params=PROXIES)
def proxy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, rsa_signer: Signer
) -> Iterator[tuple[str, Stack]]:
    name: str = request.param
    workdir = tmp_path_factory.mktemp(name)
    jwks = workdir / "jwks.json"
    jwks.write_text(json.dumps({"keys": [rsa_signer.jwk]}))
    ports = Ports()
    template = ROOT / "deploy" / ("envoy-http.yaml" if name == "envoy-http" else "envoy.yaml")
    stack = Stack(
        workdir,
        attack_config(jwks, ports, name),
        ports,
        envoy_template=template,
        proxy={"nginx": "nginx", "ingress-nginx": "nginx", "caddy": "caddy"}.get(name, "envoy"),
        upstream="tests.support.upstream",
        proxy_template=Path(__file__).with_name("ingress-nginx.conf")
        if name == "ingress-nginx"
        else None,
    )
    stack.start()
    yield name, stack
    stack.stop()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def handlers(self) -> list[str] | None:
        """The handlers the upstream ran; None when the request never reached it."""
        value = self.headers.get("x-handlers")
        return None if value is None else value.split(",")

    def json(self) -> Any:
        return json.loads(self.body)


def send(
    stack: Stack,
    target: str,
    method: str = "GET",
    host: str = "app.test",
    lines: tuple[str, ...] = (),
    **headers: str,
) -> Reply:
    """One HTTP/1.1 request with the target exactly as given: no client library cleans it.
    ``lines``: header lines sent as they are, repeated names included."""
    lines = (
        f"{method} {target} HTTP/1.1",
        f"Host: {host}",
        "Connection: close",
        *lines,
        *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items()),
    )
    with socket.create_connection(("127.0.0.1", stack.ports.envoy), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        parsed[key.strip().lower()] = value.strip()
    if parsed.get("transfer-encoding") == "chunked":
        body = _unchunk(body)
    return Reply(int(status_line.split()[1]), parsed, body)


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


# The issue's table: requests without a token that reached a protected handler.
REPORTED = {
    "envoy-grpc": ["/secret/%2e%2e;/public", "/secret/.%2e;/healthz"],
    "envoy-http": ["/admin/%2e%2e;/public"],
    "nginx": [
        "/admin/../public",
        "/admin/%2e%2e/public",
        "/admin/..;/public",
        "/admin%23/../public",
        "/secret/x/../../public",
    ],
}

# Their encoded and ";" variants, and the other spellings parsers read apart.
ATTACKS = sorted(
    {target for targets in REPORTED.values() for target in targets}
    | {
        "/secret/%2e%2e;/public",
        "/secret/.%2e;/healthz",
        "/admin/%2e%2e;/public",
        "/admin/%2E%2E;/public",
        "/admin/.%2E;x=1/public",
        "/admin/..;x=1/public",
        "/admin/%2e./public",
        "/admin/.;/../public",
        "/admin;/../public",
        "/admin;x=1",
        "/admin;jsessionid=1/x",
        "/public/..;/admin",
        "/public/%2e%2e;/admin/x",
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/..%2fadmin",
        "/public/%2e%2e%2fadmin",
        "/public%2f..%2fadmin",
        "/public/..%5cadmin",
        "/public/..\\admin",
        "/public/%252e%252e/admin",
        "/public/%252e%252e;/admin",
        "/public/%2e%2e%3b/admin",
        "/public%3b/../admin",
        "/public%3f/../admin",
        "/public%23/../admin",
        "/healthz/..;/secret",
        "/healthz/%2e%2e;/secret/x",
        "/%61dmin/x",
        "/%73ecret",
        "/%70ublic/../admin",
        "/public/.%2e/admin",
        "//admin",
        "/public//../admin",
        "/public/x/../../admin",
        "/admin/..%0a/public",
        "/public/%0a/../../admin",
        "/public/%00/../../admin",
        "/x%0a",
        "/admin/%c0%ae%c0%ae/public",
        "/public/%c0%ae%c0%ae/admin",
        "/public;/../admin",
        "/admin#/../public",
    }
)


def test_the_reported_bypasses_are_denied(proxy: tuple[str, Stack]) -> None:
    name, stack = proxy
    for target in REPORTED.get(name, ()):
        reply = send(stack, target)
        assert reply.status in (400, 401, 403), (target, reply.status, reply.handlers)
        assert reply.handlers is None, target


@pytest.mark.parametrize("target", ATTACKS)
def test_no_protected_handler_runs_without_a_token(proxy: tuple[str, Stack], target: str):
    _, stack = proxy
    reply = send(stack, target)
    if reply.handlers is not None:
        assert set(reply.handlers) <= PUBLIC_HANDLERS, (target, reply.status, reply.handlers)
    assert reply.status != 200 or reply.handlers is not None  # a 200 came from the upstream


@pytest.mark.parametrize(
    "target",
    [
        "/users/bob/%2e%2e;/alice",
        "/users/bob/..;/alice",
        "/users/bob/../alice",
        "/users/bob/%2e%2e/alice",
        "/users/bob;/../alice",
        "/users/alice/../bob",
        "/users/%62ob",
        "/users/bob%2f..%2falice",
    ],
)
def test_a_per_user_rule_holds_for_the_user_the_upstream_serves(
    proxy: tuple[str, Stack], rsa_signer: Signer, target: str
) -> None:
    _, stack = proxy
    token = minted(rsa_signer, sub="alice")
    reply = send(stack, target, authorization=f"Bearer {token}")
    allowed_for_alice = PUBLIC_HANDLERS | {"users:alice", "default", "secret"}
    if reply.handlers is not None:
        assert set(reply.handlers) <= allowed_for_alice, (target, reply.handlers)
    own = send(stack, "/users/alice", authorization=f"Bearer {token}")
    assert (own.status, own.handlers) == (200, ["users:alice"])


def test_legitimate_requests_still_pass(proxy: tuple[str, Stack], rsa_signer: Signer) -> None:
    _, stack = proxy
    for target in ("/public", "/public/a/b?x=1", "/healthz", "/public/caf%C3%A9", "/public/a%20b"):
        reply = send(stack, target)
        assert (reply.status, reply.handlers) in ((200, ["public"]), (200, ["healthz"])), target
    admin = minted(rsa_signer, realm_access={"roles": ["admin"]})
    reply = send(stack, "/admin/x", authorization=f"Bearer {admin}")
    assert (reply.status, reply.handlers) == (200, ["admin"])
    user = minted(rsa_signer, realm_access={"roles": ["user"]})
    assert send(stack, "/admin/x", authorization=f"Bearer {user}").status == 403
    assert send(stack, "/admin/x").status == 401


def test_the_token_is_stripped_on_public_allows(proxy: tuple[str, Stack], rsa_signer: Signer):
    name, stack = proxy
    token = minted(rsa_signer)
    query = (
        f"?access_token={token}&ACCESS_TOKEN={token}&access_token[]={token}"
        f"&access%5Ftoken={token}&access.token={token}&Access_Token%5B0%5D={token}&keep=1"
    )
    cookie = f"theme=dark; session={token}; SESSION={token}; sess%69on={token}"
    target = "/public/x" + (query if name == "envoy-grpc" else "?keep=1")
    if name not in ("envoy-grpc", "envoy-http"):
        cookie = "theme=dark"  # only Envoy can cut a cookie out: the config reads headers only
    reply = send(stack, target, authorization=f"Bearer {token}", cookie=cookie)
    assert (reply.status, reply.handlers) == (200, ["public"])
    seen = reply.json()
    assert seen["path"] == "/public/x?keep=1"
    assert token not in json.dumps(seen["headers"])
    assert seen["headers"].get("cookie") == "theme=dark"
    assert "authorization" not in seen["headers"]


@pytest.mark.parametrize(
    "headers",
    [
        {"x_http_method_override": "DELETE"},
        {"x_http_method": "PUT"},
        {"x_method_override": "PATCH"},
    ],
)
def test_method_overrides_never_reach_the_upstream(
    proxy: tuple[str, Stack], headers: dict[str, str]
) -> None:
    name, stack = proxy
    refused = REFUSED.get(name, 400)
    for target in ("/public/x", "/public/x?_method=DELETE"):
        reply = send(stack, target, **headers)
        assert (reply.status, reply.handlers) == (refused, None), target
    reply = send(stack, "/public/x?_METHOD=delete")
    assert (reply.status, reply.handlers) == (refused, None)


@pytest.mark.parametrize(
    "host",
    ["admin.example.com:1:2", "admin.example.com:80:80", "admin.example.com,app.test"],
)
def test_a_host_rule_cannot_be_skipped_with_a_malformed_host(
    proxy: tuple[str, Stack], host: str
) -> None:
    name, stack = proxy
    reply = send(stack, "/public/x", host=host)
    assert reply.handlers is None and reply.status in (REFUSED.get(name, 400), 401), (
        host,
        reply.status,
    )
    assert send(stack, "/public/x", host="admin.example.com").status == 401


def test_http_1_0_without_a_host_still_gets_a_decision(proxy: tuple[str, Stack]) -> None:
    name, stack = proxy
    with socket.create_connection(("127.0.0.1", stack.ports.envoy), timeout=10) as sock:
        sock.sendall(b"GET /public/x HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split()[1])
    if name == "nginx":
        # $host is the server_name then, the Host nginx sends both authz and the upstream.
        assert status == 200 and b"x-handlers: public" in answer.lower(), answer[:200]
    elif name == "caddy":
        # Caddy sends an empty X-Forwarded-Host: no host to judge, so refused.
        assert status == 400 and b"x-handlers" not in answer.lower(), answer[:200]
    elif name == "ingress-nginx":
        # X-Original-URL names no host (http:///public/x): refused, and nginx's 500.
        assert status == 500 and b"x-handlers" not in answer.lower(), answer[:200]
    else:
        assert status == 426  # Envoy does not accept HTTP/1.0 (accept_http_10: false)


def test_repeated_token_lines_are_stripped_too(proxy: tuple[str, Stack], rsa_signer: Signer):
    """Envoy joins repeated Cookie lines with "," (HTTP/1.1) and repeated Authorization
    lines likewise: a copy in the second line must go as well."""
    name, stack = proxy
    token = minted(rsa_signer)
    lines = ["Authorization: Basic eA==", f"Authorization: Bearer {token}"]
    if name in ("nginx", "ingress-nginx"):
        refused = send(stack, "/public/x", lines=tuple(lines))
        assert (refused.status, refused.handlers) == (400, None)  # nginx refuses the repeat
        return
    if name == "caddy":  # no cookie can be cut out behind Caddy: headers only
        reply = send(stack, "/public/x", lines=tuple(lines))
        assert (reply.status, reply.handlers) == (200, ["public"])
        assert token not in json.dumps(reply.json()["headers"])
        return
    lines += ["Cookie: theme=dark", f"Cookie: session={token}"]
    reply = send(stack, "/public/x", lines=tuple(lines))
    assert (reply.status, reply.handlers) == (200, ["public"])
    seen = reply.json()
    assert token not in json.dumps(seen["headers"])
    assert seen["headers"]["cookie"] == "theme=dark"
