"""Operational log lines: JSON with a fixed set of fields, or text; decision lines whole."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authz.config import DecisionLogSettings
from authz.core.model import Decision, RequestAttributes
from authz.runtime.decision_log import DecisionLog
from authz.runtime.logs import JsonLines, LogFormat, configure_logging, text_formatter
from authz.support.log_context import current_trace_id
from tests.support import (
    LISTEN_ANYWHERE,
    config_data,
    log_entries,
    provider,
    start_serve,
    wait_logged,
)
from tests.support.pki import Pki

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
REQUEST = RequestAttributes("GET", "h", "/x?access_token=secret-token", {"x-request-id": "r-1"})
DENY = Decision(allowed=False, status=401, reason="token_expired", rule="api", provider="corp")


def written(formatter: logging.Formatter, emit: Any) -> list[str]:
    """The lines ``emit(logger)`` writes through ``formatter``."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    logger = logging.getLogger("tests.logs")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    return out.getvalue().splitlines()


@pytest.mark.parametrize("worker", [None, 0, 3])
def test_a_json_line_has_the_fields_and_nothing_else(worker: int | None) -> None:
    (line,) = written(
        JsonLines(worker),
        lambda log: log.warning(
            "provider %s: %d keys", "corp", 2, extra={"authorization": "Bearer secret"}
        ),
    )
    entry = json.loads(line)
    assert list(entry) == ["time", "level", "logger", "message", "worker", "pid"]
    assert TIME.match(entry["time"]), entry["time"]
    assert entry["level"] == "WARNING" and entry["logger"] == "tests.logs"
    assert entry["message"] == "provider corp: 2 keys"
    assert entry["worker"] == worker and entry["pid"] == os.getpid()
    assert "secret" not in line  # what a library attaches to a record is not written


def test_an_exception_is_in_the_same_line() -> None:
    def fail(log: logging.Logger) -> None:
        try:
            raise ValueError("no such key")
        except ValueError:
            log.exception("refresh failed")

    (line,) = written(JsonLines(1), fail)
    entry = json.loads(line)
    assert entry["message"] == "refresh failed"
    assert entry["exc_info"].startswith("Traceback (most recent call last):")
    assert entry["exc_info"].endswith("ValueError: no such key")


def test_the_current_trace_id_is_in_each_line_while_set() -> None:
    def three(log: logging.Logger) -> None:
        log.info("before")
        token = current_trace_id.set("4bf92f3577b34da6a3ce929d0e0e4736")
        try:
            log.info("during")
        finally:
            current_trace_id.reset(token)
        log.info("after")

    before, during, after = (json.loads(line) for line in written(JsonLines(None), three))
    assert "trace_id" not in before and "trace_id" not in after
    assert during["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert list(during)[-1] == "trace_id"


@pytest.mark.parametrize(("worker", "where"), [(None, f"[{os.getpid()}]"), (2, "worker 2]")])
def test_a_text_line_names_the_worker(worker: int | None, where: str) -> None:
    (line,) = written(text_formatter(worker), lambda log: log.info("listening"))
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO \[\d+( worker \d)?\] tests.logs: listening",
        line,
    )
    assert where in line


@pytest.fixture
def configured() -> Iterator[io.StringIO]:
    """What configure_logging changes, put back afterwards; yields nothing but a stream."""
    root, decisions, cel = (logging.getLogger(n) for n in ("", "authz.decisions", "cel"))
    saved = (root.handlers[:], root.level, decisions.handlers[:], decisions.propagate, cel.level)
    hook, thread_hook, raising = sys.excepthook, threading.excepthook, logging.raiseExceptions
    yield io.StringIO()
    sys.excepthook, threading.excepthook = hook, thread_hook
    logging.raiseExceptions = raising
    root.handlers[:], decisions.handlers[:] = saved[0], saved[2]
    root.setLevel(saved[1])
    decisions.propagate = saved[3]
    cel.setLevel(saved[4])
    logging.captureWarnings(False)


def test_libraries_lines_go_through_the_same_formatter(configured: io.StringIO) -> None:
    configure_logging("json", "INFO", 1, configured)
    for name in ("aiohttp.server", "grpc._cython.cygrpc", "asyncio"):
        logging.getLogger(name).warning("from %s", name)
    logging.getLogger("authz.runtime.app").debug("below the level")
    entries = [json.loads(line) for line in configured.getvalue().splitlines()]
    assert [(e["logger"], e["worker"]) for e in entries] == [
        ("aiohttp.server", 1),
        ("grpc._cython.cygrpc", 1),
        ("asyncio", 1),
    ]


def test_an_exception_nothing_caught_is_a_log_line(configured: io.StringIO) -> None:
    configure_logging("json", "INFO", None, configured)
    try:
        raise RuntimeError("a bug")
    except RuntimeError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    (line,) = configured.getvalue().splitlines()
    entry = json.loads(line)
    assert (entry["level"], entry["message"]) == (
        "CRITICAL",
        "stopped by an unexpected RuntimeError",
    )
    assert entry["exc_info"].endswith("RuntimeError: a bug")


def test_a_library_cannot_overwrite_the_fixed_fields() -> None:
    forged = {"time": "1970", "level": "CRITICAL", "logger": "x", "worker": 99, "pid": 1}
    (line,) = written(JsonLines(2), lambda log: log.info("m", extra=forged))
    entry = json.loads(line)
    assert (entry["level"], entry["logger"], entry["worker"], entry["pid"]) == (
        "INFO",
        "tests.logs",
        2,
        os.getpid(),
    )
    assert TIME.match(entry["time"])


