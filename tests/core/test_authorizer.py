from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from authz.config import Config
from authz.core.authorizer import Authorizer
from authz.core.model import Decision, RequestAttributes
from tests import support
from tests.support import (
    FixedKeys,
    Recorder,
    Signer,
    authorizer,
    config,
    fixed_keys,
    provider,
)

RULES = [
    {"name": "health", "match": {"prefix": "/healthz"}, "public": True},
    {
        "name": "admin",
        "match": {"prefix": "/admin"},
        "requires": {"provider": "corp"},
        "claims": [{"claim": "realm_access.roles", "contains": "admin"}],
    },
    {
        "name": "write",
        "match": {"prefix": "/api", "methods": ["POST"]},
        "requires": {"provider": "corp"},
        "claims": [{"claim": "scope", "contains": "write"}],
    },
    {"name": "api", "match": {"prefix": "/api"}, "requires": {"provider": "corp"}},
]


def make_config(top: dict[str, Any] | None = None, **settings: Any) -> Config:
    corp = provider(
        from_params=["access_token"],
        from_cookies=["session"],
        claim_to_headers=[
            {"header": "x-user-id", "claim": "sub"},
            {"header": "x-user-roles", "claim": "realm_access.roles"},
        ],
        **settings,
    )
    return config(providers={"corp": corp}, rules=RULES, **(top or {}))


def make_authorizer(
    jwks: dict[str, Any] | None, observe: Recorder | None = None, **settings: Any
) -> Authorizer:
    keys = fixed_keys(jwks) if jwks else None
    return authorizer(make_config(**settings), keys, observe=observe)


def req(path: str = "/api/x", method: str = "GET", **headers: str) -> RequestAttributes:
    return support.req(path, method, **headers)


async def test_allow_injects_headers_and_strips_token_and_spoofs(
    jwks: dict[str, Any], rsa_signer: Signer
) -> None:
    authorizer = make_authorizer(jwks)
    token = rsa_signer.token(realm_access={"roles": ["user", "dev"]})
    decision = await authorizer.check(req(authorization=f"Bearer {token}", x_user_id="mallory"))
    assert decision.allowed and decision.status == 200 and decision.reason == "allowed"
    assert decision.rule == "api" and decision.provider == "corp"
    assert dict(decision.upstream_headers) == {"x-user-id": "alice", "x-user-roles": "user,dev"}
    assert decision.remove_headers == ("x-authz-dry-run", "authorization")
    assert decision.metadata["corp"]["sub"] == "alice"


async def test_missing_claim_header_is_removed_not_passed_through(
    jwks: dict[str, Any], rsa_signer: Signer
) -> None:
    decision = await make_authorizer(jwks).check(
        req(authorization=f"Bearer {rsa_signer.token()}", x_user_roles="admin")
    )
    assert dict(decision.upstream_headers) == {"x-user-id": "alice"}
    assert set(decision.remove_headers) == {"x-user-roles", "authorization", "x-authz-dry-run"}
    # The identity headers among them, for proxies that can only overwrite: not the token.
    assert decision.unset_identity_headers == ("x-authz-dry-run", "x-user-roles")


async def test_forward_keeps_the_token(jwks: dict[str, Any], rsa_signer: Signer) -> None:
    decision = await make_authorizer(jwks, forward=True).check(
        req(authorization=f"Bearer {rsa_signer.token()}")
    )
    assert "authorization" not in decision.remove_headers


async def test_payload_header(jwks: dict[str, Any], rsa_signer: Signer) -> None:
    token = rsa_signer.token()
    decision = await make_authorizer(jwks, forward_payload_header="x-jwt-payload").check(
        req(authorization=f"Bearer {token}")
    )
    assert dict(decision.upstream_headers)["x-jwt-payload"] == token.split(".")[1]


async def test_token_from_query_param_is_removed(jwks: dict[str, Any], rsa_signer: Signer):
    decision = await make_authorizer(jwks).check(
        req(f"/api/x?a=1&access_token={rsa_signer.token()}")
    )
    assert decision.allowed
    assert decision.remove_query_params == ("access_token",)


