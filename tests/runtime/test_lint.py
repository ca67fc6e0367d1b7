"""Warnings: a config serve would run, but surely not as meant. Each names FILE:LINE:COL
of the key it is about, and serve logs the very same ones."""

from __future__ import annotations

from pathlib import Path

from authz.runtime.commands import check_config

LOADED = """\
providers:
  corp:
    issuer: https://idp.test
    audiences: [api]
    shared_secret: {env: AUTHZ_TEST_SECRET}
    algorithms: [HS256]
rules:
  - name: api
    match: {prefix: /api}
    requires: {provider: corp}
  - name: api-admin
    match: {prefix: /api/admin}
    requires: {provider: corp}
"""


def warned(tmp_path: Path, text: str, monkeypatch: object = None) -> list[str]:
    """The warnings check-config gives for ``text`` as authz.yaml, its folder as ~."""
    (tmp_path / "authz.yaml").write_text(text)
    _, found = check_config(tmp_path / "authz.yaml")
    return [str(finding).replace(str(tmp_path), "~") for finding in found]


def test_a_shadowed_rule_is_named_where_it_is_written(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AUTHZ_TEST_SECRET", "s" * 32)
    assert warned(tmp_path, LOADED) == [
        "~/authz.yaml:11:5: rules.1 (api-admin) can never match: rules.0 (api) matches every "
        "request it would"
    ]


def test_a_finding_keeps_where_and_what_apart(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AUTHZ_TEST_SECRET", "s" * 32)
    (tmp_path / "authz.yaml").write_text(LOADED)
    _, (finding,) = check_config(tmp_path / "authz.yaml")
    assert finding.where == f"{tmp_path}/authz.yaml:11:5"
    assert finding.message.startswith("rules.1 (api-admin) can never match")


def test_an_open_tenant_set_points_at_tenants(tmp_path: Path) -> None:
    text = LOADED.replace(
        "    shared_secret: {env: AUTHZ_TEST_SECRET}\n    algorithms: [HS256]\n",
        "    jwks: {remote: {uri: 'https://idp.test/{tenant}/keys'}}\n",
    ).replace("https://idp.test\n", "https://idp.test/{tenant}\n    tenants: {any: true}\n")
    assert warned(tmp_path, text)[0].startswith(
        "~/authz.yaml:4:5: providers.corp: tenants: {any: true} accepts every tenant"
    )


async def test_serve_logs_the_same_warnings(tmp_path: Path, monkeypatch, caplog) -> None:
    from authz.config import load_config
    from authz.runtime.app import App

    monkeypatch.setenv("AUTHZ_TEST_SECRET", "s" * 32)
    path = tmp_path / "authz.yaml"
    path.write_text(
        "listen: {grpc: '127.0.0.1:0', http: '127.0.0.1:0'}\nshutdown_drain: 0\n" + LOADED
    )
    async with App(load_config(path), config_path=path, watch_interval_s=3600):
        pass
    logged = [r for r in caplog.records if "can never match" in r.getMessage()]
    assert [(r.levelname, r.getMessage()) for r in logged] == [
        (
            "WARNING",
            f"{path}:13:5: rules.1 (api-admin) can never match: rules.0 (api) matches every "
            "request it would",
        )
    ]
