"""The build step's checks: what the schema alone cannot judge (algorithms, fetchable URLs,
rule paths, CEL) refuses a config with an error naming the key, in check-config and serve
alike."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from authz.config import ConfigError, parse_config
from authz.runtime.build import validate
from authz.runtime.commands import check_config
from tests.support import config_data, provider

REMOTE = {"remote": {"uri": "https://idp.test/certs"}}


def refused(data: dict[str, Any]) -> str:
    config = parse_config(data)  # the schema accepts it...
    with pytest.raises(ConfigError) as caught:
        validate(config)  # ...the build step does not
    return str(caught.value)


@pytest.mark.parametrize(
    ("corp", "message"),
    [
        ({"algorithms": ["none"]}, "providers.corp.algorithms: 'none' is never accepted"),
        ({"algorithms": ["HS256"]}, "['HS256'] need a shared_secret, not a jwks"),
        ({"algorithms": ["RS1"]}, "providers.corp.algorithms: unsupported algorithm 'RS1'"),
        (
            {"shared_secret": {"env": "S"}, "jwks": None, "algorithms": ["HS256", "RS256"]},
            "a shared_secret provider accepts only HS256, HS384 or HS512",
        ),
        ({"jwks": {"remote": {"uri": "ftp://x"}}}, "providers.corp.jwks.remote.uri: must be"),
        ({"jwks": {"remote": {"uri": "http://idp.test/certs"}}}, "must use https"),
        ({"jwks": {"remote": {"discovery": "http://idp.internal"}}}, "must use https"),
    ],
)
def test_provider_checks(corp: dict[str, Any], message: str) -> None:
    settings = {k: v for k, v in provider(**corp).items() if v is not None}
    assert message in refused(config_data(providers={"corp": settings}))


@pytest.mark.parametrize(
    "remote",
    [
        {"uri": "http://127.0.0.1:8080/certs"},
        {"uri": "http://localhost/certs"},
        {"uri": "http://[::1]:80/certs"},
        {"uri": "http://idp.internal/certs", "allow_insecure": True},
        {
            "discovery": "https://idp.internal",
            "refresh_interval": 2,
            "min_refresh_interval": 1,
            "max_refresh_interval": 5,
        },
    ],
)
def test_fetchable_remote_jwks(remote: dict[str, Any]) -> None:
    validate(parse_config(config_data(providers={"corp": provider(jwks={"remote": remote})})))


@pytest.mark.parametrize(
    "uri", ["http://127.evil.com/jwks", "http://127.0.0.1.nip.io/jwks", "http://localhost.evil/x"]
)
def test_names_that_look_like_loopback_need_https(uri: str) -> None:
    data = config_data(providers={"corp": provider(jwks={"remote": {"uri": uri}})})
    assert "must use https" in refused(data)


def test_discovery_true_needs_an_https_issuer() -> None:
    corp = provider(issuer="http://idp.internal", jwks={"discovery": True})
    assert "discovery: true needs an https issuer" in refused(config_data(providers={"corp": corp}))


@pytest.mark.parametrize(
    ("match", "message"),
    [
        ({"prefix": "/a;b"}, "rules.0 (0).match.prefix: a semicolon in the path"),
        ({"prefix": "/café"}, "rules.0 (0).match.prefix: a raw control, space"),
        ({"prefix": "/a/../b"}, "rules.0 (0).match.prefix: a dot-segment"),
        ({"prefix": "//a"}, "an empty path segment"),
        ({"template": "/u/{id};x"}, "rules.0 (0).match.template: a semicolon"),
        ({"path_separated_prefix": "/%61"}, "a percent-encoded unreserved"),
        ({"regex": "/a%3a.*"}, "upper-case hex digits"),
    ],
)
def test_rule_paths_no_accepted_request_could_match(match: dict[str, Any], message: str) -> None:
    data = config_data(rules=[{"match": match, "requires": {"provider": "corp"}}])
    assert message in refused(data)


def test_semicolons_literal_allows_them_in_rule_paths() -> None:
    data = config_data(
        rules=[{"match": {"prefix": "/a;b"}, "requires": {"provider": "corp"}}],
        paths={"semicolons": "literal"},
    )
    validate(parse_config(data))


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ('jwt.roles.exists(r, r == "a") && x', "claims.0.expr: unknown CEL variable(s) ['x']"),
        ("tokens.sub == 'a'", "unknown CEL variable(s) ['tokens']"),
        ("jwts.level >= 3", "unknown CEL variable(s) ['jwts']"),
    ],
)
def test_cel_variables(expr: str, message: str) -> None:
    data = config_data(rules=[{"requires": {"provider": "corp"}, "claims": [{"expr": expr}]}])
    assert message in refused(data)


@pytest.mark.parametrize(
    "expr",
    [
        'request.context.policy == "admin"',
        'request["context"]["policy"] == "admin"',
        "size(request) > 3",
        '"policy" in request.context',
    ],
)
def test_cel_reading_context_cannot_be_served_over_http(expr: str) -> None:
    rules = [{"name": "r", "requires": {"provider": "corp"}, "claims": [{"any": [{"expr": expr}]}]}]
    validate(parse_config(config_data(rules=rules)))  # fine for gRPC alone
    data = config_data(rules=rules, http_authz={"listen": "127.0.0.1:9002"})
    assert "rules.0 (r).claims.0.any.0.expr: reads Envoy's context_extensions" in refused(data)


def test_cel_reading_request_fields_is_fine_over_http() -> None:
    expr = 'request.method == "GET" && request.headers["x-env"] == "prod"'
    rules = [{"requires": {"provider": "corp"}, "claims": [{"expr": expr}]}]
    validate(parse_config(config_data(rules=rules, http_authz={"listen": "127.0.0.1:9002"})))


@pytest.mark.parametrize(
    ("jwks", "message"),
    [
        ({"keys": 5}, 'a JWKS must be a JSON object with a "keys" list'),
        ({"keys": None}, 'a JWKS must be a JSON object with a "keys" list'),
        ({"keys": [{"kty": "RSA"}] * 101}, "the JWKS has more than 100 keys"),
        ({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, "no usable signing key"),
    ],
)
def test_an_inline_jwks_is_checked_when_built(tmp_path: Path, jwks: Any, message: str) -> None:
    path = tmp_path / "authz.json"
    path.write_text(json.dumps(config_data(providers={"corp": provider(jwks={"inline": jwks})})))
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_config(path)


def test_the_schema_and_the_core_know_the_same_operators() -> None:
    from authz.config.rules import CLAIM_OPERATORS
    from authz.core.operators import OPERATORS

    # equals_claim compares two claims; the build step gives it its own test.
    assert set(CLAIM_OPERATORS) == {*OPERATORS, "equals_claim"}


LOADED = """\
listen:
  grpc_tls: {cert_file: cert.pem, key_file: key.pem}
