"""The cost of policy evaluation per check, measured in-process.

A 20-rule config; the request matches the last rule (the worst case for first-match),
whose conditions then run. Reported beside a floor (an empty function call) and the
cost of one CEL evaluation, all in the same run.

Run: .venv/bin/python -m bench.policy_eval
"""

from __future__ import annotations

import timeit
from typing import Any

from authz.config import ClaimCondition, parse_config
from authz.core.conditions import EvalContext
from authz.core.model import RequestAttributes
from authz.core.paths import check_path
from authz.runtime.build_policy import build_conditions, build_policy

CLAIMS = {
    "sub": "alice",
    "scope": "read write reports:read",
    "realm_access": {"roles": ["user", "admin"]},
    "tenant": "acme",
    "level": 3,
}


def twenty_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for i in range(19):
        rules.append(
            {
                "name": f"r{i}",
                "match": [
                    {"prefix": f"/svc{i}", "methods": ["GET", "POST"]},
                    {"path_separated_prefix": f"/api/v{i}"},
                    {"regex": f"/items/{i}/[a-z]+"},
                    {"template": f"/t{i}/{{id}}"},
                    {"context": {"policy": f"p{i}"}},
                ][i % 5],
                "requires": {"provider": "corp"},
                "claims": [{"claim": "realm_access.roles", "contains": "admin"}],
            }
        )
    rules.append(
        {
            "name": "users",
            "match": {"template": "/users/{id}", "hosts": ["*.example.com"]},
            "requires": {"provider": "corp"},
            "claims": [
                {"request": "param.id", "equals_claim": "sub"},
                {"claim": "scope", "contains_all": ["read", "write"]},
                {
                    "any": [
                        {"claim": "realm_access.roles", "contains": "admin"},
                        {"claim": "level", "gte": 5},
                    ]
                },
                {"not": {"claim": "tenant", "one_of": ["blocked", "suspended"]}},
            ],
        }
    )
    return rules


def main() -> None:
    config = parse_config(
        {
            "providers": {
                "corp": {"issuer": "i", "audiences": ["a"], "jwks": {"inline": {"keys": []}}}
            },
            "rules": twenty_rules(),
        }
    )
    policy = build_policy(config)
    request = RequestAttributes(
        "GET", "api.example.com", "/users/alice?x=1", {"x-request-id": "r"}, {}
    )

    def evaluate() -> None:
        path = check_path(request.path)
        found = policy.match(request, path)
        assert found is not None and found[0].name == "users"
        rule, params = found
        ctx = EvalContext({"corp": CLAIMS}, "corp", request, path, params)
        assert rule.conditions.check(ctx) is None

    expr = build_conditions(
        [
            ClaimCondition.model_validate(
                {"expr": '"admin" in jwt.realm_access.roles && request.params.id == jwt.sub'}
            )
        ],
        ".",
    )

    def cel_once() -> None:
        ctx = EvalContext({"corp": CLAIMS}, "corp", request, "/users/alice", {"id": "alice"})
        assert expr.check(ctx) is None

    def floor() -> None:
        pass

    for name, fn in (
        ("empty call (floor)", floor),
        ("20-rule policy, last rule", evaluate),
        ("one CEL expression", cel_once),
    ):
        runs = 20000
        best = min(timeit.repeat(fn, number=runs, repeat=5)) / runs * 1e6
        print(f"{name:<28} {best:7.2f} us per evaluation")


if __name__ == "__main__":
    main()
