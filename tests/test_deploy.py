"""The Dockerfile, the Grafana dashboard and the proxy examples hold together (the
Kubernetes manifests: tests/test_kubernetes.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from authz.runtime.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent


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


def test_every_proxy_example_covers_the_example_identity_headers() -> None:
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
    headers = identity_headers(build_policy(config), providers)
    nginx = (ROOT / "deploy" / "nginx.conf").read_text().lower()
    traefik = yaml.safe_load((ROOT / "deploy" / "traefik-dynamic.yml").read_text())
    regex = re.compile(
        traefik["http"]["middlewares"]["authz"]["forwardAuth"]["authResponseHeadersRegex"]
    )
    envoy = yaml.safe_load((ROOT / "deploy" / "envoy-http.yaml").read_text())
    hcm = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    service = hcm["typed_config"]["http_filters"][0]["typed_config"]["http_service"]
    patterns = service["authorization_response"]["allowed_upstream_headers"]["patterns"]
    for header in headers:
        assert re.search(rf"proxy_set_header {re.escape(header)} \$", nginx), header
        assert regex.match(header), header
        assert any(
            header == p.get("exact") or header.startswith(p.get("prefix", "\0")) for p in patterns
        ), header
    assert regex.match("Authorization")


def test_http_proxy_examples_drop_every_token_header() -> None:
    """nginx and Traefik cannot remove a header authz names; their configs must drop each
    header a provider reads its token from (unless the provider forwards it)."""
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
    for name in names:
        assert f'proxy_set_header {name} "";' in nginx, name
        assert regex.match(name), name
