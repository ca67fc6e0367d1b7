"""`workers: N`: N authz processes sharing the listening ports with SO_REUSEPORT, and the
supervisor that keeps N of them running.

The supervisor starts each worker as a fresh `authz serve` process (so each has its own
event loop, key refresh and token cache) and passes SIGTERM/SIGINT/SIGHUP on. A worker
that exits on its own (a crash, an OOM kill) is logged with its index, pid and exit code
or signal, and started again after a backoff while the others keep serving; the
replacement counts itself in authz_worker_restarts_total. A crash loop, a sixth restart
of one worker within 60 s, is a fault a restart will not fix: the supervisor stops the
set and exits 1 for the service manager to see. After a requested shutdown it exits 0
when every worker stopped cleanly. Workers die with the supervisor (PR_SET_PDEATHSIG), so
a killed supervisor leaves no orphans serving an old config on the shared ports.

Metrics use prometheus-client's multiprocess mode: every worker writes its samples to
files in a shared folder and whichever worker answers a scrape adds them all up, so
totals stay right whichever worker the kernel picks, and a dead worker's counts stay in
them (its gauges are dropped). Per-worker ports were the alternative; they would make
Prometheus and probes learn every port, and a scrape of one port would show one worker's
share.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from prometheus_client.multiprocess import mark_process_dead

from authz.config import read_config_text
from authz.support.files import file_signature

log = logging.getLogger(__name__)
# After the grace, what a worker may still take to stop: flushing its spans to a collector
# (at most 6 s, authz/runtime/otel.py) and a little more.
STOP_MARGIN_S = 8.0

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
WORKER_ENV = "AUTHZ_WORKER"
RESTARTED_ENV = "AUTHZ_WORKER_RESTARTED"  # set for a worker replacing one that exited
LAST_GOOD_ENV = "AUTHZ_CONFIG_LAST_GOOD"  # a file holding the last config text that loaded
CONFIG_POLL_S = 1.0
_PR_SET_PDEATHSIG = 1
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def in_worker() -> bool:
    return WORKER_ENV in os.environ


def worker_index() -> int | None:
    """This worker's index among the supervisor's; None outside a supervised worker."""
    index = os.environ.get(WORKER_ENV)
    return int(index) if index is not None else None


def restarted_worker() -> str | None:
    """This worker's index, when it replaces one that exited unexpectedly."""
    return os.environ.get(WORKER_ENV) if RESTARTED_ENV in os.environ else None


def last_good_config() -> str | None:
    """The text of the last config the supervisor saw load, for a worker whose config file
    does not load; None outside a supervised worker."""
    path = os.environ.get(LAST_GOOD_ENV)
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError:
        return None


