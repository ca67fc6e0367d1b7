from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from authz.config import ConfigError, load_config, parse_config
from authz.config.base import several_problems
from dev.stack import ROOT
from tests.support import config_data, provider

BASE = config_data(
    providers={
        "corp": provider(
            issuer="https://idp.test", jwks={"remote": {"uri": "https://idp.test/certs"}}
        )
    }
)


def with_change(path: str, value: Any) -> dict[str, Any]:
    """BASE with one key set (dotted path, list indexes as numbers); value DELETE removes it."""
    data = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if value == "DELETE":
        del node[last]
    else:
        node[last] = value
    return data


def test_base_config_is_valid() -> None:
    config = parse_config(BASE)
    provider = config.providers["corp"]
    assert provider.algorithms == ["RS256", "ES256"]
    assert provider.from_headers[0].name == "authorization"
    assert provider.from_headers[0].value_prefix == "Bearer "
    assert provider.clock_skew == 60
    assert config.nested_claim_delimiter == "."
    assert config.listen.grpc == "127.0.0.1:9001"


BAD: list[tuple[str, Any, str]] = [
    ("rules.0.requirez", {"provider": "corp"}, "rules.0.requirez: unknown key"),
    ("providers.corp.issuer", "DELETE", "providers.corp.issuer: Field required"),
    ("providers.corp.audience", ["api"], "providers.corp.audience: unknown key"),
    (
        "providers.corp.jwks.inline",
        '{"keys": []}',
        "exactly one of inline, file, remote or discovery",
    ),
    ("providers.corp.jwks.remote.refresh_interval", 0, "refresh_interval"),
    (
        "providers.corp.jwks.remote",
        {"uri": "https://i/c", "refresh_interval": 10, "min_refresh_interval": 20},
        "min_refresh_interval <= refresh_interval",
    ),
    ("providers.corp.jwks.remote.discovery", "https://idp.test", "exactly one of uri or discovery"),
    ("providers.corp.jwks.remote.max_keys", 0, "providers.corp.jwks.remote.max_keys"),
    ("providers.corp.jwks.discovery", True, "exactly one of inline, file, remote or discovery"),
    ("rules.0.requires", {"any": []}, "rules.0.requires.any"),
    ("rules.0.requires", {"any": ["corp", "nope"]}, "unknown provider 'nope'"),
    (
        "rules.0.requires.allow_missing",
        "corp",
        "exactly one of provider, any, all or allow_missing",
    ),
    ("startup_wait", -1, "startup_wait"),
    ("rules.0.requires", {"allow_missing": []}, "name at least one provider"),
    ("rules.0.requires", {"allow_missing": ""}, "name at least one provider"),
    ("providers.corp.clock_skew", -1, "providers.corp.clock_skew"),
    (
        "providers.corp.claim_to_headers",
        [{"header": "bad header", "claim": "sub"}],
        "providers.corp.claim_to_headers.0.header",
    ),
    (
        "providers.corp.claim_to_headers",
        [{"header": "host", "claim": "sub"}],
        "not a usable header name",
    ),
    ("providers.corp.from_headers", [], "at least one of from_headers"),
    ("rules.0.requires.provider", "other", "unknown provider 'other'"),
    ("rules.0.public", True, "either public: true or has requires"),
    ("rules.0.requires", "DELETE", "needs requires"),
    ("rules.0.claims", [{"claim": "sub"}], "exactly one operator"),
    ("rules.0.claims", [{"claim": "sub", "equals": "a", "exists": True}], "exactly one operator"),
    ("rules.0.claims", [{"claim": "sub", "matchez": "a"}], "rules.0.claims.0.matchez: unknown key"),
    (
        "rules.0.claims",
        [{"claim": "sub", "matches": "("}],
        "invalid or unsupported regular expression (RE2 syntax): missing )",
    ),
    ("rules.0.match.prefix", "api", "must start with '/'"),
    ("rules.0.match.methods", ["GETT"], "unknown HTTP method(s) 'GETT' (did you mean GET?)"),
    ("providers.corp.audiences", [], "providers.corp.audiences"),
    ("providers.corp.audiences", "DELETE", "providers.corp.audiences: Field required"),
    ("rules.0.match.path", "/x", "use at most one of prefix, path"),
    ("rules", [], "rules: List should have at least 1 item"),
    ("listen.grpc", "9001", "expected host:port"),
    ("nested_claim_delimiter", "", "nested_claim_delimiter"),
    ("paths.semicolons", "cut", "paths.semicolons: Input should be 'refuse' or 'literal'"),
    ("method_override", "allow", "method_override: Input should be 'refuse' or 'judge_both'"),
    # the types of a value list
    ("rules.0.claims", [{"claim": "s", "one_of": ["a", 1]}], "all values must be of one JSON"),
    # tracing
    ("tracing", {"sample_ratio": 0.1}, "tracing.otlp_endpoint: Field required"),
    ("tracing.otlp_endpoint", "grpc://collector:4317", "tracing.otlp_endpoint: the scheme must"),
    ("tracing.otlp_endpoint", "collector:4317", "the scheme must be http (plaintext) or https"),
    ("tracing.otlp_endpoint", "http://collector", "a port is needed"),
    ("tracing.otlp_endpoint", "http://:4317", "a host is needed"),
    ("tracing.otlp_endpoint", "https://u:p@collector:4317", "no credentials in the URL"),
    ("tracing.otlp_endpoint", "http://collector:4317/v1/traces", "takes no path"),
    ("tracing.otlp_endpoint", "http://collector:99999", "not a URL"),
    ("tracing.sample_ratio", 1.5, "tracing.sample_ratio: Input should be less than or equal to 1"),
    ("tracing.sample_ratio", -0.1, "tracing.sample_ratio: Input should be greater than or equal"),
    ("tracing.service_name", "", "tracing.service_name"),
    ("tracing.exporter", "otlp", "tracing.exporter: unknown key"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD, ids=[f"{b[0]}={b[1]}" for b in BAD])
def test_bad_config_names_the_key(path: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(with_change(path, value))
    assert message in str(caught.value)


def test_claim_condition_equals_null_counts_as_an_operator() -> None:
    config = parse_config(with_change("rules.0.claims", [{"claim": "tenant", "equals": None}]))
    assert config.rules[0].claims[0].operator == "equals"


def test_inline_jwks_as_string_must_be_json() -> None:
    data = with_change("providers.corp.jwks", {"inline": "{not json"})
    with pytest.raises(ConfigError, match="inline JWKS is not valid JSON"):
        parse_config(data)


def test_context_rules_cannot_be_served_over_http() -> None:
    data = with_change(
        "rules",
        [
            {
                "name": "admin",
                "match": {"context": {"policy": "admin"}},
                "requires": {"provider": "corp"},
            }
        ],
    )
    parse_config(data)  # fine for gRPC alone
    data["http_authz"] = {"listen": "127.0.0.1:9002"}
    with pytest.raises(ConfigError, match=r"rules.0 \(admin\): matches on Envoy's context"):
        parse_config(data)


def test_allow_missing_rules_cannot_have_claims() -> None:
    rule = {
        "name": "optional",
        "requires": {"allow_missing": "corp"},
        "claims": [{"claim": "roles", "contains": "admin"}],
    }
    data = with_change("rules", [rule])
    with pytest.raises(ConfigError, match=r"rules.0 \(optional\): an allow_missing rule cannot"):
        parse_config(data)


def test_discovery_shorthand_uses_the_issuer() -> None:
    config = parse_config(with_change("providers.corp.jwks", {"discovery": True}))
    provider = config.providers["corp"]
    remote = provider.jwks.remote_settings(provider.issuer)
    assert remote is not None and remote.discovery == "https://idp.test"


def test_requires_variants() -> None:
    for requires, providers, optional in (
        ({"provider": "corp"}, ("corp",), False),
        ({"any": ["corp"]}, ("corp",), False),
        ({"allow_missing": "corp"}, ("corp",), True),
        ({"allow_missing": ["corp"]}, ("corp",), True),
    ):
        rule = parse_config(with_change("rules.0.requires", requires)).rules[0]
        assert rule.requires is not None
        assert (rule.requires.providers, rule.requires.optional) == (providers, optional)


def test_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        parse_config(["a"])


def test_load_resolves_jwks_file_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "authz.yaml").write_text(
        "providers:\n  corp:\n    issuer: x\n    audiences: [api]\n"
        "    jwks: {file: keys/jwks.json}\n"
        "rules:\n  - requires: {provider: corp}\n"
    )
    config = load_config(tmp_path / "authz.yaml")
    file = config.providers["corp"].jwks.file
    assert file is not None and file.path == tmp_path / "keys" / "jwks.json"


def test_load_reports_yaml_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("rules: [\n")
    with pytest.raises(
        ConfigError, match=f"^{re.escape(str(tmp_path))}/bad.yaml:2:1: not valid YAML"
    ):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_example_config_is_valid() -> None:
    config = load_config(ROOT / "deploy" / "authz.yaml")
    assert config.rules


def test_deploy_yaml_files_parse() -> None:
    import yaml

    for name in ("envoy.yaml", "envoy-http.yaml", "envoy-mtls-cluster.yaml", "traefik-dynamic.yml"):
        assert yaml.safe_load((ROOT / "deploy" / name).read_text())


def test_providers_sharing_a_token_location_agree_on_forward() -> None:
    data = copy.deepcopy(BASE)
    data["providers"]["partner"] = {**data["providers"]["corp"], "forward": True}
    with pytest.raises(ConfigError, match="both read the header 'authorization'"):
        parse_config(data)
    data["providers"]["partner"]["from_headers"] = [{"name": "x-partner-token"}]
    parse_config(data)


def test_the_drain_must_leave_part_of_the_grace() -> None:
    with pytest.raises(ConfigError, match=r"shutdown_drain \(2s\) must be below shutdown_grace"):
        parse_config({**BASE, "shutdown_grace": 2, "shutdown_drain": 2})
    assert parse_config({**BASE, "shutdown_grace": 2, "shutdown_drain": 1.5}).shutdown_drain == 1.5
    assert (
        parse_config({k: v for k, v in BASE.items() if k != "shutdown_drain"}).shutdown_drain == 3
    )


@pytest.mark.parametrize(("grace", "drain"), [(2, 1.0), (4, 2.0), (6, 3.0), (30, 3.0)])
def test_a_short_grace_without_a_drain_drains_for_half_of_it(grace: float, drain: float) -> None:
    """The default drain of 3 s would refuse every grace up to 3 s that names no drain."""
    without_drain = {k: v for k, v in BASE.items() if k != "shutdown_drain"}
    assert parse_config({**without_drain, "shutdown_grace": grace}).shutdown_drain == drain


PROVIDER = {
    "issuer": "https://idp.example.com",
    "audiences": ["api"],
    "jwks": {"inline": {"keys": []}},
}
RULE = {"requires": {"provider": "corp"}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"providers": {"corp": {**PROVIDER, "audience": ["api"]}}},
            "providers.corp.audience: unknown key (did you mean audiences?)",
        ),
        (
            {"rules": [{**RULE, "match": {"prefx": "/"}}]},
            "rules.0.match.prefx: unknown key (did you mean prefix?)",
        ),
        (
            {"providers": {"corp": {**PROVIDER, "dpop": {"max_ag": 3}}}},
            "providers.corp.dpop.max_ag: unknown key (did you mean max_age?)",
        ),
        (
            {"rules": [{**RULE, "claims": [{"claim": "roles", "flavour": "x"}]}]},
            "rules.0.claims.0.flavour: unknown key (accepted here: claim, claim_path,",
        ),
        (
            {"shutdown_grac": 3},
            "shutdown_grac: unknown key (did you mean shutdown_grace?)",
        ),
    ],
)
def test_unknown_keys_come_with_a_suggestion(change: dict[str, Any], message: str) -> None:
    data = {"providers": {"corp": PROVIDER}, "rules": [RULE], **change}
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "header", ["authorization", "Cookie", "x-envoy-original-path", ":path", "dpop", "set-cookie"]
)
def test_headers_a_claim_must_never_set(header: str) -> None:
    mapping = [{"header": header, "claim": "sub"}]
    with pytest.raises(ConfigError, match="must never be set from a claim"):
        parse_config(
            {"providers": {"corp": {**PROVIDER, "claim_to_headers": mapping}}, "rules": [RULE]}
        )
    with pytest.raises(ConfigError, match="must never be set from a claim"):
        parse_config(
            {"providers": {"corp": PROVIDER}, "rules": [{**RULE, "claim_to_headers": mapping}]}
        )
    with pytest.raises(ConfigError, match="must never be set from a claim"):
        parse_config(
            {"providers": {"corp": {**PROVIDER, "forward_payload_header": header}}, "rules": [RULE]}
        )


