from __future__ import annotations

from typing import Any

import pytest

from authz.config import ConfigError
from authz.core.claims import MISSING
from authz.core.model import RequestAttributes
from authz.core.policy import HeaderFromClaim, literal_prefix, render_header_value
from authz.runtime.build_policy import build_policy
from authz.runtime.lint import shadowed_rules
from tests import support


def config(*rules: dict[str, Any], **top: Any) -> Any:
    return support.config(
        rules=[{"requires": {"provider": "corp"}, **rule} for rule in rules], **top
    )


def matched(match: dict[str, Any], method: str = "GET", path: str = "/", **extra: Any) -> Any:
    policy = build_policy(config({"match": match}, **extra.get("top", {})))
    request = RequestAttributes(
        method,
        extra.get("host", "api.example.com"),
        path,
        extra.get("headers", {}),
        extra.get("context", {}),
    )
    found = policy.match(request, path.split("?")[0])
    return None if found is None else found[1]


ROUTES: list[tuple[dict[str, Any], dict[str, Any], Any]] = [
    ({}, {"path": "/anything"}, {}),
    ({"prefix": "/admin"}, {"path": "/admin/users"}, {}),
    ({"prefix": "/admin"}, {"path": "/administrator"}, {}),  # plain prefix, as in Envoy
    ({"prefix": "/admin"}, {"path": "/Admin"}, None),
    ({"prefix": "/admin", "ignore_case": True}, {"path": "/ADMIN/x"}, {}),
    ({"path": "/exact"}, {"path": "/exact"}, {}),
    ({"path": "/exact"}, {"path": "/exact/"}, None),
    ({"path_separated_prefix": "/api"}, {"path": "/api"}, {}),
    ({"path_separated_prefix": "/api"}, {"path": "/api/v1"}, {}),
    ({"path_separated_prefix": "/api"}, {"path": "/apis"}, None),
    ({"regex": "/v[0-9]+/items"}, {"path": "/v2/items"}, {}),
    ({"regex": "/v[0-9]+/items"}, {"path": "/v2/items/extra"}, None),  # anchored
    ({"regex": "/(?P<ver>v[0-9]+)/.*"}, {"path": "/v3/x"}, {"ver": "v3"}),
    ({"template": "/users/{id}"}, {"path": "/users/alice"}, {"id": "alice"}),
    ({"template": "/users/{id}"}, {"path": "/users/alice/keys"}, None),
    ({"template": "/users/{id}"}, {"path": "/users/alice/"}, {"id": "alice"}),  # as frameworks do
    ({"template": "/users/{id}/"}, {"path": "/users/alice"}, {"id": "alice"}),
    (
        {"template": "/users/{id}/orders/{order}"},
        {"path": "/users/a/orders/7"},
        {"id": "a", "order": "7"},
    ),
    ({"template": "/files/{name}.txt"}, {"path": "/files/axtxt"}, None),  # '.' is literal
    # parameters are decoded as frameworks hand them to handlers
    ({"template": "/users/{id}"}, {"path": "/users/a%40b.c"}, {"id": "a@b.c"}),
    ({"regex": "/(?P<ver>v%[0-9A-F]{2})"}, {"path": "/v%20"}, {"ver": "v "}),
    # escapes are matched with upper-case hex digits, in requests and in rules alike
    ({"path": "/a%3ab"}, {"path": "/a%3Ab"}, {}),
    ({"prefix": "/caf%c3%a9"}, {"path": "/caf%C3%A9/menu"}, {}),
    # paths.ignore_case is the default of every rule, a rule's own setting wins
    ({"prefix": "/admin"}, {"path": "/ADMIN", "top": {"paths": {"ignore_case": True}}}, {}),
    (
        {"prefix": "/admin", "ignore_case": False},
        {"path": "/ADMIN", "top": {"paths": {"ignore_case": True}}},
        None,
    ),
    ({"methods": ["POST"]}, {"path": "/", "method": "post"}, {}),
    ({"methods": ["POST"]}, {"path": "/", "method": "GET"}, None),
    ({"hosts": ["api.example.com"]}, {"host": "API.example.com:443"}, {}),
    ({"hosts": ["*.example.com"]}, {"host": "api.example.com"}, {}),
    ({"hosts": ["*.example.com"]}, {"host": "example.com"}, None),
    ({"hosts": ["*.example.com"]}, {"host": "evil-example.com"}, None),
    ({"hosts": ["*.example.com"]}, {"host": "a.b.example.com"}, {}),
    ({"hosts": ["admin.example.com"]}, {"host": "admin.example.com."}, {}),  # trailing dot
    ({"hosts": ["*.example.com"]}, {"host": "example.com."}, None),
    ({"headers": [{"name": "x-env", "regex": "pr.*"}]}, {"headers": {"x-env": "xprod"}}, None),
    ({"headers": [{"name": "x-env", "regex": "pr"}]}, {"headers": {"x-env": "prod"}}, None),
    ({"headers": [{"name": "x-env", "present": True}]}, {"headers": {"x-env": ""}}, {}),
    ({"headers": [{"name": "x-env", "present": False}]}, {"headers": {"x-env": "a"}}, None),
    ({"headers": [{"name": "X-Env", "equals": "prod"}]}, {"headers": {"x-env": "prod"}}, {}),
    ({"headers": [{"name": "x-env", "equals": "prod"}]}, {"headers": {"x-env": "dev"}}, None),
    ({"headers": [{"name": "x-env", "regex": "pr.*"}]}, {"headers": {"x-env": "prod"}}, {}),
    ({"headers": [{"name": "x-env", "regex": "pr.*"}]}, {"headers": {}}, None),
    ({"context": {"policy": "admin"}}, {"context": {"policy": "admin", "x": "y"}}, {}),
    ({"context": {"policy": "admin"}}, {"context": {"policy": "user"}}, None),
    ({"context": {"policy": "admin"}}, {}, None),
]


