"""Tokens from a real, certified OpenID Provider (oidc-provider, tests/idp/), obtained from
its token endpoint as a client gets them, judged by authz behind a real Envoy."""

from __future__ import annotations

import base64
import http.client
import json
import re
import signal
import ssl
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from dev.stack import ROOT, Ports, Stack
from tests.support import call, ec_signer, scrape, wall_clock_claims
from tests.support.dpop import make_proof, thumbprint
from tests.support.openid import (
    ALGORITHMS,
    INTROSPECTOR,
    JWT_RESOURCES,
    MTLS_CLIENT,
    OPAQUE_RESOURCE,
    OTHER_CLIENT,
    OpenIdProvider,
)
from tests.support.pki import Pki, make_pki
from tests.support.redis import RedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.openid]


def stack_config(op: OpenIdProvider, ports: Ports, jwks: dict[str, Any]) -> dict[str, Any]:
    return {
        "listen": {
            "grpc": f"127.0.0.1:{ports.authz_grpc}",
            "http": f"127.0.0.1:{ports.authz_http}",
        },
        "shutdown_grace": 2,
        "shutdown_drain": 0,
        "providers": {
            "op": {
                "issuer": op.issuer(),
                "audiences": list(JWT_RESOURCES.values()),
                "algorithms": list(ALGORITHMS),
                "typ": "at+jwt",  # RFC 9068 access tokens only, never another JWT of the OP
                "jwks": jwks,
                "claim_to_headers": [
                    {"header": "x-client-id", "claim": "client_id"},
                    {"header": "x-scope", "claim": "scope"},
                ],
            }
        },
        "rules": [
            {
                "name": "reports",
                "match": {"prefix": "/reports"},
                "requires": {"provider": "op"},
                "claims": [
                    {"claim": "client_id", "equals": OTHER_CLIENT[0]},
                    {"claim": "scope", "contains": "read"},
                ],
            },
            {
                "name": "write",
                "match": {"prefix": "/", "methods": ["POST"]},
                "requires": {"provider": "op"},
                "claims": [{"claim": "scope", "contains": "write"}],
            },
            {"name": "default", "match": {"prefix": "/"}, "requires": {"provider": "op"}},
        ],
    }


@pytest.fixture(scope="module")
def op(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenIdProvider]:
    provider = OpenIdProvider(tmp_path_factory.mktemp("op"))
    provider.start()
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, op: OpenIdProvider) -> Iterator[Stack]:
    """authz knows nothing of the OP but its issuer: keys come by OIDC discovery."""
    ports = Ports()
    running = Stack(
        tmp_path_factory.mktemp("stack"), stack_config(op, ports, {"discovery": True}), ports
    )
    running.start()
    yield running
    running.stop()


def bearer(token: str) -> str:
    return f"Bearer {token}"


