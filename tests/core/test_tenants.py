"""Multi-tenant issuers: the template, what a token's iss may name, and the tenant in
verification, rules and headers."""

from __future__ import annotations

from typing import Any

import pytest

from authz.config import ConfigError
from authz.core.errors import InvalidIssuer
from authz.core.jws import parse_token
from authz.core.tenants import IssuerTemplate
from authz.runtime.build import validate
from tests import support
from tests.support import AUDIENCE, Signer

TEMPLATE = "https://login.example.com/{tenant}/v2.0"
ANY = IssuerTemplate.parse(TEMPLATE, None)


@pytest.mark.parametrize(
    ("iss", "tenant"),
    [
        ("https://login.example.com/contoso/v2.0", "contoso"),
        (
            "https://login.example.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0",
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
        ),
        ("https://login.example.com/a.b_c-d/v2.0", "a.b_c-d"),
        ("https://login.example.com//v2.0", None),  # empty
        ("https://login.example.com/../v2.0", None),
        ("https://login.example.com/./v2.0", None),
        ("https://login.example.com/a/b/v2.0", None),  # two segments
        ("https://login.example.com/%2e%2e/v2.0", None),
        ("https://login.example.com/a%2Fb/v2.0", None),
        ("https://login.example.com/a?x=/v2.0", None),
        ("https://login.example.com/a@evil.example/v2.0", None),
        ("https://login.example.com/a/v2.0/", None),  # suffix differs
        ("https://login.example.com.evil.example/a/v2.0", None),
        ("http://login.example.com/a/v2.0", None),
        ("https://login.example.com/" + "a" * 129 + "/v2.0", None),
        (None, None),
        (["https://login.example.com/a/v2.0"], None),
    ],
)
def test_what_an_iss_may_name(iss: Any, tenant: str | None) -> None:
    assert ANY.tenant_of(iss) == tenant
    if tenant is not None:
        assert ANY.issuer(tenant) == iss


@pytest.mark.parametrize(
    ("issuer", "tenants", "message"),
    [
        ("https://{tenant}.example.com/", ["a"], "in the path"),
        ("https://idp.example.com/t-{tenant}/v2.0", ["a"], "whole path segment"),
        ("https://idp.example.com/{tenant}/{tenant}", ["a"], "exactly once"),
        ("https://idp.example.com/v2.0?t={tenant}", ["a"], "no query or fragment"),
        ("https://idp.example.com/{tenant}/v2.0", None, "go together"),
        ("https://idp.example.com/v2.0", ["a"], "go together"),
        ("https://idp.example.com/{tenant}", [], "at least one"),
        ("https://idp.example.com/{tenant}", [".."], "not a tenant name"),
        ("https://idp.example.com/{tenant}", ["a/b"], "not a tenant name"),
        ("https://idp.example.com/{tenant}", ["é"], "not a tenant name"),
    ],
)
def test_templates_and_tenants_the_schema_refuses(issuer: str, tenants: Any, message: str) -> None:
    corp = support.provider(issuer=issuer)
    if tenants is not None:
        corp["tenants"] = tenants
    with pytest.raises(ConfigError, match=message):
        support.config(providers={"corp": corp})


def test_what_tenants_do_not_go_with() -> None:
    secret = support.provider(
        issuer=TEMPLATE, tenants=["a"], jwks=None, shared_secret={"env": "S"}, algorithms=["HS256"]
    )
    with pytest.raises(ConfigError, match="tenants are for jwks providers"):
        support.config(providers={"corp": secret})
    header = support.provider(claim_to_headers=[{"header": "x-t", "issuer_param": "tenant"}])
    with pytest.raises(ConfigError, match="issuer_param needs a provider with tenants"):
        support.config(providers={"corp": header})
    rule = {
        "match": {"prefix": "/"},
        "requires": {"provider": "corp"},
        "claims": [{"not": {"issuer_param": "tenant", "equals": "a"}}],
    }
    plain = support.config(providers={"corp": support.provider()}, rules=[rule])
    with pytest.raises(ConfigError, match="issuer_param needs a provider with tenants"):
        validate(plain)
    shared_discovery = support.provider(
        issuer=TEMPLATE, tenants=["a"], jwks={"remote": {"discovery": "https://x.example/one"}}
    )
    with pytest.raises(ConfigError, match="discovers per tenant"):
        validate(support.config(providers={"corp": shared_discovery}))


