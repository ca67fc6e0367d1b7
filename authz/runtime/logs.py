"""Operational logs on stderr: one JSON object per line (``log_format: json``, the
default) or human lines (``text``), each saying which worker wrote it.

A JSON line holds exactly these fields, in this order: ``time`` (RFC 3339, UTC, with
milliseconds), ``level``, ``logger``, ``message``, ``worker``, ``pid``, then ``trace_id``
while a trace is current (authz/support/log_context.py) and ``exc_info`` (the traceback,
in the same line) when there is an exception. ``worker`` is the worker's index, or null in
a process that is no supervised worker: the supervisor, or the only process with
``workers: 1``. Fields a library attaches to its records (aiohttp's access logger attaches
request headers) are dropped: a JSON line never says more than its text line would.

Every logger, authz's and the libraries' (aiohttp, grpc, asyncio, Python warnings),
reaches the root logger's one handler, and so does an exception nothing caught. The
decision logger has its own: its lines are records of their own (see DecisionLines).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import threading
from types import TracebackType
from typing import Any, Literal, TextIO

from pythonjsonlogger.json import JsonFormatter

from authz.runtime.decision_log import JSON_LINE, LOGGER, rfc3339
from authz.support.log_context import current_trace_id

LogFormat = Literal["json", "text"]

FIELDS = ("time", "level", "logger", "message", "worker", "pid", "trace_id", "exc_info")


class JsonLines(JsonFormatter):
    """One JSON object per record, with FIELDS only."""

    def __init__(self, worker: int | None) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(process)d",
            rename_fields={
                "asctime": "time",
                "levelname": "level",
                "name": "logger",
                "process": "pid",
            },
            static_fields={"worker": worker},
            json_serializer=functools.partial(json.dumps, separators=(",", ":")),
        )
        self._worker = worker

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return rfc3339(record.created)

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        # The fixed fields are the record's own, whatever a library's extra= or dict
        # message said about time, level, logger, worker or pid.
        log_data["time"] = self.formatTime(record)
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["worker"] = self._worker
        log_data["pid"] = record.process

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        log_data["trace_id"] = current_trace_id.get()
        return {
            name: log_data[name]
            for name in FIELDS
            if name in log_data and (name != "trace_id" or log_data[name] is not None)
        }


def text_formatter(worker: int | None) -> logging.Formatter:
    """The human format: the pid, and the worker's index in a supervised worker."""
    where = "%(process)d" if worker is None else f"%(process)d worker {worker}"
    return logging.Formatter(f"%(asctime)s %(levelname)s [{where}] %(name)s: %(message)s")


class DecisionLines(logging.Formatter):
    """Decision lines (authz/runtime/decision_log.py) are whole records of their own. A
    JSON one is written as it is, one object with its own fields, never as the message of
    another (which would encode it twice); a text one (``key=value``) too, unless
    operational logs are JSON: then it is the message of a JSON line, so that every line
    is one JSON object. In a supervised worker either kind gets the worker's index."""

    def __init__(self, worker: int | None, operational: JsonLines | None) -> None:
        super().__init__()
        self._worker = worker
        self._operational = operational

    def format(self, record: logging.LogRecord) -> str:
        line = record.getMessage()
        if getattr(record, JSON_LINE, False):
            # A compact JSON object: the worker goes in before its closing brace.
            return line if self._worker is None else f'{line[:-1]},"worker":{self._worker}}}'
        if self._operational is not None:
            return self._operational.format(record)
        return line if self._worker is None else f"{line} worker={self._worker}"


def configure_logging(
    log_format: LogFormat, level: str, worker: int | None, stream: TextIO | None = None
) -> None:
    """Send every log line to ``stream`` (stderr) in ``log_format``, from ``level`` up;
    ``worker``: this process's index among the supervisor's workers, None outside one."""
    stream = stream if stream is not None else sys.stderr
    operational: logging.Formatter
    operational = JsonLines(worker) if log_format == "json" else text_formatter(worker)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(operational)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # a warning is a log line too, not lines of plain text
    # A record that fails to format (a library's bad %-arguments) is dropped, not written
    # as a multi-line "--- Logging error ---" traceback among the JSON lines.
    logging.raiseExceptions = False
    sys.excepthook = log_uncaught
    threading.excepthook = log_thread_uncaught
    # The CEL library logs each failed function call; a strict comparison between different
    # types (cel_strict) fails that way by design, and authz logs the failed condition.
    logging.getLogger("cel").setLevel(logging.ERROR)
    decisions = logging.getLogger(LOGGER)
    own = logging.StreamHandler(stream)
    own.setFormatter(
        DecisionLines(worker, operational if isinstance(operational, JsonLines) else None)
    )
    decisions.addHandler(own)
    decisions.propagate = False


def log_thread_uncaught(args: threading.ExceptHookArgs) -> None:
    """An exception that ended a thread (an exporter's, a library's), as one log line."""
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("authz").error(
        "thread %s stopped by an unexpected %s",
        name,
        args.exc_type.__name__,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def log_uncaught(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    """An exception nothing caught, which ends the process, as one log line."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, traceback)
        return
    logging.getLogger("authz").critical(
        "stopped by an unexpected %s", kind.__name__, exc_info=(kind, error, traceback)
    )
