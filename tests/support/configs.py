"""One config builder and one authorizer builder for every test: the build step's own
path from a config to an Authorizer, with keys the test holds."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from authz.config import Config, parse_config
from authz.core.authorizer import Authorizer, Observation
from authz.core.model import Decision, RequestAttributes
from authz.core.token_cache import TokenCache
from authz.core.tracing import Tracer
from authz.core.verify import Verifier
from authz.keys.jwks import KeySet, parse_jwks
from authz.runtime.build import build_authorizer, build_provider
from tests.support.clock import fixed_clock
from tests.support.tokens import AUDIENCE, ISSUER

LISTEN_ANYWHERE = {"grpc": "127.0.0.1:0", "http": "127.0.0.1:0"}


def provider(**overrides: Any) -> dict[str, Any]:
    """The "corp" provider as most tests use it: ISSUER, AUDIENCE, an inline key set
    (replace it with ``jwks={"inline": ...}``), the default Authorization header."""
    settings: dict[str, Any] = {
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "jwks": {"inline": {"keys": []}},
    }
    settings.update(overrides)
    return settings


def config_data(
    *,
    providers: Mapping[str, dict[str, Any]] | None = None,
    rules: list[dict[str, Any]] | None = None,
    **top: Any,
) -> dict[str, Any]:
    """The YAML document as a dict, before validation: for tests of the schema itself.
    No shutdown drain unless asked for: most tests stop an App, and wait for nothing."""
    return copy.deepcopy(
        {
            "shutdown_drain": 0,
            **top,
            "providers": dict(providers) if providers is not None else {"corp": provider()},
            "rules": rules
            if rules is not None
            else [{"match": {"prefix": "/"}, "requires": {"provider": "corp"}}],
        }
    )


def config(
    *,
    providers: Mapping[str, dict[str, Any]] | None = None,
    rules: list[dict[str, Any]] | None = None,
    **top: Any,
) -> Config:
    """A validated Config: one "corp" provider and one rule requiring it, unless given."""
    return parse_config(config_data(providers=providers, rules=rules, **top))


class FixedKeys:
    """A KeyLookup holding one key set that never changes; counts unknown-kid refetches."""

    def __init__(self, keys: KeySet | None) -> None:
        self.keys = keys
        self.refetches = 0

    async def first_keys(self) -> KeySet | None:
        return self.keys

    async def refetch_for_unknown_kid(self) -> bool:
        self.refetches += 1
        return False


def fixed_keys(
    jwks: Mapping[str, Any], algorithms: tuple[str, ...] = ("RS256", "ES256")
) -> FixedKeys:
    return FixedKeys(parse_jwks(jwks, algorithms, max_keys=100))


class Recorder:
    """An Observer that keeps what it was told."""

    def __init__(self) -> None:
        self.seen: list[tuple[Decision, Observation]] = []

    def __call__(
        self, request: RequestAttributes, decision: Decision, observation: Observation
    ) -> None:
        self.seen.append((decision, observation))


def authorizer(
    config: Config,
    keys: Mapping[str, Any] | FixedKeys | None = None,
    *,
    clock: Callable[[], float] | None = None,
    observe: Recorder | None = None,
    introspectors: Mapping[str, Any] | None = None,
    tracer: Tracer | None = None,
) -> Authorizer:
    """The Authorizer the build step makes of ``config``. ``keys``: one KeyLookup for every
    provider, or one per provider name; none: no keys at all. ``clock``: NOW by default.
    ``introspectors``: the judge of each introspection provider; ``tracer``: a span per
    check (tests/support/tracing.py records them)."""
    if keys is None or isinstance(keys, FixedKeys):
        shared = keys or FixedKeys(None)
        lookups: Mapping[str, Any] = {name: shared for name in config.providers}
    else:
        lookups = keys
    return build_authorizer(
        config, lookups, clock or fixed_clock(), observe, introspectors, tracer=tracer
    )


def verifier(
    document: Mapping[str, Any] | None = None,
    *,
    keys: FixedKeys | None = None,
    cache: TokenCache | None = None,
    clock: Callable[[], float] | None = None,
    **settings: Any,
) -> Verifier:
    """The "corp" provider's Verifier as the build step makes it, over the JWKS ``document``
    (or ``keys``); ``settings`` override the provider's config."""
    built = config(providers={"corp": provider(**settings)})
    corp = built.providers["corp"]
    lookup = keys or FixedKeys(
        parse_jwks(document, tuple(corp.algorithms), max_keys=100) if document else None
    )
    runtime = build_provider("corp", corp, built, lookup, clock or fixed_clock(), cache)
    return runtime.verifier


def with_deploy_rules(config: dict[str, Any]) -> None:
    """dev/stack.py's config given what deploy/authz.yaml has beside it, for the proxy
    recipes written for that file: the x-user-email identity header, a host rule
    (admin.example, admins only) and a template rule (/users/{id}, that user only)."""
    config["providers"]["dev"]["claim_to_headers"].append(
        {"header": "x-user-email", "claim": "email"}
    )
    admin_host = {
        "name": "admin-host",
        "match": {"hosts": ["admin.example"]},
        "requires": {"provider": "dev"},
        "claims": [{"claim": "realm_access.roles", "contains": "admin"}],
    }
    profile = {
        "name": "own-profile",
        "match": {"template": "/users/{id}"},
        "requires": {"provider": "dev"},
        "claims": [{"request": "param.id", "equals_claim": "sub"}],
        "headers": {"x-profile-access": "self"},
    }
    config["rules"][1:1] = [admin_host, profile]
