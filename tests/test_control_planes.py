"""Istio and Envoy Gateway: deploy/istio and deploy/envoy-gateway render and validate
strictly (tests/support/kubernetes.py), and the Envoy each control plane generates gets
deploy/envoy.yaml's ext_authz settings, the ones that file is tested with for real. What
a control plane cannot set is in docs/istio.md and docs/envoy-gateway.md. The overlays
those pages have the reader write put each policy beside what it targets."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from authz.config import Config, parse_config
from authz.core.overrides import METHOD_OVERRIDE_HEADERS
from authz.runtime.commands import check_config
from tests.support.crd_schemas import ISTIOD_VALUES
from tests.support.kubernetes import (
    DEPLOY,
    ROOT,
    documented_kustomization,
    envoy_ext_authz,
    gateway_api_errors,
    kustomize,
    mounted_config,
    one,
    overlay_beside_checkout,
    validate,
    validate_uncached,
    yaml_blocks,
)

# The kinds each guide's overlay must leave beside the gateway, not in authz's namespace.
POLICY_KINDS = {
    "istio": {"AuthorizationPolicy"},
    "envoy-gateway": {"SecurityPolicy", "ClientTrafficPolicy"},
}


@pytest.fixture(scope="module")
def renders() -> dict[str, list[dict[str, Any]]]:
    return {name: kustomize(DEPLOY / name) for name in ("istio", "envoy-gateway")}


@pytest.mark.parametrize("name", ["istio", "envoy-gateway"])
def test_each_renders_validates_and_mounts_a_config_that_serves(
    renders: dict[str, list[dict[str, Any]]], name: str, tmp_path: Path
) -> None:
    for doc in renders[name]:
        validate(doc)
    check_config(tmp_path / "authz.yaml", mounted_config(renders[name]))


def test_the_validation_is_strict(renders: dict[str, list[dict[str, Any]]]) -> None:
    """A misspelt field fails the Istio models and the schemas of the fields used."""
    mistakes = [
        ("istio", "AuthorizationPolicy", "authz", ["spec", "actions"]),
        ("istio", "DestinationRule", "authz", ["spec", "trafficPolicy", "connectionPol"]),
        ("envoy-gateway", "SecurityPolicy", "authz", ["spec", "extAuth", "failopen"]),
        ("envoy-gateway", "ClientTrafficPolicy", "authz", ["spec", "headers", "underscores"]),
        ("envoy-gateway", "ReferenceGrant", "authz-from-security-policy", ["spec", "form"]),
    ]
    for render, kind, name, path in mistakes:
        doc = copy.deepcopy(one(renders[render], kind, name))
        node: Any = doc
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = "x"
        with pytest.raises((AssertionError, jsonschema.ValidationError)):
            validate_uncached(doc)
    values = yaml.safe_load((DEPLOY / "istio" / "istiod-values.yaml").read_text())
    values["meshConfig"]["extensionProviders"][0]["envoyExtAuthzGrpc"]["failopen"] = False
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(values, ISTIOD_VALUES)


# What breaks the ReferenceGrant's spec: the error the Gateway API's schema gives for it.
BROKEN_GRANTS: dict[str, Callable[[dict[str, Any]], object]] = {
    # The schema lets unknown fields through, but a misspelt `from` leaves it missing.
    "/spec required from": lambda spec: spec.update(form=spec.pop("from")),
    "/spec/from minItems": lambda spec: spec.update({"from": []}),
    "/spec/from/0 required namespace": lambda spec: spec["from"][0].pop("namespace"),
    "/spec/to/0/kind type": lambda spec: spec["to"][0].update(kind=5),
    "/spec/to/0/kind pattern": lambda spec: spec["to"][0].update(kind="v1/Service"),
}


def schema_error(error: dict[str, Any]) -> str:
    """An ajv error as where, which rule, and the missing field, if that is the rule."""
    missing = error["params"].get("missingProperty")
    return " ".join([error["instancePath"], error["keyword"], *([missing] if missing else [])])


def test_the_gateway_api_schema_refuses_a_broken_reference_grant(
    renders: dict[str, list[dict[str, Any]]],
) -> None:
    """The ReferenceGrant is validated by the schema the Gateway API publishes, which
    refuses each of these with an error naming the field. It allows unknown fields: those
    are refused by the field names in tests/support/crd_schemas.py (test_the_validation_is_
    strict), and test_envoy_gateway_asks_authz_as_deploy_envoy_yaml_does compares the spec."""
    grant = one(renders["envoy-gateway"], "ReferenceGrant", "authz-from-security-policy")
    broken = []
    for breaks in BROKEN_GRANTS.values():
        doc = copy.deepcopy(grant)
        breaks(doc["spec"])
        broken.append(doc)
    valid, *refused = gateway_api_errors([grant, *broken])
    assert valid == []
    for expected, errors in zip(BROKEN_GRANTS, refused, strict=True):
        assert {schema_error(error) for error in errors} == {expected}
    with pytest.raises(AssertionError, match="'missingProperty': 'from'"):
        validate_uncached(broken[0])


def test_istio_asks_authz_as_deploy_envoy_yaml_does(
    renders: dict[str, list[dict[str, Any]]],
) -> None:
    values = yaml.safe_load((DEPLOY / "istio" / "istiod-values.yaml").read_text())
    jsonschema.validate(values, ISTIOD_VALUES)
    filter_config, cluster = envoy_ext_authz()
    (provider,) = values["meshConfig"]["extensionProviders"]
    grpc = provider["envoyExtAuthzGrpc"]
    assert grpc["failOpen"] is filter_config["failure_mode_allow"] is False
    assert grpc["timeout"] == filter_config["grpc_service"]["timeout"] == "1s"
    assert (
        filter_config["status_on_error"]["code"] == "ServiceUnavailable"
        and grpc["statusOnError"] == "503"
    )
    assert "with_request_body" not in filter_config and "includeRequestBodyInCheck" not in grpc
    # Istio's gRPC provider sends every header, as deploy/envoy.yaml (no allowed_headers).
    assert "allowed_headers" not in filter_config
    assert values["meshConfig"]["pathNormalization"]["normalization"] == "MERGE_SLASHES"
    docs = renders["istio"]
    service = one(docs, "Service")
    assert (
        grpc["service"]
        == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    )
    assert grpc["port"] == next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    policy = one(docs, "AuthorizationPolicy")
    assert (
        policy["spec"]["action"] == "CUSTOM"
        and policy["spec"]["provider"]["name"] == provider["name"]
    )
    assert policy["spec"]["rules"] == [{}]  # every request
    rule = one(docs, "DestinationRule")
    assert rule["spec"]["host"] == grpc["service"]
    streams = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    wanted = streams["explicit_http_config"]["http2_protocol_options"]["max_concurrent_streams"]
    assert rule["spec"]["trafficPolicy"]["connectionPool"]["http"]["maxConcurrentStreams"] == wanted
    assert "tls" not in rule["spec"]["trafficPolicy"]  # Istio's automatic mutual TLS stays
    assert_reached_from(docs, policy["metadata"]["namespace"])


def test_envoy_gateway_asks_authz_as_deploy_envoy_yaml_does(
    renders: dict[str, list[dict[str, Any]]],
) -> None:
    filter_config, cluster = envoy_ext_authz()
    docs = renders["envoy-gateway"]
    policy = one(docs, "SecurityPolicy")
    ext_auth = policy["spec"]["extAuth"]
    assert ext_auth["failOpen"] is filter_config["failure_mode_allow"] is False
    assert ext_auth["timeout"] == filter_config["grpc_service"]["timeout"] == "1s"
    assert (
        ext_auth["statusOnError"] == 503
        and filter_config["status_on_error"]["code"] == "ServiceUnavailable"
    )
    assert "bodyToExtAuth" not in ext_auth and "with_request_body" not in filter_config
    (backend,) = ext_auth["grpc"]["backendRefs"]
    service = one(docs, "Service")
    assert (backend["kind"], backend["name"], backend["namespace"]) == ("Service", "authz", "authz")
    assert backend["port"] == next(
        p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc"
    )
    settings = ext_auth["grpc"]["backendSettings"]
    (health,) = cluster["health_checks"]
    active = settings["healthCheck"]["active"]
    assert active["type"] == "GRPC"
    assert active["grpc"]["service"] == health["grpc_health_check"]["service_name"]
    for ours, envoys in (
        ("timeout", "timeout"),
        ("interval", "interval"),
        ("unhealthyThreshold", "unhealthy_threshold"),
        ("healthyThreshold", "healthy_threshold"),
    ):
        assert active[ours] == health[envoys], ours
    streams = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    wanted = streams["explicit_http_config"]["http2_protocol_options"]["max_concurrent_streams"]
    assert settings["http2"]["maxConcurrentStreams"] == wanted
    # The ReferenceGrant lets exactly this policy's namespace reach exactly this Service.
    grant = one(docs, "ReferenceGrant", "authz-from-security-policy")
    assert grant["metadata"]["namespace"] == backend["namespace"]
    assert grant["spec"]["from"] == [
        {
            "group": "gateway.envoyproxy.io",
            "kind": "SecurityPolicy",
            "namespace": policy["metadata"]["namespace"],
        }
    ]
    assert grant["spec"]["to"] == [{"group": "", "kind": "Service", "name": backend["name"]}]
    # The listener settings deploy/envoy.yaml has besides ext_authz, on the same Gateway.
    traffic = one(docs, "ClientTrafficPolicy")
    assert traffic["spec"]["targetRefs"] == policy["spec"]["targetRefs"]
    assert traffic["spec"]["headers"]["withUnderscoresAction"] == "RejectRequest"
    assert traffic["spec"]["path"] == {
        "escapedSlashesAction": "UnescapeAndRedirect",
        "disableMergeSlashes": False,
    }
    assert_reached_from(docs, "envoy-gateway-system")


def assert_reached_from(docs: list[dict[str, Any]], namespace: str) -> None:
    proxy_rule = one(docs, "NetworkPolicy")["spec"]["ingress"][0]
    assert proxy_rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
    ]


def headers_authz_reads(config: Config) -> Iterator[str]:
    """The request headers a config's checks read (beyond the path, method and host Envoy
    always sends): token locations, the DPoP proof, the method overrides refused, header
    matches, and the request id of the decision log."""
    for provider in config.providers.values():
        yield from (source.name for source in provider.from_headers)
        if provider.from_cookies:
            yield "cookie"
        if provider.dpop.mode != "off":
            yield "dpop"
    yield from METHOD_OVERRIDE_HEADERS
    for rule in config.rules:
        yield from (header.name for header in rule.match.headers)
    if config.decision_log.enabled:
        yield "x-request-id"


def test_envoy_gateway_sends_every_header_authz_reads(
    renders: dict[str, list[dict[str, Any]]],
) -> None:
    docs = renders["envoy-gateway"]
    config = parse_config(yaml.safe_load(mounted_config(docs)))
    sent = set(one(docs, "SecurityPolicy")["spec"]["extAuth"]["headersToExtAuth"])
    assert set(headers_authz_reads(config)) <= sent


def render_guide(name: str, tmp_path: Path, *, patched: bool = False) -> list[dict[str, Any]]:
    """The overlay docs/<name>.md has the reader write, as written there, with the base's
    config; ``patched``: with the page's patches for a gateway of another name or place."""
    page = ROOT / "docs" / f"{name}.md"
    kustomization = documented_kustomization(page)
    if patched:
        [patches] = [block for block in yaml_blocks(page) if block.startswith("patches:")]
        kustomization += patches
    config = (DEPLOY / "kubernetes" / "base" / "authz.yaml").read_text()
    docs = kustomize(overlay_beside_checkout(tmp_path, kustomization, config))
    for doc in docs:
        validate(doc)
    check_config(tmp_path / "authz.yaml", mounted_config(docs))
    return docs