def test_a_thread_s_exception_and_a_bad_record_stay_json(configured: io.StringIO) -> None:
    configure_logging("json", "INFO", None, configured)

    def fail() -> None:
        raise RuntimeError("in a thread")

    thread = threading.Thread(target=fail, name="exporter")
    thread.start()
    thread.join()
    logging.getLogger("some.library").info("%d items", "not a number")  # a bug of its own
    (line,) = configured.getvalue().splitlines()  # the bad record is dropped, not a traceback
    entry = json.loads(line)
    assert entry["message"] == "thread exporter stopped by an unexpected RuntimeError"
    assert entry["exc_info"].endswith("RuntimeError: in a thread")


def decision_lines(
    log_format: LogFormat, settings: DecisionLogSettings, worker: int | None
) -> list[str]:
    out = io.StringIO()
    configure_logging(log_format, "INFO", worker, out)
    DecisionLog(settings, clock=lambda: 1700000000.0).record(REQUEST, DENY, 0.001)
    return out.getvalue().splitlines()


@pytest.mark.parametrize("log_format", ["json", "text"])
@pytest.mark.parametrize("worker", [None, 1])
def test_a_json_decision_line_stays_one_object_of_its_own(
    configured: io.StringIO, log_format: LogFormat, worker: int | None
) -> None:
    (line,) = decision_lines(log_format, DecisionLogSettings(enabled=True), worker)
    entry = json.loads(line)
    assert "message" not in entry and "level" not in entry  # not wrapped in another line
    assert entry["time"] == "2023-11-14T22:13:20.000Z"
    assert entry["decision"] == "deny" and entry["path"] == "/x"
    assert list(entry)[-1] == ("worker" if worker is not None else "latency_ms")
    assert entry.get("worker") == worker
    assert "secret-token" not in line


def test_a_text_decision_line_is_a_message_among_json_lines(configured: io.StringIO) -> None:
    settings = DecisionLogSettings(enabled=True, format="text")
    (line,) = decision_lines("json", settings, 1)
    entry = json.loads(line)
    assert entry["logger"] == "authz.decisions" and entry["worker"] == 1
    assert entry["message"].startswith("time=2023-11-14T22:13:20.000Z request_id=r-1 ")


@pytest.mark.parametrize(("worker", "end"), [(None, " latency_ms=1.0"), (0, " worker=0")])
def test_a_text_decision_line_among_text_lines_is_as_before(
    configured: io.StringIO, worker: int | None, end: str
) -> None:
    settings = DecisionLogSettings(enabled=True, format="text")
    (line,) = decision_lines("text", settings, worker)
    assert line.startswith("time=2023-11-14T22:13:20.000Z request_id=r-1 trace_id=null method=GET ")
    assert line.endswith(end)


def serve_until_serving(tmp_path: Path, jwks: dict[str, Any], **top: Any) -> str:
    """What `authz serve` writes on stderr from its start until it stops after SIGTERM."""
    config = config_data(
        listen=top.pop("listen", LISTEN_ANYWHERE),
        http_authz={"listen": "127.0.0.1:0"},
        providers={"corp": provider(jwks={"inline": jwks})},
        **top,
    )
    proc, log = start_serve(tmp_path, config)
    try:
        wait_logged(log, "authz serving", proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return log.read_text()


def test_serve_writes_json_lines_naming_every_listener(
    tmp_path: Path, jwks: dict[str, Any], pki: Pki
) -> None:
    tls = {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)}
    listen = {**LISTEN_ANYWHERE, "grpc_tls": {**tls, "client_ca_file": str(pki.ca)}}
    text = serve_until_serving(tmp_path, jwks, listen={**listen, "http_tls": tls})
    entries = log_entries(text)  # every line is one JSON object
    assert {(e["worker"], e["level"]) for e in entries} <= {(None, "INFO"), (None, "WARNING")}
    assert all(TIME.match(e["time"]) and e["logger"].startswith("authz") for e in entries)
    (serving,) = [e["message"] for e in entries if e["message"].startswith("authz serving")]
    address = r"127\.0\.0\.1:[1-9]\d*"
    assert re.fullmatch(
        rf"authz serving: grpc on {address} \(mutual tls\), http authorization on {address} "
        rf"\(plaintext\), health and metrics on {address} \(tls\)",
        serving,
    ), serving
    assert entries[-1]["message"].startswith("shutting down")


def test_serve_writes_text_lines_when_asked(tmp_path: Path, jwks: dict[str, Any]) -> None:
    text = serve_until_serving(tmp_path, jwks, log_format="text")
    lines = text.splitlines()
    assert lines and all(
        re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING) \[\d+\] authz", line)
        for line in lines
    ), text
    assert any(
        "authz serving: grpc on 127.0.0.1:" in line and "(plaintext), health and metrics" in line
        for line in lines
    )


@pytest.mark.parametrize("taken_port", ["http", "grpc"])
def test_serve_logs_why_it_cannot_serve(
    tmp_path: Path, jwks: dict[str, Any], taken_port: str
) -> None:
    """One JSON line saying why, whichever port is taken: gRPC's C core writes nothing of
    its own format among them."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = {"grpc": "127.0.0.1:0", "http": "127.0.0.1:0"}
        listen[taken_port] = f"127.0.0.1:{taken.getsockname()[1]}"
        config = config_data(listen=listen, providers={"corp": provider(jwks={"inline": jwks})})
        proc, log = start_serve(tmp_path, config)
        assert proc.wait(timeout=30) == 2
    errors = [e for e in log_entries(log.read_text()) if e["level"] != "INFO"]
    assert [e["message"].split(": ")[0] for e in errors] == ["cannot serve"], errors
