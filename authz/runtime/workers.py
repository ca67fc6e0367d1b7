"""`workers: N`: N authz processes sharing the listening ports with SO_REUSEPORT.

The supervisor starts each worker as a fresh `authz serve` process (so each has its own
event loop, key refresh and token cache), passes SIGTERM/SIGINT on, and exits when they
have all stopped: 0 after a requested shutdown in which every worker stopped cleanly, 1
when a worker ended on its own (so a service manager restarts the whole set). Workers
die with the supervisor (PR_SET_PDEATHSIG), so a killed supervisor leaves no orphans
serving an old config on the shared ports.

Metrics use prometheus-client's multiprocess mode: every worker writes its samples to
files in a shared folder and whichever worker answers a scrape adds them all up, so
totals stay right whichever worker the kernel picks. (Per-worker ports were the
alternative; they would make Prometheus and probes learn every port, and a scrape of one
port would show one worker's share.)
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from types import FrameType

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
WORKER_ENV = "AUTHZ_WORKER"
_PR_SET_PDEATHSIG = 1
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def in_worker() -> bool:
    return WORKER_ENV in os.environ


def _die_with_parent(parent: int) -> None:
    """Runs in the child before exec: ask the kernel for SIGTERM when the parent dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


def supervise(config_path: str, workers: int, grace_s: float) -> int:
    folder = tempfile.mkdtemp(prefix="authz-metrics-")
    procs: list[subprocess.Popen[bytes]] = []
    shutdown: list[int] = []  # the signal that asked for a shutdown, once one did

    def stop(signum: int, _: FrameType | None) -> None:
        if not shutdown:
            shutdown.append(signum)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    def reload(signum: int, _: FrameType | None) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)  # each worker reloads its own config
    parent = os.getpid()
    try:
        # A stop signal during start-up waits until every started worker can receive it.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        for index in range(workers):
            env = {**os.environ, MULTIPROC_ENV: folder, WORKER_ENV: str(index)}
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "authz", "serve", "-c", config_path],
                    env=env,
                    preexec_fn=lambda: _die_with_parent(parent),
                )
            )
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        while not shutdown and all(p.poll() is None for p in procs):
            time.sleep(0.2)
        crashed = not shutdown
        if crashed:
            # A worker ended on its own: stop the rest and report a failure.
            stop(signal.SIGTERM, None)
        deadline = time.monotonic() + grace_s + 5
        clean = True
        for proc in procs:
            try:
                code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            # A worker killed by the stop signal before its handler was set stopped too.
            clean = clean and code in (0, -signal.SIGTERM, -signal.SIGINT)
        return 0 if not crashed and clean else 1
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        shutil.rmtree(folder, ignore_errors=True)
