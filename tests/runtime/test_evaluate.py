"""Judging requests offline: the real authorizer with stand-in keys (claims given) or the
configured keys (a real token), and the explanation beside its decision."""

from __future__ import annotations

import json

import pytest

from authz.config import ConfigError
from authz.runtime.evaluate import Request, StandInJudge, evaluate_once, relative
from authz.runtime.report import to_json, to_text
from tests.support import AUDIENCE, ISSUER, config, provider, rsa_signer
from tests.support.tokens import b64, b64json, wall_clock_claims

SIGNER = rsa_signer()
PARTNER = rsa_signer()
JWKS = {"keys": [SIGNER.jwk]}
INTROSPECTION = {
    "issuer": "https://opaque.test",
    "audiences": ["api"],
    "introspection": {
        "endpoint": "https://opaque.test/introspect",
        "client_id": "authz",
        "client_secret": {"env": "AUTHZ_TEST_NEVER_SET"},  # stand-ins need no secret
    },
    "from_headers": [{"name": "x-opaque", "value_prefix": ""}],
}
PARTNER_PROVIDER = provider(
    issuer="https://partner.test",
    audiences=["papi"],
    jwks={"inline": {"keys": [PARTNER.jwk]}},
    from_headers=[{"name": "x-partner-token", "value_prefix": ""}],
)
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
    {"name": "either", "match": {"prefix": "/either"}, "requires": {"any": ["corp", "partner"]}},
    {
        "name": "both",
        "match": {"prefix": "/both"},
        "requires": {"all": ["corp", "partner"]},
        "claims": [{"claim": "sub", "equals": "alice", "provider": "partner"}],
    },
    {
        "name": "deletes",
        "match": {"prefix": "/w", "methods": ["DELETE"]},
        "requires": {"provider": "corp"},
        "claims": [{"claim": "roles", "contains": "admin"}],
    },
    {"name": "rest", "match": {"prefix": "/"}, "requires": {"provider": "corp"}},
]


def _config(**corp):
    return config(
        providers={
            "corp": provider(jwks={"inline": JWKS}, **corp),
            "opaque": INTROSPECTION,
            "partner": PARTNER_PROVIDER,
        },
        rules=RULES,
        method_override="judge_both",
    )


def _checks(evaluation, index=0):
    return {c.check: c for c in evaluation.tokens[index].checks}


async def test_claims_are_judged_by_the_real_policy_with_a_stand_in_key():
    request = Request("DELETE", "/admin/users/7")
    allowed = await evaluate_once(_config(), request, claims={"sub": "alice", "roles": ["admin"]})
    assert allowed.decision.allowed and allowed.decision.rule == "admin"
    assert dict(allowed.decision.upstream_headers)["x-user-id"] == "alice"
    assert "authorization" in allowed.decision.remove_headers
    assert [(s.rule, s.skipped_by) for s in allowed.rules] == [("health", "path"), ("admin", None)]
    (token,) = allowed.tokens
    assert (token.provider, token.signature.result) == ("corp", "stand_in")
    checks = _checks(allowed)
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
    assert _checks(expired)["exp"].result == "fail"
    assert expired.tokens[0].signature.result == "stand_in"
    other = await evaluate_once(_config(), request, claims={"sub": "a", "aud": "billing"})
    assert other.decision.reason == "invalid_audience"
    assert _checks(other)["aud"].result == "fail"
    assert other.conditions is None  # never reached


async def test_an_iss_in_the_claims_picks_the_provider_that_takes_it():
    claims = {"sub": "p", "iss": "https://partner.test", "aud": "papi"}
    judged = await evaluate_once(_config(), Request("GET", "/either"), claims=claims)
    assert (judged.decision.allowed, judged.decision.provider) == (True, "partner")
    assert judged.tokens[0].provider == "partner"


async def test_requires_all_mints_and_reports_a_token_for_each_provider():
    judged = await evaluate_once(_config(), Request("GET", "/both"), claims={"sub": "alice"})
    assert judged.decision.allowed
    assert [(t.provider, {c.check: c.result for c in t.checks}) for t in judged.tokens] == [
        ("corp", {"iss": "pass", "aud": "pass", "exp": "pass"}),
        ("partner", {"iss": "pass", "aud": "pass", "exp": "pass"}),
    ]
    assert [c.result for c in judged.conditions or []] == ["pass"]
    one = await evaluate_once(
        _config(), Request("GET", "/both"), claims={"sub": "bob"}, provider="corp"
    )
    assert one.decision.reason == "missing_token"
    assert one.conditions is None  # not shown: the conditions were never evaluated


