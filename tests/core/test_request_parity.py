"""The verdict holds for the request the upstream acts on: tokens are stripped on every allow,
method overrides are refused (or judged both ways), and ambiguous token copies refused."""

from __future__ import annotations

from typing import Any

import pytest

from authz.core.authorizer import Authorizer
from authz.core.errors import DENY_REASONS
from authz.core.model import Decision, RequestAttributes
from authz.core.overrides import method_overrides
from tests.support import Signer, authorizer, config, fixed_keys, provider

TOKEN_HEADERS = {"authorization", "cookie"}


RULES = [
    {"name": "public", "match": {"path_separated_prefix": "/public"}, "public": True},
    {
        "name": "maybe",
        "match": {"path_separated_prefix": "/maybe"},
        "requires": {"allow_missing": "corp"},
    },
    {
        "name": "trial",
        "match": {"path_separated_prefix": "/beta"},
        "mode": "dry_run",
        "requires": {"provider": "corp"},
        "claims": [{"claim": "plan", "equals": "beta"}],
    },
    {
        "name": "read-only",
        "match": {"path_separated_prefix": "/ro", "methods": ["GET", "HEAD"]},
        "requires": {"provider": "corp"},
    },
    {
        "name": "delete",
        "match": {"path_separated_prefix": "/ro", "methods": ["DELETE"]},
        "requires": {"provider": "corp"},
        "claims": [{"claim": "realm_access.roles", "contains": "admin"}],
    },
    {"name": "rest", "match": {"prefix": "/"}, "requires": {"provider": "corp"}},
]


def parity_authorizer(signer: Signer, *, forward: bool = False, **top: Any) -> Authorizer:
    corp = provider(
        from_params=["access_token"],
        from_cookies=["session"],
        claim_to_headers=[{"header": "x-user-id", "claim": "sub"}],
        forward=forward,
    )
    built = config(providers={"corp": corp}, rules=RULES, **top)
    return authorizer(built, fixed_keys({"keys": [signer.jwk]}, ("RS256",)))


def req(
    path: str, method: str = "GET", *, http: str | None = None, **headers: str
) -> RequestAttributes:
    """``http``: the request as an HTTP-mode adapter hands it over (envoy or nginx style)."""
    return RequestAttributes(
        method,
        "api.example.com",
        path,
        {k.replace("_", "-"): v for k, v in headers.items()},
        query_removable=http is None,
        cookie_rewritable=http in (None, "envoy"),
    )


def assert_token_gone(decision: Decision, *, params: tuple[str, ...] = ()) -> None:
    assert decision.allowed
    assert "authorization" in decision.remove_headers
    assert decision.remove_query_params == params
    cookie = dict(decision.upstream_headers).get("cookie")
    assert cookie == "theme=dark" or ("cookie" in decision.remove_headers and cookie is None)


@pytest.mark.parametrize(("path", "reason"), [("/public/x", "public"), ("/beta/x", "dry_run")])
@pytest.mark.parametrize(
    ("query", "params"),
    [
        ("?access_token=T", ("access_token",)),
        ("?ACCESS_TOKEN=T", ("ACCESS_TOKEN",)),
        ("?access_token[]=T", ("access_token[]",)),
        ("?access_token%5B%5D=T", ("access_token%5B%5D",)),
        ("?access%5Ftoken=T&x=1", ("access%5Ftoken",)),
        ("?access.token=T", ("access.token",)),
        ("", ()),
    ],
)
@pytest.mark.parametrize(
    "cookie", ["session=T; theme=dark", "theme=dark; sess%69on=T", "SESSION=T"]
)
async def test_token_stripped_on_allows_without_identity(
    rsa_signer: Signer,
    path: str,
    reason: str,
    query: str,
    params: tuple[str, ...],
    cookie: str,
) -> None:
    authorizer = parity_authorizer(rsa_signer)
    decision = await authorizer.check(
        req(path + query, authorization="Bearer T", cookie=cookie, x_user_id="mallory")
    )
    assert decision.reason == reason
    assert_token_gone(decision, params=params)
    assert "x-user-id" in decision.remove_headers


