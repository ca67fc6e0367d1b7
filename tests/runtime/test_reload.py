"""Hot reload: the config file changes, or SIGHUP arrives; nothing in flight fails."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc

from authz.config import Overrides, load_config
from authz.runtime.app import App
from dev.stack import free_port
from tests.support import (
    LISTEN_ANYWHERE,
    Signer,
    check_request,
    config_data,
    provider,
    scrape,
    wait_for,
    wait_ready,
    wall_clock_claims,
)


def write(path: Path, jwks: dict[str, Any], header: str, http_port: int = 0, **top: Any) -> str:
    """Write the config (claims in ``header``) to ``path``; its text."""
    corp = provider(jwks={"inline": jwks}, claim_to_headers=[{"header": header, "claim": "sub"}])
    config = config_data(
        listen={"grpc": "127.0.0.1:0", "http": f"127.0.0.1:{http_port}"},
        providers={"corp": corp},
        **top,
    )
    text = json.dumps(config)
    path.write_text(text)
    return text


def user_header(response: Any) -> str:
    return next(h.header.key for h in response.ok_response.headers)


@contextlib.asynccontextmanager
async def serving(
    path: Path, jwks: dict[str, Any], signer: Signer, watch_interval_s: float = 3600
) -> AsyncIterator[tuple[App, Any, Any]]:
    """An App serving ``path`` (first written with x-user-a), a stub, and an allowed request."""
    text = write(path, jwks, "x-user-a")
    app = App(
        load_config(path, text),
        config_path=path,
        watch_interval_s=watch_interval_s,
        config_text=text,
    )
    async with app, grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        request = check_request(authorization=f"Bearer {signer.token(**wall_clock_claims())}")
        yield app, stub, request


async def test_reload_under_load_answers_every_check(
    tmp_path: Path, jwks: dict[str, Any], rsa_signer: Signer
) -> None:
    path = tmp_path / "authz.yaml"
    async with serving(path, jwks, rsa_signer) as (app, stub, request):
        seen: list[str] = []
        done = asyncio.Event()

        async def load() -> None:
            while not done.is_set():
                response = await stub.Check(request)
                assert response.WhichOneof("http_response") == "ok_response"
                seen.append(user_header(response))

        workers = [asyncio.create_task(load()) for _ in range(8)]
        reloads = 0
        for i in range(20):
            write(path, jwks, "x-user-b" if i % 2 == 0 else "x-user-a")
            assert await app.reload()
            reloads += 1
            await asyncio.sleep(0.02)
        done.set()
        await asyncio.gather(*workers)
        assert reloads == 20 and len(seen) > 100
        assert {"x-user-a", "x-user-b"} <= set(seen)  # both configs answered
        text = app.metrics.render().decode()
        assert 'authz_config_reload_total{result="ok"} 20.0' in text


async def test_a_bad_file_keeps_the_running_config(
    tmp_path: Path, jwks: dict[str, Any], rsa_signer: Signer, caplog: Any
) -> None:
    path = tmp_path / "authz.yaml"
    async with serving(path, jwks, rsa_signer) as (app, stub, request):
        for broken in (
            "rules: [\n",
            '{"rules": [{"requierz": {}}]}',
            json.dumps(config_data()),  # a provider whose inline JWKS holds no key
        ):
            path.write_text(broken)
            assert await app.reload() is False
            assert user_header(await stub.Check(request)) == "x-user-a"
        assert "keeping the running config" in caplog.text
        assert 'authz_config_reload_total{result="failed"} 3.0' in app.metrics.render().decode()


async def test_the_file_is_watched(tmp_path: Path, jwks: dict[str, Any], rsa_signer: Signer):
    path = tmp_path / "authz.yaml"
    async with serving(path, jwks, rsa_signer, watch_interval_s=0.05) as (_, stub, request):
        write(path, jwks, "x-user-b")
        async with asyncio.timeout(5):
            while user_header(await stub.Check(request)) != "x-user-b":
                await asyncio.sleep(0.05)


def test_sighup_reloads_a_running_server(tmp_path: Path, jwks: dict[str, Any]) -> None:
    path, http_port = tmp_path / "authz.yaml", free_port()
    write(path, jwks, "x-user-a", http_port)
    proc = subprocess.Popen([sys.executable, "-m", "authz", "serve", "-c", str(path)])
    try:
        wait_ready(http_port, proc)
        write(path, jwks, "x-user-b", http_port)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while 'authz_config_reload_total{result="ok"} 1.0' not in scrape(http_port):
            assert time.monotonic() < deadline, "no reload after SIGHUP"
            time.sleep(0.05)
        time.sleep(2.5)  # the file watcher (every 2 s) met the change as well: no reload
        assert 'authz_config_reload_total{result="ok"} 1.0' in scrape(http_port)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_one_change_is_one_reload_whichever_trigger_comes_first(
    tmp_path: Path, jwks: dict[str, Any], rsa_signer: Signer
) -> None:
    """A rewrite followed by SIGHUP used to reload twice (the watcher fired as well), and
    the reload metrics counted both."""
    path = tmp_path / "authz.yaml"
    async with serving(path, jwks, rsa_signer, watch_interval_s=0.05) as (app, stub, request):
        write(path, jwks, "x-user-b")
        app.request_reload()  # SIGHUP first; the watcher meets the change next
        await wait_for(lambda: user_header_is(app, "x-user-b"))
        await asyncio.sleep(0.3)
        write(path, jwks, "x-user-c")  # the watcher first; SIGHUP next
        await wait_for(lambda: user_header_is(app, "x-user-c"))
        assert await app.reload() is True  # the running config already is this file
        await asyncio.sleep(0.3)
        assert user_header(await stub.Check(request)) == "x-user-c"
        page = app.metrics.render().decode()
        assert 'authz_config_reload_total{result="ok"} 2.0' in page
        assert 'result="failed"' not in page


def user_header_is(app: App, header: str) -> bool:
    return app.config.providers["corp"].claim_to_headers[0].header == header


async def test_a_non_utf8_file_is_a_failed_reload(tmp_path: Path, jwks: dict[str, Any]) -> None:
    path = tmp_path / "authz.yaml"
    write(path, jwks, "x-user-a")
    app = App(load_config(path), config_path=path, watch_interval_s=0.05)
    async with app:
        path.write_bytes(b"rules: \xff\xfe\n")
        assert await app.reload() is False
        await asyncio.sleep(0.2)  # the watcher meets the same file, fails, and goes on
        write(path, jwks, "x-user-b")
        await wait_for(
            lambda: app.config.providers["corp"].claim_to_headers[0].header == "x-user-b"
        )


def remote_config(path: Path, uri: str, header: str) -> None:
    corp = provider(
        jwks={"remote": {"uri": uri, "refresh_interval": 300}},
        claim_to_headers=[{"header": header, "claim": "sub"}],
    )
    path.write_text(json.dumps(config_data(listen=LISTEN_ANYWHERE, providers={"corp": corp})))


async def test_reloads_never_leave_a_provider_without_keys(
    tmp_path: Path, idp: Any, rsa_signer: Signer
) -> None:
    idp.serve({"keys": [rsa_signer.jwk]})
    path = tmp_path / "authz.yaml"
    remote_config(path, idp.uri, "x-user-a")
    app = App(load_config(path), config_path=path, watch_interval_s=3600, reload_keys_wait_s=0.5)
    async with app, grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        await asyncio.wait_for(app.sources["corp"].wait_loaded(5), 6)
        source = app.sources["corp"]
        request = check_request(authorization=f"Bearer {rsa_signer.token(**wall_clock_claims())}")
        # Only a header changes: the provider keeps its source and its keys.
        remote_config(path, idp.uri, "x-user-b")
        assert await app.reload()
        assert app.sources["corp"] is source
        assert user_header(await stub.Check(request)) == "x-user-b"
        # The keys move to an IdP that is down: the reload fails, the old config stays.
        remote_config(path, f"http://127.0.0.1:{free_port()}/certs", "x-user-c")
        assert await app.reload() is False
        assert app.ready and user_header(await stub.Check(request)) == "x-user-b"


async def test_limits_the_listeners_were_built_with_keep_their_running_values(
    tmp_path: Path, jwks: dict[str, Any], rsa_signer: Signer, caplog: Any
) -> None:
    """gRPC's receive limit is made from max_request_bytes when the server starts: a
    reload raising only the handler's threshold would let a request between the two end
    in RESOURCE_EXHAUSTED, which Envoy's failure_mode_allow turns into an allow."""
    path = tmp_path / "authz.yaml"
    async with serving(path, jwks, rsa_signer) as (app, stub, request):
        bigger = {"max_request_bytes": 64 << 20, "http_idle_timeout": 5}
        write(path, jwks, "x-user-b", limits=bigger, log_format="text")
        assert await app.reload() is True
        assert user_header(await stub.Check(request)) == "x-user-b"  # the rest applied
        assert app.config.limits.max_request_bytes == 1 << 20
        assert app.config.limits.http_idle_timeout == 60
        assert "limits.max_request_bytes changes need a restart" in caplog.text
        assert "limits.http_idle_timeout changes need a restart" in caplog.text
        assert "log_format changes need a restart" in caplog.text
        big = check_request()
        big.attributes.request.http.body = "a" * (2 << 20)  # over the running limit
        response = await stub.Check(big)
        assert response.denied_response.status.code == 413


async def test_workers_given_outside_the_file_survive_a_reload(
    tmp_path: Path, jwks: dict[str, Any], rsa_signer: Signer, caplog: Any
) -> None:
    """AUTHZ_WORKERS (or --workers) wins over the file's workers on every reload, and the
    file's own value is no change that needs a restart."""
    path = tmp_path / "authz.yaml"
    text = write(path, jwks, "x-user-a")
    overrides = Overrides(workers=3)
    app = App(
        overrides.apply(load_config(path, text)),
        config_path=path,
        watch_interval_s=3600,
        config_text=text,
        overrides=overrides,
    )
    async with app:
        write(path, jwks, "x-user-b")
        assert await app.reload() is True
        assert app.config.workers == 3
        assert app.config.providers["corp"].claim_to_headers[0].header == "x-user-b"
        assert "workers changes need a restart" not in caplog.text
