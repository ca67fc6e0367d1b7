"""The Kubernetes manifests, the Dockerfile and the Grafana dashboard hold together."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from authz.config import parse_config
from authz.runtime.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"


def documents() -> dict[str, Any]:
    docs: dict[str, Any] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


def test_manifests_parse_and_agree() -> None:
    docs = documents()
    assert set(docs) == {
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    }
    config = parse_config(yaml.safe_load(docs["ConfigMap"]["data"]["authz.yaml"]))
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + config.shutdown_grace
    assert pod["securityContext"]["runAsNonRoot"] is True
    ports = {p["containerPort"] for p in container["ports"]}
    assert {int(config.listen.grpc.rsplit(":")[1]), int(config.listen.http.rsplit(":")[1])} == ports
    assert docs["Service"]["spec"]["clusterIP"] == "None"  # Envoy balances across pods
    labels = docs["Deployment"]["spec"]["selector"]["matchLabels"]
    for kind in ("Service", "PodDisruptionBudget"):
        selector = docs[kind]["spec"]["selector"]
        assert selector.get("matchLabels", selector) == labels


def test_dockerfile_runs_as_a_non_root_user_on_a_slim_base() -> None:
    text = (ROOT / "Dockerfile").read_text()
    final = text.rsplit("FROM ", 1)[1]
    assert final.startswith("python:3.11-slim")
    assert re.search(r"^USER 10001$", final, re.M)
    assert "build-essential" not in final and "gcc" not in final


def test_dashboard_queries_name_real_metrics() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "authz-dashboard.json").read_text())
    exported = {sample_family.name for sample_family in Metrics().registry.collect()}
    names = {n + suffix for n in exported for suffix in ("", "_total", "_bucket")}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for metric in re.findall(r"\bauthz_[a-z_]+", target["expr"]):
                assert metric in names, (panel["title"], metric)


def example_identity_headers() -> tuple[str, ...]:
    """Every header deploy/authz.yaml lets authz set."""
    from authz.config import load_config
    from authz.core.authorizer import identity_headers
    from authz.runtime.build import build_provider
    from authz.runtime.build_policy import build_policy
    from tests.support import FixedKeys, fixed_clock

    config = load_config(ROOT / "deploy" / "authz.yaml")
    providers = [
        build_provider(name, p, config, FixedKeys(None), fixed_clock(), None)
        for name, p in config.providers.items()
    ]
    return identity_headers(build_policy(config), providers)


def test_every_proxy_example_covers_the_example_identity_headers() -> None:
    headers = example_identity_headers()
    nginx = (ROOT / "deploy" / "nginx.conf").read_text().lower()
    traefik = yaml.safe_load((ROOT / "deploy" / "traefik-dynamic.yml").read_text())
    regex = re.compile(
        traefik["http"]["middlewares"]["authz"]["forwardAuth"]["authResponseHeadersRegex"]
    )
    envoy = yaml.safe_load((ROOT / "deploy" / "envoy-http.yaml").read_text())
    hcm = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    service = hcm["typed_config"]["http_filters"][0]["typed_config"]["http_service"]
    patterns = service["authorization_response"]["allowed_upstream_headers"]["patterns"]
    before, copied, after = caddyfile()
    for header in headers:
        assert re.search(rf"proxy_set_header {re.escape(header)} \$", nginx), header
        assert regex.match(header), header
        assert any(
            header == p.get("exact") or header.startswith(p.get("prefix", "\0")) for p in patterns
        ), header
        assert header in before and header in copied, header
    assert copied <= set(headers)  # Caddy 2.6 to 2.9 send their placeholder for any other
    # Every character but letters, digits and "-" that a header name may hold (RFC 9110
    # tchar): upstreams that turn names into variables read X_User_Id, X.User.Id... as
    # X-User-Id.
    assert {f"*{char}*" for char in "!#$%&'*+.^_`|~"} <= before
    assert not after & set(headers)
    assert regex.match("Authorization")
    for header in headers:  # Traefik deletes the other spellings of each name too
        for char in "!#$%&'*+.^_`|~":
            assert regex.match(header.replace("-", char).title()), (header, char)
    assert not regex.match("X-Userid") and not regex.match("Xauthorization")


def caddyfile() -> tuple[set[str], set[str], set[str]]:
    """deploy/Caddyfile's headers deleted before forward_auth, copied from authz's answer,
    and deleted after it, lower-cased."""
    text = (ROOT / "deploy" / "Caddyfile").read_text().lower()
    head, block, tail = re.split(r"^\s*forward_auth \S+ \{$(.*?)^\s*\}$", text, flags=re.M | re.S)
    deleted = re.compile(r'^\s*request_header "?-(\S+?)"?$', re.M)
    copy = re.search(r"^\s*copy_headers (.+)$", block, re.M)
    assert copy is not None
    return set(deleted.findall(head)), set(copy.group(1).split()), set(deleted.findall(tail))


def test_http_proxy_examples_drop_every_token_header() -> None:
    """nginx, Traefik and Caddy cannot remove a header authz names; their configs must drop
    each header a provider reads its token from (unless the provider forwards it)."""
    from authz.config import load_config

    config = load_config(ROOT / "deploy" / "authz.yaml")
    nginx = (ROOT / "deploy" / "nginx.conf").read_text().lower()
    traefik = yaml.safe_load((ROOT / "deploy" / "traefik-dynamic.yml").read_text())
    regex = re.compile(
        traefik["http"]["middlewares"]["authz"]["forwardAuth"]["authResponseHeadersRegex"]
    )
    names = {
        source.name
        for provider in config.providers.values()
        if not provider.forward
        for source in provider.from_headers
    }
    assert names
    _, _, caddy_after = caddyfile()
    for name in names:
        assert f'proxy_set_header {name} "";' in nginx, name
        assert regex.match(name), name
        assert name in caddy_after, name


def test_the_ingress_nginx_example_covers_the_example_identity_headers() -> None:
    """docs/ingress-nginx.md's auth-response-headers name every identity header of
    deploy/authz.yaml and every token header, and tests/e2e/ingress-nginx.conf holds the
    lines the controller's template writes for them, in order."""
    from authz.config import load_config

    page = (ROOT / "docs" / "ingress-nginx.md").read_text()
    blocks = re.findall(r"^```yaml\n(.*?)^```", page, re.M | re.S)
    [ingress] = [doc for doc in map(yaml.safe_load, blocks) if doc.get("kind") == "Ingress"]
    annotations = ingress["metadata"]["annotations"]
    names = [
        n.strip()
        for n in annotations["nginx.ingress.kubernetes.io/auth-response-headers"].split(",")
    ]
    config = load_config(ROOT / "deploy" / "authz.yaml")
    tokens = {
        source.name
        for provider in config.providers.values()
        if not provider.forward
        for source in provider.from_headers
    }
    assert {n.lower() for n in names} == set(example_identity_headers()) | tokens | {"dpop"}
    conf = (ROOT / "tests" / "e2e" / "ingress-nginx.conf").read_text()
    rendered = [
        line
        for i, name in enumerate(names)
        for line in (
            f"auth_request_set $authHeader{i} $upstream_http_{name.lower().replace('-', '_')};",
            f"proxy_set_header '{name}' $authHeader{i};",
        )
    ]
    written = [line.strip() for line in conf.splitlines() if "$authHeader" in line]
    assert written == rendered
    assert annotations["nginx.ingress.kubernetes.io/auth-url"].endswith(":9002/check")