async def test_token_from_cookie_is_cut_out_of_the_cookie_header(
    jwks: dict[str, Any], rsa_signer: Signer
) -> None:
    authorizer = make_authorizer(jwks)
    decision = await authorizer.check(req(cookie=f"a=1; session={rsa_signer.token()}"))
    assert decision.allowed
    assert dict(decision.upstream_headers)["cookie"] == "a=1"
    only = await authorizer.check(req(cookie=f"session={rsa_signer.token()}"))
    assert "cookie" in only.remove_headers


async def test_every_copy_of_the_token_is_stripped(jwks: dict[str, Any], rsa_signer: Signer):
    token = rsa_signer.token()
    decision = await make_authorizer(jwks).check(
        req(
            f"/api/x?access%5Ftoken={token}&keep=1",
            authorization=f"Bearer {token}",
            cookie=f"session={token}; theme=dark",
        )
    )
    assert decision.allowed
    assert "authorization" in decision.remove_headers
    assert decision.remove_query_params == ("access%5Ftoken",)
    assert dict(decision.upstream_headers)["cookie"] == "theme=dark"


async def test_public_route_strips_identity_headers() -> None:
    decision = await make_authorizer(None).check(req("/healthz", x_user_id="mallory"))
    assert decision.allowed and decision.reason == "public" and decision.rule == "health"
    assert set(decision.remove_headers) == {"x-user-id", "x-user-roles", "x-authz-dry-run"}
    assert decision.upstream_headers == ()


def body(decision: Decision) -> dict[str, str]:
    parsed: dict[str, str] = json.loads(decision.body)
    return parsed


async def test_missing_token_challenge(jwks: dict[str, Any]) -> None:
    decision = await make_authorizer(jwks).check(req())
    assert not decision.allowed
    assert (decision.status, decision.reason) == (401, "missing_token")
    headers = dict(decision.response_headers)
    assert headers["www-authenticate"] == 'Bearer realm="api.example.com"'
    assert headers["content-type"] == "application/json"
    assert body(decision)["error"] == "unauthorized"


async def test_invalid_token_challenge(jwks: dict[str, Any], rsa_signer: Signer) -> None:
    decision = await make_authorizer(jwks).check(
        req(authorization=f"Bearer {rsa_signer.token(exp=1)}")
    )
    assert (decision.status, decision.reason) == (401, "token_expired")
    challenge = dict(decision.response_headers)["www-authenticate"]
    assert challenge == (
        'Bearer realm="api.example.com", error="invalid_token", '
        'error_description="the token has expired"'
    )
    assert body(decision) == {
        "error": "invalid_token",
        "error_description": "the token has expired",
    }


async def test_scope_failure_is_insufficient_scope(jwks: dict[str, Any], rsa_signer: Signer):
    decision = await make_authorizer(jwks).check(
        req(method="POST", authorization=f"Bearer {rsa_signer.token(scope='read')}")
    )
    assert (decision.status, decision.reason, decision.rule) == (403, "claim_mismatch", "write")
    assert 'error="insufficient_scope"' in dict(decision.response_headers)["www-authenticate"]
    assert body(decision)["error"] == "insufficient_scope"


async def test_other_claim_failure_is_access_denied(jwks: dict[str, Any], rsa_signer: Signer):
    decision = await make_authorizer(jwks).check(
        req("/admin", authorization=f"Bearer {rsa_signer.token()}")
    )
    assert (decision.status, decision.reason, decision.rule) == (403, "claim_mismatch", "admin")
    assert "www-authenticate" not in dict(decision.response_headers)
    assert body(decision)["error"] == "access_denied"


async def test_no_rule_matches_is_403(jwks: dict[str, Any], rsa_signer: Signer) -> None:
    decision = await make_authorizer(jwks).check(
        req("/elsewhere", authorization=f"Bearer {rsa_signer.token()}")
    )
    assert (decision.status, decision.reason, decision.rule) == (403, "no_matching_rule", None)


async def test_no_keys_is_503(rsa_signer: Signer) -> None:
    decision = await make_authorizer(None).check(req(authorization=f"Bearer {rsa_signer.token()}"))
    assert (decision.status, decision.reason) == (503, "no_keys")
    assert body(decision)["error"] == "temporarily_unavailable"


