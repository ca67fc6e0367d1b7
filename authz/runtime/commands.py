"""What the CLI's commands do: serve, and check-config, which runs serve's own build."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from authz.config import Config, ConfigError, Overrides, load_config, read_config_text
from authz.core.errors import AuthzError
from authz.runtime.app import App, raise_descriptor_limit
from authz.runtime.build import build, build_listeners
from authz.runtime.lint import Finding
from authz.runtime.logs import configure_logging
from authz.runtime.offline import Offline
from authz.runtime.workers import (
    Supervisor,
    in_worker,
    last_good_config,
    restarted_worker,
    worker_index,
)

log = logging.getLogger("authz")


def check_config(path: str | Path, text: str | None = None) -> tuple[Config, tuple[Finding, ...]]:
    """Load and build ``path`` (or ``text`` as if it were that file) exactly as serve would
    (every key source, the authorizer, the TLS material), without fetching or listening.
    ConfigError when it cannot serve; the warnings otherwise. Both name the file, line and
    column of the key they are about."""
    config = load_config(path, text)
    offline = Offline()
    built = build(config, events=offline, fetcher_for=offline, observe=None)
    build_listeners(config)
    return config, built.warnings


def serve(path: str, overrides: Overrides | None = None) -> int:
    """Run until SIGTERM or SIGINT; with workers > 1, supervise that many processes.
    ``overrides``: settings given outside the file (``--workers``, AUTHZ_WORKERS)."""
    overrides = overrides or Overrides()
    # Until the reload handler is installed, a SIGHUP (a reload asked for early) must not
    # end the process, as its default action would.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    fell_back = ""
    if in_worker():
        text, fell_back = _worker_config_text(path)
    else:
        text = read_config_text(path)
    loaded, _ = check_config(path, text)
    config = overrides.apply(loaded)
    configure_logging(config.log_format, config.log_level, worker_index())
    if fell_back:
        log.error(
            "%s does not load (%s): serving the last config the supervisor saw load",
            path,
            fell_back,
        )
    if config.workers != loaded.workers and not in_worker():
        log.info(
            "workers: %d (given outside %s, which says %d)", config.workers, path, loaded.workers
        )
    if config.workers > 1 and not in_worker():
        return Supervisor(
            path,
            config.workers,
            config.shutdown_grace,
            config_text=text,
            validate=lambda candidate: check_config(path, candidate)[0],
            # Each worker keeps the supervisor's count, whatever the file says when it is
            # (re)started: it shares the ports only with workers > 1, and a replacement
            # reading a file changed to workers: 1 could not bind beside the others.
            worker_args=("--workers", str(config.workers)),
        ).run()
    # uvloop measured faster under grpc.aio here (an empty Check: ~190 against ~230 µs of
    # CPU per call); plain asyncio remains the fallback where uvloop is not installed.
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_serve(config, path, text, overrides))
    return uvloop.run(_serve(config, path, text, overrides))


def _worker_config_text(path: str) -> tuple[str, str]:
    """A worker's config text: the file's, or, when the file no longer loads, the last one
    the supervisor saw load, which the other workers still serve (they refused the broken
    file's reload); then also why the file did not load. Without the fallback a
    restarted worker would crash on the broken file until the supervisor gave up."""
    try:
        text = read_config_text(path)
        check_config(path, text)
        return text, ""
    except ConfigError as exc:
        fallback = last_good_config()
        if fallback is None:
            raise
        return fallback, str(exc).splitlines()[0]


async def _serve(config: Config, path: str, text: str, overrides: Overrides) -> int:
    raise_descriptor_limit()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = App(config, config_path=path, config_text=text, overrides=overrides)
    replacing = restarted_worker()
    if replacing is not None:
        app.metrics.worker_restarts.labels(replacing).inc()
    # SIGHUP, and any change to the file, reload the config without a restart. One that
    # arrives before the app has started does nothing (and no longer ends the process).
    loop.add_signal_handler(signal.SIGHUP, app.request_reload)
    try:
        await app.start()
    except (AuthzError, OSError) as exc:  # e.g. a port taken: a log line, as the others are
        log.error("cannot serve: %s", exc)
        return 2
    await stop.wait()
    log.info(
        "shutting down: draining for %gs, closing within %gs",
        config.shutdown_drain,
        config.shutdown_grace,
    )
    loop.remove_signal_handler(signal.SIGHUP)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # removing restored the default: exit
    await app.stop()
    return 0