async def test_a_method_override_is_explained_under_the_method_judged():
    override = Request("GET", "/w/1", headers={"X-HTTP-Method-Override": "DELETE"})
    judged = await evaluate_once(_config(), override, claims={"sub": "a", "roles": ["user"]})
    assert judged.decision.reason == "claim_mismatch"
    assert judged.judged_method == "DELETE"
    assert judged.rules[-1].rule == "deletes"
    assert [(c.condition, c.result) for c in judged.conditions or []] == [
        ('roles contains "admin"', "fail")
    ]


async def test_claims_stand_in_for_an_introspection_answer():
    request = Request("GET", "/partners/x")
    answer = await evaluate_once(_config(), request, claims={"client_id": "acme"})
    assert answer.decision.allowed and answer.decision.provider == "opaque"
    assert dict(answer.decision.upstream_headers)["x-client"] == "acme"
    assert answer.tokens[0].signature.result == "stand_in_answer"
    # A key-bound answer is refused offline as serve refuses it.
    bound = await evaluate_once(
        _config(), request, claims={"client_id": "acme", "cnf": {"jkt": "x"}}
    )
    assert bound.decision.reason == "invalid_claims"


async def test_holder_of_key_checks_are_named_as_skipped():
    required = _config(dpop={"mode": "required"}, certificate_bound="required")
    bound = {"sub": "a", "cnf": {"jkt": "abc", "x5t#S256": "def"}}
    judged = await evaluate_once(required, Request("GET", "/x"), claims=bound)
    assert judged.decision.allowed
    assert [str(s) for s in judged.skipped] == [
        "TLS client certificate binding (providers.corp.certificate_bound: required)",
        "DPoP proof of possession (providers.corp.dpop.mode: required)",
    ]
    plain = await evaluate_once(_config(), Request("GET", "/x"), claims={"sub": "a"})
    assert plain.skipped == []  # when_bound, and the token is not bound
    jkt = await evaluate_once(
        _config(), Request("GET", "/x", headers={"DPoP": "a-proof"}), claims={"sub": "a", **bound}
    )
    assert [(s.check, s.mode) for s in jkt.skipped] == [
        ("certificate_binding", "when_bound"),
        ("dpop_proof", "when_bound"),
    ]
    assert "dpop" in jkt.decision.remove_headers  # as serve strips it
    override = Request("GET", "/w/1", headers={"X-HTTP-Method-Override": "DELETE"})
    claims = {"sub": "a", "roles": ["admin"], "cnf": {"jkt": "abc"}}
    twice = await evaluate_once(_config(), override, claims=claims)
    assert twice.decision.allowed and twice.judged_method == "DELETE"
    assert [s.check for s in twice.skipped] == ["dpop_proof"]  # judged twice, named once


async def test_a_minted_dpop_bound_token_is_sent_as_a_dpop_client_sends_it():
    claims = {"sub": "a", "cnf": {"jkt": "abc"}}
    judged = await evaluate_once(_config(), Request("GET", "/x"), claims=claims)
    assert judged.decision.allowed
    judge = StandInJudge(_config())
    carrying, _ = judge.carrying(Request("GET", "/x"), None, claims=claims)
    assert carrying.headers["authorization"].startswith("DPoP ")
    plain, _ = judge.carrying(Request("GET", "/x"), None, claims={"sub": "a"})
    assert plain.headers["authorization"].startswith("Bearer ")
    # A cnf.jkt of null binds nothing, as serve reads it: sent as Bearer, and allowed.
    unbound = {"sub": "a", "cnf": {"jkt": None}}
    null, _ = judge.carrying(Request("GET", "/x"), None, claims=unbound)
    assert null.headers["authorization"].startswith("Bearer ")
    assert (await evaluate_once(_config(), Request("GET", "/x"), claims=unbound)).decision.allowed


@pytest.mark.parametrize(
    ("corp", "claims", "reason"),
    [
        ({"dpop": {"mode": "required"}}, {"sub": "a"}, "dpop_binding_mismatch"),
        ({}, {"sub": "a", "cnf": {"jkt": 7}}, "dpop_binding_mismatch"),
        ({"certificate_bound": "required"}, {"sub": "a"}, "certificate_binding_mismatch"),
        ({}, {"sub": "a", "cnf": {"x5t#S256": 7}}, "certificate_binding_mismatch"),
    ],
)
async def test_a_binding_the_token_lacks_is_refused_offline_as_serve_refuses_it(
    corp, claims, reason
):
    judged = await evaluate_once(_config(**corp), Request("GET", "/x"), claims=claims)
    assert (judged.decision.status, judged.decision.reason) == (401, reason)
    assert judged.skipped == []  # refused on the token: no proof or certificate was due


