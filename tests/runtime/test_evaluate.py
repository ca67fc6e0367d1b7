"""Judging requests offline: the real authorizer with stand-in keys (claims given) or the
configured keys (a real token), and the explanation beside its decision."""

from __future__ import annotations

import json

import pytest

from authz.config import ConfigError
from authz.runtime.evaluate import Request, StandInJudge, evaluate_once, relative
from authz.runtime.report import to_json, to_text
from tests.support import AUDIENCE, ISSUER, config, provider, rsa_signer
from tests.support.tokens import wall_clock_claims

SIGNER = rsa_signer()
JWKS = {"keys": [SIGNER.jwk]}
INTROSPECTION = {
    "issuer": "https://opaque.test",
    "audiences": ["api"],
    "introspection": {
        "endpoint": "https://opaque.test/introspect",
        "client_id": "authz",
        "client_secret": {"env": "AUTHZ_TEST_NEVER_SET"},  # stand-ins need no secret,
    },
    "from_headers": [{"name": "x-opaque", "value_prefix": ""}],
}
RULES = [
    {"name": "health", "match": {"path": "/healthz"}, "public": True},
    {
        "name": "admin",
        "match": {"prefix": "/admin"},
        "requires": {"provider": "corp"},
        "claims": [{"claim": "roles", "contains": "admin"}],
        "claim_to_headers": [{"header": "x-user-id", "claim": "sub"}],
    },
    {
        "name": "partners",
        "match": {"prefix": "/partners"},
        "requires": {"provider": "opaque"},
        "claim_to_headers": [{"header": "x-client", "claim": "client_id"}],
    },
    {"name": "rest", "match": {"prefix": "/"}, "requires": {"provider": "corp"}},
]


def _config(**corp):
    return config(
        providers={"corp": provider(jwks={"inline": JWKS}, **corp), "opaque": INTROSPECTION},
        rules=RULES,
    )


async def test_claims_are_judged_by_the_real_policy_with_a_stand_in_key():
    request = Request("DELETE", "/admin/users/7")
    allowed = await evaluate_once(_config(), request, claims={"sub": "alice", "roles": ["admin"]})
    assert allowed.decision.allowed and allowed.decision.rule == "admin"
    assert dict(allowed.decision.upstream_headers)["x-user-id"] == "alice"
    assert "authorization" in allowed.decision.remove_headers
    assert [(s.rule, s.skipped_by) for s in allowed.rules] == [("health", "path"), ("admin", None)]
    assert allowed.signature.startswith("not checked: signed by a stand-in key")
    checks = {c.check: c for c in allowed.token_checks}
    assert checks["iss"].value == ISSUER and checks["aud"].value == AUDIENCE
    assert checks["exp"].shown == "in 5m 0s" and checks["exp"].result == "pass"

    denied = await evaluate_once(_config(), request, claims={"sub": "bob", "roles": ["user"]})
    assert (denied.decision.status, denied.decision.reason) == (403, "claim_mismatch")
    assert [(c.condition, c.result) for c in denied.conditions or []] == [
        ('roles contains "admin"', "fail")
    ]


async def test_claims_override_what_the_config_fills_in():
    request = Request("GET", "/orders")
    expired = await evaluate_once(_config(), request, claims={"sub": "a", "exp": 1_700_000_000})
    assert expired.decision.reason == "token_expired"
    assert {c.check: c.result for c in expired.token_checks}["exp"] == "fail"
    assert expired.signature.startswith("not checked")
    other = await evaluate_once(_config(), request, claims={"sub": "a", "aud": "billing"})
    assert other.decision.reason == "invalid_audience"
    assert {c.check: c.result for c in other.token_checks}["aud"] == "fail"


async def test_claims_stand_in_for_an_introspection_answer():
    request = Request("GET", "/partners/x")
    answer = await evaluate_once(_config(), request, claims={"client_id": "acme"})
    assert answer.decision.allowed and answer.decision.provider == "opaque"
    assert dict(answer.decision.upstream_headers)["x-client"] == "acme"
    assert "introspection answer" in answer.signature
    # A key-bound answer is refused offline as serve refuses it.
    bound = await evaluate_once(
        _config(), request, claims={"client_id": "acme", "cnf": {"jkt": "x"}}
    )
    assert bound.decision.reason == "invalid_claims"