def test_rule_names_are_unique() -> None:
    rules = [{**RULE, "name": "api"}, {**RULE, "name": "admin"}, {**RULE, "name": "api"}]
    with pytest.raises(ConfigError, match=r"rules.2: the name 'api' is taken by rules.0"):
        parse_config({"providers": {"corp": PROVIDER}, "rules": rules})
    # Names are the operator's text, braces included: told as written, each on its line.
    braces = [{**RULE, "name": "{problems}"}] * 3
    with pytest.raises(ConfigError) as caught:
        parse_config({"providers": {"corp": PROVIDER}, "rules": braces})
    assert str(caught.value).split("\n")[1:] == [
        f"  rules.{i}: the name '{{problems}}' is taken by rules.0 (decision logs and metrics "
        "name rules: they must differ)"
        for i in (1, 2)
    ]
    # pydantic's own message of the error, as str(ValidationError) shows it, keeps them too
    assert several_problems(["a {problems}", "b"]).message() == "a {problems}; b"


LOADED = """\
providers:
  corp:
    issuer: https://idp.test
    audiences: [api]
    jwks: {file: keys.json}
rules:
  - name: api
    requires: {provider: corp}
"""


def refused_file(tmp_path: Path, text: str) -> list[str]:
    """The lines of the error loading ``text`` as authz.yaml, its folder written as ~."""
    (tmp_path / "authz.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "authz.yaml")
    return str(caught.value).replace(str(tmp_path), "~").split("\n")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "    audiences: [api]\n",
            "    audience: [api]\n",
            # ...and not also "audiences: Field required": the suggestion says it
            ["~/authz.yaml:4:5: providers.corp.audience: unknown key (did you mean audiences?)"],
        ),
        (
            "    audiences: [api]\n",
            "",
            ["~/authz.yaml:2:3: providers.corp.audiences: Field required"],
        ),
        (
            "    requires: {provider: corp}\n",
            "    requires: {provider: corp}\n    claims:\n      - {claim: roles, includes: a}\n",
            [
                "~/authz.yaml:10:24: rules.0 (api).claims.0.includes: unknown key (did you mean "
                "contains?)"
            ],
        ),
        (
            "    requires: {provider: corp}\n",
            "    requires: {provider: corp}\n    claims:\n      - {claim: roles, prefx: a}\n",
            [
                "~/authz.yaml:10:24: rules.0 (api).claims.0.prefx: unknown key (there is no prefix "
                "operator: matches takes an RE2 pattern that must match the whole value, e.g. "
                "matches: 'admin:.*')"
            ],
        ),
        (
            "    requires: {provider: corp}\n",
            "    requires: {provider: corp}\n    claims:\n      - {claim: roles, in: [a]}\n",
            ["~/authz.yaml:10:24: rules.0 (api).claims.0.in: unknown key (did you mean one_of?)"],
        ),
        (
            "rules:\n",
            "mode: dryrun\nrules:\n",
            [
                "~/authz.yaml:6:1: mode: Input should be 'enforce' or 'dry_run' (did you mean "
                "dry_run?)"
            ],
        ),
        (
            "    jwks: {file: keys.json}\n",
            "    jwks: {file: keys.json}\n    dpop: {replay_store: memry}\n",
            [
                "~/authz.yaml:6:12: providers.corp.dpop.replay_store: Input should be 'memory' or "
                "a mapping (did you mean memory?)"
            ],
        ),
        (
            "    issuer: https://idp.test\n",
            "    issuer: https://idp.test/{tenant}\n    tenants: {any: true, maxx: 3}\n",
            ["~/authz.yaml:4:26: providers.corp.tenants.maxx: unknown key (did you mean max?)"],
        ),
        (
            "    requires: {provider: corp}\n",
            "    requires: {provider: corp}\n    claims:\n"
            "      - {claim: roles, contains: a, provider: other}\n",
            # a model validator's message, naming a path: the key it names
            [
                "~/authz.yaml:9:5: rules.0 (api).claims: provider 'other' is not required by the "
                "rule"
            ],
        ),
        (
            "    requires: {provider: corp}\n",
            "    requires: {provider: corp}\n  - name: api\n    requires: {provider: corp}\n",
            [
                "~/authz.yaml:9:5: rules.1: the name 'api' is taken by rules.0 (decision logs and "
                "metrics name rules: they must differ)"
            ],
        ),
        (
            # every repeat of a name, each at its own place
            "    requires: {provider: corp}\n",
            "    requires: {provider: corp}\n  - name: api\n    requires: {provider: corp}\n"
            "  - name: web\n    requires: {provider: corp}\n"
            "  - name: api\n    requires: {provider: corp}\n",
            [
                "~/authz.yaml:9:5: rules.1: the name 'api' is taken by rules.0 (decision logs and "
                "metrics name rules: they must differ)",
                "~/authz.yaml:13:5: rules.3: the name 'api' is taken by rules.0 (decision logs and "
                "metrics name rules: they must differ)",
            ],
        ),
        (
            "    requires: {provider: corp}\n",
            "    requires: {provider: crop}\n",
            [
                "~/authz.yaml:8:5: rules.0 (api).requires: unknown provider 'crop' "
                "(did you mean corp?)"
            ],
        ),
        (
            "  - name: api\n",
            "  - name: api\n    match: {methods: [GET, PSOT, XYZZY]}\n",
            [
                "~/authz.yaml:8:13: rules.0 (api).match.methods: unknown HTTP method(s) 'PSOT' "
                "(did you mean POST?), 'XYZZY'; known: CONNECT, COPY, DELETE, GET, HEAD, LOCK, "
                "MKCOL, MOVE, OPTIONS, PATCH, POST, PROPFIND, PROPPATCH, PURGE, PUT, REPORT, "
                "SEARCH, TRACE, UNLOCK"
            ],
        ),
        (
            "    requires: {provider: corp}\n",
            "    requires: {provider: corp}\n    claim_to_headers:\n"
            "      - {header: x-user, claim: sub}\n      - {header: Cookie, claim: sub}\n",
            [
                "~/authz.yaml:11:10: rules.0 (api).claim_to_headers.1.header: 'Cookie' must never "
                "be set from a claim: the upstream (or Envoy) trusts it as a credential or a "
                "control header"
            ],
        ),
        (
            "    jwks: {file: keys.json}\n",
            "    jwks: {file: keys.json}\n    tenants: [a]\n",
            # a message naming a key inside the one pydantic gives: that key
            [
                "~/authz.yaml:2:3: providers.corp: tenants and an issuer with {tenant} go "
                "together: issuer: https://idp.example.com/{tenant}/v2.0 with tenants: [...] or "
                "{any: true}"
            ],
        ),
        (
            "rules:\n",
            "shutdown_grace: 2\nshutdown_drain: 2\nrules:\n",
            [
                "~/authz.yaml:7:1: shutdown_drain (2s) must be below shutdown_grace (2s): the "
                "drain is the first part of the grace, and checks in flight when the listeners "
                "close need the rest"
            ],
        ),
    ],
)
def test_errors_name_file_line_and_column(
    tmp_path: Path, old: str, new: str, message: list[str]
) -> None:
    assert old in LOADED
    assert refused_file(tmp_path, LOADED.replace(old, new, 1)) == [
        "invalid configuration:",
        *(f"  {line}" for line in message),
    ]


