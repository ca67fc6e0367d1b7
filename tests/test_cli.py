from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from authz import __version__
from authz.cli import main, serve_overrides
from authz.config import ConfigError
from authz.core.jws import parse_token
from dev.stack import ROOT
from tests.support import verifier


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.startswith("authz ")


def test_the_version_flag_and_what_serve_says_it_serves(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"authz {__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    described = " ".join(capsys.readouterr().out.split())
    assert "HTTP authorization endpoint" in described and "/metrics" in described
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    described = " ".join(capsys.readouterr().out.split())
    for served in ("ext_authz Check over gRPC", "http_authz.listen", "/readyz", "SIGHUP"):
        assert served in described


def test_check_config_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "-c", str(ROOT / "deploy" / "authz.yaml")]) == 0
    assert "ok" in capsys.readouterr().out


def test_check_config_names_the_bad_key(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "providers:\n  corp:\n    issuer: x\n    audiences: [api]\n"
        "    jwks: {inline: '{\"keys\": []}'}\n"
        "    claim_to_header: []\n"
        "rules:\n  - requires: {provider: corp}\n"
    )
    assert main(["check-config", "-c", str(bad)]) == 2
    assert "providers.corp.claim_to_header: unknown key" in capsys.readouterr().err


def test_check_config_judges_the_tracing_section(tmp_path: Path, capsys) -> None:
    config = tmp_path / "authz.yaml"
    base = (ROOT / "deploy" / "authz.yaml").read_text()
    config.write_text(base + "tracing: {otlp_endpoint: http://collector:4317, sample_ratio: 2}\n")
    assert main(["check-config", "-c", str(config)]) == 2
    assert "tracing.sample_ratio: Input should be less than or equal to 1" in (
        capsys.readouterr().err
    )
    config.write_text(base + "tracing: {otlp_endpoint: http://collector:4317, sample_ratio: 0}\n")
    assert main(["check-config", "-c", str(config)]) == 0


def test_check_config_rejects_an_unusable_inline_jwks(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "providers:\n  corp:\n    issuer: x\n    audiences: [api]\n"
        "    jwks: {inline: '{\"keys\": []}'}\n"
        "rules:\n  - requires: {provider: corp}\n"
    )
    assert main(["check-config", "-c", str(bad)]) == 2
    assert "no usable signing key" in capsys.readouterr().err


def test_serve_refuses_a_bad_file(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: []\n")
    assert main(["serve", "-c", str(bad)]) == 2
    assert capsys.readouterr().err == (
        f"authz: invalid configuration:\n  {bad}:1:1: rules: List should have at least 1 item "
        "after validation, not 0\n"
    )


SHADOWED = (
    "providers:\n  corp:\n    issuer: x\n    audiences: [api]\n"
    "    jwks: {inline: '{\"keys\": []}'}\n"
    "rules:\n  - requires: {provider: corp}\n  - match: {prefix: /admin}\n"
    "    requires: {provider: corp}\n"
)


def test_check_config_errors_and_warnings_name_file_line_and_column(tmp_path: Path, capsys) -> None:
    path = tmp_path / "authz.yaml"
    path.write_text(SHADOWED.replace("audiences", "audience"))
    assert main(["check-config", "-c", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"authz: invalid configuration:\n  {path}:4:5: providers.corp.audience: unknown key "
        "(did you mean audiences?)\n"
    )
    jwks = tmp_path / "jwks.json"
    main(["keygen", "--out", str(tmp_path)])
    capsys.readouterr()
    path.write_text(SHADOWED.replace("{inline: '{\"keys\": []}'}", f"{{file: {jwks}}}"))
    assert main(["check-config", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == (
        f"{path}:8:5: warning: rules.1 (1) can never match: rules.0 (0) matches every request "
        "it would\n"
    )
    assert out == f"{path}: ok (1 providers, 2 rules)\n"


def test_serve_takes_workers_from_the_flag_then_the_environment_then_the_file() -> None:
    assert serve_overrides("3", {"AUTHZ_WORKERS": "2"}).workers == 3
    assert serve_overrides(None, {"AUTHZ_WORKERS": "2"}).workers == 2
    assert serve_overrides(None, {}).workers is None
    with pytest.raises(ConfigError, match=r"^AUTHZ_WORKERS: '' is not a whole number"):
        serve_overrides(None, {"AUTHZ_WORKERS": ""})


@pytest.mark.parametrize(
    ("argv", "env", "says"),
    [
        (["--workers", "0"], None, "authz: --workers: 0 workers is out of range (1 to 64)"),
        ([], "many", "authz: AUTHZ_WORKERS: 'many' is not a whole number of workers"),
    ],
)
def test_serve_refuses_a_bad_number_of_workers(
    argv: list[str], env: str | None, says: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    if env is not None:
        monkeypatch.setenv("AUTHZ_WORKERS", env)
    assert main(["serve", "-c", str(ROOT / "deploy" / "authz.yaml"), *argv]) == 2
    assert says in capsys.readouterr().err


async def test_keygen_and_token_round_trip(tmp_path: Path, capsys) -> None:
    assert main(["keygen", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "key.pem").stat().st_mode & 0o077 == 0
    capsys.readouterr()
    args = [
        "token",
        "--key",
        str(tmp_path / "key.pem"),
        "--sub",
        "alice",
        "--iss",
        "https://i",
        "--aud",
        "api",
        "--claim",
        "scope=read write",
        "--claim",
        'roles=["a","b"]',
        "--claim",
        "n=3",
        "--ttl",
        "60",
    ]
    assert main(args) == 0
    token = capsys.readouterr().out.strip()
    jwks = json.loads((tmp_path / "jwks.json").read_text())
    checker = verifier(jwks, issuer="https://i", audiences=["api"], clock=time.time)
    claims = (await checker.verify(parse_token(token, 8192))).claims
    assert claims["sub"] == "alice"
    assert claims["scope"] == "read write"
    assert claims["roles"] == ["a", "b"]
    assert claims["n"] == 3
    assert claims["exp"] - claims["iat"] == 60


def test_token_rejects_a_bad_claim(tmp_path: Path, capsys) -> None:
    main(["keygen", "--out", str(tmp_path)])
    assert main(["token", "--key", str(tmp_path / "key.pem"), "--claim", "novalue"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err


def test_strict_makes_warnings_fail(tmp_path: Path, capsys) -> None:
    main(["keygen", "--out", str(tmp_path)])
    path = tmp_path / "authz.yaml"
    path.write_text(SHADOWED.replace("{inline: '{\"keys\": []}'}", "{file: jwks.json}"))
    capsys.readouterr()
    assert main(["check-config", "--strict", "-c", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"{path}:8:5: warning: rules.1 (1) can never match: rules.0 (0) matches every request "
        f"it would\nauthz: {path}: 1 warning, and --strict refuses warnings\n"
    )
    path.write_text(
        SHADOWED.replace("{inline: '{\"keys\": []}'}", "{file: jwks.json}").split("  - match")[0]
    )
    assert main(["check-config", "--strict", "-c", str(path)]) == 0
    assert capsys.readouterr() == (f"{path}: ok (1 providers, 1 rules)\n", "")
