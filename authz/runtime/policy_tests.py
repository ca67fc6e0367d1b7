"""``authz test``: policy tests kept beside a config, run like ``opa test`` in CI.

Each case's request is judged by the config's real authorizer with stand-in keys
(runtime/evaluate.py): cases test the policy, not key distribution. A failed case shows
each expectation that did not hold, expected against actual, and the explanation."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authz.config import ConfigError, load_config
from authz.config.policy_tests import Case, DryRunExpect, load_policy_tests
from authz.runtime.evaluate import Evaluation, Request, StandInJudge
from authz.runtime.report import to_text


@dataclass(frozen=True, slots=True)
class CaseResult:
    file: Path
    line: int
    name: str
    mismatches: list[str]  # "status: expected 403, got 200"; empty: passed
    evaluation: Evaluation

    @property
    def passed(self) -> bool:
        return not self.mismatches


async def run_file(path: Path) -> list[CaseResult]:
    """Every case of one test file, judged by its config's authorizer."""
    tests, lines = load_policy_tests(path)
    config = load_config(tests.config)
    judge = StandInJudge(config)
    await judge.start()
    results = []
    for case, line in zip(tests.cases, lines, strict=True):
        evaluation = await judge.evaluate(_request(judge, case))
        results.append(CaseResult(path, line, case.name, mismatches(case, evaluation), evaluation))
    return results


def _request(judge: StandInJudge, case: Case) -> Request:
    given = case.request
    request = Request(given.method, given.path, given.host, given.headers, given.context)
    if case.provider is not None and case.provider not in judge.config.providers:
        raise ConfigError(f"case {case.name!r}: no provider {case.provider!r}")
    if given.token is None and case.claims is None:
        return request
    carrying, providers = judge.carrying(
        request, case.provider, claims=case.claims, token=given.token
    )
    if not providers:
        raise ConfigError(
            f"case {case.name!r}: the request matches no rule that takes a token; "
            "name the token's provider"
        )
    return carrying


def _shown(value: Any) -> str:
    return "(not set)" if value is _UNSET else json.dumps(value)


_UNSET = object()


def mismatches(case: Case, evaluation: Evaluation) -> list[str]:
    expect = case.expect
    decision = evaluation.decision
    found: list[str] = []
    actual = {
        "allowed": decision.allowed,
        "status": decision.status,
        "reason": decision.reason,
        "rule": decision.rule,
        "provider": decision.provider,
    }
    for key, value in actual.items():
        if key in expect.model_fields_set and getattr(expect, key) != value:
            found.append(f"{key}: expected {_shown(getattr(expect, key))}, got {_shown(value)}")
    headers = dict(decision.upstream_headers if decision.allowed else decision.response_headers)
    for name, wanted in expect.headers.items():
        got = headers.get(name.lower(), _UNSET)
        if got != wanted:
            found.append(f"headers.{name}: expected {_shown(wanted)}, got {_shown(got)}")
    upstream = dict(decision.upstream_headers)
    for name in expect.headers_absent:
        if name.lower() in upstream:
            found.append(f"headers_absent: {name} is set to {_shown(upstream[name.lower()])}")
    removed = set(decision.remove_headers)
    for name in expect.headers_removed:
        if name.lower() not in removed:
            found.append(f"headers_removed: {name} is not removed")
    if "dry_run" in expect.model_fields_set:
        found += _dry_run_mismatches(expect.dry_run, decision.dry_run)
    return found


def _dry_run_mismatches(wanted: DryRunExpect | None, got: tuple[str, str] | None) -> list[str]:
    if wanted is None:
        return [] if got is None else [f"dry_run: expected none, got {got[0]} ({got[1]})"]
    if got is None:
        return [f"dry_run: expected {wanted.decision}, got no dry run"]
    if wanted.decision == got[0] and wanted.reason in (None, got[1]):
        return []
    expected = wanted.decision + (f" ({wanted.reason})" if wanted.reason else "")
    return [f"dry_run: expected {expected}, got {got[0]} ({got[1]})"]


def report(results: list[CaseResult], *, verbose: bool = False) -> str:
    lines = []
    for result in results:
        where = f"{result.file}:{result.line}"
        if result.passed:
            if verbose:
                lines.append(f"PASS {result.name} ({where})")
            continue
        lines.append(f"FAIL {result.name} ({where})")
        lines += [f"     {mismatch}" for mismatch in result.mismatches]
        lines.append("     why:")
        lines += [f"       {line}" for line in to_text(result.evaluation).splitlines()]
    failed = sum(not r.passed for r in results)
    cases = f"{len(results)} case{'' if len(results) == 1 else 's'}"
    lines.append(f"{cases}, {len(results) - failed} passed, {failed} failed")
    return "\n".join(lines)


def junit(results: list[CaseResult]) -> bytes:
    """JUnit XML, which CI systems (GitLab, Jenkins, GitHub reporters) read."""
    suite = ElementTree.Element(
        "testsuite",
        name="authz policy tests",
        tests=str(len(results)),
        failures=str(sum(not r.passed for r in results)),
        errors="0",
    )
    for result in results:
        case = ElementTree.SubElement(
            suite,
            "testcase",
            name=result.name,
            classname=str(result.file),
            file=str(result.file),
            line=str(result.line),
        )
        if not result.passed:
            failure = ElementTree.SubElement(case, "failure", message=result.mismatches[0])
            failure.text = "\n".join([*result.mismatches, "", to_text(result.evaluation)])
    ElementTree.indent(suite)
    text: bytes = ElementTree.tostring(suite, encoding="utf-8", xml_declaration=True)
    return text + b"\n"