providers:
  corp:
    issuer: https://idp.test
    audiences: [api]
    shared_secret: {env: AUTHZ_TEST_UNSET_SECRET}
    algorithms: [HS256]
  other:
    issuer: https://other.test
    audiences: [api]
    jwks:
      remote: {uri: "https://other.test/certs", ca_file: no-such-ca.pem}
    algorithms: [RS256, none]
rules:
  - name: api
    requires: {any: [corp, other]}
    claims:
      - {expr: "jwt.sub == 'x' && user"}
"""


def refused_file(tmp_path: Path, text: str) -> str:
    (tmp_path / "authz.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        check_config(tmp_path / "authz.yaml")
    return str(caught.value).replace(str(tmp_path), "~")


def test_the_build_steps_errors_name_file_line_and_column(tmp_path: Path) -> None:
    assert refused_file(tmp_path, LOADED) == (
        "invalid configuration:\n"
        "  ~/authz.yaml:14:5: providers.other.algorithms: 'none' is never accepted\n"
        "  ~/authz.yaml:19:10: rules.0 (api).claims.0.expr: unknown CEL variable(s) ['user']: "
        "use jwt, claims, request"
    )
    text = LOADED.replace(", none]", "]").replace(" && user", "")
    assert refused_file(tmp_path, text) == (
        "~/authz.yaml:7:5: providers.corp.shared_secret: environment variable "
        "AUTHZ_TEST_UNSET_SECRET is not set"
    )
    text = text.replace("{env: AUTHZ_TEST_UNSET_SECRET}", "{file: no-such.secret}")
    assert refused_file(tmp_path, text) == (
        "~/authz.yaml:7:5: providers.corp.shared_secret: cannot read ~/no-such.secret: No such "
        "file or directory"
    )
    (tmp_path / "no-such.secret").write_text("s" * 32)
    assert refused_file(tmp_path, text) == (
        "~/authz.yaml:13:49: providers.other.jwks.remote.ca_file: cannot load CA bundle "
        "~/no-such-ca.pem: [Errno 2] No such file or directory"
    )
    text = text.replace(", ca_file: no-such-ca.pem", "")
    assert refused_file(tmp_path, text) == (
        "~/authz.yaml:2:3: listen.grpc_tls: cannot read ~/cert.pem: No such file or directory"
    )


def test_an_otlp_exporter_that_does_not_load_is_a_config_error_saying_how_to_repair(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """xds-protos ships an old opentelemetry.proto; installed last it hides the exporter's
    imports. check-config and serve refuse with the repair, not a traceback at start."""
    import sys

    traced = parse_config(config_data(tracing={"otlp_endpoint": "http://127.0.0.1:4317"}))
    validate(traced)  # this environment's exporter loads (make install repairs it)
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", None)
    with pytest.raises(ConfigError, match="pip install --force-reinstall --no-deps opentelemetry"):
        validate(traced)
    validate(parse_config(config_data()))  # without tracing nothing is imported