def test_a_tenant_in_a_jwks_url_needs_a_templated_issuer() -> None:
    remote = {"remote": {"uri": "https://idp.example.com/{tenant}/keys"}}
    with pytest.raises(ConfigError, match="needs tenants"):
        validate(support.config(providers={"corp": support.provider(jwks=remote)}))
    templated = support.provider(
        issuer=TEMPLATE, tenants=["a"], jwks={"remote": {"uri": "https://x.example/k{tenant}"}}
    )
    with pytest.raises(ConfigError, match="whole path segment"):
        validate(support.config(providers={"corp": templated}))


def multi_tenant(jwks: dict[str, Any], tenants: Any, **rule: Any) -> Any:
    corp = support.provider(
        issuer=TEMPLATE,
        tenants=tenants,
        jwks={"inline": jwks},
        claim_to_headers=[
            {"header": "x-tenant", "issuer_param": "tenant"},
            {"header": "x-user-id", "claim": "sub"},
        ],
    )
    rules = [{"match": {"prefix": "/"}, "requires": {"provider": "corp"}, **rule}]
    return support.authorizer(
        support.config(providers={"corp": corp}, rules=rules), support.fixed_keys(jwks)
    )


def token_of(signer: Signer, tenant: str, **claims: Any) -> str:
    return signer.token(iss=TEMPLATE.replace("{tenant}", tenant), aud=AUDIENCE, **claims)


async def test_listed_tenants_are_accepted_and_named_in_headers(
    jwks: dict[str, Any], rsa_signer: Signer
) -> None:
    checker = multi_tenant(jwks, ["contoso", "fabrikam"])
    for tenant in ("contoso", "fabrikam"):
        auth = f"Bearer {token_of(rsa_signer, tenant)}"
        decision = await checker.check(support.req(authorization=auth))
        assert decision.allowed, decision.reason
        assert dict(decision.upstream_headers)["x-tenant"] == tenant
    other = await checker.check(
        support.req(authorization=f"Bearer {token_of(rsa_signer, 'northwind')}")
    )
    assert (other.status, other.reason) == (401, "invalid_issuer")


async def test_the_tenant_in_conditions_and_cel(jwks: dict[str, Any], rsa_signer: Signer) -> None:
    leaf = multi_tenant(
        jwks, {"any": True}, claims=[{"issuer_param": "tenant", "one_of": ["contoso"]}]
    )
    cel = multi_tenant(jwks, {"any": True}, claims=[{"expr": 'tenant == "contoso"'}])
    for checker in (leaf, cel):
        ok = await checker.check(
            support.req(authorization=f"Bearer {token_of(rsa_signer, 'contoso')}")
        )
        assert ok.allowed, ok.reason
        no = await checker.check(
            support.req(authorization=f"Bearer {token_of(rsa_signer, 'fabrikam')}")
        )
        assert (no.status, no.reason) == (403, "claim_mismatch")


PIN = {"issuer_param": "tenant", "equals": "contoso"}


@pytest.mark.parametrize(
    ("claims", "requires", "pinned"),
    [
        ([PIN], {"provider": "corp"}, True),
        ([{"all": [{"claim": "sub", "exists": True}, PIN]}], {"provider": "corp"}, True),
        ([{"any": [PIN, {**PIN, "equals": "fabrikam"}]}], {"provider": "corp"}, True),
        ([{"expr": 'tenant == "contoso"'}], {"provider": "corp"}, True),
        ([{"expr": 'tenant in ["a", "b"]'}], {"provider": "corp"}, True),
        ([], {"provider": "corp"}, False),
        ([{"any": [PIN, {"claim": "sub", "equals": "x"}]}], {"provider": "corp"}, False),
        ([{"not": {**PIN, "equals": "evil"}}], {"provider": "corp"}, False),
        ([{"issuer_param": "tenant", "exists": True}], {"provider": "corp"}, False),
        ([{"expr": 'jwt.tenant_id == "x"'}], {"provider": "corp"}, False),
        ([{"expr": 'jwt.tenant == "x"'}], {"provider": "corp"}, False),
        ([{"expr": 'tenant == "a" || jwt.sub == "b"'}], {"provider": "corp"}, False),
        ([{**PIN, "provider": "other"}], {"all": ["other", "corp"]}, False),
        ([PIN], {"all": ["other", "corp"]}, False),  # reads other's token, the first
        ([{**PIN, "provider": "corp"}], {"all": ["other", "corp"]}, True),
    ],
)
def test_which_rules_pin_an_open_tenant_set(
    jwks: dict[str, Any], claims: list[Any], requires: dict[str, Any], pinned: bool
) -> None:
    corp = support.provider(issuer=TEMPLATE, tenants={"any": True}, jwks={"inline": jwks})
    other = support.provider(issuer="https://other.example", jwks={"inline": jwks})
    built = support.config(
        providers={"corp": corp, "other": other},
        rules=[{"match": {"prefix": "/"}, "requires": requires, "claims": claims}],
    )
    warned = any("does not pin the tenant" in warning.message for warning in validate(built))
    assert warned is not pinned


