"""Warnings: a config serve would run, but surely not as meant. Each names FILE:LINE:COL
of the key it is about, and serve logs the very same ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.cli import main
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


def warned(tmp_path: Path, text: str) -> list[str]:
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


def with_claims(*conditions: str) -> str:
    """LOADED with one rule whose claims are ``conditions`` (YAML flow mappings)."""
    claims = "".join(f"      - {c}\n" for c in conditions)
    return LOADED.split("  - name: api-admin")[0] + "    claims:\n" + claims


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        (
            "{claim: roles, contains: [admin, ops]}",
            "~/authz.yaml:12:24: rules.0 (api).claims.0.contains: contains takes one value; a "
            "list is found only in a claim that is a list of lists. For any of several values "
            "use contains_any, for all of them contains_all",
        ),
        (
            "{claim: groups, equals: [a, b]}",
            "~/authz.yaml:12:25: rules.0 (api).claims.0.equals: a list here matches only a "
            "claim that is exactly this list, in this order. For one of several values use "
            "one_of; for a list claim holding them, contains_any or contains_all",
        ),
        (
            "{claim: groups, not_equals: [a, b]}",
            "~/authz.yaml:12:25: rules.0 (api).claims.0.not_equals: a list here holds only for "
            "a claim that is a list; a claim of any other type fails it. For none of several "
            "values put one_of under not",
        ),
        (
            "{request: header.x-level, gt: 3}",
            "~/authz.yaml:12:35: rules.0 (api).claims.0.gt: request.header.x-level is text, "
            "never a number, so gt never holds",
        ),
        (
            "{issuer_param: tenant, lte: 3}",
            "~/authz.yaml:12:32: rules.0 (api).claims.0.lte: issuer_param: tenant is text, never "
            "a number, so lte never holds",
        ),
        (
            "{request: query.page, equals: 5}",
            "~/authz.yaml:12:31: rules.0 (api).claims.0.equals: request.query.page is text, and a "
            "value that is not a string is never compared with text, so this never holds "
            "(quote it: '1', 'true')",
        ),
        (
            "{request: param.id, one_of: [1, 2]}",
            "~/authz.yaml:12:29: rules.0 (api).claims.0.one_of: request.param.id is text, and a "
            "value that is not a string is never compared with text, so this never holds "
            "(quote it: '1', 'true')",
        ),
        (
            "{request: method, equals: get}",
            "~/authz.yaml:12:27: rules.0 (api).claims.0.equals: request.method is upper-case "
            "(GET, POST): a lower-case value never equals it",
        ),
        (
            "{claim: tier, one_of: []}",
            "~/authz.yaml:12:23: rules.0 (api).claims.0.one_of: an empty list: no value is one "
            "of it, so this never holds",
        ),
        (
            "{any: [{claim: a, exists: true}, {not: {claim: b, contains: [x]}}]}",
            "~/authz.yaml:12:59: rules.0 (api).claims.0.any.1.not.contains: contains takes one "
            "value; a list is found only in a claim that is a list of lists. For any of several "
            "values use contains_any, for all of them contains_all",
        ),
    ],
)
def test_conditions_that_never_hold(
    tmp_path: Path, monkeypatch, condition: str, message: str
) -> None:
    monkeypatch.setenv("AUTHZ_TEST_SECRET", "s" * 32)
    text = with_claims(condition)
    if "issuer_param" in condition:
        text = text.replace(
            "issuer: https://idp.test", "issuer: https://idp.test/{tenant}\n    tenants: [t1]"
        )
        text = text.replace(
            "    shared_secret: {env: AUTHZ_TEST_SECRET}\n    algorithms: [HS256]\n",
            "    jwks: {remote: {uri: 'https://idp.test/{tenant}/keys'}}\n",
        )
    assert warned(tmp_path, text) == [message]


@pytest.mark.parametrize(
    "condition",
    [
        "{claim: roles, contains: admin}",
        "{claim: level, gt: 3}",
        "{claim: groups, one_of: [a, b]}",
        "{request: method, one_of: [GET, HEAD]}",
        "{request: header.x-level, equals: '3'}",
        "{claim: groups, equals: null}",
        "{not: {claim: roles, contains: guest}}",
    ],
)
def test_conditions_that_can_hold_are_not_warned_about(
    tmp_path: Path, monkeypatch, condition: str
) -> None:
    monkeypatch.setenv("AUTHZ_TEST_SECRET", "s" * 32)
    assert warned(tmp_path, with_claims(condition)) == []


def test_a_provider_no_rule_requires(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AUTHZ_TEST_SECRET", "s" * 32)
    text = LOADED.replace(
        "rules:\n",
        "  spare:\n    issuer: https://spare.test\n    audiences: [api]\n"
        "    jwks: {remote: {uri: 'https://spare.test/keys'}}\nrules:\n",
    )
    assert warned(tmp_path, text)[0] == (
        "~/authz.yaml:7:3: providers.spare: no rule requires this provider, so its tokens are "
        "accepted nowhere (name it in a rule's requires, or remove it)"
    )


JWKS_FILE = LOADED.replace(
    "    shared_secret: {env: AUTHZ_TEST_SECRET}\n    algorithms: [HS256]\n",
    "    jwks:\n      file: keys/jwks.json\n",
).split("  - name: api-admin")[0]


def test_a_jwks_file_serve_would_start_without(tmp_path: Path) -> None:
    consequence = (
        "serve would start without this provider's keys (not ready; 503 for its tokens) "
        "until it is fixed"
    )
    assert warned(tmp_path, JWKS_FILE) == [
        f"~/authz.yaml:6:7: providers.corp.jwks.file: ~/keys/jwks.json does not exist: "
        f"{consequence}"
    ]
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "jwks.json").write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}')
    assert warned(tmp_path, JWKS_FILE) == [
        f"~/authz.yaml:6:7: providers.corp.jwks.file: ~/keys/jwks.json: the JWKS holds no "
        f"usable signing key: {consequence}"
    ]
    main(["keygen", "--out", str(tmp_path / "keys")])
    assert warned(tmp_path, JWKS_FILE) == []


def test_a_jwks_file_that_is_a_device_or_a_fifo_is_warned_about_not_read(tmp_path: Path) -> None:
    """/dev/zero would never end and a FIFO never answer: check-config (and serve's build
    on a reload, in the event loop) must not hang on either."""
    import os

    (tmp_path / "keys").mkdir()
    os.mkfifo(tmp_path / "keys" / "jwks.json")
    (warning,) = warned(tmp_path, JWKS_FILE)
    assert "cannot read ~/keys/jwks.json (not a regular file)" in warning
    os.unlink(tmp_path / "keys" / "jwks.json")
    os.symlink("/dev/zero", tmp_path / "keys" / "jwks.json")
    (warning,) = warned(tmp_path, JWKS_FILE)
    assert "(not a regular file)" in warning
    os.unlink(tmp_path / "keys" / "jwks.json")
    (tmp_path / "keys" / "jwks.json").write_bytes(b" " * (1 << 20) + b"{}")
    (warning,) = warned(tmp_path, JWKS_FILE)
    assert "(larger than 1048576 bytes)" in warning


def test_keys_written_twice(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AUTHZ_TEST_SECRET", "s" * 32)
    text = LOADED.split("  - name: api-admin")[0].replace(
        "    match: {prefix: /api}\n", "    match: {prefix: /api}\n    match: {prefix: /}\n"
    )
    assert warned(tmp_path, text) == [
        "~/authz.yaml:10:5: rules.0.match: written twice in one mapping (first at line 9); "
        "only this one counts"
    ]
