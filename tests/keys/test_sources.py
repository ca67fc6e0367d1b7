"""Key sources against a real local identity provider and real files."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from authz.keys.fetch import AiohttpFetcher
from authz.keys.jwks import KeySet, parse_jwks
from authz.keys.remote import RemoteKeySource, RemoteSettings
from authz.keys.sources import FileKeySource, StaticKeySource
from dev.stack import free_port
from tests.support import FakeClock, FakeIdp, Signer, wait_for

ALGS = ("RS256", "ES256")


class Events:
    def __init__(self) -> None:
        self.sets: list[tuple[str, int | None]] = []
        self.kids: list[str] = []

    async def key_set(self, provider: str, result: str, keys: KeySet | None) -> None:
        self.sets.append((result, keys.size if keys else None))

    def unknown_kid(self, provider: str, result: str) -> None:
        self.kids.append(result)

    def results(self) -> list[str]:
        return [result for result, _ in self.sets]


def remote(
    uri: str | None,
    session: aiohttp.ClientSession,
    events: Events,
    *,
    issuer: str = "https://idp.test",
    clock: FakeClock | None = None,
    discovery: str | None = None,
    refresh_interval: float = 0.05,
    min_refresh_interval: float = 0.01,
    max_refresh_interval: float = 1,
    unknown_kid_wait: float = 0.5,
    timeout: float = 1,
    **loop: Any,
) -> RemoteKeySource:
    settings = RemoteSettings(
        uri=uri,
        discovery=discovery,
        refresh_interval_s=refresh_interval,
        min_refresh_interval_s=min_refresh_interval,
        max_refresh_interval_s=max_refresh_interval,
        unknown_kid_wait_s=unknown_kid_wait,
        max_keys=100,
        allow_insecure=False,
    )
    fetcher = AiohttpFetcher(session, timeout_s=timeout, connect_timeout_s=1, max_bytes=1 << 20)
    return RemoteKeySource(
        "corp",
        ALGS,
        events,
        settings,
        issuer=issuer,
        fetcher=fetcher,
        monotonic=clock or FakeClock(1000.0),
        **loop,
    )


def file_source(path: Path, events: Events, reload_interval_s: float = 5.0) -> FileKeySource:
    return FileKeySource(
        path.stem, ALGS, events, path, reload_interval_s=reload_interval_s, max_keys=100
    )


class Stepper:
    """A ``sleep`` for a refresh loop that the test advances one refresh at a time: each
    call reports the delay the loop asked for, then waits to be released."""

    def __init__(self) -> None:
        self.delays: asyncio.Queue[float] = asyncio.Queue()
        self._go = asyncio.Event()

    async def sleep(self, delay: float) -> None:
        self._go.clear()
        await self.delays.put(delay)
        await self._go.wait()

    async def next_delay(self) -> float:
        """Let the loop run its next refresh; the delay it then schedules."""
        self._go.set()
        async with asyncio.timeout(5):
            return await self.delays.get()


def kids(source: Any) -> set[str]:
    keys = source.keys
    return set(keys.by_kid) if keys else set()


async def test_static_source(rsa_signer: Signer) -> None:
    events = Events()
    source = StaticKeySource(
        "s", ALGS, events, parse_jwks({"keys": [rsa_signer.jwk]}, ALGS, max_keys=100)
    )
    await source.start()
    assert kids(source) == {rsa_signer.kid}
    assert events.sets == [("ok", 1)]
    assert await source.refetch_for_unknown_kid() is False


def write_atomically(path: Path, document: Any) -> None:
    """Write a sibling and rename it over the target, as Kubernetes volume updates do."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(document if isinstance(document, str) else json.dumps(document))
    os.replace(tmp, path)


async def test_file_source_reloads_on_change_and_keeps_last_good(
    tmp_path: Path, rsa_signer: Signer, other_rsa_signer: Signer
) -> None:
    path = tmp_path / "jwks.json"
    write_atomically(path, {"keys": [rsa_signer.jwk]})
    events = Events()
    source = file_source(path, events, 0.02)
    await source.start()
    try:
        assert kids(source) == {rsa_signer.kid}
        write_atomically(path, {"keys": [rsa_signer.jwk, other_rsa_signer.jwk]})
        await wait_for(lambda: kids(source) == {rsa_signer.kid, other_rsa_signer.kid})
        good = source.keys
        write_atomically(path, "{ truncated")
        await wait_for(lambda: "invalid" in events.results())
        path.unlink()
        await wait_for(lambda: "read_error" in events.results())
        assert source.keys is good
        write_atomically(path, {"keys": [other_rsa_signer.jwk]})
        await wait_for(lambda: kids(source) == {other_rsa_signer.kid})
    finally:
        await source.stop()


