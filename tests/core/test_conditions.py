from __future__ import annotations

from typing import Any

import pytest

from authz.config.rules import ClaimCondition
from authz.core.claims import MISSING, get_claim
from authz.core.conditions import EvalContext
from authz.core.model import RequestAttributes
from authz.runtime.build_policy import build_conditions

CLAIMS: dict[str, Any] = {
    "sub": "alice",
    "uid": 42,
    "scope": "read write",
    "scp": ["a", "b"],
    "admin": True,
    "level": 3,
    "ratio": 2.0,
    "realm_access": {"roles": ["user", "admin"]},
    "org": {"team": {"name": "core"}},
    "email": "alice@example.com",
    "nothing": None,
    "https://example.com/roles": ["editor"],
    "groups": [{"name": "g1"}],
}
PARTNER: dict[str, Any] = {"sub": "svc", "tenant": "acme"}
REQUEST = RequestAttributes(
    "GET",
    "API.example.com:8443",
    "/users/alice?tenant=acme&n=1&dup=a&dup=b",
    {"x-tenant": "acme"},
    {"policy": "admin"},
)


def context() -> EvalContext:
    return EvalContext(
        claims={"corp": CLAIMS, "partner": PARTNER},
        primary="corp",
        request=REQUEST,
        path="/users/alice",
        params={"id": "alice", "n": "42"},
    )


def holds(spec: dict[str, Any], delimiter: str = ".") -> bool:
    node = build_conditions([ClaimCondition.model_validate(spec)], delimiter)
    return node.check(context()) is None