def _die_with_parent(parent: int) -> None:
    """Runs in the child before exec: ask the kernel for SIGTERM when the parent dies, and
    ignore SIGHUP (kept across exec) until the worker's reload handler replaces it: the
    supervisor passes SIGHUP on to every worker, including one still starting."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


@dataclass
class RestartPolicy:
    """Backoff between restarts of one worker, doubling with each restart in the window;
    None once a restart would be one too many within it."""

    window_s: float = 60.0
    max_restarts: int = 5
    first_delay_s: float = 0.5
    max_delay_s: float = 10.0
    _recent: deque[float] = field(default_factory=deque)

    def next_delay(self, now: float) -> float | None:
        while self._recent and now - self._recent[0] >= self.window_s:
            self._recent.popleft()
        if len(self._recent) >= self.max_restarts:
            return None
        delay: float = min(self.first_delay_s * 2.0 ** len(self._recent), self.max_delay_s)
        self._recent.append(now + delay)
        return delay

    @property
    def recent(self) -> int:
        return len(self._recent)


@dataclass
class _Slot:
    index: int
    policy: RestartPolicy
    proc: subprocess.Popen[bytes] | None = None
    start_at: float | None = None  # while no process runs: when to start the next


class Supervisor:
    def __init__(
        self,
        config_path: str,
        workers: int,
        grace_s: float,
        *,
        config_text: str,
        validate: Callable[[str], object],
        policy: Callable[[], RestartPolicy] = RestartPolicy,
        monotonic: Callable[[], float] = time.monotonic,
        worker_args: Sequence[str] = (),
    ) -> None:
        """``config_text``: the config as loaded; ``validate``: raises unless a config text
        would serve; ``worker_args``: more arguments for each worker's ``authz serve``. The
        supervisor follows the file as the workers' reloads do, and keeps the last text that
        loaded for workers that start when the file does not."""
        self._worker_args = tuple(worker_args)
        self._config_path = config_path
        self._config_text = config_text
        self._validate = validate
        self._config_seen = file_signature(config_path)
        self._config_checked = monotonic()
        self._grace_s = grace_s
        self._monotonic = monotonic
        self._slots = [_Slot(index, policy()) for index in range(workers)]
        self._shutdown: list[int] = []  # the signal that asked for a shutdown, once one did
        self._folder = ""
        self._parent = os.getpid()

    def run(self) -> int:
        self._folder = tempfile.mkdtemp(prefix="authz-workers-")
        self._keep_last_good()
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._pass_on)  # each worker reloads its own config
        try:
            for slot in self._slots:
                self._start(slot, restarted=False)
            gave_up = self._supervise()
            if gave_up:
                self._stop(signal.SIGTERM, None)
            clean = self._wait_all()
            return 0 if not gave_up and clean else 1
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
            shutil.rmtree(self._folder, ignore_errors=True)

    def _running(self) -> list[subprocess.Popen[bytes]]:
        return [s.proc for s in self._slots if s.proc is not None and s.proc.poll() is None]

    def _stop(self, signum: int, _: FrameType | None) -> None:
        if not self._shutdown:
            self._shutdown.append(signum)
        self._pass_on(signum, None)

    def _pass_on(self, signum: int, _: FrameType | None) -> None:
        for proc in self._running():
            proc.send_signal(signum)

    def _start(self, slot: _Slot, *, restarted: bool) -> None:
        env = {
            **os.environ,
            MULTIPROC_ENV: self._folder,
            WORKER_ENV: str(slot.index),
            LAST_GOOD_ENV: self._last_good_path(),
        }
        if restarted:
            env[RESTARTED_ENV] = "1"
        parent = self._parent
        # A stop signal while the worker starts waits until it can receive the signal.
        # (Unblocked, a pending signal's handler passes it to this worker as well.)
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            if self._shutdown:  # asked for before the signals were blocked: start nothing
                return
            slot.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "authz",
                    "serve",
                    "-c",
                    self._config_path,
                    *self._worker_args,
                ],
                env=env,
                preexec_fn=lambda: _die_with_parent(parent),
            )
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        slot.start_at = None

    def _supervise(self) -> bool:
        """Until a shutdown is asked for: restart workers that exit. True on a crash loop."""
        while not self._shutdown:
            now = self._monotonic()
            if now - self._config_checked >= CONFIG_POLL_S:
                self._config_checked = now
                self._follow_config()
            for slot in self._slots:
                if self._shutdown:  # a worker ending now may be stopping for it
                    return False
                if slot.proc is not None and slot.proc.poll() is not None:
                    code, pid = slot.proc.returncode, slot.proc.pid
                    slot.proc = None
                    # Its gauges leave the totals; its counts stay.
                    mark_process_dead(pid, self._folder)  # type: ignore[no-untyped-call]
                    delay = slot.policy.next_delay(now)
                    if delay is None:
                        log.error(
                            "worker %d (pid %d) %s, its restart %d within %gs: a crash loop; "
                            "stopping every worker",
                            slot.index,
                            pid,
                            describe_exit(code),
                            slot.policy.max_restarts + 1,
                            slot.policy.window_s,
                        )
                        return True
                    log.error(
                        "worker %d (pid %d) %s; restarting it in %gs (restart %d within %gs)",
                        slot.index,
                        pid,
                        describe_exit(code),
                        delay,
                        slot.policy.recent,
                        slot.policy.window_s,
                    )
                    slot.start_at = now + delay
                if slot.proc is None and slot.start_at is not None and now >= slot.start_at:
                    self._start(slot, restarted=True)
            time.sleep(0.05)
        return False

    def _last_good_path(self) -> str:
        return os.path.join(self._folder, "last-good-config.yaml")

    def _keep_last_good(self) -> None:
        path = self._last_good_path()
        with open(path + ".tmp", "w", encoding="utf-8") as out:
            out.write(self._config_text)
        os.replace(path + ".tmp", path)

    def _follow_config(self) -> None:
        seen = file_signature(self._config_path)
        if seen == self._config_seen:
            return
        self._config_seen = seen
        try:
            text = read_config_text(self._config_path)
            self._validate(text)
        except Exception:  # the workers log why; they keep serving the last good one
            return
        if text != self._config_text:
            self._config_text = text
            self._keep_last_good()

    def _wait_all(self) -> bool:
        """Wait for every worker to stop (killing any that outlasts the grace); whether
        each stopped cleanly."""
        deadline = self._monotonic() + self._grace_s + STOP_MARGIN_S
        clean = True
        for slot in self._slots:
            if slot.proc is None:
                continue
            try:
                code = slot.proc.wait(timeout=max(0.1, deadline - self._monotonic()))
            except subprocess.TimeoutExpired:
                log.error(
                    "worker %d (pid %d) outlasted the grace: killed", slot.index, slot.proc.pid
                )
                slot.proc.kill()
                code = slot.proc.wait()
            # A worker killed by the stop signal before its handler was set stopped too.
            if code not in (0, -signal.SIGTERM, -signal.SIGINT):
                log.error("worker %d (pid %d) %s", slot.index, slot.proc.pid, describe_exit(code))
                clean = False
        return clean
