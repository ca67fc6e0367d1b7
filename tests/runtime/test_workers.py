"""workers: N processes share the ports, and metrics add up across them."""

from __future__ import annotations

import asyncio
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

from authz.runtime.workers import RestartPolicy
from dev.stack import free_port
from tests.support import (
    Signer,
    check_request,
    config_data,
    log_entries,
    provider,
    scrape,
    start_serve,
    wait_logged,
    wait_ready,
    wall_clock_claims,
)
from tests.support.load import Load, grpc_check
from tests.support.pki import Pki
from tests.support.procnet import my_ports_to, server_of

pytestmark = pytest.mark.e2e


def worker_pids(parent: int) -> set[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(parent)], capture_output=True, text=True, check=False
    ).stdout
    return {int(pid) for pid in out.split()}


def serve_workers(
    tmp_path: Path,
    jwks: dict[str, Any],
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    **extra: Any,
) -> tuple[subprocess.Popen[bytes], int, int]:
    """`authz serve` with two workers on fresh ports, once ready: (process, gRPC, HTTP).
    ``env``: variables added to ours; ``args``: more arguments for `authz serve`."""
    grpc_port, http_port = free_port(), free_port()
    config = config_data(
        listen={"grpc": f"127.0.0.1:{grpc_port}", "http": f"127.0.0.1:{http_port}"},
        providers={"corp": provider(jwks={"inline": jwks})},
        **{"workers": 2, "shutdown_grace": 2, **extra},
    )
    proc, _ = start_serve(tmp_path, config, args, env)
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
    log = tmp_path / "authz.log"
    try:
        deadline = time.monotonic() + 10
        while log.read_text().count("authz serving") < 2 and "cannot" not in log.read_text():
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.05)
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
            page = scrape(http_port)
            totals = [float(v) for v in pattern.findall(page)]
            assert sum(totals) == checks
        # Process metrics add up over the workers too (once each has refreshed them).
        rss = re.search(r"^process_resident_memory_bytes (\S+)$", page, re.M)
        assert rss is not None and float(rss.group(1)) > 2 * 20e6, page[-2000:]
        assert re.search(r'^authz_build_info\{python="[\d.]+",version="[^"]+"\} 1\.0$', page, re.M)
        assert "_created" not in page
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_every_line_is_json_and_says_which_worker_wrote_it(
    tmp_path: Path, jwks: dict[str, Any], rsa_signer: Signer
) -> None:
    proc, grpc_port, _ = serve_workers(tmp_path, jwks, decision_log={"enabled": True})
    try:
        workers = worker_pids(proc.pid)
        wait_logged(tmp_path / "authz.log", "authz serving", proc, times=2)
        token = rsa_signer.token(**wall_clock_claims())
        for _ in range(8):
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                stub = external_auth_pb2_grpc.AuthorizationStub(channel)
                stub.Check(check_request(authorization=f"Bearer {token}"), timeout=5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = (tmp_path / "authz.log").read_text()
    entries = log_entries(text)  # every line is one JSON object
    serving = {
        e["pid"]: e["worker"] for e in entries if e.get("message", "").startswith("authz ser")
    }
    assert set(serving) == workers and sorted(serving.values()) == [0, 1], text
    for entry in entries:
        if "message" in entry:  # an operational line: its process's worker, or the supervisor
            assert entry["worker"] == serving.get(entry["pid"]), entry
            assert entry["pid"] in workers or entry["pid"] == proc.pid
    decisions = [e for e in entries if "decision" in e]
    assert len(decisions) == 8 and {d["worker"] for d in decisions} <= {0, 1}
    assert all(d["decision"] == "allow" and "message" not in d for d in decisions)
    assert token.split(".")[2] not in text


@pytest.mark.parametrize(("env", "args"), [({"AUTHZ_WORKERS": "2"}, ()), ({}, ("--workers", "2"))])
def test_workers_given_outside_the_file_share_the_ports(
    tmp_path: Path,
    jwks: dict[str, Any],
    rsa_signer: Signer,
    env: dict[str, str],
    args: tuple[str, ...],
) -> None:
    """AUTHZ_WORKERS or --workers over a file that says 1 (a Deployment sizing workers to
    its CPU limit): two workers, each of which shares the ports (SO_REUSEPORT needs all of
    them to ask for it: the supervisor passes the flag on)."""
    proc, grpc_port, _ = serve_workers(tmp_path, jwks, env=env, args=args, workers=1)
    log = tmp_path / "authz.log"
    try:
        deadline = time.monotonic() + 10
        while log.read_text().count("authz serving") < 2 and "cannot" not in log.read_text():
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.05)
        assert len(worker_pids(proc.pid)) == 2
        token = rsa_signer.token(**wall_clock_claims())
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            response = stub.Check(check_request(authorization=f"Bearer {token}"), timeout=5)
            assert response.HasField("ok_response")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        text = log.read_text()
        assert "workers: 2 (given outside" in text and "cannot listen" not in text
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