async def test_missing_file_at_start(tmp_path: Path) -> None:
    events = Events()
    source = file_source(tmp_path / "nope.json", events)
    await source.start()
    await source.stop()
    assert source.keys is None
    assert events.sets == [("read_error", None)]


async def test_a_file_that_is_a_device_or_too_large_is_a_read_error(tmp_path: Path) -> None:
    """Never read unbounded: /dev/zero would fill memory, a FIFO never answer."""
    import os

    os.symlink("/dev/zero", tmp_path / "zero.json")
    (tmp_path / "big.json").write_bytes(b" " * (1 << 20) + b"{}")
    os.mkfifo(tmp_path / "fifo.json")
    for name in ("zero.json", "big.json", "fifo.json"):
        events = Events()
        source = file_source(tmp_path / name, events)
        await source.start()
        await source.stop()
        assert (source.keys, events.sets) == (None, [("read_error", None)]), name


async def test_remote_rotation_and_outages_keep_the_last_good_set(
    idp: FakeIdp, session, rsa_signer: Signer, other_rsa_signer: Signer
) -> None:
    events = Events()
    idp.serve({"keys": [rsa_signer.jwk]})
    source = remote(idp.uri, session, events)
    await source.start()
    try:
        await wait_for(lambda: kids(source) == {rsa_signer.kid})
        idp.serve({"keys": [rsa_signer.jwk, other_rsa_signer.jwk]})  # rotation starts
        await wait_for(lambda: len(kids(source)) == 2)
        idp.serve({"keys": [other_rsa_signer.jwk]})  # the old key is retired
        await wait_for(lambda: kids(source) == {other_rsa_signer.kid})
        good = source.keys
        for body, status, result in (
            (b"<html>oops</html>", 200, "invalid"),
            (["not", "an", "object"], 200, "invalid"),
            ({"keys": []}, 200, "invalid"),
            ({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, 200, "invalid"),
            (b"x" * (2 << 20), 200, "http_error"),
            ({"error": "down"}, 500, "http_error"),
        ):
            idp.serve(body, status)
            seen = len(events.sets)
            await wait_for(lambda s=seen: len(events.sets) > s + 1)
            assert events.sets[-1] == (result, 1), body
            assert source.keys is good
    finally:
        await source.stop()


async def test_remote_connection_refused_and_timeouts(idp: FakeIdp, session, rsa_signer: Signer):
    events = Events()
    down = remote(f"http://127.0.0.1:{free_port()}/certs", session, events)
    assert await down.refresh() is False
    idp.serve({"keys": [rsa_signer.jwk]})
    slow = remote(idp.uri, session, events, timeout=0.1)
    assert await slow.refresh() is True
    idp.delay_s = 0.5
    assert await slow.refresh() is False
    assert kids(slow) == {rsa_signer.kid}
    assert events.results() == ["network_error", "ok", "timeout"]


async def test_backoff_keeps_retrying_until_the_idp_recovers(
    idp: FakeIdp, session, rsa_signer: Signer
) -> None:
    events = Events()
    idp.serve({"error": "down"}, status=503)
    source = remote(idp.uri, session, events, refresh_interval=0.1, max_refresh_interval=1)
    await source.start()
    try:
        await wait_for(lambda: idp.hits >= 3)
        idp.serve({"keys": [rsa_signer.jwk]})
        await wait_for(lambda: source.keys is not None)
    finally:
        await source.stop()
    assert events.results()[:3] == ["http_error"] * 3


async def test_etag_revalidation_and_cache_control(idp: FakeIdp, session, rsa_signer: Signer):
    events = Events()
    idp.serve({"keys": [rsa_signer.jwk]})
    idp.etag = '"k1"'
    idp.headers = {"cache-control": "max-age=600"}
    stepper = Stepper()
    source = remote(
        idp.uri,
        session,
        events,
        refresh_interval=2,
        min_refresh_interval=1,
        max_refresh_interval=5,
        sleep=stepper.sleep,
    )
    await source.start()
    try:
        assert await stepper.next_delay() == 5  # max-age clamped to max_refresh_interval
        first = source.keys
        assert await stepper.next_delay() == 2  # this 304 carries no max-age
        assert idp.conditional_hits == 1
        assert source.keys is first
        assert events.results() == ["ok", "not_modified"]
        idp.headers = {"cache-control": "max-age=0"}
        idp.etag = None
        assert await stepper.next_delay() == 1  # clamped up to min_refresh_interval
        idp.headers = {}
        assert await stepper.next_delay() == 2  # no max-age: refresh_interval
    finally:
        await source.stop()


async def test_unknown_kid_refetch_is_single_flight_and_rate_limited(
    idp: FakeIdp, session, rsa_signer: Signer, other_rsa_signer: Signer
) -> None:
    events = Events()
    clock = FakeClock(1000.0)
    idp.serve({"keys": [rsa_signer.jwk]})
    source = remote(
        idp.uri,
        session,
        events,
        clock=clock,
        refresh_interval=300,
        min_refresh_interval=30,
        max_refresh_interval=3600,
        # Not the bound under test: a full garbage collection during the flood of 1000
        # waiters has taken it past the default 0.5 s, and every one got wait_timeout.
        unknown_kid_wait=5,
    )
    assert await source.refresh()
    idp.serve({"keys": [rsa_signer.jwk, other_rsa_signer.jwk]})
    idp.delay_s = 0.05
    hits = idp.hits

    flood = await asyncio.gather(*(source.refetch_for_unknown_kid() for _ in range(1000)))
    assert all(flood)
    assert idp.hits == hits + 1
    assert other_rsa_signer.kid in kids(source)

    assert await source.refetch_for_unknown_kid() is False  # within min_refresh_interval
    assert idp.hits == hits + 1
    clock.now += 31
    assert await source.refetch_for_unknown_kid() is True
    assert idp.hits == hits + 2
    assert events.kids.count("ok") == 2 and events.kids.count("rate_limited") == 1


async def test_unknown_kid_wait_is_bounded(idp: FakeIdp, session, rsa_signer: Signer) -> None:
    events = Events()
    idp.serve({"keys": [rsa_signer.jwk]})
    idp.delay_s = 0.5
    source = remote(idp.uri, session, events, unknown_kid_wait=0.05)
    assert await source.refetch_for_unknown_kid() is False
    assert events.kids == ["wait_timeout"]
    await wait_for(lambda: source.keys is not None)  # the fetch itself carried on
    await wait_for(lambda: "ok" in events.kids)
    await source.stop()


async def test_discovery(idp: FakeIdp, session, rsa_signer: Signer) -> None:
    events = Events()
    idp.serve({"keys": [rsa_signer.jwk]})
    idp.discovery = {"issuer": idp.issuer, "jwks_uri": idp.uri}
    source = remote(None, session, events, issuer=idp.issuer, discovery=idp.issuer)
    assert await source.refresh()
    assert kids(source) == {rsa_signer.kid}

    # A document for another issuer, or an insecure jwks_uri, is refused; the last
    # discovered jwks_uri and key set stay in use.
    idp.discovery = {"issuer": "https://evil.test", "jwks_uri": idp.uri}
    assert await source.refresh()
    idp.discovery = {"issuer": idp.issuer, "jwks_uri": "http://evil.test/certs"}
    assert await source.refresh()
    assert kids(source) == {rsa_signer.kid}

    fresh = remote(None, session, events, issuer=idp.issuer, discovery=idp.issuer)
    assert await fresh.refresh() is False
    assert fresh.keys is None
    idp.discovery = None
    assert await fresh.refresh() is False
    assert events.results() == ["ok", "ok", "ok", "invalid", "http_error"]


async def test_discovery_for_another_issuer_is_not_followed(
    idp: FakeIdp, session, rsa_signer: Signer, other_rsa_signer: Signer
) -> None:
    events = Events()
    idp.serve({"keys": [rsa_signer.jwk]})
    idp.other_body = json.dumps({"keys": [other_rsa_signer.jwk]}).encode()
    idp.discovery = {"issuer": idp.issuer, "jwks_uri": idp.uri}
    source = remote(None, session, events, issuer=idp.issuer, discovery=idp.issuer)
    assert await source.refresh()
    # A document naming another issuer points at other keys: they must never be loaded.
    idp.discovery = {"issuer": "https://evil.test", "jwks_uri": idp.url("/other-certs")}
    assert await source.refresh()
    assert kids(source) == {rsa_signer.kid}
    # The honest document moving jwks_uri is followed.
    idp.discovery = {"issuer": idp.issuer, "jwks_uri": idp.url("/other-certs")}
    assert await source.refresh()
    assert kids(source) == {other_rsa_signer.kid}


async def test_etag_of_a_failed_response_is_not_reused(
    idp: FakeIdp, session, rsa_signer: Signer
) -> None:
    events = Events()
    idp.serve({"keys": [rsa_signer.jwk]})
    idp.etag = '"good"'
    source = remote(idp.uri, session, events)
    assert await source.refresh()
    idp.serve({"keys": []})  # broken set, new validator
    idp.etag = '"broken"'
    assert await source.refresh() is False
    await source.refresh()
    assert idp.last_if_none_match == '"good"'


async def test_no_conditional_request_without_a_key_set(
    idp: FakeIdp, session, rsa_signer: Signer
) -> None:
    events = Events()
    idp.serve(b"not json")
    idp.etag = '"v1"'
    source = remote(idp.uri, session, events)
    assert await source.refresh() is False
    idp.serve({"keys": [rsa_signer.jwk]})
    assert await source.refresh()  # a 304 here would leave authz with nothing to keep
    assert idp.last_if_none_match is None
    assert events.results() == ["invalid", "ok"]


async def test_backoff_doubles_up_to_the_refresh_interval(idp: FakeIdp, session) -> None:
    events = Events()
    idp.serve({"error": "down"}, status=503)
    delays: list[float] = []

    async def record(delay: float) -> None:
        delays.append(delay)
        await asyncio.sleep(0)

    source = remote(idp.uri, session, events, refresh_interval=10, sleep=record, jitter=lambda: 1.0)
    await source.start()
    await wait_for(lambda: len(delays) >= 7)
    await source.stop()
    assert delays[:7] == [1, 2, 4, 8, 10, 10, 10]


async def test_kubernetes_symlink_swap_is_reloaded(
    tmp_path: Path, rsa_signer: Signer, other_rsa_signer: Signer
) -> None:
    # A mounted secret: jwks.json -> ..data/jwks.json, ..data -> ..2026_v1; an update writes
    # ..2026_v2 and renames a new ..data symlink over the old one.
    def version(name: str, jwk: dict[str, str]) -> None:
        (tmp_path / name).mkdir()
        (tmp_path / name / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
        (tmp_path / "..data_tmp").symlink_to(name)
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")

    version("..2026_v1", rsa_signer.jwk)
    (tmp_path / "jwks.json").symlink_to("..data/jwks.json")
    events = Events()
    source = file_source(tmp_path / "jwks.json", events, 0.02)
    await source.start()
    try:
        assert kids(source) == {rsa_signer.kid}
        version("..2026_v2", other_rsa_signer.jwk)
        await wait_for(lambda: kids(source) == {other_rsa_signer.kid})
    finally:
        await source.stop()


async def test_a_cancelled_check_does_not_cancel_the_shared_refetch(
    idp: FakeIdp, session, rsa_signer: Signer
) -> None:
    events = Events()
    idp.serve({"keys": [rsa_signer.jwk]})
    idp.delay_s = 0.2
    source = remote(idp.uri, session, events, unknown_kid_wait=5)
    waiter = asyncio.create_task(source.refetch_for_unknown_kid())
    await asyncio.sleep(0.05)
    waiter.cancel()  # Envoy gave up on this check
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await wait_for(lambda: source.keys is not None)
    await wait_for(lambda: events.kids == ["ok"])
    await source.stop()


async def test_an_unchanged_jwks_keeps_its_key_set(
    idp: FakeIdp, session, rsa_signer: Signer, other_rsa_signer: Signer
) -> None:
    events = Events()
    idp.serve({"keys": [rsa_signer.jwk]})
    source = remote(idp.uri, session, events)
    assert await source.refresh()
    first = source.keys
    assert await source.refresh()
    assert source.keys is first  # same body: same set, and the tokens cached under it
    idp.serve({"keys": [rsa_signer.jwk, other_rsa_signer.jwk]})
    assert await source.refresh()
    assert source.keys is not first


async def test_a_retired_source_ends_its_waiters_with_a_no(
    idp: FakeIdp, session, rsa_signer: Signer
) -> None:
    events = Events()
    idp.serve({"keys": [rsa_signer.jwk]})
    idp.delay_s = 1.0
    source = remote(idp.uri, session, events, unknown_kid_wait=5)
    waiter = asyncio.create_task(source.refetch_for_unknown_kid())
    await asyncio.sleep(0.05)
    await source.stop()  # a reload retired it while a check was waiting
    assert await waiter is False