async def test_a_real_bound_token_sent_as_bearer_is_a_downgrade_offline_too(monkeypatch):
    monkeypatch.setenv("AUTHZ_TEST_NEVER_SET", "secret")  # serve's whole build
    token = SIGNER.token(**wall_clock_claims(), cnf={"jkt": "abc"})
    bearer = Request("GET", "/x", headers={"authorization": f"Bearer {token}"})
    judged = await evaluate_once(_config(), bearer)
    assert (judged.decision.status, judged.decision.reason) == (401, "dpop_missing")
    assert to_json(judged)["www_authenticate"].startswith("DPoP ")
    assert judged.skipped == []
    dpop = Request("GET", "/x", headers={"authorization": f"DPoP {token}"})
    allowed = await evaluate_once(_config(), dpop)
    assert allowed.decision.allowed
    assert [(s.check, s.mode) for s in allowed.skipped] == [("dpop_proof", "when_bound")]
    unbound = SIGNER.token(**wall_clock_claims())
    plain = Request("GET", "/x", headers={"authorization": f"Bearer {unbound}"})
    required = await evaluate_once(_config(dpop={"mode": "required"}), plain)
    assert (required.decision.status, required.decision.reason) == (401, "dpop_missing")


async def test_a_multi_tenant_issuer_is_filled_with_a_listed_tenant():
    def tenants(allowed):
        return config(
            providers={
                "corp": provider(
                    issuer="https://login.test/{tenant}/v2.0",
                    tenants=allowed,
                    jwks={"inline": JWKS},
                )
            }
        )

    judged = await evaluate_once(tenants(["t1"]), Request("GET", "/"), claims={"sub": "a"})
    assert judged.decision.allowed
    assert _checks(judged)["iss"].value == "https://login.test/t1/v2.0"
    other = {"sub": "a", "iss": "https://login.test/t3/v2.0"}
    refused = await evaluate_once(tenants(["t1"]), Request("GET", "/"), claims=other)
    assert refused.decision.reason == "invalid_issuer"
    assert _checks(refused)["iss"].result == "fail"  # the allow-list, not only the shape
    anyone = tenants({"any": True})
    with pytest.raises(ConfigError, match="give the claims an iss"):
        await evaluate_once(anyone, Request("GET", "/"), claims={"sub": "a"})
    assert (await evaluate_once(anyone, Request("GET", "/"), claims=other)).decision.allowed


async def test_a_real_token_is_verified_with_the_configured_keys(monkeypatch):
    # The configured keys mean serve's whole build: the introspection secret too.
    monkeypatch.setenv("AUTHZ_TEST_NEVER_SET", "secret")
    token = SIGNER.token(**wall_clock_claims(), roles=["admin"])
    request = Request("GET", "/admin", headers={"Authorization": f"Bearer {token}"})
    judged = await evaluate_once(_config(), request)
    assert judged.decision.allowed
    assert judged.tokens[0].signature.result == "verified"
    assert "signature verified with the provider's keys" in to_text(judged)
    forged = rsa_signer().token(header={"kid": SIGNER.kid}, **wall_clock_claims())
    request = Request("GET", "/admin", headers={"authorization": f"Bearer {forged}"})
    refused = await evaluate_once(_config(), request)
    assert refused.decision.reason == "invalid_signature"
    assert (refused.tokens[0].signature.result, refused.tokens[0].signature.reason) == (
        "refused",
        "invalid_signature",
    )
    assert refused.conditions is None
    late = SIGNER.token(**wall_clock_claims(), aud="billing")
    request = Request("GET", "/x", headers={"authorization": f"Bearer {late}"})
    audience = await evaluate_once(_config(), request)
    assert audience.decision.reason == "invalid_audience"
    assert audience.tokens[0].signature.result == "verified"  # the signature was good


async def test_a_real_token_for_the_second_provider_has_its_keys(monkeypatch):
    monkeypatch.setenv("AUTHZ_TEST_NEVER_SET", "secret")
    claims = {**wall_clock_claims(), "iss": "https://partner.test", "aud": "papi"}
    token = PARTNER.token(**claims)
    judged = await evaluate_once(
        _config(), Request("GET", "/either", headers={"x-partner-token": token})
    )
    assert judged.decision.allowed and judged.decision.provider == "partner"


async def test_keys_that_cannot_load_are_an_error_not_a_verdict(tmp_path):
    missing = config(providers={"corp": provider(jwks={"file": {"path": str(tmp_path / "no")}})})
    token = SIGNER.token(**wall_clock_claims())
    request = Request("GET", "/x", headers={"authorization": f"Bearer {token}"})
    with pytest.raises(ConfigError, match="no key set could be loaded for: corp"):
        await evaluate_once(missing, request)