def test_restart_backoff_doubles_and_a_crash_loop_gives_up() -> None:
    policy = RestartPolicy(window_s=60, max_restarts=5, first_delay_s=0.5, max_delay_s=4)
    delays = [policy.next_delay(float(t)) for t in range(6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, None]  # the sixth restart within 60 s
    # Restarts older than the window no longer count.
    assert policy.next_delay(100.0) == 0.5


def test_a_replacement_keeps_the_worker_count_the_file_no_longer_says(
    tmp_path: Path, jwks: dict[str, Any]
) -> None:
    """The file changed to workers: 1 (a restart-only setting: the running count stays),
    then a worker dies: its replacement must still share the ports. Reading workers: 1
    from the file, it bound without SO_REUSEPORT, failed, and after five restarts the
    supervisor gave up on every worker."""
    proc, _, http_port = serve_workers(tmp_path, jwks)
    try:
        workers = worker_pids(proc.pid)
        path = tmp_path / "authz.yaml"
        path.write_text(json.dumps({**json.loads(path.read_text()), "workers": 1}))
        os.kill(min(workers), signal.SIGKILL)
        replacement = new_worker(proc.pid, workers)
        wait_logged(tmp_path / "authz.log", "authz serving", proc, times=3)
        assert proc.poll() is None and replacement in worker_pids(proc.pid)
        assert "cannot serve" not in (tmp_path / "authz.log").read_text()
        wait_ready(http_port, proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_a_killed_worker_is_restarted_while_the_other_keeps_serving(
    tmp_path: Path, jwks: dict[str, Any], rsa_signer: Signer
) -> None:
    proc, grpc_port, http_port = serve_workers(tmp_path, jwks)
    try:
        workers = worker_pids(proc.pid)
        request = check_request(authorization=f"Bearer {rsa_signer.token(**wall_clock_claims())}")
        by_worker = await channels_by_worker(grpc_port, workers)
        victim, survivor = sorted(workers)
        loads = {pid: Load(grpc_check(by_worker[pid], request), concurrency=8) for pid in workers}
        async with loads[victim], loads[survivor]:
            await asyncio.sleep(0.5)
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            replacement = await asyncio.to_thread(new_worker, proc.pid, workers)
            await asyncio.sleep(0.5)
        # Not one check on the other worker's connections failed.
        survived = loads[survivor].sent_before(time.monotonic())
        assert survived["OK"] > 100 and set(survived) == {"OK"}, survived
        assert loads[victim].sent_before(killed)["OK"] > 100
        # The replacement serves: some new connection lands on it and is answered.
        await asyncio.to_thread(wait_ready, http_port, proc)
        channels = await channels_by_worker(grpc_port, {survivor, replacement}, wanted=replacement)
        response = await external_auth_pb2_grpc.AuthorizationStub(channels[replacement][0]).Check(
            request, timeout=5
        )
        assert response.HasField("ok_response")
        for group in (*by_worker.values(), *channels.values()):
            for channel in group:
                await channel.close()
        restarts = re.findall(
            r'^authz_worker_restarts_total\{worker="(\d)"\} (\S+)$', scrape(http_port), re.M
        )
        log = (tmp_path / "authz.log").read_text()
        index = re.search(rf"worker (\d) \(pid {victim}\) was killed by SIGKILL; restarting", log)
        assert index is not None, log
        assert restarts == [(index.group(1), "1.0")]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_crash_loop_stops_the_set_with_a_failure(
    tmp_path: Path, jwks: dict[str, Any], pki: Pki
) -> None:
    """A worker that cannot start again (here: its TLS key file is gone) is retried with
    backoff (shortened here) and then given up on: the set stops, exit 1."""
    key = tmp_path / "server-key.pem"
    key.write_bytes(pki.server_key.read_bytes())
    tls = {"cert_file": str(pki.server_cert), "key_file": str(key)}
    proc, log = supervise_fast(tmp_path, jwks, http_tls=tls)
    try:
        key.unlink()  # a replacement now exits at once: its config cannot be built
        os.kill(min(worker_pids(proc.pid)), signal.SIGKILL)
        assert proc.wait(timeout=60) == 1
        text = log.read_text()
        assert text.count("restarting it in") == 5, text
        assert "exited with code 2, its restart 6 within 60s: a crash loop" in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_replacement_serves_the_last_config_that_loaded(
    tmp_path: Path, jwks: dict[str, Any], rsa_signer: Signer
) -> None:
    """The config file broke after the workers loaded it (they refuse its reload and keep
    serving): a worker that dies now comes back with the config they serve."""
    proc, log = supervise_fast(tmp_path, jwks)
    try:
        path = tmp_path / "authz.yaml"
        workers = worker_pids(proc.pid)
        # A good change first: the supervisor follows the file as the workers do.
        changed = {**json.loads(path.read_text()), "expose_reasons": True}
        path.write_text(json.dumps(changed))
        environ = Path(f"/proc/{min(workers)}/environ").read_bytes().split(b"\0")
        (kept,) = [v[23:] for v in environ if v.startswith(b"AUTHZ_CONFIG_LAST_GOOD=")]
        deadline = time.monotonic() + 10
        while json.loads(Path(kept.decode()).read_text()) != changed:
            assert time.monotonic() < deadline, "the supervisor did not follow the file"
            time.sleep(0.05)
        path.write_text("rules: [")
        os.kill(min(workers), signal.SIGKILL)
        replacement = new_worker(proc.pid, workers)
        deadline = time.monotonic() + 15
        while "authz serving" not in log_of(log, replacement):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert "does not load" in log.read_text()
        assert "crash loop" not in log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def log_of(log: Path, pid: int) -> str:
    """The messages ``pid`` wrote: workers write JSON lines, the supervisor of
    supervise_fast text ones."""
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return "\n".join(line["message"] for line in lines if line["pid"] == pid)


def supervise_fast(
    tmp_path: Path, jwks: dict[str, Any], **listen: Any
) -> tuple[subprocess.Popen[bytes], Path]:
    """The supervisor with two workers and a much shorter restart backoff, once both
    workers serve: (process, the log file every process writes to)."""
    grpc_port, http_port = free_port(), free_port()
    config = config_data(
        listen={"grpc": f"127.0.0.1:{grpc_port}", "http": f"127.0.0.1:{http_port}", **listen},
        providers={"corp": provider(jwks={"inline": jwks})},
        workers=2,
        shutdown_grace=1,
    )
    path = tmp_path / "authz.yaml"
    path.write_text(json.dumps(config))
    program = f"""
import logging, sys
from authz.runtime.commands import check_config
from authz.runtime.workers import RestartPolicy, Supervisor
logging.basicConfig(level=logging.INFO)
path = {str(path)!r}
fast = lambda: RestartPolicy(first_delay_s=0.05, max_delay_s=0.2)
validate = lambda text: check_config(path, text)
text = open(path).read()
sys.exit(Supervisor(path, 2, 1.0, config_text=text, validate=validate, policy=fast).run())
"""
    log = tmp_path / "supervisor.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", program], stderr=out)
    wait_logged(log, "authz serving", proc, times=2)
    return proc, log