async def test_unexpected_error_is_a_logged_503_without_secrets(
    rsa_signer: Signer, caplog: pytest.LogCaptureFixture
) -> None:
    token = rsa_signer.token()

    class BrokenKeys(FixedKeys):
        async def first_keys(self) -> Any:
            raise RuntimeError(f"boom {token}")

    recorder = Recorder()
    broken = authorizer(make_config(), BrokenKeys(None), observe=recorder)
    with caplog.at_level(logging.DEBUG):
        decision = await broken.check(req(authorization=f"Bearer {token}"))
    assert (decision.status, decision.reason) == (503, "internal_error")
    assert "RuntimeError" in caplog.text
    assert token not in caplog.text
    assert recorder.seen[0][0] is decision


@pytest.mark.parametrize(
    ("host", "realm"),
    [("api.example.com:8443", "api.example.com:8443"), ("[::1]:80", "[::1]:80"), ("", "authz")],
)
async def test_realm_is_the_host(host: str, realm: str) -> None:
    decision = await make_authorizer(None).check(RequestAttributes("GET", host, "/api", {}))
    assert dict(decision.response_headers)["www-authenticate"] == f'Bearer realm="{realm}"'


async def test_a_host_that_could_inject_a_header_is_refused() -> None:
    evil = RequestAttributes("GET", 'evil"\r\nx: y', "/api", {})
    decision = await make_authorizer(None).check(evil)
    assert (decision.status, decision.reason) == (400, "invalid_host")
    assert "www-authenticate" not in dict(decision.response_headers)


async def test_every_check_is_observed(jwks: dict[str, Any], rsa_signer: Signer) -> None:
    recorder = Recorder()
    authorizer = make_authorizer(jwks, recorder)
    await authorizer.check(req(authorization=f"Bearer {rsa_signer.token()}"))
    await authorizer.check(req())
    assert [d.reason for d, _ in recorder.seen] == ["allowed", "missing_token"]
    assert all(observed.seconds >= 0 for _, observed in recorder.seen)


PARTNER = "https://partner.test"


def multi_authorizer(rsa_signer: Signer, other_rsa_signer: Signer) -> tuple[Authorizer, Any]:
    providers = {
        "corp": provider(claim_to_headers=[{"header": "x-user-id", "claim": "sub"}]),
        "partner": provider(
            issuer=PARTNER, claim_to_headers=[{"header": "x-partner", "claim": "sub"}]
        ),
    }
    rules = [
        {"match": {"prefix": "/multi"}, "requires": {"any": ["corp", "partner"]}},
        {"match": {"prefix": "/optional"}, "requires": {"allow_missing": "corp"}},
        {"match": {"prefix": "/"}, "requires": {"provider": "corp"}},
    ]
    keys = {
        "corp": fixed_keys({"keys": [rsa_signer.jwk]}, ("RS256",)),
        "partner": fixed_keys({"keys": [other_rsa_signer.jwk]}, ("RS256",)),
    }
    return authorizer(config(providers=providers, rules=rules), keys), keys


async def test_any_routes_by_issuer_before_key_work(
    rsa_signer: Signer, other_rsa_signer: Signer
) -> None:
    authorizer, keys = multi_authorizer(rsa_signer, other_rsa_signer)
    corp = await authorizer.check(req("/multi", authorization=f"Bearer {rsa_signer.token()}"))
    assert (corp.allowed, corp.provider) == (True, "corp")
    assert dict(corp.upstream_headers) == {"x-user-id": "alice"}
    assert set(corp.remove_headers) == {"x-partner", "authorization", "x-authz-dry-run"}

    partner_token = other_rsa_signer.token(iss=PARTNER)
    partner = await authorizer.check(req("/multi", authorization=f"Bearer {partner_token}"))
    assert (partner.allowed, partner.provider) == (True, "partner")
    assert dict(partner.upstream_headers) == {"x-partner": "alice"}

    # A partner token on a corp-only route fails on its issuer, before any key lookup.
    only_corp = await authorizer.check(req("/x", authorization=f"Bearer {partner_token}"))
    assert (only_corp.status, only_corp.reason) == (401, "invalid_issuer")
    stranger = await authorizer.check(
        req(
            "/multi",
            authorization=f"Bearer {rsa_signer.token(iss='https://x', header={'kid': 'r'})}",
        )
    )
    assert (stranger.status, stranger.reason) == (401, "invalid_issuer")
    assert keys["corp"].refetches == keys["partner"].refetches == 0