def segments(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    decode = lambda part: json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # noqa: E731
    return decode(header), decode(payload)


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_the_ops_access_tokens_are_accepted_for_each_algorithm(
    stack: Stack, op: OpenIdProvider, alg: str
) -> None:
    token = op.token(JWT_RESOURCES[alg])
    header, claims = segments(token)
    assert (header["alg"], header["typ"]) == (alg, "at+jwt")  # as RFC 9068 has them
    status, _, echo = call(stack, "/hello", authorization=bearer(token))
    assert status == 200, echo
    assert echo["headers"]["x-client-id"] == claims["client_id"] == "app"
    assert echo["headers"]["x-scope"] == "read,write"  # scope is split, listed
    assert "authorization" not in echo["headers"]


def test_a_jwt_of_another_type_signed_by_the_op_is_refused(
    stack: Stack, op: OpenIdProvider
) -> None:
    """typ at+jwt is what tells an access token from the OP's other JWTs (ID tokens,
    logout tokens) signed with the same keys: the same claims signed by the OP's own key
    under typ JWT are refused."""
    header, claims = segments(op.token(JWT_RESOURCES["RS256"]))
    signer, kid = op.signer("RS256")
    assert header["kid"] == kid
    other = signer.raw({"alg": "RS256", "typ": "JWT", "kid": kid}, claims)
    status, headers, _ = call(stack, "/hello", authorization=bearer(other))
    assert status == 401
    assert 'error="invalid_token"' in headers["www-authenticate"]
    same_type = signer.raw({"alg": "RS256", "typ": "at+jwt", "kid": kid}, claims)
    assert call(stack, "/hello", authorization=bearer(same_type))[0] == 200


def test_rules_on_client_id_and_scope(stack: Stack, op: OpenIdProvider) -> None:
    resource = JWT_RESOURCES["ES256"]
    reader = op.token(resource, scope="read")
    assert call(stack, "/reports", authorization=bearer(reader))[0] == 403  # client "app"
    reports = op.token(resource, scope="read", client=OTHER_CLIENT)
    assert call(stack, "/reports", authorization=bearer(reports))[0] == 200
    assert call(stack, "/items", "POST", authorization=bearer(reports))[0] == 403  # no write
    writer = op.token(resource, scope="read write", client=OTHER_CLIENT)
    assert call(stack, "/items", "POST", authorization=bearer(writer))[0] == 200
    wrong = op.token(JWT_RESOURCES["RS256"], scope="admin")
    status, _, body = call(stack, "/reports", authorization=bearer(wrong))
    assert status == 403, body


def test_key_rotation_at_the_op_without_restarting_authz(tmp_path: Path) -> None:
    """The OP restarts with a new key set. Long before authz's next scheduled refresh,
    its new tokens are accepted (their kid is unknown, so authz refetches the JWKS), and
    tokens signed by the keys it no longer publishes are refused from then on."""
    (tmp_path / "op").mkdir()
    op = OpenIdProvider(tmp_path / "op")
    op.start()
    ports = Ports()
    jwks = {
        "remote": {"discovery": op.issuer(), "refresh_interval": 600, "min_refresh_interval": 1}
    }
    stack = Stack(tmp_path / "stack", stack_config(op, ports, jwks), ports)
    try:
        stack.start()
        old = op.token(JWT_RESOURCES["ES256"])
        assert call(stack, "/hello", authorization=bearer(old))[0] == 200
        op.rotate()
        time.sleep(1.1)  # past min_refresh_interval since authz's first fetch
        new = op.token(JWT_RESOURCES["ES256"])
        assert segments(new)[0]["kid"] != segments(old)[0]["kid"]
        assert call(stack, "/hello", authorization=bearer(new))[0] == 200
        metrics = scrape(ports.authz_http)
        assert 'authz_jwks_unknown_kid_refetch_total{provider="op",result="ok"} 1.0' in metrics
        status, headers, _ = call(stack, "/hello", authorization=bearer(old))
        assert status == 401, "a key the OP dropped is still trusted"
        assert "signed by an unknown key" in headers["www-authenticate"], headers
        assert call(stack, "/hello", authorization=bearer(new))[0] == 200
    finally:
        stack.stop()
        op.stop()


@pytest.fixture(scope="module")
def opaque_stack(tmp_path_factory: pytest.TempPathFactory, op: OpenIdProvider) -> Iterator[Stack]:
    running = start_opaque_stack(tmp_path_factory.mktemp("opaque"), op)
    yield running
    running.stop()


def start_opaque_stack(workdir: Path, op: OpenIdProvider, max_ttl: float = 1) -> Stack:
    """One rule, two providers: the OP's JWT access tokens by their keys, its opaque ones
    by its introspection endpoint (found by discovery), kept for at most ``max_ttl``."""
    (workdir / "introspection-secret").write_text(INTROSPECTOR[1] + "\n")
    ports = Ports()
    config = stack_config(op, ports, {"discovery": True})
    config["providers"]["opaque"] = {
        "issuer": op.issuer(),
        "audiences": [OPAQUE_RESOURCE],
        "introspection": {
            "discovery": True,
            "client_id": INTROSPECTOR[0],
            "client_secret": {"file": "introspection-secret"},
            "cache": {"max_ttl": max_ttl, "negative_ttl": 1},
        },
        "claim_to_headers": [
            {"header": "x-client-id", "claim": "client_id"},
            {"header": "x-scope", "claim": "scope"},
        ],
    }
    config["rules"] = [
        {"name": "any", "match": {"prefix": "/"}, "requires": {"any": ["op", "opaque"]}}
    ]
    running = Stack(workdir, config, ports)
    running.start()
    return running


def test_an_opaque_token_is_introspected_and_its_revocation_shows_within_max_ttl(
    opaque_stack: Stack, op: OpenIdProvider
) -> None:
    token = op.token(OPAQUE_RESOURCE, scope="read")
    assert token.count(".") == 0  # opaque: nothing in it to verify locally
    status, _, echo = call(opaque_stack, "/hello", authorization=bearer(token))
    assert status == 200, echo
    assert echo["headers"]["x-client-id"] == "app" and echo["headers"]["x-scope"] == "read"
    assert "authorization" not in echo["headers"]
    jwt = op.token(JWT_RESOURCES["ES256"])  # the same rule still takes the OP's JWTs
    assert call(opaque_stack, "/hello", authorization=bearer(jwt))[0] == 200
    op.revoke(token)
    assert op.introspect(token) == {"active": False}
    revoked = time.monotonic()
    while (answer := call(opaque_stack, "/hello", authorization=bearer(token)))[0] == 200:
        # max_ttl is 1 s; a little more for the round trips through Envoy
        assert time.monotonic() - revoked < 1.5, "a revoked token outlived cache.max_ttl"
        time.sleep(0.1)
    status, headers, body = answer
    assert status == 401, body
    assert 'error="invalid_token"' in headers["www-authenticate"]
    metrics = scrape(opaque_stack.ports.authz_http)
    assert 'authz_introspection_requests_total{provider="opaque",result="active"}' in metrics
    assert 'authz_introspection_requests_total{provider="opaque",result="inactive"}' in metrics
    assert 'authz_checks_total{decision="deny",provider="opaque",reason="token_inactive"' in (
        metrics
    )


def test_a_token_the_op_never_issued_is_inactive(opaque_stack: Stack) -> None:
    status, headers, _ = call(opaque_stack, "/hello", authorization=bearer("NotIssued123"))
    assert status == 401
    assert 'error_description="the token is not active"' in headers["www-authenticate"]


TENANTS = ("/tenants/a", "/tenants/b", "/tenants/c")


@pytest.fixture(scope="module")
def tenant_op(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenIdProvider]:
    """One OP host serving three tenants, each its own issuer and keys."""
    provider = OpenIdProvider(tmp_path_factory.mktemp("tenant-op"), tenants=TENANTS)
    provider.start()
    yield provider
    provider.stop()


def tenant_stack(
    tmp_path: Path, op: OpenIdProvider, tenants: Any, rules: list[dict[str, Any]]
) -> Stack:
    ports = Ports()
    config = stack_config(op, ports, {"discovery": True})
    config["providers"] = {
        "mt": {
            "issuer": op.issuer("/tenants/{tenant}"),
            "tenants": tenants,
            "audiences": list(JWT_RESOURCES.values()),
            "algorithms": list(ALGORITHMS),
            "typ": "at+jwt",
            "jwks": {"discovery": True},
            "claim_to_headers": [
                {"header": "x-tenant", "issuer_param": "tenant"},
                {"header": "x-client-id", "claim": "client_id"},
            ],
        }
    }
    config["rules"] = rules
    stack = Stack(tmp_path, config, ports)
    stack.start()
    return stack


def test_one_provider_for_the_tenants_of_one_op(tmp_path: Path, tenant_op: OpenIdProvider) -> None:
    """Each listed tenant's tokens are verified with that tenant's own keys (discovered
    per tenant), the tenant reaches headers and rules, and an unlisted tenant of the
    same OP is refused before any of its keys are fetched."""
    rules = [
        {
            "name": "only-a",
            "match": {"prefix": "/only-a"},
            "requires": {"provider": "mt"},
            "claims": [{"issuer_param": "tenant", "equals": "a"}],
        },
        {"name": "default", "match": {"prefix": "/"}, "requires": {"provider": "mt"}},
    ]
    stack = tenant_stack(tmp_path, tenant_op, ["a", "b"], rules)
    try:
        tokens = {
            tenant: tenant_op.token(JWT_RESOURCES["ES256"], tenant=f"/tenants/{tenant}")
            for tenant in ("a", "b", "c")
        }
        for tenant in ("a", "b"):
            status, _, echo = call(stack, "/hello", authorization=bearer(tokens[tenant]))
            assert status == 200, echo
            assert echo["headers"]["x-tenant"] == tenant
        assert call(stack, "/only-a", authorization=bearer(tokens["a"]))[0] == 200
        assert call(stack, "/only-a", authorization=bearer(tokens["b"]))[0] == 403
        status, headers, _ = call(stack, "/hello", authorization=bearer(tokens["c"]))
        assert status == 401 and "issuer is not accepted" in headers["www-authenticate"]
        refreshes = re.findall(
            r'^authz_jwks_refresh_total\{provider="mt",result="ok"\} (\S+)$',
            scrape(stack.ports.authz_http),
            re.M,
        )
        assert refreshes == ["2.0"]  # a and b; never c
    finally:
        stack.stop()


def test_a_flood_of_random_tenants_is_bounded(
    tmp_path: Path, tenant_op: OpenIdProvider, rsa_signer: Any
) -> None:
    """tenants: {any: true}: tokens naming 300 made-up tenants create key sources at the
    configured rate only, and a real tenant is served again within seconds."""
    rules = [
        {
            "match": {"prefix": "/"},
            "requires": {"provider": "mt"},
            "claims": [{"issuer_param": "tenant", "one_of": ["a", "b"]}],
        }
    ]
    tenants = {"any": True, "max": 3, "create_rate": 2, "burst": 2}
    stack = tenant_stack(tmp_path, tenant_op, tenants, rules)
    try:
        forged = [
            rsa_signer.token(
                iss=tenant_op.issuer(f"/tenants/made-up-{index}"),
                aud=JWT_RESOURCES["RS256"],
                header={"typ": "at+jwt"},
                **wall_clock_claims(),
            )
            for index in range(300)
        ]
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=50) as pool:
            statuses = list(
                pool.map(lambda t: call(stack, "/hello", authorization=bearer(t))[0], forged)
            )
        elapsed = time.monotonic() - started
        assert set(statuses) <= {401, 503}, statuses
        page = scrape(stack.ports.authz_http)

        def sample(pattern: str) -> float:
            found = re.search(pattern, page, re.M)
            return float(found.group(1)) if found else 0.0

        created = sample(
            r'^authz_jwks_tenant_sources_total\{event="created",provider="mt"\} (\S+)$'
        )
        limited = sample(
            r'^authz_jwks_tenant_sources_total\{event="rate_limited",provider="mt"\} (\S+)$'
        )
        assert 1 <= created <= 2 + 2 * elapsed + 1, (created, elapsed)  # burst 2, then 2/s
        assert created + limited == 300  # every made-up tenant was one or the other
        assert sample(r'^authz_jwks_tenants\{provider="mt"\} (\S+)$') <= 3  # max
        real = tenant_op.token(JWT_RESOURCES["ES256"], tenant="/tenants/a")
        deadline = time.monotonic() + 10
        while (status := call(stack, "/hello", authorization=bearer(real))[0]) != 200:
            assert status == 503, status  # rate-limited or the first keys still loading
            assert time.monotonic() < deadline, "a real tenant stayed locked out"
            time.sleep(0.2)
    finally:
        stack.stop()


