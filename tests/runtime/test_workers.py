"""workers: N processes share the ports, and metrics add up across them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc

from dev.stack import free_port
from tests.support import (
    Signer,
    check_request,
    config_data,
    provider,
    scrape,
    wait_ready,
    wall_clock_claims,
)

pytestmark = pytest.mark.e2e


def worker_pids(parent: int) -> set[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(parent)], capture_output=True, text=True, check=False
    ).stdout
    return {int(pid) for pid in out.split()}


def serve_workers(
    tmp_path: Path, jwks: dict[str, Any], **extra: Any
) -> tuple[subprocess.Popen[bytes], int, int]:
    """`authz serve` with two workers on fresh ports, once ready: (process, gRPC, HTTP)."""
    grpc_port, http_port = free_port(), free_port()
    config = config_data(
        listen={"grpc": f"127.0.0.1:{grpc_port}", "http": f"127.0.0.1:{http_port}"},
        providers={"corp": provider(jwks={"inline": jwks})},
        **{"workers": 2, "shutdown_grace": 2, **extra},
    )
    path = tmp_path / "authz.yaml"
    path.write_text(json.dumps(config))
    proc = subprocess.Popen([sys.executable, "-m", "authz", "serve", "-c", str(path)])
    wait_ready(http_port, proc)
    deadline = time.monotonic() + 10
    while len(worker_pids(proc.pid)) < 2:  # the second worker may lag the first
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.05)
    return proc, grpc_port, http_port


def test_two_workers_share_ports_and_metrics(
    tmp_path: Path, jwks: dict[str, Any], rsa_signer: Signer
) -> None:
    proc, grpc_port, http_port = serve_workers(tmp_path, jwks)
    try:
        assert len(worker_pids(proc.pid)) == 2
        token = rsa_signer.token(**wall_clock_claims())
        checks = 24
        for _ in range(checks):  # a new connection each time: the kernel spreads them
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                stub = external_auth_pb2_grpc.AuthorizationStub(channel)
                response = stub.Check(check_request(authorization=f"Bearer {token}"), timeout=5)
                assert response.HasField("ok_response")
        pattern = re.compile(r'^authz_checks_total\{[^}]*reason="allowed"[^}]*\} (\S+)$', re.M)
        for _ in range(4):  # whichever worker answers the scrape, the total is everyone's
            totals = [float(v) for v in pattern.findall(scrape(http_port))]
            assert sum(totals) == checks
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_worker_that_dies_takes_the_set_down_with_a_failure(
    tmp_path: Path, jwks: dict[str, Any]
) -> None:
    proc, _, _ = serve_workers(tmp_path, jwks, shutdown_grace=1)
    try:
        workers = worker_pids(proc.pid)
        assert len(workers) == 2
        # One worker stops on its own (even cleanly): the supervisor must not report success.
        os.kill(next(iter(workers)), signal.SIGTERM)
        assert proc.wait(timeout=20) == 1
        time.sleep(0.2)
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_workers_die_with_a_killed_supervisor(tmp_path: Path, jwks: dict[str, Any]) -> None:
    proc, _, _ = serve_workers(tmp_path, jwks)
    workers = worker_pids(proc.pid)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "workers outlived the supervisor"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
