"""``authz eval``'s output: one JSON object (a stable schema, docs/policy-testing.md) or
text for a terminal. Claim values appear (in token checks and headers set) only because
the operator supplied the token or claims; nothing here is ever logged."""

from __future__ import annotations

import json
from typing import Any

from authz.runtime.evaluate import Evaluation, Signature

SCHEMA_VERSION = 1

_SIGNATURES = {
    "verified": "verified with the provider's keys",
    "stand_in": "not checked: signed by a stand-in key for the claims given",
    "introspected": "none (opaque): active at the introspection endpoint",
    "stand_in_answer": "none (opaque): the claims given stand in for the introspection answer",
}


def signature_text(signature: Signature) -> str:
    if signature.result == "verified" and signature.jwks_file is not None:
        return f"verified with the keys of {signature.jwks_file} (--jwks)"
    if signature.result in _SIGNATURES:
        return _SIGNATURES[signature.result]
    if signature.result == "refused":
        return f"refused ({signature.reason})"
    return f"not checked ({signature.reason})"


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
        "refused": evaluation.refused,
        "judged_method": evaluation.judged_method,
        "rules": [
            {"rule": step.rule, "matched": step.skipped_by is None, "skipped_by": step.skipped_by}
            for step in evaluation.rules
        ],
        "tokens": [
            {
                "provider": token.provider,
                "signature": {
                    "result": token.signature.result,
                    "reason": token.signature.reason,
                    "jwks_file": (
                        None
                        if token.signature.jwks_file is None
                        else str(token.signature.jwks_file)
                    ),
                },
                "checks": [
                    {"check": c.check, "value": c.value, "shown": c.shown, "result": c.result}
                    for c in token.checks
                ],
            }
            for token in evaluation.tokens
        ],
        "conditions": (
            None
            if evaluation.conditions is None
            else [
                {
                    "where": c.where,
                    "operator": c.operator,
                    "subject": c.subject,
                    "value": c.value,
                    "condition": c.condition,
                    "result": c.result,
                }
                for c in evaluation.conditions
            ]
        ),
        "skipped_offline": [
            {"check": s.check, "provider": s.provider, "mode": s.mode} for s in evaluation.skipped
        ],
        "headers_set": dict(decision.upstream_headers) if decision.allowed else {},
        "headers_removed": list(decision.remove_headers) if decision.allowed else [],
        "query_params_removed": list(decision.remove_query_params) if decision.allowed else [],
        "response_headers": {} if decision.allowed else dict(decision.response_headers),
        "www_authenticate": challenge,
    }


def to_text(evaluation: Evaluation) -> str:
    data = to_json(evaluation)
    lines: list[str] = []
    if evaluation.refused:
        lines.append(f"refused   before any rule: {evaluation.refused}")
    if evaluation.judged_method:
        lines.append(f"method    judged as {evaluation.judged_method} (a method override)")
    if evaluation.rules:
        width = max(len(step.rule) for step in evaluation.rules)
        for index, step in enumerate(evaluation.rules):
            label = "rules" if index == 0 else ""
            what = "matched" if step.skipped_by is None else f"skipped: {step.skipped_by}"
            lines.append(f"{label:<9} {step.rule:<{width}}  {what}")
        if evaluation.rules[-1].skipped_by is not None:
            lines.append("          (no rule matches)")
    for token in evaluation.tokens:
        lines.append(f"token     {token.provider}")
        lines.append(f"  signature {signature_text(token.signature)}")
        for check in token.checks:
            lines.append(f"  {check.check:<9} {check.shown:<40} {check.result}")
    if evaluation.conditions is not None:
        lines.append("conditions" if evaluation.conditions else "conditions (none)")
        for condition in evaluation.conditions:
            lines.append(f"  {condition.result:<13} {condition.where}: {condition.condition}")
    for skipped in evaluation.skipped:
        lines.append(f"skipped   {skipped}: not checked offline")
    verdict = "allow" if data["allowed"] else "deny"
    lines.append(f"decision  {verdict} {data['status']} {data['reason']}")
    if data["dry_run"]:
        would = data["dry_run"]
        lines.append(f"          (dry run: would {would['decision']}, {would['reason']})")
    for name, value in data["headers_set"].items():
        lines.append(f"  set     {name}: {json.dumps(value)[1:-1]}")
    if data["headers_removed"]:
        lines.append(f"  removed {', '.join(data['headers_removed'])}")
    if data["query_params_removed"]:
        lines.append(f"  removed query parameters {', '.join(data['query_params_removed'])}")
    for name, value in data["response_headers"].items():
        if name not in ("content-type", "cache-control"):
            lines.append(f"  {name}: {value}")
    return "\n".join(lines)