def test_a_reload_keeps_the_introspection_answers(tmp_path: Path, op: OpenIdProvider) -> None:
    """A reload that leaves the provider as it was keeps its kept answers: every active
    token is not introspected again at once."""
    stack = start_opaque_stack(tmp_path, op, max_ttl=60)
    try:
        token = op.token(OPAQUE_RESOURCE)
        assert call(stack, "/hello", authorization=bearer(token))[0] == 200
        config = json.loads(stack.config_path.read_text())
        config["rules"].insert(0, {"match": {"prefix": "/public"}, "public": True})
        stack.config_path.write_text(json.dumps(config))
        stack.procs["authz"].send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while 'authz_config_reload_total{result="ok"} 1.0' not in scrape(stack.ports.authz_http):
            assert time.monotonic() < deadline, "no reload"
            time.sleep(0.05)
        assert call(stack, "/public")[0] == 200  # the new config serves
        assert call(stack, "/hello", authorization=bearer(token))[0] == 200
        page = scrape(stack.ports.authz_http)
        asked = re.findall(
            r'^authz_introspection_requests_total\{provider="opaque",result="active"\} (\S+)$',
            page,
            re.M,
        )
        assert asked == ["1.0"]
        assert 'authz_introspection_cache_total{provider="opaque",result="hit"} 1.0' in page
    finally:
        stack.stop()