CASES: list[tuple[dict[str, Any], bool]] = [
    ({"claim": "sub", "equals": "alice"}, True),
    ({"claim": "sub", "equals": "bob"}, False),
    ({"claim": "missing", "equals": "x"}, False),
    ({"claim": "admin", "equals": True}, True),
    ({"claim": "level", "equals": True}, False),
    ({"claim": "admin", "equals": 1}, False),  # True is not 1 in a policy
    ({"claim": "ratio", "equals": 2}, True),
    ({"claim": "org.team.name", "equals": "core"}, True),
    ({"claim": "org.team", "equals": {"name": "core"}}, True),
    ({"claim": "nothing", "equals": None}, True),
    ({"claim": "sub", "not_equals": "bob"}, True),
    ({"claim": "sub", "not_equals": "alice"}, False),
    ({"claim": "missing", "not_equals": "x"}, False),  # fails closed when absent
    ({"claim": "nothing", "not_equals": "x"}, False),
    ({"claim": "sub", "one_of": ["bob", "alice"]}, True),
    ({"claim": "sub", "one_of": ["bob"]}, False),
    ({"claim": "realm_access.roles", "one_of": ["admin"]}, False),  # a list is not one value
    ({"claim": "realm_access.roles", "contains": "admin"}, True),
    ({"claim": "realm_access.roles", "contains": "root"}, False),
    ({"claim": "scope", "contains": "write"}, True),  # space-delimited scope is a list
    ({"claim": "scope", "contains": "read write"}, False),
    ({"claim": "scp", "contains": "b"}, True),
    ({"claim": "sub", "contains": "alice"}, True),  # a single value is a one-item list
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
    ({"claim": "missing", "absent": True}, True),
    ({"claim": "sub", "absent": True}, False),
    ({"claim": "org.missing.deeper", "absent": True}, True),
    ({"claim": "sub.deeper", "absent": True}, True),  # cannot step into a string
    ({"claim": "groups.0.name", "exists": True}, False),  # paths do not index into arrays
    ({"claim": "level", "gt": 2}, True),
    ({"claim": "level", "gt": 3}, False),
    ({"claim": "level", "gte": 3}, True),
    ({"claim": "level", "lt": 3.5}, True),
    ({"claim": "level", "lte": 2}, False),
    ({"claim": "admin", "gt": 0}, False),  # booleans are not numbers
    ({"claim": "sub", "gt": 0}, False),
    ({"claim": "missing", "lt": 10}, False),
    ({"claim_path": ["https://example.com/roles"], "contains": "editor"}, True),
    ({"claim_path": ["org", "team", "name"], "equals": "core"}, True),
    ({"claim": "sub", "provider": "partner", "equals": "svc"}, True),
    # provider applies to the whole condition: both sides read the partner token
    ({"claim": "tenant", "provider": "partner", "equals_claim": "tenant"}, True),
    ({"request": "method", "one_of": ["GET", "HEAD"]}, True),
    ({"request": "host", "equals": "api.example.com"}, True),  # lower-cased, no port
    ({"request": "path", "matches": "/users/.*"}, True),
    ({"request": "header.X-Tenant", "equals": "acme"}, True),
    ({"request": "header.x-missing", "exists": False}, True),
    ({"request": "query.tenant", "equals": "acme"}, True),
    ({"request": "context.policy", "equals": "admin"}, True),
    ({"request": "param.id", "equals_claim": "sub"}, True),  # /users/{id} only for that user
    ({"request": "param.n", "equals_claim": "uid"}, True),  # text param vs number claim
    ({"request": "param.id", "equals_claim": "email"}, False),
    ({"request": "param.nope", "equals_claim": "sub"}, False),
    ({"request": "header.x-tenant", "equals_claim": "tenant"}, False),  # corp has no tenant
    ({"claim": "sub", "equals_claim": "sub"}, True),
    # composition
    ({"all": [{"claim": "sub", "exists": True}, {"claim": "level", "gte": 3}]}, True),
    ({"all": [{"claim": "sub", "exists": True}, {"claim": "level", "gte": 4}]}, False),
    ({"any": [{"claim": "sub", "equals": "bob"}, {"claim": "admin", "equals": True}]}, True),
    ({"any": [{"claim": "sub", "equals": "bob"}, {"claim": "admin", "equals": False}]}, False),
    ({"not": {"claim": "realm_access.roles", "contains": "banned"}}, True),
    ({"not": {"claim": "realm_access.roles", "contains": "admin"}}, False),
    (
        {
            "any": [
                {"all": [{"claim": "sub", "equals": "bob"}, {"claim": "level", "gt": 1}]},
                {
                    "not": {
                        "any": [{"claim": "missing", "exists": True}, {"claim": "level", "gt": 5}]
                    }
                },
            ]
        },
        True,
    ),
    # A missing, null or ill-typed subject is indeterminate: it fails, and so does its `not`.
    ({"not": {"claim": "level", "lt": 3}}, True),  # level is 3: a plain "no", negated
    ({"not": {"claim": "missing", "lt": 3}}, False),
    ({"not": {"claim": "sub", "lt": 3}}, False),  # "alice" is not a number
    ({"not": {"claim": "nothing", "equals": "x"}}, False),
    ({"not": {"request": "param.idd", "equals_claim": "sub"}}, False),
    ({"not": {"expr": "jwt.missing < 3"}}, False),  # a CEL error cannot be negated
    ({"not": {"expr": "jwt.level < 3"}}, True),
    ({"not": {"any": [{"claim": "missing", "equals": 1}, {"claim": "level", "equals": 3}]}}, False),
    ({"not": {"all": [{"claim": "missing", "equals": 1}, {"claim": "level", "equals": 4}]}}, True),
    ({"claim": "admin", "not_equals": "true"}, False),  # a string is not a judgement on a bool
    ({"claim": "realm_access.roles", "not_equals": "guest"}, False),  # nor a list on a string
    ({"claim": "level", "not_equals": 4}, True),
    ({"request": "query.dup", "equals": "a"}, False),  # repeated: no single value to trust
    ({"request": "query.dup", "exists": False}, True),
    # CEL
    ({"expr": '"admin" in jwt.realm_access.roles && request.method == "GET"'}, True),
    ({"expr": "jwt.level > 5"}, False),
    ({"expr": 'request.params.id == jwt.sub && request.headers["x-tenant"] == "acme"'}, True),
    ({"expr": 'claims.partner.tenant == "acme"'}, True),
    ({"expr": "jwt.no_such_claim == 1"}, False),  # a runtime error fails the condition
    ({"expr": "jwt.sub"}, False),  # not a boolean
    ({"expr": "jwt.level + 'x' == 1"}, False),  # a type error fails the condition
]