def assert_only_policies_leave_authz(docs: list[dict[str, Any]], name: str) -> None:
    """Every object but the guide's policies is authz's own, in authz (the components'
    ServiceMonitor too)."""
    elsewhere = {d["kind"] for d in docs if d["metadata"].get("namespace") != "authz"}
    assert elsewhere == POLICY_KINDS[name]


@pytest.mark.parametrize(
    ("patched", "namespace", "labels"),
    [
        (False, "istio-ingress", {"istio": "ingress"}),
        (True, "istio-system", {"istio": "ingressgateway"}),
    ],
    ids=["as-written", "another-gateway"],
)
def test_the_istio_guide_puts_the_policy_beside_the_gateway(
    tmp_path: Path, patched: bool, namespace: str, labels: dict[str, str]
) -> None:
    """An AuthorizationPolicy selects workloads of its own namespace only: in authz's it
    would select no gateway, and every request would pass unchecked."""
    docs = render_guide("istio", tmp_path, patched=patched)
    policy = one(docs, "AuthorizationPolicy")
    assert policy["metadata"]["namespace"] == namespace
    assert policy["spec"]["selector"]["matchLabels"] == labels
    assert_reached_from(docs, namespace)
    assert_only_policies_leave_authz(docs, "istio")


@pytest.mark.parametrize(
    ("patched", "namespace", "gateway"),
    [(False, "default", "eg"), (True, "shop", "shop-gateway")],
    ids=["as-written", "another-gateway"],
)
def test_the_envoy_gateway_guide_puts_the_policies_beside_the_gateway(
    tmp_path: Path, patched: bool, namespace: str, gateway: str
) -> None:
    """A policy's targetRefs name a Gateway of its own namespace: in authz's they would
    attach to nothing. The ReferenceGrant, in the Service's namespace, admits them."""
    docs = render_guide("envoy-gateway", tmp_path, patched=patched)
    target = [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway}]
    for kind in POLICY_KINDS["envoy-gateway"]:
        policy = one(docs, kind)
        assert policy["metadata"]["namespace"] == namespace, kind
        assert policy["spec"]["targetRefs"] == target, kind
    (backend,) = one(docs, "SecurityPolicy")["spec"]["extAuth"]["grpc"]["backendRefs"]
    service = one(docs, "Service")
    assert (backend["name"], backend["namespace"]) == (
        service["metadata"]["name"],
        service["metadata"]["namespace"],
    )
    grant = one(docs, "ReferenceGrant", "authz-from-security-policy")
    assert grant["metadata"]["namespace"] == backend["namespace"]
    assert [source["namespace"] for source in grant["spec"]["from"]] == [namespace]
    assert_only_policies_leave_authz(docs, "envoy-gateway")


@pytest.mark.parametrize("name", ["istio", "envoy-gateway"])
def test_a_namespace_line_would_move_the_policies_into_authz(name: str, tmp_path: Path) -> None:
    """What the guides warn of: the line kubernetes.md's overlay has moves every policy
    into authz, where it protects nothing."""
    page = ROOT / "docs" / f"{name}.md"
    kustomization = documented_kustomization(page).replace(
        "kind: Kustomization\n", "kind: Kustomization\nnamespace: authz\n", 1
    )
    config = (DEPLOY / "kubernetes" / "base" / "authz.yaml").read_text()
    docs = kustomize(overlay_beside_checkout(tmp_path, kustomization, config))
    assert {d["metadata"]["namespace"] for d in docs if d["kind"] in POLICY_KINDS[name]} == {
        "authz"
    }
