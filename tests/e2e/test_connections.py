"""Hostile connections on every port of a running `authz serve`: thousands of idle ones
and slowloris ones, one port at a time, while a client holding its connections keeps
checking; every hostile connection is closed within the timeout and authz's descriptors
stay bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from dev.stack import free_port
from tests.support import (
    Signer,
    check_request,
    config_data,
    provider,
    wait_ready,
    wall_clock_claims,
)
from tests.support.floods import open_connections, still_open
from tests.support.load import Load, grpc_check, http_get
from tests.support.procnet import held_by

pytestmark = pytest.mark.e2e

HEADER_TIMEOUT_S = 1.0
MAX_CONNECTIONS = 200
FLOOD = 2000
SLOWLORIS = 50


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.fixture()
def authz(tmp_path: Path, jwks: dict[str, Any]) -> Iterator[tuple[int, dict[str, int]]]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    ports = {name: free_port() for name in ("grpc", "ops", "http_authz")}
    config = config_data(
        listen={"grpc": f"127.0.0.1:{ports['grpc']}", "http": f"127.0.0.1:{ports['ops']}"},
        http_authz={"listen": f"127.0.0.1:{ports['http_authz']}", "original_request": "envoy"},
        providers={"corp": provider(jwks={"inline": jwks})},
        limits={
            "http_header_timeout": HEADER_TIMEOUT_S,
            "http_idle_timeout": 3,
            "max_http_connections": MAX_CONNECTIONS,
            "max_grpc_connections": MAX_CONNECTIONS,
        },
    )
    path = tmp_path / "authz.yaml"
    path.write_text(json.dumps(config))
    proc = subprocess.Popen([sys.executable, "-m", "authz", "serve", "-c", str(path)])
    try:
        wait_ready(ports["ops"], proc)
        yield proc.pid, ports
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("target", ["grpc", "ops", "http_authz"])
async def test_floods_of_idle_and_slow_connections_are_shed(
    authz: tuple[int, dict[str, int]], rsa_signer: Signer, target: str
) -> None:
    pid, ports = authz
    token = rsa_signer.token(**wall_clock_claims())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{ports['grpc']}")
    await channel.channel_ready()
    bearer = {"authorization": f"Bearer {token}"}
    # One connection per HTTP control client (a pool of one), opened before the flood.
    ops_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
    authz_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
    controls = [
        Load(grpc_check([channel], check_request(**bearer)), concurrency=1),
        Load(http_get(ops_session, f"http://127.0.0.1:{ports['ops']}/readyz", {}), 1),
        Load(http_get(authz_session, f"http://127.0.0.1:{ports['http_authz']}/x", bearer), 1),
    ]
    try:
        for control in controls:
            await control.__aenter__()
        await asyncio.sleep(0.3)
        flooded = time.monotonic()
        idle = await asyncio.to_thread(open_connections, ports[target], FLOOD)
        slow = await asyncio.to_thread(open_connections, ports[target], SLOWLORIS)
        peak = descriptors(pid)
        # The slowloris ones dribble a byte every 0.2 s; the idle ones send nothing.
        deadline = flooded + HEADER_TIMEOUT_S + 3
        while time.monotonic() < deadline and still_open(idle + slow):
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.send(b"G")
            await asyncio.sleep(0.2)
            peak = max(peak, descriptors(pid))
        left = still_open(idle + slow)
        held = held_by(pid, ports[target])
        for sock in idle + slow:
            sock.close()
        await asyncio.sleep(0.3)
    finally:
        for control in controls:
            await control.stop()
        await ops_session.close()
        await authz_session.close()
        await channel.close()
    assert len(idle) > MAX_CONNECTIONS  # the flood did reach the port
    # authz holds none of them (only the control client's own connection, if any)...
    assert held <= 1, f"authz still holds {held} connections on the flooded port"
    # ...and the client sees every one closed. (Not all: a connection the kernel dropped
    # from a full accept queue looks open to its client until it sends something.)
    assert left < len(idle) // 10, f"{left} hostile connections seem open"
    # Bounded: the flooded listener's maximum, the others' few, and the process's own.
    assert peak < MAX_CONNECTIONS + 100, peak
    for control in controls:
        outcomes = control.sent_before(time.monotonic())
        assert outcomes["OK"] > 10 and set(outcomes) == {"OK"}, (target, outcomes)
