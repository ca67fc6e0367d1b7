from __future__ import annotations

from typing import Any

import pytest

from authz.config import ClaimCondition, parse_config
from authz.errors import ClaimMismatch
from authz.model import RequestAttributes
from authz.policy import MISSING, Condition, Policy, get_claim, render_header_value

CLAIMS: dict[str, Any] = {
    "sub": "alice",
    "scope": "read write",
    "scp": ["a", "b"],
    "admin": True,
    "level": 3,
    "ratio": 2.0,
    "realm_access": {"roles": ["user", "admin"]},
    "org": {"team": {"name": "core"}},
    "email": "alice@example.com",
    "nothing": None,
}

CONDITIONS: list[tuple[dict[str, Any], bool]] = [
    ({"claim": "sub", "equals": "alice"}, True),
    ({"claim": "sub", "equals": "bob"}, False),
    ({"claim": "missing", "equals": "x"}, False),
    ({"claim": "admin", "equals": True}, True),
    ({"claim": "level", "equals": True}, False),  # 3 is not True, and 1 would not be either
    ({"claim": "admin", "equals": 1}, False),
    ({"claim": "level", "equals": 3}, True),
    ({"claim": "ratio", "equals": 2}, True),
    ({"claim": "org.team.name", "equals": "core"}, True),
    ({"claim": "org.team", "equals": {"name": "core"}}, True),
    ({"claim": "sub", "one_of": ["bob", "alice"]}, True),
    ({"claim": "sub", "one_of": ["bob"]}, False),
    ({"claim": "realm_access.roles", "one_of": ["admin"]}, False),  # a list is not one value
    ({"claim": "realm_access.roles", "contains": "admin"}, True),
    ({"claim": "realm_access.roles", "contains": "root"}, False),
    ({"claim": "scope", "contains": "write"}, True),  # space-delimited scope is a list
    ({"claim": "scope", "contains": "read write"}, False),
    ({"claim": "scp", "contains": "b"}, True),
    ({"claim": "sub", "contains": "alice"}, True),  # a single value is a one-item list
    ({"claim": "missing", "contains": "x"}, False),
    ({"claim": "realm_access.roles", "contains_any": ["root", "admin"]}, True),
    ({"claim": "realm_access.roles", "contains_any": ["root"]}, False),
    ({"claim": "scope", "contains_all": ["read", "write"]}, True),
    ({"claim": "scope", "contains_all": ["read", "admin"]}, False),
    ({"claim": "email", "matches": r".*@example\.com"}, True),
    ({"claim": "email", "matches": r"example\.com"}, False),  # full match, not search
    ({"claim": "level", "matches": "3"}, False),  # only strings match patterns
    ({"claim": "realm_access.roles", "matches": "adm.*"}, True),
    ({"claim": "sub", "exists": True}, True),
    ({"claim": "missing", "exists": True}, False),
    ({"claim": "missing", "exists": False}, True),
    ({"claim": "nothing", "exists": False}, True),
    ({"claim": "org.missing.deeper", "exists": False}, True),
    ({"claim": "sub.deeper", "exists": False}, True),
]


@pytest.mark.parametrize(("spec", "holds"), CONDITIONS, ids=[str(c[0]) for c in CONDITIONS])
def test_conditions(spec: dict[str, Any], holds: bool) -> None:
    condition = Condition.compile(ClaimCondition.model_validate(spec), ".")
    assert condition.holds(CLAIMS) is holds


def test_custom_delimiter() -> None:
    spec = ClaimCondition.model_validate({"claim": "org/team/name", "equals": "core"})
    assert Condition.compile(spec, "/").holds(CLAIMS)
    claims = {"https://example.com/roles": ["admin"]}
    url_claim = ClaimCondition.model_validate(
        {"claim": "https://example.com/roles", "contains": "admin"}
    )
    assert Condition.compile(url_claim, "|").holds(claims)


def test_get_claim_missing() -> None:
    assert get_claim(CLAIMS, ("org", "nope")) is MISSING
    assert get_claim(CLAIMS, ("scope",)) == ["read", "write"]


POLICY = parse_config(
    {
        "providers": {"p": {"issuer": "i", "audiences": ["a"], "jwks": {"inline": {"keys": []}}}},
        "rules": [
            {"name": "health", "match": {"prefix": "/healthz"}, "public": True},
            {"name": "exact", "match": {"path": "/exact"}, "requires": {"provider": "p"}},
            {
                "name": "admin-write",
                "match": {"prefix": "/admin", "methods": ["post", "DELETE"]},
                "requires": {"provider": "p"},
                "claims": [
                    {"claim": "realm_access.roles", "contains": "admin"},
                    {"claim": "scope", "contains": "admin:write"},
                ],
            },
            {"match": {"prefix": "/api"}, "requires": {"provider": "p"}},
        ],
    }
)


@pytest.mark.parametrize(
    ("method", "path", "rule"),
    [
        ("GET", "/healthz", "health"),
        ("GET", "/healthz/deep?x=1", "health"),
        ("GET", "/exact", "exact"),
        ("GET", "/exact?q=1", "exact"),
        ("GET", "/exact/more", None),
        ("POST", "/admin/users", "admin-write"),
        ("delete", "/admin", "admin-write"),
        ("GET", "/admin", None),
        ("GET", "/api/v1", "3"),  # an unnamed rule is named by its index
        ("GET", "/other", None),
    ],
)
def test_first_matching_rule(method: str, path: str, rule: str | None) -> None:
    matched = Policy.compile(POLICY).match(RequestAttributes(method, "h", path, {}))
    assert (matched.name if matched else None) == rule


def test_failed_condition_names_rule_and_condition_not_values() -> None:
    rule = Policy.compile(POLICY).rules[2]
    with pytest.raises(ClaimMismatch) as caught:
        rule.check_claims({"realm_access": {"roles": ["admin"]}, "scope": "secret-scope"})
    assert caught.value.scope is True
    assert "rule admin-write: condition 1 (contains on scope)" in caught.value.detail
    assert "secret-scope" not in str(caught.value)
    with pytest.raises(ClaimMismatch) as caught:
        rule.check_claims({"realm_access": {"roles": []}})
    assert caught.value.scope is False
    rule.check_claims({"realm_access": {"roles": ["admin"]}, "scope": "admin:write"})


@pytest.mark.parametrize(
    ("value", "header"),
    [
        ("alice", "alice"),
        (["a", "b"], "a,b"),
        ([1, True, {"k": "v"}], '1,true,{"k":"v"}'),
        ({"b": 1, "a": [2]}, '{"a":[2],"b":1}'),
        (3, "3"),
        (3.0, "3"),
        (2.5, "2.5"),
        (True, "true"),
        (False, "false"),
        (None, None),
        (MISSING, None),
        ("evil\r\nx-admin: 1", "evilx-admin: 1"),
        ("nul\x00byte", "nulbyte"),
    ],
)
def test_render_header_value(value: Any, header: str | None) -> None:
    assert render_header_value(value) == header