@pytest.mark.parametrize(
    ("query", "cookie"),
    [
        ("?ACCESS_TOKEN=T", "theme=dark; SESSION=T"),
        ("?access_token[]=T&access.token=T", "theme=dark; sess%69on=T"),
        ("?access_token=T&access_token=U", "theme=dark"),  # sent twice: not read, still cut
    ],
)
async def test_anonymous_allows_strip_copies_authz_did_not_read(
    rsa_signer: Signer, query: str, cookie: str
) -> None:
    decision = await parity_authorizer(rsa_signer).check(
        req("/maybe/x" + query, authorization="Bearer T", cookie=cookie)
    )
    # "Bearer T" is read and is no valid token: an allow_missing rule still refuses it
    assert decision.reason == "malformed_token"
    decision = await parity_authorizer(rsa_signer).check(req("/maybe/x" + query, cookie=cookie))
    assert decision.reason == "anonymous"
    assert decision.remove_query_params
    assert dict(decision.upstream_headers).get("cookie", "theme=dark") == "theme=dark"


async def test_dry_run_with_a_valid_token_strips_it_too(rsa_signer: Signer) -> None:
    token = rsa_signer.token(plan="free")
    decision = await parity_authorizer(rsa_signer).check(
        req(f"/beta/x?access_token={token}", cookie=f"theme=dark; session={token}")
    )
    assert (decision.reason, decision.dry_run) == ("dry_run", ("deny", "claim_mismatch"))
    assert decision.remove_query_params == ("access_token",)
    assert dict(decision.upstream_headers)["cookie"] == "theme=dark"


async def test_forward_true_keeps_tokens_on_public_allows(rsa_signer: Signer) -> None:
    decision = await parity_authorizer(rsa_signer, forward=True).check(
        req("/public/x?access_token=T", authorization="Bearer T", cookie="session=T")
    )
    assert decision.allowed
    assert not TOKEN_HEADERS & set(decision.remove_headers)
    assert decision.remove_query_params == ()
    assert "cookie" not in dict(decision.upstream_headers)


@pytest.mark.parametrize(
    ("request_", "allowed"),
    [
        # a copy after ";" inside another parameter: no proxy can cut it out
        (req("/public/x?x=1;access_token=T"), False),
        # HTTP modes: no proxy removes one parameter; nginx and Traefik keep every cookie
        (req("/public/x?access_token=T", http="envoy"), False),
        (req("/public/x?ACCESS_TOKEN=T", http="nginx"), False),
        (req("/public/x", http="nginx", cookie="session=T"), False),
        (req("/public/x", http="envoy", cookie="session=T; a=1"), True),
        (req("/public/x?x=1", http="nginx", cookie="a=1"), True),
        # dry-run never hands a token on either
        (req("/beta/x?access_token=T", http="envoy"), False),
    ],
)
async def test_a_token_that_cannot_be_stripped_is_refused(
    rsa_signer: Signer, request_: RequestAttributes, allowed: bool
) -> None:
    decision = await parity_authorizer(rsa_signer).check(request_)
    if allowed:
        assert decision.allowed
    else:
        assert (decision.allowed, decision.status) == (False, 400)
        assert decision.reason == "token_not_strippable"


async def test_token_not_strippable_wins_over_global_dry_run(rsa_signer: Signer) -> None:
    authorizer = parity_authorizer(rsa_signer, mode="dry_run")
    decision = await authorizer.check(req("/x?access_token=T", http="envoy"))
    assert (decision.allowed, decision.reason) == (False, "token_not_strippable")
    assert (await authorizer.check(req("/x"))).reason == "dry_run"


@pytest.mark.parametrize(
    "request_",
    [
        req("/x?access_token=a&ACCESS_TOKEN=b"),
        req("/x?access_token[]=a"),
        req("/x", cookie="session=a; session=b"),
        req("/x", cookie="Session=a"),
    ],
)
async def test_a_forwarded_token_must_have_one_copy(
    rsa_signer: Signer, request_: RequestAttributes
) -> None:
    decision = await parity_authorizer(rsa_signer, forward=True).check(request_)
    assert (decision.allowed, decision.status, decision.reason) == (False, 400, "ambiguous_token")


