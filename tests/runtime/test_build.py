"""The one build step: what check-config accepts, serve builds (without fetching anything
before it starts), and what check-config rejects never serves."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz.config import ConfigError, RemoteJwks, load_config
from authz.core.authorizer import Authorizer
from authz.keys.fetch import Fetcher, FetchResult
from authz.keys.jwks import KeySet
from authz.keys.remote import RemoteKeySource
from authz.keys.sources import FileKeySource, KeySource, StaticKeySource
from authz.runtime.build import RESERVED_DESCRIPTORS, build, build_listeners, validate
from authz.runtime.commands import check_config
from dev.stack import ROOT, free_port
from tests.support import AUDIENCE, LISTEN_ANYWHERE, config, provider, rsa_signer
from tests.support.pki import make_pki

SIGNER = rsa_signer()


class Recording:
    """KeyEvents and fetchers that record every use: a build must use none of them."""

    def __init__(self) -> None:
        self.fetchers: list[RemoteJwks] = []
        self.fetches: list[str] = []
        self.events: list[str] = []

    async def key_set(self, provider: str, result: str, keys: KeySet | None) -> None:
        self.events.append(result)

    def unknown_kid(self, provider: str, result: str) -> None:
        self.events.append(result)

    def fetcher_for(self, settings: RemoteJwks, trust: ssl.SSLContext | None) -> Fetcher:
        self.fetchers.append(settings)
        return self.fetch

    async def fetch(self, uri: str, *, etag: str | None = None) -> FetchResult:
        self.fetches.append(uri)
        raise AssertionError("a build fetched")

    def __call__(self, settings: RemoteJwks, trust: ssl.SSLContext | None) -> Fetcher:
        return self.fetcher_for(settings, trust)

    def tenant_source(self, provider: str, event: str, tenants: int) -> None:
        self.events.append(event)


def key_settings(kind: str, folder: Path) -> dict[str, Any]:
    if kind == "inline":
        return {"jwks": {"inline": {"keys": [SIGNER.jwk]}}}
    if kind == "file":
        return {"jwks": {"file": str(folder / "jwks.json")}}
    if kind == "missing-file":
        return {"jwks": {"file": str(folder / "absent.json")}}
    if kind == "remote":
        return {"jwks": {"remote": {"uri": "https://idp.test/certs"}}}
    if kind == "remote-ca":
        return {
            "jwks": {"remote": {"uri": "https://idp.test/certs", "ca_file": str(folder / "ca.pem")}}
        }
    if kind == "remote-no-ca":
        return {
            "jwks": {"remote": {"uri": "https://idp.test/certs", "ca_file": str(folder / "nope")}}
        }
    if kind == "discovery":
        return {"jwks": {"discovery": True}}
    if kind == "secret":
        return {"shared_secret": {"file": str(folder / "secret")}, "algorithms": ["HS256"]}
    return {"shared_secret": {"env": "AUTHZ_BUILD_TEST_UNSET"}, "algorithms": ["HS256"]}


MATCHES = [
    {},
    {"prefix": "/api"},
    {"path": "/a%3Ab"},
    {"template": "/users/{id}"},
    {"regex": "/v[0-9]+/.*"},
    {"prefix": "/a;b"},  # refused unless semicolons: literal
    {"prefix": "/../x"},  # always refused
    {"prefix": "/admin", "methods": ["DELETE"], "hosts": ["*.example.com"]},
]
CONDITIONS = [
    [],
    [{"claim": "scope", "contains": "read"}],
    [{"not": {"claim": "status", "one_of": ["banned"]}}],
    [{"expr": 'jwt.roles.exists(r, r == "admin")'}],
    [{"expr": "nobody.sub == 'x'"}],  # an unknown variable: refused
    [{"expr": 'request.context.policy == "a"'}],  # refused with http_authz
]


@st.composite
def documents(draw: st.DrawFn, folder: Path) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(
            [
                *("inline", "file", "missing-file", "remote", "remote-ca", "remote-no-ca"),
                *("discovery", "secret", "env"),
            ]
        )
    )
    algorithms = draw(
        st.one_of(st.none(), st.sampled_from([["RS256"], ["ES256", "PS256"], ["RS1"], ["none"]]))
    )
    corp: dict[str, Any] = {"issuer": "https://idp.test", "audiences": [AUDIENCE]}
    corp.update(key_settings(kind, folder))
    if algorithms is not None and kind not in ("secret", "env"):
        corp["algorithms"] = algorithms
    document: dict[str, Any] = {
        "listen": {"grpc": "127.0.0.1:0", "http": "127.0.0.1:0"},
        "providers": {"corp": corp},
        "rules": [
            {
                "match": draw(st.sampled_from(MATCHES)),
                "requires": {"provider": "corp"},
                "claims": draw(st.sampled_from(CONDITIONS)),
            },
            {"match": {"prefix": "/public"}, "public": True},
        ],
    }
    if draw(st.booleans()):
        document["paths"] = {"semicolons": "literal"}
    if draw(st.booleans()):
        document["http_authz"] = {"listen": "127.0.0.1:0", "original_request": "envoy"}
    tls = draw(st.sampled_from(["none", "good", "missing"]))
    if tls != "none":
        key = folder / "pki" / ("server-key.pem" if tls == "good" else "absent.pem")
        files = {"cert_file": str(folder / "pki" / "server.pem"), "key_file": str(key)}
        document["listen"].update(grpc_tls=files, http_tls=files)
    return document


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("build")
    (path / "jwks.json").write_text(json.dumps({"keys": [SIGNER.jwk]}))
    (path / "secret").write_bytes(b"s" * 40)
    (path / "ca.pem").write_bytes(make_pki(path / "pki").ca.read_bytes())
    return path


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.data_too_large])
@given(data=st.data())
def test_what_check_config_accepts_builds_without_fetching(folder: Path, data: Any) -> None:
    document = data.draw(documents(folder))
    path = folder / "authz.json"
    path.write_text(json.dumps(document))
    try:
        check_config(path)
    except ConfigError:
        # Refused by check-config: serve's own first step is this same check.
        return
    recording = Recording()
    built = build(
        load_config(path),
        events=recording,
        fetcher_for=recording.fetcher_for,
        observe=None,
    )
    assert isinstance(built.authorizer, Authorizer)
    source = built.sources["corp"]
    assert isinstance(source, KeySource) and source.keys is None  # built, not started
    kinds = {
        "inline": StaticKeySource,
        "secret": StaticKeySource,
        "file": FileKeySource,
        "missing-file": FileKeySource,
        "remote": RemoteKeySource,
        "discovery": RemoteKeySource,
    }
    kind = next(k for k in kinds if isinstance(source, kinds[k]))
    assert kind  # every accepted key configuration builds to its source
    assert recording.fetches == [] and recording.events == []
    listeners = build_listeners(load_config(path))  # what App makes its servers from
    assert (listeners.grpc_tls is None) == ("grpc_tls" not in document["listen"])
    assert len(recording.fetchers) == (1 if isinstance(source, RemoteKeySource) else 0)


def test_the_examples_build(folder: Path) -> None:
    config, warnings = check_config(ROOT / "deploy" / "authz.yaml")
    assert config.rules and warnings == ()


INTROSPECTION = {
    "endpoint": "https://idp.example.com/introspect",
    "client_id": "authz",
    "client_secret": {"env": "HOME"},
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"algorithms": ["RS1"]}, "providers.corp.algorithms: unsupported algorithm"),
        ({"jwks": {"inline": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}}, "no usable signing"),
        ({"jwks": {"remote": {"uri": "http://idp.example/certs"}}}, "must use https"),
        (
            {"jwks": None, "introspection": {**INTROSPECTION, "endpoint": "http://idp.example/i"}},
            "providers.corp.introspection.endpoint: must use https",
        ),
        (
            {"jwks": None, "introspection": {**INTROSPECTION, "client_secret": {"env": "NO_ENV"}}},
            "providers.corp.introspection.client_secret: environment variable NO_ENV is not set",
        ),
        (
            {"introspection": INTROSPECTION},
            "exactly one of jwks, shared_secret or introspection",
        ),
        (
            {"jwks": None, "introspection": {**INTROSPECTION, "discovery": True}},
            "exactly one of endpoint or discovery: true",
        ),
        (
            {"jwks": None, "introspection": INTROSPECTION, "typ": "at+jwt"},
            "typ: for JWT providers",
        ),
    ],
)
def test_what_check_config_rejects_never_serves(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    port = free_port()
    corp = provider(**change)
    document = {
        "listen": {"grpc": f"127.0.0.1:{port}", "http": "127.0.0.1:0"},
        "providers": {"corp": corp},
        "rules": [{"requires": {"provider": "corp"}}],
    }
    path = tmp_path / "authz.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError, match=message):
        check_config(path)
    serve = subprocess.run(
        [sys.executable, "-m", "authz", "serve", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert serve.returncode == 2 and message.split(": ")[-1] in serve.stderr
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # nothing ever listened there


def test_connection_maxima_fit_the_descriptor_limit() -> None:
    limits = {"max_http_connections": 1000, "max_grpc_connections": 2000}
    settings = config(listen=LISTEN_ANYWHERE, limits=limits)
    roomy = build_listeners(settings, descriptors=100_000).connections
    assert (roomy.max_grpc, roomy.max_http, roomy.fitted) == (2000, 1000, "")
    unknown = build_listeners(settings).connections
    assert (unknown.max_grpc, unknown.max_http) == (2000, 1000)
    # 1024 descriptors for 3000 wanted: every maximum shrinks in proportion.
    tight = build_listeners(settings, descriptors=1024).connections
    assert tight.max_grpc + tight.max_http <= 1024 - RESERVED_DESCRIPTORS
    assert abs(tight.max_grpc - 2 * tight.max_http) <= 1 and tight.max_http > 0
    assert "descriptor limit (1024)" in tight.fitted


@pytest.mark.parametrize(
    ("rule", "loaded"),
    [
        ({"match": {"prefix": "/"}, "requires": {"provider": "corp"}}, []),
        ({"match": {"regex": "/a.*"}, "requires": {"provider": "corp"}}, ["re2"]),
        (
            {
                "match": {"prefix": "/"},
                "requires": {"provider": "corp"},
                "claims": [{"expr": "jwt.sub == 'a'"}],
            },
            ["cel"],
        ),
        (
            {"match": {"prefix": "/"}, "requires": {"provider": "opaque"}},
            ["authz.core.introspect", "authz.keys.introspection"],
        ),
        ({"match": {"prefix": "/"}, "requires": {"provider": "shared"}}, ["redis"]),
    ],
)
def test_large_libraries_load_only_for_configs_using_them(
    tmp_path: Path, jwks: dict[str, Any], rule: dict[str, Any], loaded: list[str]
) -> None:
    """CEL (~13 MB resident) and RE2 are imported only when a rule needs them, the
    introspection client only when a provider introspects, Redis only for a shared DPoP
    replay store."""
    path = tmp_path / "authz.yaml"
    (tmp_path / "secret").write_text("s3cret\n")
    corp = provider(jwks={"inline": jwks})
    opaque = provider(
        jwks=None,
        introspection={
            "endpoint": "https://idp.example.com/introspect",
            "client_id": "authz",
            "client_secret": {"file": "secret"},
        },
    )
    shared = provider(
        jwks={"inline": jwks},
        dpop={"replay_store": {"redis": {"url": "redis://127.0.0.1:1/0"}}},
    )
    providers = {
        "corp": corp,
        **({"opaque": opaque} if "opaque" in str(rule) else {}),
        **({"shared": shared} if "shared" in str(rule) else {}),
    }
    path.write_text(json.dumps({"providers": providers, "rules": [rule]}))
    modules = ("cel", "re2", "authz.core.introspect", "authz.keys.introspection", "redis")
    program = (
        "import sys\n"
        "from authz.runtime.commands import check_config\n"
        f"check_config({str(path)!r})\n"
        f"print(' '.join(m for m in {modules!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == loaded


def test_a_rule_offers_an_opaque_token_to_one_introspection_provider_at_most() -> None:
    """An opaque token names no issuer: with two such providers it would be posted to
    one IdP's endpoint though it is another's."""
    opaque = provider(jwks=None, introspection=INTROSPECTION)
    partner = provider(jwks=None, introspection=INTROSPECTION, issuer="https://partner.example")
    both = config(
        providers={"corp": opaque, "partner": partner},
        rules=[{"match": {"prefix": "/"}, "requires": {"any": ["partner", "corp"]}}],
    )
    with pytest.raises(ConfigError, match="at most one introspection provider per rule"):
        validate(both)


MT_RULES = [{"match": {"prefix": "/"}, "requires": {"provider": "mt"}}]


@pytest.mark.parametrize(
    ("jwks", "uri", "discovery"),
    [
        ({"discovery": True}, None, "https://login.example.com/a/v2.0"),
        (
            {"remote": {"uri": "https://login.example.com/{tenant}/keys"}},
            "https://login.example.com/a/keys",
            None,
        ),
        (
            {"remote": {"discovery": "https://login.example.com/{tenant}/v2.0"}},
            None,
            "https://login.example.com/a/v2.0",
        ),
    ],
)
def test_each_tenant_gets_its_own_key_location(
    jwks: dict[str, Any], uri: str | None, discovery: str | None
) -> None:
    from authz.keys.tenants import TenantKeySources

    mt = provider(issuer="https://login.example.com/{tenant}/v2.0", tenants=["a"], jwks=jwks)
    recording = Recording()
    built = build(
        config(providers={"mt": mt}, rules=MT_RULES),
        events=recording,
        fetcher_for=recording,
        observe=None,
    )
    tenants = built.sources["mt"]
    assert isinstance(tenants, TenantKeySources)
    source = tenants._make_source("a")
    assert isinstance(source, RemoteKeySource)
    assert (source.settings.uri, source.settings.discovery) == (uri, discovery)
    assert source._discovery is None or source._discovery.issuer == (
        "https://login.example.com/a/v2.0"
    )


def test_keys_shared_by_every_tenant_are_one_source() -> None:
    shared = {"remote": {"uri": "https://login.example.com/common/keys"}}
    mt = provider(issuer="https://login.example.com/{tenant}/v2.0", tenants=["a"], jwks=shared)
    recording = Recording()
    built = build(
        config(providers={"mt": mt}, rules=MT_RULES),
        events=recording,
        fetcher_for=recording,
        observe=None,
    )
    assert isinstance(built.sources["mt"], RemoteKeySource)


@pytest.mark.parametrize(
    ("style", "warned"),
    [
        ("envoy", True),
        ("nginx", True),
        ("ingress-nginx", False),
        ("traefik", False),
        ("caddy", False),
    ],
)
def test_dpop_over_http_is_warned_about_where_the_scheme_is_unknown(
    style: str, warned: bool
) -> None:
    """Traefik and Caddy send X-Forwarded-Proto, ingress-nginx a whole URL; Envoy's
    http_service and nginx say no scheme, so DPoP there needs dpop.external_origin."""
    from authz.config import parse_config
    from authz.runtime.lint import dpop_without_origin
    from tests.support import LISTEN_ANYWHERE, config_data, provider

    data = config_data(
        listen=LISTEN_ANYWHERE,
        http_authz={"listen": "127.0.0.1:0", "original_request": style},
        providers={"corp": provider(jwks={"inline": {"keys": []}}, dpop={"mode": "required"})},
    )
    assert bool(dpop_without_origin(parse_config(data))) is warned


def test_an_offline_build_checks_bindings_without_proofs_secrets_or_stores() -> None:
    """authz eval and test: DPoP's token-side checks stay (a DpopBinding, not no checks
    at all), the certificate binding stays configured; no nonce secret is read and no
    replay store is built, so a Redis URL or an unset secret does not matter offline."""
    from authz.core.dpop import DpopBinding, DpopVerifier
    from authz.runtime.build import build_authorizer
    from tests.support import fixed_keys

    dpop = {
        "mode": "required",
        "nonce": {"secret": {"env": "AUTHZ_TEST_NEVER_SET"}},
        "replay_store": {"redis": {"url": "redis://127.0.0.1:1/0"}},
    }
    settings = config(providers={"corp": provider(dpop=dpop, certificate_bound="required")})
    keys = {"corp": fixed_keys({"keys": [rsa_signer().jwk]})}
    offline = build_authorizer(settings, keys, time.time, None, holder_checks=False)
    corp = offline.providers["corp"]
    assert type(corp.dpop) is DpopBinding and corp.dpop.settings.mode == "required"
    assert (corp.certificate_bound, corp.client_certificates) == ("required", False)
    with pytest.raises(ConfigError, match="AUTHZ_TEST_NEVER_SET"):
        build_authorizer(settings, keys, time.time, None)  # serve's build reads it
    served = config(providers={"corp": provider(dpop={"mode": "required"})})
    live = build_authorizer(served, keys, time.time, None).providers["corp"]
    assert isinstance(live.dpop, DpopVerifier) and live.client_certificates