@pytest.mark.parametrize(("match", "request_", "params"), ROUTES, ids=[str(r) for r in ROUTES])
def test_route_matching(match: dict[str, Any], request_: dict[str, Any], params: Any) -> None:
    assert matched(match, **request_) == params


def test_first_match_wins_and_unnamed_rules_are_numbered() -> None:
    policy = build_policy(
        config(
            {"name": "a", "match": {"prefix": "/a"}},
            {"match": {"prefix": "/"}},
        )
    )
    for path, name in (("/a/x", "a"), ("/b", "1")):
        found = policy.match(RequestAttributes("GET", "h", path, {}), path)
        assert found is not None and found[0].name == name


def test_a_pattern_that_sets_its_own_case_shadows_no_exact_path() -> None:
    """Under ignore_case, /Admin's rule matches /admin too; a regex that turns case back on
    inside matches /Admin only, so it does not cover that rule."""
    rules = (
        {"name": "strict", "match": {"regex": "/(?-i:Admin)"}},
        {"name": "exact", "match": {"path": "/Admin"}},
        {"name": "folded", "match": {"regex": "/admin"}},
        {"name": "exact-2", "match": {"path": "/ADMIN"}},
        # A named or non-capturing group sets no flag: still judged.
        {"name": "users", "match": {"regex": "/users/(?P<id>[^/]+)"}},
        {"name": "bob", "match": {"path": "/Users/bob"}},
    )
    assert shadowed_rules(config(*rules, paths={"ignore_case": True})) == [
        "rules.3 (exact-2) can never match: rules.2 (folded) matches every request it would",
        "rules.5 (bob) can never match: rules.4 (users) matches every request it would",
    ]


def test_shadowed_rules_are_reported_by_name() -> None:
    warnings = shadowed_rules(
        config(
            {"name": "api", "match": {"prefix": "/api"}},
            {"name": "api-v1", "match": {"prefix": "/api/v1", "methods": ["GET"]}},
            {"name": "admin", "match": {"path_separated_prefix": "/admin"}},
            {"name": "admin-x", "match": {"path": "/admin/x"}},
            {"name": "posts", "match": {"prefix": "/posts", "methods": ["POST"]}},
            {"name": "posts-any", "match": {"prefix": "/posts"}},  # not shadowed: GET reaches it
            {"name": "tenant", "match": {"context": {"policy": "t"}}},
            {"name": "ctx", "match": {"prefix": "/x", "context": {"policy": "t", "b": "c"}}},
            {"name": "regex", "match": {"regex": "/r.*"}},
            {"name": "after-regex", "match": {"path": "/r1"}},  # judged by serve's matcher
            {"name": "regex-prefix", "match": {"prefix": "/r1"}},  # prefixes are not analysed
            {"name": "users", "match": {"template": "/u/{id}"}},
            {"name": "user-7", "match": {"path": "/u/7"}},
            {"name": "user-7-x", "match": {"path": "/u/7/x"}},  # not shadowed: one segment
            {"name": "sep", "match": {"path_separated_prefix": "/v"}},
            {"name": "v-prefix", "match": {"prefix": "/v"}},  # not shadowed: /vx reaches it
            {"name": "v-tpl", "match": {"template": "/v/{id}"}},
            {"name": "ic", "match": {"prefix": "/i", "ignore_case": True}},
            {"name": "i-exact", "match": {"path": "/i/x"}},  # case differs: not analysed
            {"name": "hdr", "match": {"prefix": "/h", "headers": [{"name": "a", "present": True}]}},
            {"name": "h-any", "match": {"prefix": "/h"}},
            {"name": "catch-all"},
            {"name": "never", "match": {"path": "/z"}},
            {"name": "tpl", "match": {"template": "/users/{id}"}},
        )
    )
    assert warnings == [
        "rules.1 (api-v1) can never match: rules.0 (api) matches every request it would",
        "rules.3 (admin-x) can never match: rules.2 (admin) matches every request it would",
        "rules.7 (ctx) can never match: rules.6 (tenant) matches every request it would",
        "rules.9 (after-regex) can never match: rules.8 (regex) matches every request it would",
        "rules.12 (user-7) can never match: rules.11 (users) matches every request it would",
        "rules.16 (v-tpl) can never match: rules.14 (sep) matches every request it would",
        "rules.22 (never) can never match: rules.21 (catch-all) matches every request it would",
        "rules.23 (tpl) can never match: rules.21 (catch-all) matches every request it would",
    ]


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


def test_oversized_claim_header_is_dropped() -> None:
    mapping = HeaderFromClaim("x-groups", ("groups",))
    assert mapping.render({"groups": ["a"] * 10}, 100) == ",".join(["a"] * 10)
    assert mapping.render({"groups": ["a"] * 100}, 100) is None


@pytest.mark.parametrize(
    ("pattern", "literal"),
    [
        ("/items/[0-9]+", "/items/"),
        ("/v1/x", "/v1/x"),
        ("/ab*c", "/a"),  # b is optional
        ("/ab?", "/a"),
        ("/a{2}", "/"),
        ("/a\\.b", "/a"),
        ("(?P<v>x)", ""),
        ("/a|/b", ""),
        ("/x/(a|b)", ""),
    ],
)
def test_regex_literal_prefix_never_rules_out_a_match(pattern: str, literal: str) -> None:
    assert literal_prefix(pattern) == literal


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("/users/{id}/{id}", "unique"),
        ("/users/{a}{b}", "separated"),
        ("/users/{not-ok}", "identifier"),
        ("/users/{id", "unbalanced"),
    ],
)
def test_bad_templates(template: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config({"match": {"template": template}})