def test_errors_come_in_the_order_of_the_file(tmp_path: Path) -> None:
    text = LOADED.replace("rules:\n", "log_level: warn\nrules:\n").replace(
        "  corp:\n", "  corp:\n    clock_skew: -1\n"
    )
    assert refused_file(tmp_path, text) == [
        "invalid configuration:",
        "  ~/authz.yaml:3:5: providers.corp.clock_skew: Input should be greater than or equal to 0",
        "  ~/authz.yaml:7:1: log_level: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR' "
        "(did you mean WARNING?)",
    ]


def test_a_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    assert refused_file(tmp_path, "- rules\n") == [
        "~/authz.yaml: the configuration must be a YAML mapping"
    ]


def test_a_config_not_from_a_file_has_no_positions() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({**BASE, "mode": "dryrun"})
    assert str(caught.value) == (
        "invalid configuration:\n  mode: Input should be 'enforce' or 'dry_run' (did you mean "
        "dry_run?)"
    )
    assert parse_config(BASE).source is None


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("includes", "contains"),
        ("has_any", "contains_any"),
        ("eq", "equals"),
        ("regex", "matches"),
        ("present", "exists"),
        ("containz", "contains"),
        ("one_off", "one_of"),
    ],
)
def test_operators_meant(written: str, meant: str) -> None:
    rule = {**RULE, "claims": [{"claim": "roles", written: "x"}]}
    with pytest.raises(ConfigError) as caught:
        parse_config({"providers": {"corp": PROVIDER}, "rules": [rule]})
    assert f"rules.0.claims.0.{written}: unknown key (did you mean {meant}?)" in str(caught.value)


