"""Explanations of a decision: the rules skipped and why, and each condition's result."""

from __future__ import annotations

import pytest

from authz.core.conditions import EvalContext
from authz.core.explain import condition_results, rule_steps
from authz.runtime.build_policy import build_policy
from tests.support import config
from tests.support.requests import req

RULES = [
    {"name": "writes", "match": {"methods": ["POST"], "prefix": "/"}, "public": True},
    {"name": "other-host", "match": {"hosts": ["other.example.com"]}, "public": True},
    {"name": "admin-context", "match": {"context": {"policy": "admin"}}, "public": True},
    {"name": "beta", "match": {"headers": [{"name": "x-beta", "present": True}]}, "public": True},
    {"name": "docs", "match": {"prefix": "/docs"}, "public": True},
    {"name": "rest", "match": {"prefix": "/"}, "requires": {"provider": "corp"}},
]


@pytest.mark.parametrize(
    ("request_", "skipped"),
    [
        (req("/x"), ["method", "host", "context", "header", "path", None]),
        (req("/x", "POST"), [None]),
        (req("/docs/a"), ["method", "host", "context", "header", None]),
        (req("/x", context={"policy": "admin"}), ["method", "host", None]),
    ],
)
def test_rule_steps_name_the_part_of_the_match_that_failed(request_, skipped):
    policy = build_policy(config(rules=RULES))
    steps = rule_steps(policy, request_, request_.path)
    assert [s.skipped_by for s in steps] == skipped
    assert [s.rule for s in steps] == [r["name"] for r in RULES][: len(skipped)]


def test_rule_steps_list_every_rule_when_none_matches():
    policy = build_policy(config(rules=RULES[:2]))
    steps = rule_steps(policy, req("/x"), "/x")
    assert [(s.rule, s.skipped_by) for s in steps] == [("writes", "method"), ("other-host", "host")]


CONDITIONS = [
    {"claim": "realm_access.roles", "contains": "admin"},
    {"any": [{"claim": "scope", "contains": "a"}, {"claim": "scope", "contains": "b"}]},
    {"not": {"claim": "banned", "equals": True}},
    {"claim": "level", "gt": 3},
    {"expr": "jwt.sub == 'alice'"},
    {"request": "param.id", "equals_claim": "sub"},
]


def _results(claims):
    rule = {
        "name": "r",
        "match": {"template": "/users/{id}"},
        "requires": {"provider": "corp"},
        "claims": CONDITIONS,
    }
    policy = build_policy(config(rules=[rule]))
    request = req("/users/alice")
    ctx = EvalContext(
        claims={"corp": claims},
        primary="corp",
        request=request,
        path=request.path,
        params={"id": "alice"},
    )
    return [
        (r.where, r.condition, r.result) for r in condition_results(policy.rules[0].conditions, ctx)
    ]


def test_condition_results_show_each_condition_with_its_configured_value():
    claims = {"sub": "alice", "realm_access": {"roles": ["admin"]}, "scope": "b", "level": 4}
    assert _results(claims) == [
        ("claims[0]", 'realm_access.roles contains "admin"', "pass"),
        ("claims[1].any[0]", 'scope contains "a"', "fail"),
        ("claims[1].any[1]", 'scope contains "b"', "pass"),
        ("claims[1].any", "any of the above", "pass"),
        ("claims[2].not", "banned equals true", "indeterminate"),
        ("claims[2].not", "not the above", "indeterminate"),
        ("claims[3]", "level gt 3", "pass"),
        ("claims[4].expr", "expr: jwt.sub == 'alice'", "pass"),
        ("claims[5]", 'request.param.id equals_claim "sub"', "pass"),
    ]


def test_condition_results_fail_and_indeterminate_without_claim_values():
    results = _results({"sub": "bob", "realm_access": {"roles": ["user"]}, "level": "high"})
    by_where = {where: (text, result) for where, text, result in results}
    assert by_where["claims[0]"] == ('realm_access.roles contains "admin"', "fail")
    assert by_where["claims[1].any"][1] == "indeterminate"  # no scope claim
    assert by_where["claims[3]"] == ("level gt 3", "indeterminate")  # a string, not a number
    assert by_where["claims[4].expr"][1] == "fail"
    assert by_where["claims[5]"][1] == "fail"
    assert not any("bob" in text or "user" in text for _, text, _ in results)
