"""authz eval and authz test from the command line: output, exit status, JUnit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from authz.cli import main
from dev.stack import ROOT
from tests.support import rsa_signer

CONFIG = str(ROOT / "deploy" / "authz.yaml")


def test_eval_with_claims_explains_a_denial(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "eval",
            "-c",
            CONFIG,
            "--method",
            "POST",
            "--path",
            "/admin/users",
            "--context",
            "policy=admin",
            "--claims",
            '{"sub":"bob","realm_access":{"roles":["user"]}}',
            "--provider",
            "corp",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "admin-write  matched" in out and "health       skipped: path" in out
    assert "signature not checked: signed by a stand-in key" in out
    assert 'fail          claims[0]: realm_access.roles contains "admin"' in out
    assert out.rstrip().endswith("decision  deny 403 claim_mismatch")


def test_eval_json_is_one_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    claims = tmp_path / "claims.json"
    claims.write_text('{"sub": "alice", "email": "a@example.com"}')
    assert (
        main(["eval", "-c", CONFIG, "--path", "/orders", "--claims", f"@{claims}", "--json"]) == 0
    )
    answer = json.loads(capsys.readouterr().out)
    assert answer["allowed"] is True and answer["rule"] == "default"
    assert answer["headers_set"]["x-user-email"] == "a@example.com"
    assert "authorization" in answer["headers_removed"]
    assert answer["conditions"] == []


def test_eval_refuses_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "-c", CONFIG, "--header", "Bearer-eyJsecret", "--claims", "{}"]) == 2
    err = capsys.readouterr().err
    assert "--header number 1 is not NAME:VALUE" in err and "eyJ" not in err
    assert main(["eval", "-c", CONFIG, "--claims", '{"exp": NaN}']) == 2
    assert "NaN is not JSON" in capsys.readouterr().err
    # serve refuses a payload naming a claim twice; the minted token would hold one.
    assert main(["eval", "-c", CONFIG, "--claims", '{"sub": "a", "x": {"r": 1, "r": 2}}']) == 2
    assert "--claims: not JSON (a name is given twice in one object)" in capsys.readouterr().err
    assert main(["eval", "-c", CONFIG, "--claims", "[" * 100_000 + "]" * 100_000]) == 2
    assert "--claims: nested too deeply" in capsys.readouterr().err
    assert main(["eval", "-c", CONFIG, "--claims", "@/nonexistent/claims.json"]) == 2
    err = capsys.readouterr().err
    assert "--claims: cannot read /nonexistent/claims.json: No such file or directory" in err
    # Valid JSON text, but no token can carry it: refused before a stand-in token is
    # minted, rather than judged as a malformed token.
    assert main(["eval", "-c", CONFIG, "--claims", '{"exp": 1e400}']) == 2
    assert "--claims: exp is not a finite number" in capsys.readouterr().err
    assert main(["eval", "-c", CONFIG, "--claims", '{"a": [{"b": -1e999}]}']) == 2
    assert "--claims: a[0].b is not a finite number" in capsys.readouterr().err
    assert main(["eval", "-c", CONFIG, "--claims", '{"sub": "\\ud800"}']) == 2
    assert "--claims: sub is not UTF-8 text" in capsys.readouterr().err
    assert main(["eval", "-c", CONFIG, "--claims", "[1]"]) == 2
    assert "--claims: expected a JSON object" in capsys.readouterr().err
    assert main(["eval", "-c", CONFIG, "--claims", "{}", "--provider", "nope"]) == 2
    assert "no provider 'nope'" in capsys.readouterr().err


def test_eval_says_when_keys_cannot_be_loaded(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "authz.yaml"
    missing.write_text(
        "providers:\n  corp:\n    issuer: https://idp.test\n    audiences: [api]\n"
        "    jwks: {file: {path: absent.json}}\n"
        "rules:\n  - requires: {provider: corp}\n"
    )
    token = rsa_signer().token(iss="https://idp.test")
    code = main(["eval", "-c", str(missing), "--header", f"authorization: Bearer {token}"])
    assert code == 2  # no verdict on the request: not exit 1, "denied"
    assert "no key set could be loaded for: corp" in capsys.readouterr().err


def test_the_example_policy_tests_pass(tmp_path: Path, capsys) -> None:
    report = tmp_path / "junit.xml"
    assert main(["test", str(ROOT / "deploy" / "authz_test.yaml"), "--junit", str(report)]) == 0
    assert " 0 failed" in capsys.readouterr().out
    assert 'failures="0"' in report.read_text()


def test_a_failing_policy_test_exits_1_with_a_diff(tmp_path: Path, capsys) -> None:
    tests = tmp_path / "t.yaml"
    tests.write_text(
        f"config: {CONFIG}\n"
        "cases:\n"
        "  - name: bob is an admin\n"
        "    request: {path: /users/alice}\n"
        "    claims: {sub: bob}\n"
        "    expect: {status: 200}\n"
    )
    assert main(["test", str(tests)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL bob is an admin ({tests}:3)" in out
    assert "status: expected 200, got 403" in out
    assert 'claims[0]: request.param.id equals_claim "sub"' in out


def test_eval_refuses_claims_with_a_jwks_file(tmp_path: Path, capsys) -> None:
    """A --claims token is signed by a stand-in key: the file's keys would verify
    nothing, and ignoring the flag would let a reader think they did."""
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": []}')
    with pytest.raises(SystemExit) as exited:
        main(["eval", "-c", CONFIG, "--claims", "{}", "--jwks", str(jwks)])
    assert exited.value.code == 2
    assert "argument --jwks: not allowed with argument --claims" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["G T", "", "GET\r\n", "P(O)ST"])
def test_eval_refuses_a_method_that_is_not_an_http_token(
    method: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["eval", "-c", CONFIG, "--method", method, "--claims", "{}"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --method: " in err and "is not an HTTP method (an RFC 9110 token)" in err


def test_eval_takes_any_token_as_a_method(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["eval", "-c", CONFIG, "--path", "/orders", "--claims", "{}", "--json"]
    assert main([*args, "--method", "m-search"]) == 0
    assert json.loads(capsys.readouterr().out)["allowed"] is True