async def test_a_jwks_file_stands_in_for_remote_keys_without_fetching(tmp_path):
    remote = config(
        providers={
            "corp": provider(jwks={"remote": {"uri": "https://unreachable.invalid/k"}}),
            "hmac": provider(
                issuer="https://hmac.test",
                jwks=None,
                shared_secret={"env": "AUTHZ_HMAC"},
                algorithms=["HS256"],
                from_headers=[{"name": "x-hmac", "value_prefix": ""}],
            ),
        }
    )
    (tmp_path / "jwks.json").write_text(json.dumps(JWKS))
    token = SIGNER.token(**wall_clock_claims())
    request = Request("GET", "/x", headers={"authorization": f"Bearer {token}"})
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AUTHZ_HMAC", "s" * 32)
        judged = await evaluate_once(remote, request, jwks_file=tmp_path / "jwks.json")
        assert judged.decision.allowed
        text = to_text(judged)  # the file's keys verified it, not the provider's
        assert f"signature verified with the keys of {tmp_path / 'jwks.json'} (--jwks)" in text
        assert "provider's keys" not in text
        (signature,) = [t["signature"] for t in to_json(judged)["tokens"]]
        assert signature["jwks_file"] == str(tmp_path / "jwks.json")
        (tmp_path / "other.json").write_text(json.dumps({"keys": [rsa_signer().jwk]}))
        refused = await evaluate_once(remote, request, jwks_file=tmp_path / "other.json")
        assert refused.decision.reason == "unknown_kid"
        with pytest.raises(ConfigError, match="cannot read"):
            await evaluate_once(remote, request, jwks_file=tmp_path / "absent.json")


async def test_refusals_before_any_rule_show_no_rule():
    for request, reason in (
        (Request("GET", "/public/../admin"), "invalid_path"),
        (Request("GET", "/x", host="bad host"), "invalid_host"),
    ):
        judged = await evaluate_once(_config(), request, claims={}, provider="corp")
        assert judged.refused == reason and judged.rules == [] and judged.tokens == []
        assert judged.decision.status == 400


async def test_header_names_in_any_case_are_one_header():
    request = Request("GET", "/x", headers={"Cookie": "theme=dark"})
    cookies = provider(jwks={"inline": JWKS}, from_cookies=["session"], from_headers=[])
    judged = await evaluate_once(config(providers={"corp": cookies}), request, claims={"sub": "a"})
    assert judged.decision.allowed
    assert dict(judged.decision.upstream_headers)["cookie"] == "theme=dark"


async def test_a_time_that_is_not_a_number_is_shown_not_crashed_on():
    claims = json.dumps(SIGNER.claims(**wall_clock_claims())).rstrip("}") + ', "nbf": 1e400}'
    header = b64json({"alg": "RS256", "kid": SIGNER.kid})
    signing_input = f"{header}.{b64(claims.encode())}"
    token = f"{signing_input}.{b64(SIGNER.sign(signing_input.encode()))}"
    request = Request("GET", "/x", headers={"authorization": f"Bearer {token}"})
    judged = await evaluate_once(
        config(providers={"corp": provider(jwks={"inline": JWKS})}), request
    )
    assert not judged.decision.allowed
    assert _checks(judged)["nbf"].shown == "not a NumericDate"


async def test_the_json_report_keeps_its_schema():
    request = Request("GET", "/admin")
    judged = await evaluate_once(_config(), request, claims={"sub": "bob", "roles": []})
    report = to_json(judged)
    assert set(report) >= {
        "allowed", "status", "reason", "rule", "provider", "conditions", "headers_set",
        "headers_removed", "rules", "tokens", "skipped_offline", "refused", "judged_method",
    }  # fmt: skip
    assert report["conditions"] == [
        {
            "where": "claims[0]",
            "operator": "contains",
            "subject": "roles",
            "value": "admin",
            "condition": 'roles contains "admin"',
            "result": "fail",
        }
    ]
    assert report["tokens"][0]["signature"] == {
        "result": "stand_in",
        "reason": None,
        "jwks_file": None,
    }
    assert report["www_authenticate"] is None and report["status"] == 403
    text = to_text(judged)
    assert "decision  deny 403 claim_mismatch" in text
    assert 'fail          claims[0]: roles contains "admin"' in text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(299, "in 4m 59s"), (-7322, "2h 2m 2s ago"), (90061, "in 1d 1h 1m"), (0, "in 0m 0s")],
)
def test_relative_times(seconds, text):
    assert relative(seconds) == text