async def test_holder_of_key_checks_are_named_as_skipped():
    required = _config(dpop={"mode": "required"}, certificate_bound="required")
    judged = await evaluate_once(required, Request("GET", "/x"), claims={"sub": "a"})
    assert judged.decision.allowed
    assert judged.skipped_offline == [
        "DPoP proof of possession (providers.corp.dpop.mode: required)",
        "TLS client certificate binding (providers.corp.certificate_bound: required)",
    ]
    plain = await evaluate_once(_config(), Request("GET", "/x"), claims={"sub": "a"})
    assert plain.skipped_offline == []  # when_bound, and the token is not bound
    bound = await evaluate_once(
        _config(), Request("GET", "/x"), claims={"sub": "a", "cnf": {"jkt": "abc"}}
    )
    assert bound.skipped_offline == [
        "DPoP proof of possession (providers.corp.dpop.mode: when_bound)"
    ]


async def test_a_multi_tenant_issuer_is_filled_with_a_listed_tenant():
    tenants = config(
        providers={
            "corp": provider(
                issuer="https://login.test/{tenant}/v2.0", tenants=["t1"], jwks={"inline": JWKS}
            )
        }
    )
    judged = await evaluate_once(tenants, Request("GET", "/"), claims={"sub": "a"})
    assert judged.decision.allowed
    assert judged.token_checks[0].value == "https://login.test/t1/v2.0"
    anyone = config(
        providers={
            "corp": provider(
                issuer="https://login.test/{tenant}/v2.0",
                tenants={"any": True},
                jwks={"inline": JWKS},
            )
        }
    )
    with pytest.raises(ConfigError, match="give the claims an iss"):
        await evaluate_once(anyone, Request("GET", "/"), claims={"sub": "a"})
    given = await evaluate_once(
        anyone, Request("GET", "/"), claims={"sub": "a", "iss": "https://login.test/t9/v2.0"}
    )
    assert given.decision.allowed


async def test_a_real_token_is_verified_with_the_configured_keys(monkeypatch):
    # The configured keys mean serve's whole build: the introspection secret too.
    monkeypatch.setenv("AUTHZ_TEST_NEVER_SET", "secret")
    token = SIGNER.token(**wall_clock_claims(), roles=["admin"])
    request = Request("GET", "/admin", headers={"Authorization": f"Bearer {token}"})
    judged = await evaluate_once(_config(), request)
    assert judged.decision.allowed
    assert judged.signature == "verified with the provider's keys"
    forged = rsa_signer().token(header={"kid": SIGNER.kid}, **wall_clock_claims())
    request = Request("GET", "/admin", headers={"authorization": f"Bearer {forged}"})
    refused = await evaluate_once(_config(), request)
    assert refused.decision.reason == "invalid_signature"
    assert refused.signature == "refused (invalid_signature)"
    assert refused.conditions is None  # never reached


async def test_a_jwks_file_stands_in_for_remote_keys_without_fetching(tmp_path):
    remote = config(
        providers={"corp": provider(jwks={"remote": {"uri": "https://unreachable.invalid/k"}})}
    )
    (tmp_path / "jwks.json").write_text(json.dumps(JWKS))
    token = SIGNER.token(**wall_clock_claims())
    request = Request("GET", "/x", headers={"authorization": f"Bearer {token}"})
    judged = await evaluate_once(remote, request, jwks_file=tmp_path / "jwks.json")
    assert judged.decision.allowed
    (tmp_path / "other.json").write_text(json.dumps({"keys": [rsa_signer().jwk]}))
    refused = await evaluate_once(remote, request, jwks_file=tmp_path / "other.json")
    assert refused.decision.reason == "unknown_kid"


async def test_an_ambiguous_path_is_refused_before_any_rule():
    judged = await evaluate_once(_config(), Request("GET", "/public/../admin"), claims={})
    assert judged.path_refused == "invalid_path" and judged.rules == []
    assert judged.decision.status == 400


async def test_the_json_report_keeps_its_schema():
    request = Request("GET", "/admin")
    judged = await evaluate_once(_config(), request, claims={"sub": "bob", "roles": []})
    report = to_json(judged)
    assert set(report) >= {
        "allowed",
        "status",
        "reason",
        "rule",
        "provider",
        "conditions",
        "headers_set",
        "headers_removed",
        "rules",
        "token_checks",
        "signature",
        "skipped_offline",
    }
    assert report["conditions"] == [
        {"condition": 'roles contains "admin"', "where": "claims[0]", "result": "fail"}
    ]
    assert report["www_authenticate"] is None and report["status"] == 403
    text = to_text(judged)
    assert "decision  deny 403 claim_mismatch" in text
    assert 'fail          claims[0]: roles contains "admin"' in text


def test_an_unknown_provider_is_named():
    judge = StandInJudge(_config())
    with pytest.raises(KeyError):
        judge.token("nope", {})


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(299, "in 4m 59s"), (-7322, "2h 2m 2s ago"), (90061, "in 1d 1h 1m"), (0, "in 0m 0s")],
)
def test_relative_times(seconds, text):
    assert relative(seconds) == text
