"""Why a check decided as it did, for ``authz eval`` and ``authz test``: which rules a
request skipped and why, and every condition of the matched rule with its result. Never
used to decide: the authorizer's own decision is the verdict, this only explains it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from authz.core.conditions import AllOf, AnyOf, EvalContext, Expr, Leaf, Node, Not
from authz.core.model import RequestAttributes
from authz.core.policy import Policy

Result = Literal["pass", "fail", "indeterminate"]


@dataclass(frozen=True, slots=True)
class RuleStep:
    rule: str
    skipped_by: str | None  # method, host, context, header or path; None: this rule matched


@dataclass(frozen=True, slots=True)
class ConditionResult:
    where: str  # e.g. claims[1].any[0]
    operator: str  # contains, equals, ...; any, not, expr for blocks
    subject: str | None  # the claim path or request attribute; None for blocks
    value: Any  # the configured value (a CEL expression's source); never a claim's
    result: Result

    @property
    def condition(self) -> str:
        """One line for a reader: subject, operator and configured value."""
        if self.operator == "expr":
            return f"expr: {self.value}"
        if self.subject is None:
            return "any of the above" if self.operator == "any" else "not the above"
        return f"{self.subject} {self.operator} {json.dumps(self.value)}"


def rule_steps(policy: Policy, request: RequestAttributes, path: str) -> list[RuleStep]:
    """The rules in order up to the one that matches (or all, when none does)."""
    steps = []
    for rule in policy.rules:
        why = rule.why_not(request, path)
        steps.append(RuleStep(rule.name, why))
        if why is None:
            break
    return steps


def condition_results(node: Node, ctx: EvalContext) -> list[ConditionResult]:
    """Every condition of a rule's tree, in config order, each with how it evaluated
    (blocks: any, not, expr get a line of their own after their children)."""
    results: list[ConditionResult] = []
    _walk(node, ctx, results)
    return results


def _verdict(node: Node, ctx: EvalContext) -> Result:
    failure = node.check(ctx)
    if failure is None:
        return "pass"
    return "indeterminate" if failure.indeterminate else "fail"


def _walk(node: Node, ctx: EvalContext, out: list[ConditionResult]) -> None:
    if isinstance(node, Leaf):
        operator, _, subject = node.what.partition(" on ")
        value = json.loads(node.wants) if node.wants else None
        out.append(ConditionResult(node.where, operator, subject, value, _verdict(node, ctx)))
    elif isinstance(node, AllOf):
        for child in node.children:
            _walk(child, ctx, out)
    elif isinstance(node, AnyOf):
        for child in node.children:
            _walk(child, ctx, out)
        out.append(ConditionResult(node.where, "any", None, None, _verdict(node, ctx)))
    elif isinstance(node, Not):
        _walk(node.child, ctx, out)
        out.append(ConditionResult(node.where, "not", None, None, _verdict(node, ctx)))
    elif isinstance(node, Expr):
        out.append(ConditionResult(node.where, "expr", None, node.source, _verdict(node, ctx)))