@pytest.mark.parametrize(("spec", "expected"), CASES, ids=[str(c[0]) for c in CASES])
def test_conditions(spec: dict[str, Any], expected: bool) -> None:
    assert holds(spec) is expected


def test_huge_integers_are_not_numbers() -> None:
    for spec in ({"claim": "big", "gt": 1}, {"expr": "jwt.big > 1"}):
        node = build_conditions([ClaimCondition.model_validate(spec)], ".")
        ctx = EvalContext({"corp": {"big": 10**400}}, "corp", REQUEST, "/", {})
        failure = node.check(ctx)
        assert failure is not None and failure.indeterminate


def test_custom_delimiter() -> None:
    assert holds({"claim": "org/team/name", "equals": "core"}, delimiter="/")
    assert holds({"claim": "https://example.com/roles", "contains": "editor"}, delimiter="|")


def test_failure_names_the_condition_not_the_value() -> None:
    specs = [
        {"claim": "sub", "exists": True},
        {"any": [{"claim": "scope", "contains": "admin"}, {"claim": "scp", "contains": "z"}]},
    ]
    node = build_conditions([ClaimCondition.model_validate(s) for s in specs], ".")
    failure = node.check(context())
    assert failure is not None
    assert failure.where == "claims[1].any"
    assert failure.scope is True  # every alternative was about scope
    leaf = build_conditions([ClaimCondition.model_validate({"claim": "sub", "equals": "x"})], ".")
    failed = leaf.check(context())
    assert failed is not None
    assert str(failed) == "claims[0] (equals on sub)"
    assert "alice" not in str(failed)


def test_get_claim() -> None:
    assert get_claim(CLAIMS, ("org", "nope")) is MISSING
    assert get_claim(CLAIMS, ("scope",)) == ["read", "write"]
    assert get_claim(CLAIMS, ()) == CLAIMS


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"claim": "sub"}, "exactly one operator"),
        ({"claim": "sub", "equals": 1, "one_of": [1]}, "exactly one operator"),
        ({"claim": "sub", "startswith": "a"}, "startswith"),
        ({"equals": "a"}, "exactly one of claim, claim_path, request or issuer_param"),
        ({"claim": "a", "request": "method", "equals": "GET"}, "exactly one of claim"),
        ({"any": []}, "at least 1"),
        ({"all": [{"claim": "a", "exists": True}], "claim": "a"}, "a block is exactly one"),
        ({"claim": "level", "gt": "3"}, "must be a number"),
        ({"claim": "level", "gt": True}, "must be a number"),
        ({"request": "cookie.x", "exists": True}, "unknown request attribute"),
        ({"expr": "jwt.sub =="}, "invalid CEL expression"),
        ({"provider": "partner", "all": [{"claim": "a", "exists": True}]}, "put provider on"),
        ({"claim": "a", "matches": "(a)\\1"}, "RE2"),
    ],
)
def test_invalid_conditions(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClaimCondition.model_validate(spec)


# --- no type mismatch opens a rule ----------------------------------------------------

MISMATCHED = [["banned"], None, {"v": "banned"}, 1, True, 1.5]


def judged(spec: dict[str, Any], status: Any) -> bool:
    """Whether ``spec`` holds for a token whose ``status`` claim is ``status``."""
    node = build_conditions([ClaimCondition.model_validate(spec)], ".")
    ctx = context()
    ctx.claims = {"corp": {**CLAIMS, "status": status}}
    return node.check(ctx) is None


NEGATIVE_FORMS = [
    {"claim": "status", "not_equals": "banned"},
    {"not": {"claim": "status", "equals": "banned"}},
    {"not": {"claim": "status", "one_of": ["banned", "frozen"]}},
    {"not": {"claim": "status", "contains": "banned"}},
    {"not": {"claim": "status", "contains_any": ["banned", "frozen"]}},
    {"not": {"claim": "status", "contains_all": ["banned"]}},
    {"not": {"claim": "status", "matches": "ban.*"}},
]


@pytest.mark.parametrize("spec", NEGATIVE_FORMS)
@pytest.mark.parametrize("status", MISMATCHED, ids=repr)
def test_a_claim_of_another_type_never_passes_a_negative_condition(
    spec: dict[str, Any], status: Any
) -> None:
    assert not judged(spec, status)


@pytest.mark.parametrize("spec", NEGATIVE_FORMS)
def test_negative_conditions_still_work_on_the_right_type(spec: dict[str, Any]) -> None:
    assert judged(spec, "active")
    assert not judged(spec, "banned")


@pytest.mark.parametrize(
    ("status", "spec", "expected"),
    [
        # lists holding an element of another type than the value are indeterminate
        (["banned", 1], {"not": {"claim": "status", "contains": "frozen"}}, False),
        (["ok", None], {"claim": "status", "contains": "ok"}, False),
        (["ok", "fine"], {"not": {"claim": "status", "contains": "banned"}}, True),
        ([], {"not": {"claim": "status", "contains": "banned"}}, True),
        (["a", 1], {"not": {"claim": "status", "matches": "z"}}, False),
        # numbers are one type, integer or not; a boolean is not a number
        (1, {"claim": "status", "equals": 1.0}, True),
        (2.0, {"not": {"claim": "status", "one_of": [1, 3]}}, True),
        (True, {"not": {"claim": "status", "one_of": [1, 3]}}, False),
        (1, {"not": {"claim": "status", "equals": True}}, False),
        # deep values: an element of another type inside is indeterminate too
        ([1], {"claim": "status", "not_equals": ["1"]}, False),
        ({"a": 1}, {"claim": "status", "not_equals": {"a": "1"}}, False),
        ({"a": 1}, {"claim": "status", "not_equals": {"a": 2}}, True),
        ([1, 2], {"claim": "status", "not_equals": [1]}, True),
        # equals: null asks for an explicit null; not around it is "present and not null"
        (None, {"claim": "status", "equals": None}, True),
        ("x", {"not": {"claim": "status", "equals": None}}, True),
    ],
)
def test_json_types(status: Any, spec: dict[str, Any], expected: bool) -> None:
    assert judged(spec, status) is expected


@pytest.mark.parametrize("operator", ["one_of", "contains_any", "contains_all"])
def test_value_lists_hold_one_type(operator: str) -> None:
    with pytest.raises(ValueError, match="one JSON type"):
        ClaimCondition.model_validate({"claim": "status", operator: ["banned", 1]})


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("read write", ["read", "write"]),
        ("read  write", ["read", "write"]),
        ("read\u00a0write", ["read\u00a0write"]),  # NBSP is not a scope delimiter
        ("read\twrite", ["read\twrite"]),
        ("read\x1cwrite", ["read\x1cwrite"]),
        ("read\x1fwrite", ["read\x1fwrite"]),
    ],
)
def test_scope_splits_on_the_space_alone(scope: str, expected: list[str]) -> None:
    assert get_claim({"scope": scope}, ("scope",)) == expected