async def test_any_routes_only_among_providers_that_read_that_location(
    rsa_signer: Signer, other_rsa_signer: Signer
) -> None:
    providers = {
        "corp": provider(),
        "partner": provider(issuer=PARTNER, from_headers=[{"name": "x-partner-token"}]),
    }
    keys = {
        "corp": fixed_keys({"keys": [rsa_signer.jwk]}, ("RS256",)),
        "partner": fixed_keys({"keys": [other_rsa_signer.jwk]}, ("RS256",)),
    }
    rules = [{"requires": {"any": ["corp", "partner"]}}]
    both = authorizer(config(providers=providers, rules=rules), keys)
    partner = other_rsa_signer.token(iss=PARTNER)
    misplaced = await both.check(req("/", authorization=f"Bearer {partner}"))
    assert (misplaced.status, misplaced.reason) == (401, "invalid_issuer")
    placed = await both.check(
        req("/", x_partner_token=partner, authorization=f"Bearer {rsa_signer.token()}")
    )
    assert placed.allowed and placed.provider == "corp"
    # Both candidates' token locations are stripped, whichever token was used.
    assert {"authorization", "x-partner-token"} <= set(placed.remove_headers)


async def test_allow_missing(rsa_signer: Signer, other_rsa_signer: Signer) -> None:
    authorizer, _ = multi_authorizer(rsa_signer, other_rsa_signer)
    anonymous = await authorizer.check(req("/optional", x_user_id="mallory"))
    assert (anonymous.allowed, anonymous.reason) == (True, "anonymous")
    assert "x-user-id" in anonymous.remove_headers
    signed = await authorizer.check(req("/optional", authorization=f"Bearer {rsa_signer.token()}"))
    assert (signed.reason, dict(signed.upstream_headers)) == ("allowed", {"x-user-id": "alice"})
    bad = await authorizer.check(req("/optional", authorization="Bearer not-a-token"))
    assert (bad.status, bad.reason) == (401, "malformed_token")
    expired = await authorizer.check(
        req("/optional", authorization=f"Bearer {rsa_signer.token(exp=1)}")
    )
    assert (expired.status, expired.reason) == (401, "token_expired")


async def test_unknown_kid_asks_the_source_once(jwks: dict[str, Any], rsa_signer: Signer):
    lookup = fixed_keys(jwks)
    token = rsa_signer.token(header={"kid": "rotated-in"})
    decision = await authorizer(make_config(), lookup).check(req(authorization=f"Bearer {token}"))
    assert (decision.status, decision.reason) == (401, "unknown_kid")
    assert lookup.refetches == 1


def policy_authorizer(
    rsa_signer: Signer, other_rsa_signer: Signer, **top: Any
) -> tuple[Authorizer, Recorder]:
    providers = {
        "corp": provider(claim_to_headers=[{"header": "x-user-id", "claim": "sub"}]),
        "svc": provider(
            issuer=PARTNER,
            from_headers=[{"name": "x-service-token"}],
            claim_to_headers=[{"header": "x-service", "claim": "sub"}],
        ),
    }
    rules = [
        {
            "name": "own-profile",
            "match": {"template": "/users/{id}", "methods": ["GET"]},
            "requires": {"provider": "corp"},
            "claims": [{"request": "param.id", "equals_claim": "sub"}],
            "claim_to_headers": [{"header": "x-user-email", "claim": "email"}],
            "headers": {"x-tenant": "acme"},
        },
        {
            "name": "trial",
            "match": {"prefix": "/beta"},
            "mode": "dry_run",
            "requires": {"provider": "corp"},
            "claims": [{"claim": "plan", "equals": "beta"}],
        },
        {
            "name": "both",
            "match": {"prefix": "/internal"},
            "requires": {"all": ["corp", "svc"]},
            "claims": [{"claim": "sub", "provider": "svc", "equals": "billing"}],
        },
        {"name": "rest", "match": {"prefix": "/"}, "requires": {"provider": "corp"}},
    ]
    keys = {
        "corp": fixed_keys({"keys": [rsa_signer.jwk]}, ("RS256",)),
        "svc": fixed_keys({"keys": [other_rsa_signer.jwk]}, ("RS256",)),
    }
    recorder = Recorder()
    built = authorizer(config(providers=providers, rules=rules, **top), keys, observe=recorder)
    return built, recorder


