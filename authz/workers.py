"""`workers: N`: N authz processes sharing the listening ports with SO_REUSEPORT.

The supervisor starts each worker as a fresh `authz serve --worker I` process (so each has
its own event loop, key refresh and token cache), passes SIGTERM/SIGINT on, and exits
when they have all stopped. Metrics use prometheus-client's multiprocess mode: every
worker writes its samples to files in a shared folder and whichever worker answers a
scrape adds them all up, so totals stay right whichever worker the kernel picks. (Per-
worker ports were the alternative; they would make Prometheus and probes learn every
port, and a scrape of one port would show one worker's share.)
"""

from __future__ import annotations

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


def in_worker() -> bool:
    return WORKER_ENV in os.environ


def supervise(config_path: str, workers: int, grace_s: float) -> int:
    folder = tempfile.mkdtemp(prefix="authz-metrics-")
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        for index in range(workers):
            env = {**os.environ, MULTIPROC_ENV: folder, WORKER_ENV: str(index)}
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "authz", "serve", "-c", config_path], env=env
                )
            )
        while not stopping and all(p.poll() is None for p in procs):
            time.sleep(0.2)
        if not stopping:
            # A worker died on its own: stop the rest and let the orchestrator restart us.
            stop(signal.SIGTERM, None)
        deadline = time.monotonic() + grace_s + 5
        codes = []
        for proc in procs:
            try:
                codes.append(proc.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
        return 0 if stopping and all(code == 0 for code in codes) else 1
    finally:
        shutil.rmtree(folder, ignore_errors=True)