def test_dpop_bound_tokens_through_envoy(stack: Stack, op: OpenIdProvider) -> None:
    """The OP binds a token to the client's key (the client proved it at the token
    endpoint); every request then needs a fresh proof by that key, for that method and
    URL. Envoy over gRPC tells authz the scheme and Host the client used."""
    key = ec_signer()
    token = op.token(JWT_RESOURCES["ES256"], dpop=key)
    assert segments(token)[1]["cnf"] == {"jkt": thumbprint(key)}
    url = f"http://127.0.0.1:{stack.ports.envoy}/hello"

    def send(proof: str | None, scheme: str = "DPoP", method: str = "GET") -> Any:
        headers = {"authorization": f"{scheme} {token}", **({"dpop": proof} if proof else {})}
        return call(stack, "/hello", method, **headers)

    once = make_proof(key, "GET", url, token)
    status, _, echo = send(once)
    assert status == 200, echo
    assert "dpop" not in echo["headers"] and "authorization" not in echo["headers"]
    status, headers, body = send(once)  # the same proof again
    assert status == 401 and body["error"] == "invalid_dpop_proof"
    assert headers["www-authenticate"].startswith(
        'DPoP algs="ES256 EdDSA PS256 RS256", error="invalid_dpop_proof"'
    )
    assert send(make_proof(key, "POST", url, token))[0] == 401  # another method
    assert send(make_proof(key, "GET", url + "x", token))[0] == 401  # another URL
    assert send(make_proof(key, "GET", url, "another-token"))[0] == 401  # another token
    assert send(make_proof(ec_signer(), "GET", url, token))[0] == 401  # another key
    assert send(make_proof(key, "GET", url, token), scheme="Bearer")[0] == 401  # downgrade
    assert send(None)[0] == 401
    assert send(make_proof(key, "GET", url, token))[0] == 200  # a fresh one works again
    page = scrape(stack.ports.authz_http)
    for reason in ("dpop_replayed", "dpop_invalid", "dpop_binding_mismatch", "dpop_missing"):
        assert f'reason="{reason}"' in page, reason