# --- method overrides ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (req("/ro", x_http_method_override="DELETE"), ["DELETE"]),
        (req("/ro", x_http_method="delete"), ["DELETE"]),
        (req("/ro", x_method_override="PUT"), ["PUT"]),
        (req("/ro", x_http_method_override="GET"), []),  # the request's own method
        (req("/ro", x_http_method_override="GET, DELETE"), ["DELETE"]),
        (req("/ro?_method=DELETE"), ["DELETE"]),
        (req("/ro?_METHOD=put&x=1"), ["PUT"]),
        (req("/ro?%5Fmethod=PATCH"), ["PATCH"]),
        (req("/ro?_method[]=PATCH"), ["PATCH"]),
        (req("/ro?method=DELETE"), []),
        (req("/ro?x=1;_method=DELETE"), ["DELETE"]),
        (req("/ro?_m%65thod=DELETE"), ["DELETE"]),
        (
            req("/ro", "POST", x_http_method_override="DELETE", x_method_override="PUT"),
            ["DELETE", "PUT"],
        ),
    ],
)
def test_method_overrides_are_found(request_: RequestAttributes, expected: list[str]) -> None:
    assert method_overrides(request_) == expected


@pytest.mark.parametrize(
    "request_",
    [
        req("/ro", x_http_method_override="DELETE"),
        req("/ro?_method=DELETE"),
        req("/public/x", x_http_method_override="DELETE"),  # refused on public routes too
    ],
)
async def test_method_override_is_refused_by_default(
    rsa_signer: Signer, request_: RequestAttributes
) -> None:
    headers = {**request_.headers, "authorization": f"Bearer {rsa_signer.token()}"}
    request_ = RequestAttributes(request_.method, request_.host, request_.path, headers)
    decision = await parity_authorizer(rsa_signer).check(request_)
    assert (decision.allowed, decision.status, decision.reason) == (False, 400, "method_override")


async def test_judge_both_requires_both_methods_to_pass(rsa_signer: Signer) -> None:
    authorizer = parity_authorizer(rsa_signer, method_override="judge_both")
    user = f"Bearer {rsa_signer.token()}"
    admin = f"Bearer {rsa_signer.token(realm_access={'roles': ['admin']})}"
    denied = await authorizer.check(req("/ro", authorization=user, x_http_method_override="DELETE"))
    assert (denied.allowed, denied.status, denied.rule) == (False, 403, "delete")
    allowed = await authorizer.check(
        req("/ro", authorization=admin, x_http_method_override="DELETE")
    )
    assert (allowed.allowed, allowed.rule) == (True, "delete")
    # two different overrides: nothing to judge both ways
    two = await authorizer.check(
        req("/ro", authorization=admin, x_http_method_override="DELETE", x_method_override="PUT")
    )
    assert two.reason == "method_override"


def test_new_reasons_are_deny_reasons() -> None:
    assert {"method_override", "token_not_strippable", "ambiguous_token"} <= set(DENY_REASONS)


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("api.example.com", True),
        ("api.example.com:8443", True),
        ("API.Example.com", True),
        ("API.Example.com.", False),  # one site to nginx, maybe another to Caddy or Envoy
        ("api.example.com.:8443", False),
        ("10.0.0.1:80", True),
        ("[::1]:8080", True),
        ("", True),
        ("admin.example.com:1:2", False),
        ("a.example.com,b.example.com", False),
        ("a.example.com b", False),
        ("user@a.example.com", False),
        ("a.example.com:", True),
        ("a.example.com:123456", False),
        ("[::1", False),
    ],
)
async def test_malformed_hosts_are_refused(rsa_signer: Signer, host: str, allowed: bool) -> None:
    decision = await parity_authorizer(rsa_signer).check(
        RequestAttributes("GET", host, "/public/x", {})
    )
    if allowed:
        assert decision.allowed, host
    else:
        assert (decision.status, decision.reason) == (400, "invalid_host"), host