def new_worker(parent: int, old: set[int], timeout_s: float = 15) -> int:
    """The pid of a worker of ``parent`` not among ``old``, once it runs."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fresh = worker_pids(parent) - old
        if fresh:
            return fresh.pop()
        time.sleep(0.05)
    raise AssertionError("no replacement worker started")


async def channels_by_worker(
    port: int, workers: set[int], wanted: int | None = None, attempts: int = 60
) -> dict[int, list[grpc.aio.Channel]]:
    """Fresh connections (each channel its own), grouped by the worker the kernel gave
    them to: at least one per worker, or until one lands on ``wanted``."""
    grouped: dict[int, list[grpc.aio.Channel]] = {pid: [] for pid in workers}
    for _ in range(attempts):
        before = my_ports_to(port)
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        await asyncio.wait_for(channel.channel_ready(), 5)
        (client_port,) = my_ports_to(port) - before
        owner = server_of(client_port, port, workers)
        assert owner is not None
        grouped[owner].append(channel)
        if wanted is not None and grouped[wanted]:
            break
        if wanted is None and all(len(g) >= 2 for g in grouped.values()):
            break
    assert all(grouped.values()) if wanted is None else grouped[wanted], "the kernel never spread"
    return grouped


def test_a_sighup_while_a_worker_starts_does_not_kill_it(
    tmp_path: Path, jwks: dict[str, Any]
) -> None:
    """The supervisor passes SIGHUP to every worker; one still starting (its Python not
    yet running the reload handler) used to die of SIGHUP's default action."""
    proc, _, http_port = serve_workers(tmp_path, jwks)
    try:
        workers = worker_pids(proc.pid)
        os.kill(min(workers), signal.SIGKILL)
        until = time.monotonic() + 3  # the restart delay, then the replacement's start
        while time.monotonic() < until:
            proc.send_signal(signal.SIGHUP)
            time.sleep(0.02)
        wait_ready(http_port, proc)
        log = (tmp_path / "authz.log").read_text()
        assert "SIGHUP" not in log, log
        assert len(re.findall(r"; restarting", log)) == 1, log
        assert len(worker_pids(proc.pid)) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
