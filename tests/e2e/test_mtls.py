"""End to end: Envoy talks to authz over mutual TLS (deploy/envoy-mtls-cluster.yaml)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dev.stack import DEV_AUDIENCE, DEV_ISSUER, ROOT, Ports, Stack, dev_config
from tests.support import Signer, call, wall_clock_claims
from tests.support.pki import Pki, make_pki

pytestmark = pytest.mark.e2e


def mtls_cluster(pki: Pki, authz_port: int) -> dict[str, Any]:
    cluster: dict[str, Any] = yaml.safe_load(
        (ROOT / "deploy" / "envoy-mtls-cluster.yaml").read_text()
    )
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    endpoint["address"]["socket_address"]["port_value"] = authz_port
    tls = cluster["transport_socket"]["typed_config"]["common_tls_context"]
    tls["tls_certificates"][0]["certificate_chain"]["filename"] = str(pki.client_cert)
    tls["tls_certificates"][0]["private_key"]["filename"] = str(pki.client_key)
    tls["validation_context"]["trusted_ca"]["filename"] = str(pki.ca)
    return cluster


def start(workdir: Path, pki: Pki, rsa_signer: Signer, client_ca: Path) -> Stack:
    workdir.mkdir(parents=True, exist_ok=True)
    jwks = workdir / "jwks.json"
    jwks.write_text(json.dumps({"keys": [rsa_signer.jwk]}))
    ports = Ports()
    config = dev_config(jwks, ports)
    config["listen"]["grpc_tls"] = {
        "cert_file": str(pki.server_cert),
        "key_file": str(pki.server_key),
        "client_ca_file": str(client_ca),
    }

    def use_mtls(envoy: dict[str, Any]) -> None:
        clusters = envoy["static_resources"]["clusters"]
        index = next(i for i, c in enumerate(clusters) if c["name"] == "ext_authz")
        clusters[index] = mtls_cluster(pki, ports.authz_grpc)

    stack = Stack(workdir, config, ports, envoy_patch=use_mtls)
    stack.start()
    return stack


@pytest.fixture
def stack(tmp_path: Path, pki: Pki, rsa_signer: Signer) -> Iterator[Stack]:
    running = start(tmp_path, pki, rsa_signer, pki.ca)
    yield running
    running.stop()


def test_checks_flow_over_mutual_tls(stack: Stack, rsa_signer: Signer) -> None:
    minted = rsa_signer.token(iss=DEV_ISSUER, aud=DEV_AUDIENCE, **wall_clock_claims())
    status, _, echo = call(stack, "/hello", authorization=f"Bearer {minted}")
    assert status == 200
    assert echo["headers"]["x-user-id"] == "alice"
    assert call(stack, "/hello")[0] == 401


def test_envoy_without_a_trusted_certificate_gets_no_answer(
    tmp_path: Path, pki: Pki, rsa_signer: Signer
) -> None:
    # authz trusts another CA than the one that signed Envoy's client certificate: the
    # handshake fails, Envoy cannot ask, and failure_mode_allow: false answers 503.
    other = make_pki(tmp_path / "other")
    running = start(tmp_path / "stack", pki, rsa_signer, other.ca)
    try:
        minted = rsa_signer.token(iss=DEV_ISSUER, aud=DEV_AUDIENCE, **wall_clock_claims())
        assert call(running, "/hello", authorization=f"Bearer {minted}")[0] == 503
    finally:
        running.stop()