async def test_path_parameter_must_equal_the_subject(
    rsa_signer: Signer, other_rsa_signer: Signer
) -> None:
    authorizer, _ = policy_authorizer(rsa_signer, other_rsa_signer)
    auth = f"Bearer {rsa_signer.token(email='a@x.test')}"
    own = await authorizer.check(req("/users/alice", authorization=auth, x_tenant="evil"))
    assert (own.allowed, own.rule) == (True, "own-profile")
    assert dict(own.upstream_headers) == {
        "x-user-id": "alice",
        "x-user-email": "a@x.test",
        "x-tenant": "acme",
    }
    other = await authorizer.check(req("/users/bob", authorization=auth))
    assert (other.status, other.reason, other.rule) == (403, "claim_mismatch", "own-profile")
    # The rule's own headers are identity headers too: nobody can send them elsewhere.
    elsewhere = await authorizer.check(req("/x", authorization=auth, x_tenant="evil"))
    assert {"x-tenant", "x-user-email", "x-service"} <= set(elsewhere.remove_headers)


async def test_invalid_path_is_400(rsa_signer: Signer, other_rsa_signer: Signer) -> None:
    authorizer, _ = policy_authorizer(rsa_signer, other_rsa_signer)
    decision = await authorizer.check(
        req("/users/alice%2F..%2Fbob", authorization=f"Bearer {rsa_signer.token()}")
    )
    assert (decision.status, decision.reason) == (400, "invalid_path")
    assert json.loads(decision.body)["error"] == "invalid_request"


async def test_paths_are_judged_as_sent_and_ambiguous_ones_refused(
    rsa_signer: Signer, other_rsa_signer: Signer
) -> None:
    authorizer, _ = policy_authorizer(rsa_signer, other_rsa_signer)
    auth = f"Bearer {rsa_signer.token()}"
    decision = await authorizer.check(req("/users/alice", authorization=auth))
    assert (decision.allowed, decision.rule) == (True, "own-profile")
    # alice's token, bob's profile spelt so that a resolving reader lands on alice's
    for path in ("/users/bob/%2e%2e;/alice", "/users/bob/..;/alice", "/x/../users/%61lice"):
        denied = await authorizer.check(req(path, authorization=auth))
        assert (denied.allowed, denied.status, denied.reason) == (False, 400, "invalid_path")


async def test_dry_run_rule_allows_and_records_the_would_be_denial(
    rsa_signer: Signer, other_rsa_signer: Signer
) -> None:
    authorizer, recorder = policy_authorizer(rsa_signer, other_rsa_signer)
    auth = f"Bearer {rsa_signer.token(plan='free')}"
    decision = await authorizer.check(req("/beta/x", authorization=auth, x_authz_dry_run="allow"))
    assert decision.allowed and decision.reason == "dry_run"
    assert decision.dry_run == ("deny", "claim_mismatch")
    headers = dict(decision.upstream_headers)
    assert headers["x-authz-dry-run"] == "deny"
    assert headers["x-user-id"] == "alice"  # the token was valid: identity still flows
    assert "authorization" in decision.remove_headers
    assert recorder.seen[-1][0] is decision

    no_token = await authorizer.check(req("/beta/x", x_user_id="mallory"))
    assert no_token.allowed and no_token.dry_run == ("deny", "missing_token")
    assert dict(no_token.upstream_headers) == {"x-authz-dry-run": "deny"}
    assert "x-user-id" in no_token.remove_headers
    assert "x-user-id" in no_token.unset_identity_headers
    assert "x-authz-dry-run" not in no_token.unset_identity_headers  # it is set

    good = await authorizer.check(
        req("/beta/x", authorization=f"Bearer {rsa_signer.token(plan='beta')}")
    )
    assert (good.reason, good.dry_run) == ("allowed", ("allow", "allowed"))
    assert dict(good.upstream_headers)["x-authz-dry-run"] == "allow"

    # Enforcing rules are untouched, and a client cannot forge the dry-run header.
    enforced = await authorizer.check(req("/users/bob", authorization=auth))
    assert not enforced.allowed and enforced.dry_run is None