def test_any_tenant_without_a_tenant_condition_is_warned_about(jwks: dict[str, Any]) -> None:
    corp = support.provider(issuer=TEMPLATE, tenants={"any": True}, jwks={"inline": jwks})
    loose = support.config(providers={"corp": corp})
    assert any("does not pin the tenant" in warning.message for warning in validate(loose))
    narrowed = support.config(
        providers={"corp": corp},
        rules=[
            {
                "match": {"prefix": "/"},
                "requires": {"provider": "corp"},
                "claims": [{"any": [{"issuer_param": "tenant", "equals": "contoso"}]}],
            }
        ],
    )
    assert validate(narrowed) == ()


async def test_the_verifier_checks_the_tenant_again(
    jwks: dict[str, Any], rsa_signer: Signer
) -> None:
    """Routing reads the unverified iss; the verifier refuses an unlisted tenant itself."""
    corp = support.provider(issuer=TEMPLATE, tenants=["contoso"], jwks={"inline": jwks})
    built = support.config(providers={"corp": corp})
    checker = support.authorizer(built, support.fixed_keys(jwks))
    verifier = checker._providers["corp"].verifier
    assert verifier is not None
    with pytest.raises(InvalidIssuer):
        await verifier.verify(parse_token(token_of(rsa_signer, "fabrikam"), 8192))
    identity = await verifier.verify(parse_token(token_of(rsa_signer, "contoso"), 8192))
    assert identity.tenant == "contoso"


class Keys:
    def __init__(self, keys: Any) -> None:
        self.keys = keys

    async def first_keys(self) -> Any:
        return self.keys

    async def refetch_for_unknown_kid(self) -> bool:
        return False


class Tenants:
    """TenantKeys over fixed key sets; ``evicted`` tenants have none now."""

    def __init__(self, keys: Any) -> None:
        self.by_tenant = {"contoso": Keys(keys), "fabrikam": Keys(keys)}
        self.evicted: set[str] = set()

    def keys_for(self, tenant: str) -> Any:
        return self.by_tenant[tenant]

    def current(self, tenant: str) -> Any:
        return None if tenant in self.evicted else self.by_tenant[tenant]


async def test_a_cached_token_is_used_only_while_its_tenants_keys_are(
    jwks: dict[str, Any], rsa_signer: Signer
) -> None:
    from dataclasses import replace

    from authz.core.token_cache import TokenCache

    corp = support.provider(issuer=TEMPLATE, tenants={"any": True}, jwks={"inline": jwks})
    built = support.config(providers={"corp": corp})
    lookup = support.fixed_keys(jwks)
    base = support.authorizer(built, lookup)._providers["corp"].verifier
    assert base is not None
    tenants = Tenants(lookup.keys)
    verifier = replace(base, tenant_keys=tenants, cache=TokenCache(100, 1 << 20))
    raw = token_of(rsa_signer, "contoso")
    identity = await verifier.verify(parse_token(raw, 8192))
    cached = verifier.cached(raw)
    assert cached is not None and cached.tenant == "contoso" == identity.tenant
    tenants.by_tenant["contoso"] = Keys(object())  # contoso's key set changed
    assert verifier.cached(raw) is None
    raw = token_of(rsa_signer, "fabrikam")
    await verifier.verify(parse_token(raw, 8192))
    tenants.evicted.add("fabrikam")  # its source went: the entry must not outlive it
    assert verifier.cached(raw) is None