@pytest.mark.parametrize(
    ("written", "hint"),
    [
        ("starts_with", "there is no prefix operator"),
        ("endswith", "there is no suffix operator"),
        ("not_in", "there is no not_in operator: put one_of under not"),
    ],
)
def test_operators_that_do_not_exist_say_what_does_their_work(written: str, hint: str) -> None:
    rule = {**RULE, "claims": [{"claim": "email", written: "x"}]}
    with pytest.raises(ConfigError) as caught:
        parse_config({"providers": {"corp": PROVIDER}, "rules": [rule]})
    assert f"rules.0.claims.0.{written}: unknown key ({hint}" in str(caught.value)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            "http_authz",
            {"listen": "127.0.0.1:1", "original_request": "ngnix"},
            "http_authz.original_request: Input should be 'envoy', 'nginx', 'ingress-nginx', "
            "'traefik' or 'caddy' (did you mean nginx?)",
        ),
        (
            "log_level",
            "Debug",
            "log_level: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR' (did you mean "
            "DEBUG?)",
        ),
        ("mode", "dry-run", "(did you mean dry_run?)"),
        ("mode", "audit", "mode: Input should be 'enforce' or 'dry_run'\n"),
        (
            "providers.corp.tenants",
            "all",
            "providers.corp.tenants: Input should be a list or a mapping\n",
        ),
    ],
)
def test_values_not_among_the_choices_list_them(path: str, value: Any, message: str) -> None:
    data = with_change(path, value)
    if path == "providers.corp.tenants":
        data["providers"]["corp"]["issuer"] = "https://idp.test/{tenant}"
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert message in str(caught.value) + "\n"


@pytest.mark.parametrize(
    "endpoint", ["http://collector:4317", "https://otel.example.com:443/", "http://[::1]:4317"]
)
def test_tracing_takes_an_otlp_grpc_endpoint(endpoint: str) -> None:
    tracing = {"otlp_endpoint": endpoint, "sample_ratio": 0.1, "service_name": "edge-authz"}
    loaded = parse_config({**BASE, "tracing": tracing}).tracing
    assert loaded is not None and loaded.otlp_endpoint == endpoint
    assert (loaded.sample_ratio, loaded.service_name) == (0.1, "edge-authz")
    assert parse_config(BASE).tracing is None  # off unless configured