CEL_NEGATIVE_FORMS = [
    'jwt.status != "banned"',
    '!(jwt.status == "banned")',
    '!(jwt.status in ["banned"])',
    '!(jwt.status in ["banned", "frozen"]) && jwt.sub == "alice"',
]


@pytest.mark.parametrize("expr", CEL_NEGATIVE_FORMS)
@pytest.mark.parametrize("status", MISMATCHED, ids=repr)
def test_a_cel_comparison_between_types_fails_the_condition(expr: str, status: Any) -> None:
    assert not judged({"expr": expr}, status)


@pytest.mark.parametrize("expr", CEL_NEGATIVE_FORMS)
def test_cel_comparisons_still_work_on_the_right_type(expr: str) -> None:
    assert judged({"expr": expr}, "active")
    assert not judged({"expr": expr}, "banned")


@pytest.mark.parametrize(
    ("expr", "status", "expected"),
    [
        ("jwt.status != null", "x", True),  # a presence test keeps CEL's own meaning
        ("jwt.status == null", None, True),
        ("jwt.status == 1", 1.0, True),  # numbers are one type
        ("jwt.status == 1", True, False),
        ('"a" in jwt.status', ["a", 1], False),  # a list holding another type
        ('"a" in jwt.status', ["a", "b"], True),
        ('jwt.status.exists(s, s == "a")', ["b", "a"], True),
    ],
)
def test_cel_strict_comparisons(expr: str, status: Any, expected: bool) -> None:
    assert judged({"expr": expr}, status) is expected
