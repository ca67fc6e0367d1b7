"""authz test: policy test files judged by the config's real authorizer."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import yaml

from authz.config import ConfigError
from authz.runtime.policy_tests import junit, report, run_file
from dev.stack import ROOT
from tests.support import LISTEN_ANYWHERE, config_data, provider

DEPLOY_TESTS = ROOT / "deploy" / "authz_test.yaml"


async def test_the_example_policy_tests_pass():
    results = await run_file(DEPLOY_TESTS)
    assert len(results) >= 15
    failed = [r for r in results if not r.passed]
    assert not failed, report(failed)


def _write(tmp_path: Path, cases: list[dict]) -> Path:
    path = tmp_path / "policy_test.yaml"
    document = {"config": str(ROOT / "deploy" / "authz.yaml"), "cases": cases}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


async def test_a_wrong_expectation_fails_with_expected_against_actual(tmp_path):
    path = _write(
        tmp_path,
        [
            {
                "name": "users may delete",
                "request": {"method": "DELETE", "path": "/admin/u", "context": {"policy": "admin"}},
                "claims": {"sub": "bob", "realm_access": {"roles": ["user"]}},
                "expect": {"status": 200, "rule": "admin-read", "headers": {"x-user-id": "bob"}},
            },
            {"name": "health", "request": {"path": "/healthz"}, "expect": {"status": 200}},
        ],
    )
    results = await run_file(path)
    assert [r.passed for r in results] == [False, True]
    lines = path.read_text().splitlines()
    assert lines[results[0].line - 1] == "- name: users may delete"
    assert lines[results[1].line - 1] == "- name: health"
    assert results[0].mismatches == [
        "status: expected 200, got 403",
        'rule: expected "admin-read", got "admin-write"',
        'headers.x-user-id: expected "bob", got (not set)',
    ]
    text = report(results)
    assert f"FAIL users may delete ({path}:{results[0].line})" in text
    assert 'fail          claims[0]: realm_access.roles contains "admin"' in text
    assert text.endswith("2 cases, 1 passed, 1 failed")
    suite = ElementTree.fromstring(junit(results))
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    failure = suite.find("testcase/failure")
    assert failure is not None and failure.get("message") == "status: expected 200, got 403"


async def test_expectations_on_removed_and_absent_headers(tmp_path):
    path = _write(
        tmp_path,
        [
            {
                "name": "n",
                "request": {"path": "/orders", "headers": {"x-user-email": "forged"}},
                "claims": {"sub": "alice"},
                "expect": {
                    "headers_absent": ["x-user-email"],
                    "headers_removed": ["x-user-email", "cookie"],
                    "rule": None,
                },
            }
        ],
    )
    (result,) = await run_file(path)
    assert result.mismatches == [
        'rule: expected null, got "default"',
        "headers_removed: cookie is not removed",
    ]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ({"name": "n", "expect": {}}, "expect at least one of"),
        (
            {"name": "n", "claims": {}, "request": {"token": "x"}, "expect": {"status": 401}},
            "give claims or request.token, not both",
        ),
        (
            {"name": "n", "expect": {"stauts": 200}},
            r"policy_test.yaml:5:5: cases.0.expect.stauts: unknown key \(did you mean status\?\)",
        ),
        ({"name": "n", "expect": {"headers": {}}}, "cases.0.expect.headers: Dictionary should"),
        ({"name": "n", "expect": {"headers_absent": []}}, "cases.0.expect.headers_absent: List"),
        ({"name": "n", "provider": "corp", "expect": {"status": 401}}, "give claims or a token"),
        (
            {"name": "n", "request": {"method": "G T"}, "expect": {"status": 400}},
            r"cases.0.request.method: .*'G T' is not an HTTP method \(an RFC 9110 token\)",
        ),
        (
            {"name": "n", "claims": {"when": "2026-01-01"}, "expect": {"status": 200}},
            None,  # a string in YAML stays a string; a YAML date is refused (below)
        ),
        (
            {"name": "n", "claims": {"exp": float("inf")}, "expect": {"status": 401}},
            r"policy_test.yaml:4:3: cases.0.claims: exp is not a finite number: no token",
        ),
        (
            {"name": "n", "claims": {"x": ["\ud800"]}, "expect": {"status": 401}},
            r"cases.0.claims: x\[0\] is not UTF-8 text",
        ),
    ],
)
async def test_a_broken_test_file_is_an_error_naming_the_key(tmp_path, case, message):
    if message is None:
        await run_file(_write(tmp_path, [case]))
        return
    with pytest.raises(ConfigError, match=message):
        await run_file(_write(tmp_path, [case]))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "config: a.yaml\ncases: []\ncases: []\n",
            r"t.yaml:3:1: cases: written twice \(first at .*t.yaml:2:1\)",
        ),
        (
            "config: a.yaml\ncases:\n  - name: n\n    claims: {d: 2026-01-01}\n"
            "    expect: {status: 200}\n",
            "cases.0.claims.d",
        ),
        (
            "config: a.yaml\ncases: [{name: n, expect: {status: 200}, name: m}]\n",
            "cases.0.name: written twice",
        ),
    ],
)
async def test_yaml_that_would_lose_or_bend_a_value_is_refused(tmp_path, text, message):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        await run_file(path)


async def test_a_file_that_is_not_utf8_is_an_error(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_bytes(b"config: \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        await run_file(path)


async def test_dry_run_expectations_see_what_enforcement_would_answer(tmp_path):
    request = {"path": "/reports/q3", "context": {"policy": "reports"}}
    path = _write(
        tmp_path,
        [
            {
                "name": "would deny",
                "request": request,
                "claims": {"sub": "bob", "scope": "openid"},
                "expect": {
                    "allowed": True,
                    "dry_run": {"decision": "deny", "reason": "claim_mismatch"},
                },
            },
            {
                "name": "wrongly expects allow",
                "request": request,
                "claims": {"sub": "bob", "scope": "openid"},
                "expect": {"dry_run": {"decision": "allow"}},
            },
            {
                "name": "no dry run expected",
                "request": request,
                "claims": {"sub": "bob"},
                "expect": {"dry_run": None},
            },
        ],
    )
    results = await run_file(path)
    assert [r.mismatches for r in results] == [
        [],
        ["dry_run: expected allow, got deny (claim_mismatch)"],
        ["dry_run: expected none, got deny (claim_mismatch)"],
    ]


async def test_a_token_for_a_rule_without_providers_needs_a_provider(tmp_path):
    path = _write(
        tmp_path, [{"name": "n", "request": {"path": "/healthz"}, "claims": {}, "expect": {}}]
    )
    with pytest.raises(ConfigError):
        await run_file(path)


async def test_a_case_is_refused_for_a_binding_its_token_lacks(tmp_path):
    """As serve refuses it: an unbound token for a provider that requires DPoP. A bound
    one passes, with the proof it would need named as not checked offline."""
    settings = config_data(
        listen=LISTEN_ANYWHERE, providers={"corp": provider(dpop={"mode": "required"})}
    )
    (tmp_path / "authz.yaml").write_text(yaml.safe_dump(settings))
    path = tmp_path / "policy_test.yaml"
    bound = {"sub": "a", "cnf": {"jkt": "abc"}}
    cases = [
        {"name": "unbound", "claims": {"sub": "a"}, "expect": {"status": 401}},
        {"name": "bound", "claims": bound, "expect": {"status": 200}},
    ]
    path.write_text(yaml.safe_dump({"config": "authz.yaml", "cases": cases}))
    unbound, allowed = await run_file(path)
    assert unbound.passed and unbound.evaluation.decision.reason == "dpop_binding_mismatch"
    assert allowed.passed
    assert [s.check for s in allowed.evaluation.skipped] == ["dpop_proof"]
