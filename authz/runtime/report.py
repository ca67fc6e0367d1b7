"""``authz eval``'s output: one JSON object (a stable schema, docs/policy-testing.md) or
text for a terminal. Claim values appear (in token checks and headers set) only because
the operator supplied the token or claims; nothing here is ever logged."""

from __future__ import annotations

from typing import Any

from authz.runtime.evaluate import Evaluation

SCHEMA_VERSION = 1


def to_json(evaluation: Evaluation) -> dict[str, Any]:
    decision = evaluation.decision
    challenge = next(
        (value for name, value in decision.response_headers if name == "www-authenticate"), None
    )
    return {
        "schema": SCHEMA_VERSION,
        "allowed": decision.allowed,
        "status": decision.status,
        "reason": decision.reason,
        "rule": decision.rule,
        "provider": decision.provider,
        "dry_run": (
            {"decision": decision.dry_run[0], "reason": decision.dry_run[1]}
            if decision.dry_run
            else None
        ),
        "path_refused": evaluation.path_refused,
        "rules": [
            {"rule": step.rule, "matched": step.skipped_by is None, "skipped_by": step.skipped_by}
            for step in evaluation.rules
        ],
        "signature": evaluation.signature,
        "token_checks": [
            {"check": c.check, "value": c.value, "shown": c.shown, "result": c.result}
            for c in evaluation.token_checks
        ],
        "conditions": (
            None
            if evaluation.conditions is None
            else [
                {"condition": c.condition, "where": c.where, "result": c.result}
                for c in evaluation.conditions
            ]
        ),
        "skipped_offline": evaluation.skipped_offline,
        "headers_set": dict(decision.upstream_headers) if decision.allowed else {},
        "headers_removed": list(decision.remove_headers) if decision.allowed else [],
        "query_params_removed": list(decision.remove_query_params) if decision.allowed else [],
        "www_authenticate": challenge,
    }


def to_text(evaluation: Evaluation) -> str:
    data = to_json(evaluation)
    lines: list[str] = []
    if evaluation.path_refused:
        lines.append(f"path      refused before any rule ({evaluation.path_refused})")
    if evaluation.rules:
        width = max(len(step.rule) for step in evaluation.rules)
        for index, step in enumerate(evaluation.rules):
            label = "rules" if index == 0 else ""
            what = "matched" if step.skipped_by is None else f"skipped: {step.skipped_by}"
            lines.append(f"{label:<9} {step.rule:<{width}}  {what}")
        if evaluation.rules[-1].skipped_by is not None:
            lines.append("          (no rule matches)")
    if data["provider"]:
        lines.append(f"provider  {data['provider']}")
    lines.append(f"signature {evaluation.signature}")
    for index, check in enumerate(evaluation.token_checks):
        label = "token" if index == 0 else ""
        lines.append(f"{label:<9} {check.check:<4} {check.shown:<40} {check.result}")
    if evaluation.conditions is not None:
        lines.append("conditions" if evaluation.conditions else "conditions (none)")
        for condition in evaluation.conditions:
            lines.append(f"  {condition.result:<13} {condition.where}: {condition.condition}")
    for skipped in evaluation.skipped_offline:
        lines.append(f"skipped   {skipped}: not checked offline")
    verdict = "allow" if data["allowed"] else "deny"
    lines.append(f"decision  {verdict} {data['status']} {data['reason']}")
    if data["dry_run"]:
        lines.append(f"          (dry run: would {data['dry_run']['decision']})")
    for name, value in data["headers_set"].items():
        lines.append(f"  set     {name}: {value}")
    if data["headers_removed"]:
        lines.append(f"  removed {', '.join(data['headers_removed'])}")
    if data["query_params_removed"]:
        lines.append(f"  removed query parameters {', '.join(data['query_params_removed'])}")
    if data["www_authenticate"]:
        lines.append(f"  www-authenticate: {data['www_authenticate']}")
    return "\n".join(lines)