async def test_global_dry_run(rsa_signer: Signer, other_rsa_signer: Signer) -> None:
    authorizer, _ = policy_authorizer(rsa_signer, other_rsa_signer, mode="dry_run")
    decision = await authorizer.check(req("/users/bob"))
    assert decision.allowed and decision.dry_run == ("deny", "missing_token")
    no_rule = await authorizer.check(req("/users/a%2Fb"))
    assert no_rule.allowed and no_rule.dry_run == ("deny", "invalid_path")


async def test_expose_reasons(rsa_signer: Signer, other_rsa_signer: Signer) -> None:
    hidden, _ = policy_authorizer(rsa_signer, other_rsa_signer)
    shown, _ = policy_authorizer(rsa_signer, other_rsa_signer, expose_reasons=True)
    request = req("/users/bob", authorization=f"Bearer {rsa_signer.token()}")
    assert set(json.loads((await hidden.check(request)).body)) == {"error", "error_description"}
    body = json.loads((await shown.check(request)).body)
    assert body["reason"] == "claim_mismatch"
    assert body["rule"] == "own-profile"
    assert body["condition"] == "claims[0] (equals_claim on request.param.id)"
    assert "alice" not in json.dumps(body)


async def test_requires_all(rsa_signer: Signer, other_rsa_signer: Signer) -> None:
    authorizer, _ = policy_authorizer(rsa_signer, other_rsa_signer)
    user = f"Bearer {rsa_signer.token()}"
    service = other_rsa_signer.token(iss=PARTNER, sub="billing")
    both = await authorizer.check(req("/internal", authorization=user, x_service_token=service))
    assert both.allowed
    assert dict(both.upstream_headers) == {"x-user-id": "alice", "x-service": "billing"}
    assert set(both.metadata) == {"corp", "svc"}
    assert {"authorization", "x-service-token"} <= set(both.remove_headers)
    only_user = await authorizer.check(req("/internal", authorization=user))
    assert (only_user.status, only_user.reason) == (401, "missing_token")
    wrong = other_rsa_signer.token(iss=PARTNER, sub="reports")
    denied = await authorizer.check(req("/internal", authorization=user, x_service_token=wrong))
    assert (denied.status, denied.reason) == (403, "claim_mismatch")


async def test_a_client_cannot_send_the_dry_run_header(jwks: dict[str, Any], rsa_signer: Signer):
    authorizer = make_authorizer(jwks)  # no dry-run rule anywhere
    decision = await authorizer.check(
        req(authorization=f"Bearer {rsa_signer.token()}", x_authz_dry_run="allow")
    )
    assert decision.allowed and "x-authz-dry-run" in decision.remove_headers
    public = await authorizer.check(req("/healthz", x_authz_dry_run="allow"))
    assert "x-authz-dry-run" in public.remove_headers


async def test_a_repeated_token_parameter_is_no_token(jwks: dict[str, Any], rsa_signer: Signer):
    token = rsa_signer.token()
    decision = await make_authorizer(jwks).check(
        req(f"/api/x?access_token={token}&access_token=other")
    )
    assert (decision.status, decision.reason) == (401, "missing_token")


async def test_cache_hits_still_run_the_rule(jwks: dict[str, Any], rsa_signer: Signer) -> None:
    recorder = Recorder()
    cached = make_authorizer(jwks, recorder)
    auth = f"Bearer {rsa_signer.token()}"
    assert (await cached.check(req(authorization=auth))).allowed
    assert (await cached.check(req(authorization=auth))).allowed
    admin = await cached.check(req("/admin", authorization=auth))
    assert (admin.status, admin.reason) == (403, "claim_mismatch")
    assert [o.token_cache for _, o in recorder.seen] == ["miss", "hit", "hit"]


async def test_claim_headers_follow_each_identity_through_the_cache(
    jwks: dict[str, Any], rsa_signer: Signer
) -> None:
    """Claim headers are rendered once per cached identity: each user still gets theirs."""
    checker = make_authorizer(jwks)
    tokens = {sub: rsa_signer.token(sub=sub) for sub in ("alice", "bob", "carol")}
    for _ in range(3):
        for sub, token in tokens.items():
            decision = await checker.check(req(authorization=f"Bearer {token}"))
            assert dict(decision.upstream_headers)["x-user-id"] == sub