def test_replicas_sharing_redis_refuse_a_proof_another_one_accepted(
    tmp_path: Path, op: OpenIdProvider
) -> None:
    """Two authz replicas (each behind its own Envoy here), one Redis: a proof accepted
    by one is refused by the other. external_origin gives both the URL clients use."""
    redis = RedisServer(tmp_path)
    redis.start()
    stacks: list[Stack] = []
    try:
        for name in ("one", "two"):
            ports = Ports()
            config = stack_config(op, ports, {"discovery": True})
            config["providers"]["op"]["dpop"] = {
                "external_origin": "https://api.example.com",
                "replay_store": {"redis": {"url": redis.url, "key_prefix": "authz:test:"}},
            }
            stack = Stack(tmp_path / name, config, ports)
            stacks.append(stack)
            stack.start()
        key = ec_signer()
        token = op.token(JWT_RESOURCES["ES256"], dpop=key)
        proof = make_proof(key, "GET", "https://api.example.com/hello", token)
        headers = {"authorization": f"DPoP {token}", "dpop": proof}
        assert call(stacks[0], "/hello", **headers)[0] == 200
        status, answer_headers, _ = call(stacks[1], "/hello", **headers)
        assert status == 401 and "proof was used before" in answer_headers["www-authenticate"]
        redis.stop()  # fail closed: no store, no allow
        fresh = make_proof(key, "GET", "https://api.example.com/hello", token)
        status, _, body = call(stacks[1], "/hello", authorization=f"DPoP {token}", dpop=fresh)
        assert status == 503, body
    finally:
        for stack in stacks:
            stack.stop()
        redis.stop()


def tls_call(
    stack: Stack, pki: Pki, cert: Path, key: Path, authorization: str
) -> tuple[int, dict[str, Any]]:
    """One HTTPS request to the stack's Envoy, showing ``cert`` as the client certificate."""
    context = ssl.create_default_context(cafile=pki.ca)
    context.load_cert_chain(cert, key)
    connection = http.client.HTTPSConnection(
        "localhost", stack.ports.envoy, context=context, timeout=10
    )
    try:
        connection.request("GET", "/hello", headers={"authorization": authorization})
        response = connection.getresponse()
        body = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()
    parsed = (
        json.loads(body) if headers.get("content-type", "").startswith("application/json") else {}
    )
    return response.status, {"headers": headers, "body": parsed}


