"""Rules as the config writes them -> the core's compiled policy. The one place rules and
conditions are translated; the core never sees a config model."""

from __future__ import annotations

import json
from collections.abc import Sequence

from authz.config import ClaimCondition, Config, Rule
from authz.config.rules import PATH_KINDS
from authz.core import conditions
from authz.core.claims import is_scope
from authz.core.conditions import AllOf, AnyOf, Leaf, Node, Not
from authz.core.operators import operator_test
from authz.core.policy import (
    CompiledRule,
    HeaderFromClaim,
    Policy,
    compile_path,
    header_test,
    host_test,
)


def build_policy(config: Config) -> Policy:
    return Policy(
        tuple(build_rule(config.rule_name(i), rule, config) for i, rule in enumerate(config.rules))
    )


def build_rule(name: str, rule: Rule, config: Config) -> CompiledRule:
    delimiter = config.nested_claim_delimiter
    match = rule.match
    kind = next((k for k in PATH_KINDS if getattr(match, k) is not None), None)
    ignore_case = config.paths.ignore_case if match.ignore_case is None else match.ignore_case
    requires = rule.requires
    return CompiledRule(
        name=name,
        match_path=compile_path(kind, getattr(match, kind) if kind else "", ignore_case),
        methods=frozenset(match.methods),
        host_ok=host_test(match.hosts),
        header_tests=tuple(
            header_test(h.name, present=h.present, equals=h.equals, regex=h.regex)
            for h in match.headers
        ),
        context=tuple(match.context.items()),
        public=rule.public,
        providers=requires.providers if requires else (),
        optional=requires.optional if requires else False,
        every=requires.every if requires else False,
        conditions=build_conditions(rule.claims, delimiter),
        mode=rule.mode or config.mode,
        claim_headers=tuple(
            HeaderFromClaim(m.header, tuple(m.claim.split(delimiter)) if m.claim else ())
            for m in rule.claim_to_headers
        ),
        static_headers=tuple(rule.headers.items()),
    )


def build_conditions(claims: Sequence[ClaimCondition], delimiter: str) -> Node:
    """A rule's ``claims`` list: all of them must hold."""
    return AllOf(_children(claims, "claims", delimiter))


def _children(items: Sequence[ClaimCondition], where: str, delimiter: str) -> tuple[Node, ...]:
    return tuple(_node(c, f"{where}[{i}]", delimiter) for i, c in enumerate(items))


def _node(condition: ClaimCondition, where: str, delimiter: str) -> Node:
    block = condition.block
    if block == "all":
        return AllOf(_children(condition.all or [], f"{where}.all", delimiter))
    if block == "any":
        return AnyOf(f"{where}.any", _children(condition.any or [], f"{where}.any", delimiter))
    if block == "not":
        assert condition.not_ is not None
        return Not(f"{where}.not", _node(condition.not_, f"{where}.not", delimiter))
    if block == "expr":
        assert condition.expr is not None
        return conditions.expression(f"{where}.expr", condition.expr)
    op = condition.operator
    value = getattr(condition, op)
    shown = int(value) if isinstance(value, float) and value.is_integer() else value
    wants = json.dumps(shown, separators=(", ", ": "), default=str)
    if op == "equals_claim":
        value = tuple(value.split(delimiter))
    test = operator_test(op, value, condition.provider)
    if condition.request is not None:
        read = conditions.request_subject(condition.request)
        return Leaf(where, f"{op} on request.{condition.request}", False, read, test, wants)
    if condition.issuer_param is not None:
        read = conditions.tenant_subject(condition.provider)
        return Leaf(where, f"{op} on issuer_param.tenant", False, read, test, wants)
    path = tuple(condition.claim_path or (condition.claim or "").split(delimiter))
    label = condition.claim if condition.claim is not None else str(list(path))
    read = conditions.claim_subject(path, condition.provider)
    return Leaf(where, f"{op} on {label}", is_scope(path), read, test, wants)