def test_certificate_bound_tokens_through_envoy_over_mutual_tls(
    tmp_path: Path, op: OpenIdProvider, stack: Stack
) -> None:
    """The OP binds a token to client certificate A (RFC 8705). Envoy requires a client
    certificate (deploy/envoy-mtls-listener.yaml) and passes it to authz
    (include_peer_certificate in deploy/envoy.yaml): A's token works with A only."""
    pki = make_pki(tmp_path / "pki")
    listener = yaml.safe_load((ROOT / "deploy" / "envoy-mtls-listener.yaml").read_text())
    tls = listener["typed_config"]["common_tls_context"]
    tls["tls_certificates"][0]["certificate_chain"]["filename"] = str(pki.server_cert)
    tls["tls_certificates"][0]["private_key"]["filename"] = str(pki.server_key)
    tls["validation_context"]["trusted_ca"]["filename"] = str(pki.ca)

    def over_mtls(envoy: dict[str, Any]) -> None:
        chain = envoy["static_resources"]["listeners"][0]["filter_chains"][0]
        chain["transport_socket"] = listener

    ports = Ports()
    mtls = Stack(
        tmp_path / "mtls",
        stack_config(op, ports, {"discovery": True}),
        ports,
        envoy_patch=over_mtls,
    )
    try:
        mtls.start()
        token = op.token(
            JWT_RESOURCES["ES256"], client=MTLS_CLIENT, certificate=pki.client_cert.read_bytes()
        )
        assert "x5t#S256" in segments(token)[1]["cnf"]
        status, answer = tls_call(mtls, pki, pki.client_cert, pki.client_key, f"Bearer {token}")
        assert status == 200, answer
        assert answer["body"]["headers"]["x-client-id"] == MTLS_CLIENT[0]
        status, answer = tls_call(
            mtls, pki, pki.second_client_cert, pki.second_client_key, f"Bearer {token}"
        )
        assert status == 401, answer
        assert "did not present" in answer["headers"]["www-authenticate"]
        # The token alone, from a client with no certificate (the plain listener):
        status, headers, _ = call(stack, "/hello", authorization=f"Bearer {token}")
        assert status == 401 and "did not present" in headers["www-authenticate"]
        assert 'reason="certificate_binding_mismatch"' in scrape(ports.authz_http)
    finally:
        mtls.stop()


def test_authz_eval_judges_the_ops_tokens_with_its_keys_and_introspection(
    tmp_path: Path, op: OpenIdProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    """authz eval with real tokens: the keys by one discovery fetch, the opaque token by
    the real introspection endpoint, a DPoP-bound token with its proof check named as
    skipped offline."""
    from authz.cli import main

    (tmp_path / "introspection-secret").write_text(INTROSPECTOR[1] + "\n")
    config = stack_config(op, Ports(), {"discovery": True})
    config["providers"]["opaque"] = {
        "issuer": op.issuer(),
        "audiences": [OPAQUE_RESOURCE],
        "introspection": {
            "discovery": True,
            "client_id": INTROSPECTOR[0],
            "client_secret": {"file": "introspection-secret"},
        },
    }
    config["rules"].insert(
        0, {"name": "opaque", "match": {"prefix": "/opaque"}, "requires": {"provider": "opaque"}}
    )
    path = tmp_path / "authz.yaml"
    path.write_text(yaml.safe_dump(config))

    def judge(url: str, authorization: str) -> dict[str, Any]:
        code = main(["eval", "-c", str(path), "--path", url, "--header",
                     f"authorization: {authorization}", "--json"])  # fmt: skip
        answer: dict[str, Any] = json.loads(capsys.readouterr().out)
        assert code == (0 if answer["allowed"] else 1)
        return answer

    jwt = judge("/hello", bearer(op.token(JWT_RESOURCES["PS256"], scope="read")))
    assert (jwt["allowed"], jwt["rule"]) == (True, "default")
    assert jwt["tokens"][0]["signature"] == {
        "result": "verified",
        "reason": None,
        "jwks_file": None,
    }
    assert jwt["headers_set"]["x-client-id"] == "app"
    assert jwt["skipped_offline"] == []
    reports = judge("/reports/q3", bearer(op.token(JWT_RESOURCES["ES256"], scope="read")))
    assert (reports["status"], reports["reason"]) == (403, "claim_mismatch")
    assert [c["result"] for c in reports["conditions"]] == ["fail", "pass"]

    opaque_token = op.token(OPAQUE_RESOURCE, scope="read")
    opaque = judge("/opaque/x", bearer(opaque_token))
    assert (opaque["allowed"], opaque["provider"]) == (True, "opaque")
    assert opaque["tokens"][0]["signature"]["result"] == "introspected"
    op.revoke(opaque_token)
    revoked = judge("/opaque/x", bearer(opaque_token))
    assert (revoked["status"], revoked["reason"]) == (401, "token_inactive")

    bound = judge("/hello", f"DPoP {op.token(JWT_RESOURCES['ES256'], dpop=ec_signer())}")
    assert bound["allowed"] is True
    assert bound["skipped_offline"] == [
        {"check": "dpop_proof", "provider": "op", "mode": "when_bound"}
    ]
